//! Grouping and the group timers: group_wait, group_interval, repeat_interval; one message per
//! group however many alerts it holds; policies chosen by severity and scope; restart.

use super::check;

#[test]
fn alerts_within_group_wait_are_one_message() {
    check(
        "policy p
         fire a,b,c
         at 10s
         fire d
         at 10m",
        "30s mail firing 4 a,b,c,d",
    );
}

#[test]
fn later_alerts_wait_for_the_group_interval() {
    check(
        "policy p
         fire a
         at 1m
         fire b
         at 10m",
        "30s mail firing 1 a
         5m30s mail firing 2 b,a",
    );
}

#[test]
fn a_resolution_is_sent_at_the_next_interval_then_the_group_ends() {
    check(
        "policy p
         fire a
         at 1m
         resolve a
         at 10h",
        "30s mail firing 1 a
         5m30s mail resolved 1 a",
    );
}

#[test]
fn an_alert_resolved_within_group_wait_is_never_sent() {
    check(
        "policy p
         fire a
         at 10s
         resolve a
         at 10h",
        "",
    );
}

#[test]
fn a_group_still_firing_is_reminded_every_repeat_interval() {
    check(
        "policy p
         fire a
         at 9h",
        "30s mail firing 1 a
         4h30s mail reminder 1 a
         8h30s mail reminder 1 a",
    );
}

#[test]
fn a_ten_thousand_agent_outage_is_one_message_with_a_count_and_a_sample() {
    check(
        "policy p to=mail,hook
         fire h1..h10000
         at 1m",
        "30s hook firing 10000 20 sampled
         30s mail firing 10000 20 sampled",
    );
}

#[test]
fn the_same_alert_firing_again_after_resolving_is_new() {
    check(
        "policy p
         fire a
         at 1m
         resolve a
         at 6m
         fire a
         at 20m",
        "30s mail firing 1 a
         5m30s mail resolved 1 a
         6m30s mail firing 1 a",
    );
}

#[test]
fn group_by_agent_makes_a_group_per_agent() {
    check(
        "policy p by=rule,agent
         fire a
         fire b rule=disk
         at 1m",
        "30s mail firing 1 b
         30s mail firing 1 a",
    );
}

#[test]
fn default_grouping_is_by_rule_and_org() {
    check(
        "policy p
         fire a
         fire b rule=disk
         fire c rule=disk
         at 1m",
        // Groups decide in the order of their ids (stable, not meaningful).
        "30s mail firing 2 b,c
         30s mail firing 1 a",
    );
}

#[test]
fn policies_choose_integrations_by_severity_tags_and_folders() {
    check(
        "policy crit sev=critical to=pager
         policy db tags=db to=dba
         policy lab folders=lab to=lab
         policy quiet off to=nobody
         fire a sev=warning tags=db
         fire b sev=critical
         fire c sev=info folder=lab
         fire d sev=info
         fire e org=other
         at 1m",
        "30s dba firing 1 a
         30s lab firing 1 c
         30s pager firing 1 b",
    );
}

#[test]
fn custom_timers_are_honoured() {
    check(
        "policy p wait=0 interval=1m repeat=2m
         fire a
         at 10s
         fire b
         at 4m",
        "0s mail firing 1 a
         1m mail firing 2 b,a
         3m mail reminder 2 a,b",
    );
}

#[test]
fn a_restart_before_group_wait_sends_once() {
    check(
        "policy p
         fire a
         at 10s
         restart
         at 10m",
        "30s mail firing 1 a",
    );
}

#[test]
fn a_restart_resumes_group_state_without_resending() {
    check(
        "policy p
         fire a
         at 1m
         restart
         fire b
         at 2m
         restart
         at 10m
         resolve a,b
         at 20m",
        "30s mail firing 1 a
         5m30s mail firing 2 b,a
         10m30s mail resolved 2 a,b",
    );
}

#[test]
fn deleting_a_policy_drops_its_groups() {
    check(
        "policy p
         policy q to=other
         fire a
         at 1m
         policy q off to=other
         resolve a
         at 10m",
        "30s mail firing 1 a
         30s other firing 1 a
         5m30s mail resolved 1 a",
    );
}

#[test]
fn a_replayed_fired_change_is_not_notified_again() {
    check(
        "policy p
         fire a
         at 1m
         fire a
         at 6m
         restart
         fire a
         at 20m",
        "30s mail firing 1 a",
    );
}

#[test]
fn an_alert_in_two_policies_groups_resolves_in_both() {
    check(
        "policy all to=mail
         policy crit sev=critical to=pager
         fire a sev=critical
         fire b sev=warning
         at 1m
         resolve a
         ack b
         at 1h",
        "30s pager firing 1 a
         30s mail firing 2 a,b
         5m30s pager resolved 1 a
         5m30s mail resolved 1 a",
    );
}
