//! A deterministic rig for [`RuleMachine`]: no database, no actor, no sleeping. A scenario is a
//! few lines of text, one input per line; each effect is written as one line, which [`check`]
//! compares with the expected text.
//!
//! | line | meaning |
//! |---|---|
//! | `at T` | the clock moves to T ms |
//! | `sample a V [@T]` | agent a's value V, taken now (or at T) |
//! | `on a [S]` / `off a` | agent a's condition holds since S (default now) / stops holding |
//! | `reset a` / `forget a` / `tick` | manual resolve / agent out of scope / timer tick |
//! | `wake` | log the machine's next wake: `T wake=W` (or `none`) |
//! | `restart [floor=F]` | persist every agent's state, build a new machine from it (with a since floor F) |
//!
//! Effect lines: `T pending a since=S [v=V]`, `T fired a since=S`, `T resolved a`, `T cleared a`.
//!
//! ## Transitions, one test per row
//!
//! | from | input | outcome | test |
//! |---|---|---|---|
//! | inactive | breaching sample | pending since now | `for_fires_exactly_when_it_elapses` |
//! | pending | tick before / at `for` | nothing / fired | `for_fires_exactly_when_it_elapses` |
//! | pending | clear sample | cleared, `for` starts again | `a_clear_sample_while_pending_restarts_for` |
//! | inactive | breaching, `for` = 0 | pending and fired at once | `zero_for_fires_at_once` |
//! | firing | value between line and recovery | stays firing | `hysteresis_clears_only_past_the_recovery_line` |
//! | firing | value past recovery | resolved | `hysteresis_clears_only_past_the_recovery_line` |
//! | firing | oscillating within the hold | one fire, resolve only after the hold | `the_firing_hold_absorbs_oscillation` |
//! | firing | clear at the hold's end (tick) | resolved | `the_firing_hold_absorbs_oscillation` |
//! | any | stale sample (older than the window) | ignored | `stale_samples_are_ignored` |
//! | — | window aggregation (avg over window) | the average decides | `the_window_average_decides` |
//! | pending / firing | restart | resumes: `for` kept, firing not re-fired | `restart_resumes_pending_and_firing` |
//! | pending (presence) | restart with a floor | since moved to the floor | `restart_grace_moves_an_offline_clock` |
//! | inactive (presence) | condition since before the floor | pending since the floor | `restart_grace_moves_an_offline_clock` |
//! | firing | reset (manual resolve) | inactive; condition counts from now | `a_manual_resolve_starts_over` |
//! | pending / firing | forget | cleared / resolved | `forgetting_an_agent_ends_its_alert` |
//! | presence | on since long ago | fires at once | `a_condition_older_than_for_fires_at_once` |
//! | inactive | breaching sample taken earlier | pending since it was taken (at most the lag earlier) | `a_threshold_holds_from_when_its_sample_was_taken` |
//! | pending / firing | deadlines | next wake = earliest `for` or hold, kept across restarts | `the_next_wake_is_the_earliest_deadline` |

use std::fmt::Write;

use super::*;

fn agent(name: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[15] = name.as_bytes()[0];
    Uuid::from_bytes(bytes)
}

fn name(id: Uuid) -> char {
    char::from(id.as_bytes()[15])
}

fn threshold(for_ms: i64, hold_ms: i64, recovery: Option<f64>, agg: Aggregation) -> MachineConfig {
    MachineConfig {
        for_ms,
        hold_ms,
        eval: Eval::Threshold {
            operator: Operator::Gt,
            value: 90.0,
            recovery,
            aggregation: agg,
            window_ms: 60_000,
        },
        since_floor: 0,
    }
}

fn presence(for_ms: i64) -> MachineConfig {
    MachineConfig {
        for_ms,
        hold_ms: 0,
        eval: Eval::Condition,
        since_floor: 0,
    }
}

