//! When a maintenance window is open: one-off (two instants) or weekly (weekdays, a local start
//! time, a duration, an IANA time zone). Weekly occurrences are laid out in wall-clock time of
//! their zone with `jiff` and its bundled tz database (no tzdata needed on the machine), so
//! "01:00 for 3 h, Europe/Paris" is 01:00–04:00 local on every day, DST changes included: the
//! spring-forward night's window is 2 h of real time, the fall-back night's 4 h. A start inside
//! a DST gap moves forward by the gap (02:30 on the spring-forward night opens at 03:30).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, DomainResult};

/// Longest one-off window, in seconds (90 days).
pub const MAX_ONE_OFF_WINDOW_S: i64 = 90 * 24 * 3600;
/// Longest weekly occurrence, in minutes (a week).
pub const MAX_WEEKLY_DURATION_MINUTES: i64 = 7 * 24 * 60;
/// Longest IANA time zone name accepted, in characters.
pub const MAX_TIME_ZONE_CHARS: usize = 64;

/// A day of the week, as `mon` … `sun` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub const ALL: &'static [Day] = &[
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Day::Mon => "mon",
            Day::Tue => "tue",
            Day::Wed => "wed",
            Day::Thu => "thu",
            Day::Fri => "fri",
            Day::Sat => "sat",
            Day::Sun => "sun",
        }
    }

    /// `mon` … `sun`.
    pub fn parse(text: &str) -> DomainResult<Day> {
        Day::ALL
            .iter()
            .copied()
            .find(|d| d.as_str() == text)
            .ok_or_else(|| DomainError::invalid(format!("unknown weekday {text:?} (mon … sun)")))
    }

    fn of(weekday: Weekday) -> Day {
        match weekday {
            Weekday::Monday => Day::Mon,
            Weekday::Tuesday => Day::Tue,
            Weekday::Wednesday => Day::Wed,
            Weekday::Thursday => Day::Thu,
            Weekday::Friday => Day::Fri,
            Weekday::Saturday => Day::Sat,
            Weekday::Sunday => Day::Sun,
        }
    }
}

/// When a window is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    /// From `starts_at_ms` (inclusive) to `ends_at_ms` (exclusive).
    Once { starts_at_ms: i64, ends_at_ms: i64 },
    /// On each of `weekdays`, from `start_time` ("HH:MM", local) for `duration_minutes` of wall
    /// clock, in `time_zone`.
    Weekly {
        weekdays: Vec<Day>,
        start_time: String,
        duration_minutes: i64,
        time_zone: String,
    },
}

impl Schedule {
    /// Checks bounds, that the time parses and that the zone is a known IANA name.
    pub fn validated(self) -> DomainResult<Schedule> {
        match self {
            Schedule::Once {
                starts_at_ms,
                ends_at_ms,
            } => {
                if ends_at_ms <= starts_at_ms {
                    return Err(DomainError::invalid("ends_at must be after starts_at"));
                }
                if ends_at_ms - starts_at_ms > MAX_ONE_OFF_WINDOW_S * 1000 {
                    return Err(DomainError::invalid(format!(
                        "a one-off window lasts at most {MAX_ONE_OFF_WINDOW_S} s"
                    )));
                }
                Ok(Schedule::Once {
                    starts_at_ms,
                    ends_at_ms,
                })
            }
            Schedule::Weekly {
                mut weekdays,
                start_time,
                duration_minutes,
                time_zone,
            } => {
                if weekdays.is_empty() {
                    return Err(DomainError::invalid("weekdays must not be empty"));
                }
                if weekdays.len() > 7 {
                    return Err(DomainError::invalid("weekdays has at most 7 entries"));
                }
                weekdays.sort();
                weekdays.dedup();
                parse_time(&start_time)?;
                if !(1..=MAX_WEEKLY_DURATION_MINUTES).contains(&duration_minutes) {
                    return Err(DomainError::invalid(format!(
                        "duration_minutes must be between 1 and {MAX_WEEKLY_DURATION_MINUTES}"
                    )));
                }
                zone(&time_zone)?;
                Ok(Schedule::Weekly {
                    weekdays,
                    start_time,
                    duration_minutes,
                    time_zone,
                })
            }
        }
    }

