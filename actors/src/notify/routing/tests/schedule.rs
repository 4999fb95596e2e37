//! Weekly schedules in a zone: occurrences, DST gaps and edges (plain asserts on the compiled
//! schedule; the rig shows the same edges through notifications).

use jiff::Timestamp;

use crate::notify::routing::{Day, Schedule};

fn ms(text: &str) -> i64 {
    text.parse::<Timestamp>().unwrap().as_millisecond()
}

fn weekly(days: &[Day], at: &str, minutes: i64, tz: &str) -> crate::notify::routing::Compiled {
    Schedule::Weekly {
        weekdays: days.to_vec(),
        start_time: at.into(),
        duration_minutes: minutes,
        time_zone: tz.into(),
    }
    .validated()
    .unwrap()
    .compile()
    .unwrap()
}

#[test]
fn a_start_inside_the_spring_gap_moves_forward_by_the_gap() {
    // 02:30 does not exist in Paris on 2027-03-28; the window opens at 03:30 CEST = 01:30Z.
    let w = weekly(&[Day::Sun], "02:30", 60, "Europe/Paris");
    assert_eq!(
        w.open_at(ms("2027-03-28T01:45:00Z")),
        Some((ms("2027-03-28T01:30:00Z"), ms("2027-03-28T02:30:00Z")))
    );
    assert_eq!(w.open_at(ms("2027-03-28T01:15:00Z")), None);
    assert_eq!(
        w.next_edge_after(ms("2027-03-28T00:00:00Z")),
        Some(ms("2027-03-28T01:30:00Z"))
    );
}

#[test]
fn an_occurrence_spanning_midnight_is_open_the_next_day() {
    let w = weekly(&[Day::Fri], "22:00", 8 * 60, "America/New_York");
    // Friday 2027-01-15 22:00 EST = Saturday 03:00Z, until Saturday 06:00 EST = 11:00Z.
    assert_eq!(
        w.open_at(ms("2027-01-16T10:00:00Z")),
        Some((ms("2027-01-16T03:00:00Z"), ms("2027-01-16T11:00:00Z")))
    );
    assert_eq!(w.open_at(ms("2027-01-16T11:00:00Z")), None);
    assert_eq!(
        w.next_edge_after(ms("2027-01-16T11:00:00Z")),
        Some(ms("2027-01-23T03:00:00Z"))
    );
}

#[test]
fn bad_schedules_are_refused() {
    let bad = |s: Schedule| s.validated().unwrap_err().to_string();
    let weekly = |days: Vec<Day>, at: &str, minutes, tz: &str| Schedule::Weekly {
        weekdays: days,
        start_time: at.into(),
        duration_minutes: minutes,
        time_zone: tz.into(),
    };
    assert!(bad(weekly(vec![Day::Mon], "01:00", 60, "Mars/Olympus")).contains("time zone"));
    assert!(bad(weekly(vec![Day::Mon], "25:00", 60, "UTC")).contains("start_time"));
    assert!(bad(weekly(vec![Day::Mon], "1:00", 60, "UTC")).contains("start_time"));
    assert!(bad(weekly(vec![], "01:00", 60, "UTC")).contains("weekdays"));
    assert!(bad(weekly(vec![Day::Mon], "01:00", 0, "UTC")).contains("duration"));
    assert!(bad(weekly(vec![Day::Mon], "01:00", 20_000, "UTC")).contains("duration"));
    assert!(
        bad(Schedule::Once {
            starts_at_ms: 10,
            ends_at_ms: 10
        })
        .contains("after")
    );
}