/// Plays `script` against a machine built from `config` and compares the effect log.
fn check(config: MachineConfig, script: &str, want: &str) {
    let mut m = RuleMachine::new(config);
    let mut now = 0i64;
    let mut log = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let input = match words[..] {
            ["at", t] => {
                now = t.parse().unwrap();
                continue;
            }
            ["sample", a, v] | ["sample", a, v, _] => Input::Sample {
                agent: agent(a),
                at: words
                    .get(3)
                    .map_or(now, |t| t.trim_start_matches('@').parse().unwrap()),
                value: v.parse().unwrap(),
            },
            ["on", a] | ["on", a, _] => Input::Condition {
                agent: agent(a),
                active: true,
                since: words.get(2).map_or(now, |s| s.parse().unwrap()),
            },
            ["off", a] => Input::Condition {
                agent: agent(a),
                active: false,
                since: now,
            },
            ["reset", a] => Input::Reset { agent: agent(a) },
            ["forget", a] => Input::Forget { agent: agent(a) },
            ["tick"] => Input::Tick,
            ["wake"] => {
                let wake = m.next_wake().map_or("none".to_owned(), |w| w.to_string());
                let _ = writeln!(log, "{now} wake={wake}");
                continue;
            }
            ["restart"] | ["restart", _] => {
                let mut config = m.config().clone();
                if let Some(f) = words.get(1).and_then(|w| w.strip_prefix("floor=")) {
                    config.since_floor = f.parse().unwrap();
                }
                let states: Vec<_> = m.agents.keys().map(|a| (*a, m.persisted(*a))).collect();
                m = RuleMachine::resume(config, states);
                continue;
            }
            _ => panic!("bad script line {line:?}"),
        };
        for effect in m.handle(now, input) {
            let v = |v: Option<f64>| v.map(|v| format!(" v={v}")).unwrap_or_default();
            let _ = match effect {
                Effect::Pending {
                    agent,
                    since,
                    value,
                } => writeln!(
                    log,
                    "{now} pending {} since={since}{}",
                    name(agent),
                    v(value)
                ),
                Effect::Fired { agent, since, .. } => {
                    writeln!(log, "{now} fired {} since={since}", name(agent))
                }
                Effect::Resolved { agent, .. } => writeln!(log, "{now} resolved {}", name(agent)),
                Effect::Cleared { agent, .. } => writeln!(log, "{now} cleared {}", name(agent)),
            };
        }
    }
    let want: String = want
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(log, want, "effects of\n{script}");
}

#[test]
fn for_fires_exactly_when_it_elapses() {
    check(
        threshold(60_000, 0, None, Aggregation::Last),
        "at 1000
         sample a 95
         at 60999
         tick
         sample a 96
         at 61000
         tick
         tick",
        "1000 pending a since=1000 v=95
         61000 fired a since=1000",
    );
}

#[test]
fn a_clear_sample_while_pending_restarts_for() {
    check(
        threshold(60_000, 0, None, Aggregation::Last),
        "sample a 95
         at 30000
         sample a 50
         at 40000
         sample a 95
         at 60000
         tick
         at 100000
         tick",
        "0 pending a since=0 v=95
         30000 cleared a
         40000 pending a since=40000 v=95
         100000 fired a since=40000",
    );
}

#[test]
fn zero_for_fires_at_once() {
    check(
        threshold(0, 0, None, Aggregation::Last),
        "at 5
         sample a 91
         sample b 90",
        "5 pending a since=5 v=91
         5 fired a since=5",
    );
}

#[test]
fn hysteresis_clears_only_past_the_recovery_line() {
    check(
        threshold(0, 0, Some(80.0), Aggregation::Last),
        "sample a 95
         at 1000
         sample a 85
         at 2000
         sample a 80.5
         at 3000
         sample a 80
         at 4000
         sample a 85",
        "0 pending a since=0 v=95
         0 fired a since=0
         3000 resolved a",
    );
}

#[test]
fn the_firing_hold_absorbs_oscillation() {
    check(
        threshold(0, 300_000, None, Aggregation::Last),
        "sample a 91
         at 10000
         sample a 89
         at 20000
         sample a 91
         at 30000
         sample a 89
         at 299999
         tick
         at 300000
         tick
         tick",
        "0 pending a since=0 v=91
         0 fired a since=0
         300000 resolved a",
    );
    // Still breaching when the hold ends: it stays firing.
    check(
        threshold(0, 300_000, None, Aggregation::Last),
        "sample a 91
         at 10000
         sample a 89
         at 20000
         sample a 91
         at 400000
         tick",
        "0 pending a since=0 v=91
         0 fired a since=0",
    );
}

#[test]
fn stale_samples_are_ignored() {
    check(
        threshold(0, 0, None, Aggregation::Last),
        "at 100000
         sample a 99 @40000
         sample a 99 @40001",
        // The second is in the window; it is older than the lag, so it counts from now − lag.
        "100000 pending a since=90000 v=99
         100000 fired a since=90000",
    );
}

