//! Escalation: not acknowledged within a step's delay → the step's integrations; an ack stops it;
//! a maintenance window pauses it.

use super::check;

#[test]
fn unacknowledged_alerts_escalate_step_by_step() {
    check(
        "policy p escalate=10m:pager,20m:boss+sms
         fire a
         at 2h",
        "30s mail firing 1 a
         10m30s pager escalation 1 a
         30m30s boss escalation 1 a
         30m30s sms escalation 1 a",
    );
}

#[test]
fn an_ack_stops_escalation() {
    check(
        "policy p escalate=10m:pager
         fire a
         at 5m
         ack a
         at 2h",
        "30s mail firing 1 a",
    );
}

#[test]
fn only_unacknowledged_alerts_escalate() {
    check(
        "policy p escalate=10m:pager
         fire a,b
         at 5m
         ack a
         at 2h",
        "30s mail firing 2 a,b
         10m30s pager escalation 1 b",
    );
}

#[test]
fn a_resolved_group_does_not_escalate() {
    check(
        "policy p escalate=10m:pager
         fire a
         at 1m
         resolve a
         at 2h",
        "30s mail firing 1 a
         5m30s mail resolved 1 a",
    );
}

#[test]
fn a_new_alert_after_an_ack_escalates_again() {
    check(
        "policy p escalate=10m:pager
         fire a
         at 1m
         ack a
         at 20m
         fire b
         at 1h",
        "30s mail firing 1 a
         20m30s mail firing 2 b,a
         30m30s pager escalation 1 b",
    );
}

#[test]
fn escalation_is_paused_in_maintenance_and_restarts_when_it_ends() {
    check(
        "policy p escalate=10m:pager
         fire a
         window w once from=5m until=20m
         at 1h",
        "30s mail firing 1 a
         20m mail reminder 1 a
         30m pager escalation 1 a",
    );
}

#[test]
fn escalation_resumes_after_a_restart() {
    check(
        "policy p escalate=10m:pager,10m:boss
         fire a
         at 5m
         restart
         at 15m
         restart
         at 1h",
        "30s mail firing 1 a
         10m30s pager escalation 1 a
         20m30s boss escalation 1 a",
    );
}
