//! Restarts after a crash that lost changes (`lost`: committed by alerting, never seen by
//! routing): what fired is notified once, what resolved is told resolved, an ack stops
//! escalation, a snooze holds, and nothing already notified is sent again.

use super::check;

#[test]
fn a_lost_fire_is_notified_once_after_the_restart() {
    check(
        "policy p
         fire a
         at 1m
         fire b lost
         restart
         at 1h",
        "30s mail firing 1 a
         5m30s mail firing 2 b,a",
    );
}

#[test]
fn a_lost_fire_in_a_new_group_waits_its_group_wait() {
    check(
        "policy p
         at 10m
         fire a lost
         restart
         at 1h",
        "10m30s mail firing 1 a",
    );
}

#[test]
fn nothing_already_notified_is_sent_again() {
    check(
        "policy p escalate=20m:pager
         fire a,b
         at 1m
         restart
         at 5m
         restart
         at 9m
         restart
         at 15m",
        "30s mail firing 2 a,b",
    );
}

#[test]
fn a_lost_resolution_is_sent_after_the_restart() {
    check(
        "policy p
         fire a,b
         at 1m
         resolve a lost
         restart
         at 1h",
        "30s mail firing 2 a,b
         5m30s mail resolved 1 a",
    );
}

#[test]
fn a_lost_ack_stops_escalation() {
    check(
        "policy p escalate=10m:pager
         fire a
         at 5m
         ack a lost
         restart
         at 1h",
        "30s mail firing 1 a",
    );
}

#[test]
fn an_alert_fired_and_acked_while_routing_was_down_is_told_but_not_escalated() {
    check(
        "policy p escalate=10m:pager
         fire a lost
         ack a lost
         restart
         at 1h",
        "30s mail firing 1 a",
    );
}

#[test]
fn an_alert_that_fired_and_resolved_while_routing_was_down_is_not_sent() {
    check(
        "policy p
         fire a lost
         resolve a lost
         restart
         at 1h",
        "",
    );
}

#[test]
fn a_lost_snooze_holds_reminders_until_it_ends() {
    check(
        "policy p repeat=1h
         fire a
         at 1m
         snooze a until=3h lost
         restart
         at 4h",
        "30s mail firing 1 a
         3h mail reminder 1 a",
    );
}

#[test]
fn a_snooze_already_told_is_not_told_again_after_a_restart() {
    check(
        "policy p
         fire a
         at 1m
         snooze a until=10m
         at 20m
         restart
         at 30m",
        "30s mail firing 1 a
         10m mail reminder 1 a",
    );
}
