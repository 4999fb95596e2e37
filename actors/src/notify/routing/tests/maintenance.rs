//! Maintenance windows: nothing is notified inside; when a window ends, what still fires is
//! notified once and nothing else; weekly windows follow their zone's wall clock across DST.

use super::check;

#[test]
fn a_window_end_notifies_what_still_fires_once_and_nothing_else() {
    check(
        "policy p
         window w once from=0 until=1h
         fire a,b,c
         at 10m
         resolve c
         at 20m
         fire d
         at 30m
         resolve d
         at 3h",
        "1h mail reminder 2 a,b",
    );
}

#[test]
fn an_alert_told_before_the_window_is_reminded_once_at_its_end() {
    check(
        "policy p repeat=10m
         fire a
         at 1m
         window w once from=2m until=1h
         at 1h5m",
        "30s mail firing 1 a
         1h mail reminder 1 a",
    );
}

#[test]
fn a_window_covers_only_its_folders_and_tags() {
    check(
        "policy p by=rule,agent
         window w once from=0 until=1h tags=db folders=lab
         fire a tags=db
         fire b folder=lab
         fire c
         at 1h",
        "30s mail firing 1 c
         1h mail reminder 1 b
         1h mail reminder 1 a",
    );
}

#[test]
fn a_weekly_window_follows_the_wall_clock_across_the_spring_dst_change() {
    // Europe/Paris springs forward on Sunday 2027-03-28 at 02:00 CET: 01:00-04:00 local is
    // 00:00Z-02:00Z that night (2 h), not 00:00Z-03:00Z.
    check(
        "start 2027-03-27T23:00:00Z
         policy p repeat=1h
         window w weekly days=sun at=01:00 for=3h tz=Europe/Paris
         fire a
         at 2027-03-28T03:01:00Z",
        "2027-03-27T23:00:30Z mail firing 1 a
         2027-03-28T02:00:00Z mail reminder 1 a
         2027-03-28T03:00:30Z mail reminder 1 a",
    );
}

#[test]
fn a_weekly_window_follows_the_wall_clock_across_the_autumn_dst_change() {
    // Europe/Paris falls back on Sunday 2027-10-31 at 03:00 CEST: 01:00-04:00 local is
    // 23:00Z (Saturday) to 03:00Z that night (4 h).
    check(
        "start 2027-10-30T22:00:00Z
         policy p repeat=1h
         window w weekly days=sun at=01:00 for=3h tz=Europe/Paris
         fire a
         at 2027-10-31T03:01:00Z",
        "2027-10-30T22:00:30Z mail firing 1 a
         2027-10-31T03:00:00Z mail reminder 1 a",
    );
}

#[test]
fn a_weekly_window_opens_only_on_its_weekdays() {
    // Monday 2027-03-29 09:00-10:00 CEST is 07:00Z-08:00Z; Tuesday has no window.
    check(
        "start 2027-03-29T06:00:00Z
         policy p repeat=1d
         window w weekly days=mon,wed at=09:00 for=1h tz=Europe/Paris
         at 2027-03-29T07:30:00Z
         fire a
         at 2027-03-30T07:30:00Z
         fire b
         at 2027-03-30T07:40:00Z",
        "2027-03-29T08:00:00Z mail reminder 1 a
         2027-03-30T07:30:30Z mail firing 2 b,a",
    );
}

#[test]
fn a_deleted_window_releases_its_alerts_at_the_next_flush() {
    check(
        "policy p
         window w once from=0 until=10h
         fire a
         at 1m
         window w once from=0 until=2m
         at 10m",
        "2m mail reminder 1 a",
    );
}