    /// The schedule with its zone and time parsed once, for the core to evaluate often.
    pub fn compile(&self) -> DomainResult<Compiled> {
        Ok(match self {
            Schedule::Once {
                starts_at_ms,
                ends_at_ms,
            } => Compiled::Once(*starts_at_ms, *ends_at_ms),
            Schedule::Weekly {
                weekdays,
                start_time,
                duration_minutes,
                time_zone,
            } => Compiled::Weekly {
                days: weekdays.clone(),
                start: parse_time(start_time)?,
                minutes: *duration_minutes,
                tz: zone(time_zone)?,
            },
        })
    }
}

fn parse_time(text: &str) -> DomainResult<Time> {
    let bad = || DomainError::invalid(format!("start_time {text:?} is not HH:MM (24 h)"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn zone(name: &str) -> DomainResult<TimeZone> {
    if name.is_empty() || name.chars().count() > MAX_TIME_ZONE_CHARS {
        return Err(DomainError::invalid(format!(
            "time_zone must be 1 to {MAX_TIME_ZONE_CHARS} characters"
        )));
    }
    TimeZone::get(name)
        .map_err(|_| DomainError::invalid(format!("unknown time zone {name:?} (IANA names)")))
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Compiled {
    Once(i64, i64),
    Weekly {
        days: Vec<Day>,
        start: Time,
        minutes: i64,
        tz: TimeZone,
    },
}

impl Compiled {
    /// The occurrence `[start, end)` that contains `now_ms`, if the window is open then.
    pub fn open_at(&self, now_ms: i64) -> Option<(i64, i64)> {
        self.occurrences(now_ms)
            .into_iter()
            .find(|(s, e)| *s <= now_ms && now_ms < *e)
    }

    /// The first instant after `now_ms` at which the window opens or closes.
    pub fn next_edge_after(&self, now_ms: i64) -> Option<i64> {
        self.occurrences(now_ms)
            .into_iter()
            .flat_map(|(s, e)| [s, e])
            .filter(|t| *t > now_ms)
            .min()
    }

    /// Every occurrence that can contain `now_ms` or start within the next eight days.
    fn occurrences(&self, now_ms: i64) -> Vec<(i64, i64)> {
        match self {
            Compiled::Once(s, e) => vec![(*s, *e)],
            Compiled::Weekly {
                days,
                start,
                minutes,
                tz,
            } => {
                let Ok(now) = Timestamp::from_millisecond(now_ms) else {
                    return Vec::new();
                };
                let today = now.to_zoned(tz.clone()).date();
                // An occurrence lasts at most a week, so one that started up to eight local
                // days ago may still be open.
                let back = minutes / (24 * 60) + 1;
                (-back..=8)
                    .filter_map(|offset| today.checked_add(Span::new().days(offset)).ok())
                    .filter(|date| days.contains(&Day::of(date.weekday())))
                    .filter_map(|date| occurrence(date, *start, *minutes, tz))
                    .collect()
            }
        }
    }
}

/// One weekly occurrence on local `date`, in epoch milliseconds.
fn occurrence(date: Date, start: Time, minutes: i64, tz: &TimeZone) -> Option<(i64, i64)> {
    let local_start = date.to_datetime(start);
    let local_end = local_start.checked_add(Span::new().minutes(minutes)).ok()?;
    let s = local_start
        .to_zoned(tz.clone())
        .ok()?
        .timestamp()
        .as_millisecond();
    let e = local_end
        .to_zoned(tz.clone())
        .ok()?
        .timestamp()
        .as_millisecond();
    // A start moved forward by a DST gap can meet a short window's end; keep its length then.
    let e = if e > s { e } else { s + minutes * 60_000 };
    Some((s, e))
}
