//! Snoozes: a snoozed alert stays in its group (visible) but gets no reminders and no
//! escalation until the snooze ends; if it still fires then, it is told once, like a
//! maintenance window ending; what resolves inside the snooze is not sent.

use super::check;

#[test]
fn a_snooze_holds_reminders_and_escalation_and_its_end_is_told_once() {
    check(
        "policy p repeat=1h escalate=10m:pager
         fire a
         at 1m
         snooze a until=3h
         at 5h",
        "30s mail firing 1 a
         3h mail reminder 1 a
         3h10m pager escalation 1 a
         4h30s mail reminder 1 a",
    );
}

#[test]
fn the_others_in_the_group_are_still_reminded() {
    check(
        "policy p repeat=1h
         fire a,b
         at 1m
         snooze a until=3h
         at 2h",
        "30s mail firing 2 a,b
         1h30s mail reminder 1 b",
    );
}

#[test]
fn a_resolution_inside_the_snooze_is_not_sent() {
    check(
        "policy p
         fire a
         at 1m
         snooze a until=1h
         at 10m
         resolve a
         at 3h",
        "30s mail firing 1 a",
    );
}

#[test]
fn a_resolution_after_the_snooze_is_sent() {
    check(
        "policy p
         fire a
         at 1m
         snooze a until=10m
         at 20m
         resolve a
         at 1h",
        "30s mail firing 1 a
         10m mail reminder 1 a
         20m30s mail resolved 1 a",
    );
}

#[test]
fn an_alert_snoozed_while_pending_is_told_when_the_snooze_ends() {
    check(
        "policy p
         snooze a until=10m
         fire a,b
         at 1h",
        "30s mail firing 1 b
         10m mail reminder 1 a",
    );
}

#[test]
fn a_longer_snooze_replaces_the_first() {
    check(
        "policy p
         fire a
         at 1m
         snooze a until=30m
         at 20m
         snooze a until=2h
         at 3h",
        "30s mail firing 1 a
         2h mail reminder 1 a",
    );
}

#[test]
fn a_snooze_ending_inside_a_window_is_told_once_when_the_window_ends() {
    check(
        "policy p
         fire a
         at 1m
         snooze a until=20m
         window w once from=10m until=1h
         at 2h",
        "30s mail firing 1 a
         1h mail reminder 1 a",
    );
}

#[test]
fn a_restart_keeps_the_snooze() {
    check(
        "policy p escalate=10m:pager
         fire a
         at 1m
         snooze a until=1h
         restart
         at 30m
         restart
         at 2h",
        "30s mail firing 1 a
         1h mail reminder 1 a
         1h10m pager escalation 1 a",
    );
}