#[test]
fn the_window_average_decides() {
    check(
        threshold(0, 0, None, Aggregation::Avg),
        "sample a 100
         at 10000
         sample a 85
         at 20000
         sample a 100
         at 30000
         sample a 100
         at 80000
         sample a 50",
        "0 pending a since=0 v=100
         0 fired a since=0
         80000 resolved a",
    );
}

#[test]
fn restart_resumes_pending_and_firing() {
    check(
        threshold(60_000, 0, None, Aggregation::Last),
        "sample a 95
         at 10000
         sample b 95
         at 30000
         restart
         at 59999
         tick
         at 60000
         tick
         restart
         at 70000
         tick
         restart
         tick
         sample a 95",
        "0 pending a since=0 v=95
         10000 pending b since=10000 v=95
         60000 fired a since=0
         70000 fired b since=10000",
    );
}

#[test]
fn restart_grace_moves_an_offline_clock() {
    check(
        presence(300_000),
        "at 1000
         on a
         at 200000
         restart floor=500000
         on b 2000
         at 600000
         off a
         at 799999
         tick
         at 800000
         tick",
        "1000 pending a since=1000
         200000 pending b since=500000
         600000 cleared a
         800000 fired b since=500000",
    );
}

#[test]
fn a_manual_resolve_starts_over() {
    check(
        presence(60_000),
        "on a 0
         at 60000
         tick
         at 70000
         reset a
         on a 0
         at 129999
         tick
         at 130000
         tick",
        "0 pending a since=0
         60000 fired a since=0
         70000 pending a since=70000
         130000 fired a since=70000",
    );
}

#[test]
fn forgetting_an_agent_ends_its_alert() {
    check(
        presence(60_000),
        "on a
         on b
         at 60000
         tick
         on c
         forget b
         forget c
         forget a",
        "0 pending a since=0
         0 pending b since=0
         60000 fired a since=0
         60000 fired b since=0
         60000 pending c since=60000
         60000 resolved b
         60000 cleared c
         60000 resolved a",
    );
}

#[test]
fn a_condition_older_than_for_fires_at_once() {
    check(
        presence(60_000),
        "at 500000
         on a 1000
         off a",
        "500000 pending a since=1000
         500000 fired a since=1000
         500000 resolved a",
    );
}

#[test]
fn the_worst_series_is_picked_without_a_label() {
    let v = |label: &str, value: f64| SeriesValue {
        metric: Metric::DiskUsedPercent,
        label: label.into(),
        value,
    };
    let values = [v("/", 50.0), v("/data", 95.0), v("/boot", 10.0)];
    let pick = |label, op| pick_value(&values, Metric::DiskUsedPercent, label, op);
    assert_eq!(pick(None, Operator::Gt), Some(95.0));
    assert_eq!(pick(None, Operator::Le), Some(10.0));
    assert_eq!(pick(Some("/"), Operator::Gt), Some(50.0));
    assert_eq!(pick(Some("/home"), Operator::Gt), None);
    assert_eq!(
        pick_value(&values, Metric::CpuPercent, None, Operator::Gt),
        None
    );
}

#[test]
fn a_threshold_holds_from_when_its_sample_was_taken() {
    check(
        threshold(30_000, 0, None, Aggregation::Last),
        "at 5000
         sample a 95 @2000
         at 31999
         tick
         at 32000
         tick
         at 60000
         sample b 95 @1000",
        "5000 pending a since=2000 v=95
         32000 fired a since=2000
         60000 pending b since=50000 v=95",
    );
}

#[test]
fn the_next_wake_is_the_earliest_deadline() {
    check(
        threshold(30_000, 10_000, None, Aggregation::Last),
        "wake
         sample a 95
         at 5000
         sample b 95
         restart
         wake
         at 30000
         tick
         wake
         sample a 50
         wake
         at 35000
         tick
         wake
         at 40000
         tick
         wake",
        "0 wake=none
         0 pending a since=0 v=95
         5000 pending b since=5000 v=95
         5000 wake=30000
         30000 fired a since=0
         30000 wake=35000
         30000 wake=35000
         35000 fired b since=5000
         35000 wake=40000
         40000 resolved a
         40000 wake=none",
    );
}
