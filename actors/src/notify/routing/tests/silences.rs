//! Silences: matching alerts are not notified while the silence is active (they stay visible as
//! events), all matchers must match, and the silence expires by time.

use super::check;

#[test]
fn a_silenced_alert_is_sent_after_the_silence_expires() {
    check(
        "policy p
         silence s agent=a until=10m
         fire a,b
         at 20m",
        "30s mail firing 1 b
         10m30s mail firing 2 a,b",
    );
}

#[test]
fn a_silence_starting_later_mutes_reminders_from_its_start() {
    check(
        "policy p repeat=10m
         fire a
         silence s rule=cpu from=12m until=31m
         at 36m",
        "30s mail firing 1 a
         10m30s mail reminder 1 a
         35m30s mail reminder 1 a",
    );
}

#[test]
fn a_silenced_resolution_is_not_sent() {
    check(
        "policy p
         fire a
         at 1m
         silence s agent=a until=1h
         at 2m
         resolve a
         at 2h",
        "30s mail firing 1 a",
    );
}

#[test]
fn every_matcher_must_match() {
    check(
        "policy p
         silence s rule=cpu sev=warning until=1h
         fire a
         fire b sev=warning
         at 1m",
        "30s mail firing 1 a",
    );
}

#[test]
fn tag_and_org_matchers() {
    check(
        "policy p
         silence s tag=lab until=1h
         silence all org from=2h until=3h
         fire a tags=lab
         fire b
         at 1m
         at 2h1m
         fire c
         at 2h30m
         at 3h1m",
        "30s mail firing 1 b
         1h30s mail firing 2 a,b
         3h30s mail firing 3 c,a,b",
    );
}

#[test]
fn deleting_a_silence_ends_it() {
    check(
        "policy p
         silence s agent=a until=1h
         fire a
         at 2m
         unsilence s
         at 6m",
        "5m30s mail firing 1 a",
    );
}
