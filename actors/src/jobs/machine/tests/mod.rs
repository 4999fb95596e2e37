//! A deterministic rig for [`JobMachine`]: no sockets, no database, no sleeping. A scenario is a
//! few lines of text, one input per line; the rig plays the driver (deliveries answered from the
//! set of connected agents, batches committed against a tiny store with the same terminal guard,
//! flush timers fired as soon as the line is handled) and writes each effect as one line, which
//! [`check`] compares with the expected text.
//!
//! Scenario lines (`#` starts a comment):
//!
//! | line | meaning |
//! |---|---|
//! | `job a b c [timeout=S] [grace=MS] [batch=N] [expires=MS] [cancelled]` | a new job, every target queued (timeout 10 s, grace 2000 ms by default) |
//! | `resume a=running@T b=succeeded … [reconnect=MS] [options as for job]` | a job reloaded after a restart (`@T`: its `dispatched_at`; `reconnect`: the time agents may take to notice the restart, 0 by default) |
//! | `start [a b …]` | these agents are connected; the driver starts the machine |
//! | `at T` | the clock moves to T ms |
//! | `online a` / `gone a` | the agent connects (hello) / loses its connection (no input: the machine learns it from a failed delivery) |
//! | `ack a` / `dup a` / `refuse a` / `started a [T]` / `output a TEXT` | the agent's `JobAck` (accepted, duplicate, refused), `JobStarted`, `JobOutput` |
//! | `result a STATE` | the agent's `JobResult` (`succeeded`, `failed`, `timed_out`, `cancelled`, `refused`) |
//! | `results STATE a b …` | results of several agents, with no timer firing in between |
//! | `cancel` / `tick` / `retired` | an operator's cancel / a timer tick / the supervisor's answer to `retire` |
//! | `drain [a b …]` | the node shuts down; these agents are still connected to it |
//! | `hold` | from now on, batches wait for `commit` (commits) or `fail` (the commit fails) |
//! | `stored a` | the store already has a terminal outcome for `a` (written by another path) |
//! | `show events` / `show metrics` | also log published events / counters |
//! | `?` | log every target's state |
//!
//! Effect lines: `dispatch a` (or `dispatch a (not here)`), `cancel a` (JobCancel), `ack a`
//! (JobResultAck), `persist #N a:dispatched@T … | b:succeeded …`, `flush in MS` (only for a delay
//! other than the usual), `event …`, `count …`, `finish STATUS`, `retire`, `stop`, `drained`; and
//! `dropped: …` for an input fed after `stop` (as an actor's mailbox drops it).
//!
//! ## Transitions, one test per row
//!
//! | # | from | input | outcome | test |
//! |---|---|---|---|---|
//! | 1 | queued | start, agent connected | dispatched (step written at the next flush) | `steps::start_dispatches_to_connected_agents` |
//! | 2 | queued | start, agent not here | stays queued | `steps::an_undelivered_dispatch_leaves_the_target_queued` |
//! | 3 | queued | agent online | dispatched | `steps::an_agent_coming_online_gets_its_queued_job` |
//! | 4 | dispatched | `JobAck::Accepted` | acked | `steps::steps_between_two_flushes_are_one_write` |
//! | 5 | acked | `JobStarted` | running (one step carrying dispatch and ack times) | `steps::steps_between_two_flushes_are_one_write` |
//! | 6 | dispatched | `JobAck::Refused` | failed, no ack | `steps::a_refused_dispatch_fails_the_target` |
//! | 7 | dispatched | `JobAck::Duplicate` | unchanged | `steps::a_duplicate_ack_changes_nothing` |
//! | 8 | running | late `JobAck` | unchanged (steps only move forward) | `steps::steps_never_go_backwards` |
//! | 9 | — | message from an agent that is not a target | ignored | `steps::a_stranger_is_ignored` |
//! | 10 | running | output chunk | published, nothing written | `steps::output_is_published_not_written` |
//! | 11 | dispatched, acked, running | tick past timeout + grace | timed_out | `deadlines::no_result_within_timeout_and_grace_is_timed_out` |
//! | 12 | queued | tick at `expires_at` | expired (dispatched targets are not) | `deadlines::queued_targets_expire` |
//! | 13 | queued | cancel | cancelled at once | `deadlines::cancel_while_queued_is_immediate` |
//! | 14 | dispatched | cancel | JobCancel, cancelled after the grace | `deadlines::cancel_while_dispatched_waits_a_grace` |
//! | 15 | acked | cancel | JobCancel, cancelled after the grace (or its earlier deadline) | `deadlines::cancel_while_acked_keeps_an_earlier_deadline` |
//! | 16 | running | cancel, then the agent's cancelled result | cancelled by the agent, acked | `deadlines::cancel_while_running_takes_the_agents_result` |
//! | 17 | terminal | cancel (twice) | unchanged; one cancelling event | `deadlines::cancel_after_the_end_changes_nothing` |
//! | 18 | running | result succeeded | succeeded, acked only after the commit | `results::a_result_is_acked_only_after_its_commit` |
//! | 19 | running | result failed / refused | failed (refused: with the reason) | `results::failed_and_refused_results_are_failed` |
//! | 20 | terminal (committed) | duplicate result | acked at once, nothing written | `results::a_duplicate_result_is_acked_at_once` |
//! | 21 | terminal (committing) | duplicate result | acked after the commit | `results::a_duplicate_during_the_commit_is_acked_after_it` |
//! | 22 | timed_out | late result | stays timed_out, result acked | `results::a_late_result_after_a_timeout_is_acked_not_stored` |
//! | 23 | running | result the store already has | not applied: counted duplicate, acked, no event | `results::a_result_the_store_already_has_is_acked` |
//! | 24 | any | commit fails | same batch retried after the retry delay; acks only then | `results::a_failed_commit_is_retried_before_any_ack` |
//! | 25 | any | commit fails while more results arrive | the retry carries both | `results::a_retry_carries_what_arrived_meanwhile` |
//! | 26 | all terminal | last commit | finish, retire, stop once the supervisor answers | `results::the_job_finishes_then_retires_then_stops` |
//! | 27 | all terminal (retiring) | outbox replay | acked (the flaky bench test) | `results::a_replay_during_retirement_is_acked` |
//! | 28 | — | 512 results pending | flushed at once | `results::many_results_flush_at_once` |
//! | 29 | queued (batch full) | a result frees a slot | next queued dispatched | `resume::a_rolling_batch_refills_after_each_commit` |
//! | 30 | queued (batch) | undelivered offer | slot goes to the next reachable target | `resume::an_undelivered_batch_slot_goes_to_the_next_target` |
//! | 31 | dispatched, acked, running | restart | deadline extended to a grace from now, dispatched again | `resume::a_restart_resumes_with_extended_deadlines` |
//! | 31a | running (result kept, agent silent) | restart, result a heartbeat later | the agent's real result stored, not timed_out | `resume::a_restart_waits_a_heartbeat_for_agents_to_notice` |
//! | 32 | queued, running | restart of a cancelled job | cancelled / JobCancel | `resume::a_restart_of_a_cancelled_job_applies_the_cancel` |
//! | 33 | terminal (all) | restart | finishes at once | `resume::a_restart_with_every_target_done_finishes` |
//! | 34 | dispatched, acked, running | agent reconnects | dispatched again, state unchanged | `resume::a_reconnect_dispatches_every_open_target_again` |
//! | 35 | running (cancelled job) | agent reconnects | JobCancel again, no dispatch | `resume::a_reconnect_during_a_cancel_repeats_the_cancel` |
//! | 36 | running (live agent) | drain, then the result | committed and acked, then drained; queued targets not dispatched | `drain::a_drain_waits_for_results_of_live_agents` |
//! | 37 | running (agent gone) | drain | drained at once (the agent replays after the restart) | `drain::a_drain_does_not_wait_for_agents_that_are_gone` |
//! | 38 | terminal (committing) | drain | drained only after the commit | `drain::a_drain_waits_for_the_commit_in_flight` |

mod deadlines;
mod drain;
mod results;
mod resume;
mod steps;

use std::collections::BTreeSet;

use reap3r_store::{Job, JobStatus, JobTargetGrant, TargetOutcome, TargetState, Uuid};
use reap3r_wire::{JobAckOutcome, JobEnd, JobOutput, JobResult, OutputStream};

use super::{Batch, Effect, FLUSH_DELAY_MS, Input, JobMachine, Metric, SignedTarget};
use crate::FleetEvent;
use crate::jobs::AgentJobEvent;

/// Runs `scenario` and compares the effects it produced, line by line, with `expected`.
#[track_caller]
pub(super) fn check(scenario: &str, expected: &str) {
    let got = Rig::play(scenario);
    let want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got_refs: Vec<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(
        got_refs,
        want,
        "\nscenario:\n{scenario}\n\ngot:\n{}\n",
        got.join("\n")
    );
}

const JOB: u128 = 0x10b;
const ORG: u128 = 0x0e9;

struct Rig {
    machine: Option<JobMachine>,
    now: u64,
    names: Vec<String>,
    connected: BTreeSet<Uuid>,
    /// Targets the store holds as terminal (its guard: a second outcome is not applied).
    store: BTreeSet<Uuid>,
    hold: bool,
    held: Option<Batch>,
    /// Flush timers asked for and not fired yet.
    flush_due: usize,
    show_events: bool,
    show_metrics: bool,
    /// The driver stopped: like an actor's mailbox, whatever is fed now is dropped.
    stopped: bool,
    log: Vec<String>,
}

/// The sealed env bytes the rig gives each target (distinct per agent, as in a real job).
fn sealed_of(name: &str) -> Vec<u8> {
    format!("sealed:{name}").into_bytes()
}

fn agent(names: &mut Vec<String>, name: &str) -> Uuid {
    let idx = match names.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            names.push(name.to_string());
            names.len() - 1
        }
    };
    Uuid::from_u128(idx as u128 + 1)
}

fn state(name: &str) -> TargetState {
    name.parse()
        .unwrap_or_else(|_| panic!("unknown target state {name}"))
}

impl Rig {
    fn play(scenario: &str) -> Vec<String> {
        let mut rig = Rig {
            machine: None,
            now: 0,
            names: Vec::new(),
            connected: BTreeSet::new(),
            store: BTreeSet::new(),
            hold: false,
            held: None,
            flush_due: 0,
            show_events: false,
            show_metrics: false,
            stopped: false,
            log: Vec::new(),
        };
        for line in scenario.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                rig.line(line);
                rig.settle();
            }
        }
        rig.log
    }

    fn id(&mut self, name: &str) -> Uuid {
        agent(&mut self.names, name)
    }

    fn name(&self, id: Uuid) -> String {
        let idx = id.as_u128() as usize;
        self.names
            .get(idx.wrapping_sub(1))
            .cloned()
            .unwrap_or_else(|| format!("{id}"))
    }

    fn line(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| -> &str {
            words
                .get(i)
                .copied()
                .unwrap_or_else(|| panic!("`{line}` needs an argument"))
        };
        match words[0] {
            "job" | "resume" => self.job(words[0] == "resume", &words[1..]),
            "start" => {
                for name in &words[1..] {
                    let id = self.id(name);
                    self.connected.insert(id);
                }
                self.input(Input::Start);
            }
            "at" => {
                self.now = arg(1)
                    .parse()
                    .unwrap_or_else(|_| panic!("time in `{line}`"))
            }
            "online" => {
                let id = self.id(arg(1));
                self.connected.insert(id);
                self.input(Input::AgentOnline(id));
            }
            "gone" => {
                let id = self.id(arg(1));
                self.connected.remove(&id);
            }
            "ack" => self.agent_event(arg(1), AgentJobEvent::Ack(JobAckOutcome::Accepted)),
            "dup" => self.agent_event(arg(1), AgentJobEvent::Ack(JobAckOutcome::Duplicate)),
            "refuse" => self.agent_event(
                arg(1),
                AgentJobEvent::Ack(JobAckOutcome::Refused("bad grant".into())),
            ),
            "started" => {
                let at_ms = words.get(2).map_or(self.now, |t| t.parse().unwrap_or(0));
                self.agent_event(arg(1), AgentJobEvent::Started { at_ms })
            }
            "output" => {
                let out = JobOutput {
                    job_id: Uuid::from_u128(JOB).into_bytes(),
                    stream: OutputStream::Stdout,
                    offset: 0,
                    data: words[2..].join(" ").into_bytes(),
                };
                self.agent_event(arg(1), AgentJobEvent::Output(out))
            }
            "result" => {
                let result = self.result(arg(2));
                self.agent_event(arg(1), AgentJobEvent::Result(Box::new(result)))
            }
            // Results of several agents arriving before any timer fires.
            "results" => {
                for name in &words[2..] {
                    let result = self.result(arg(1));
                    self.agent_event(name, AgentJobEvent::Result(Box::new(result)))
                }
            }
            "cancel" => self.input(Input::Cancel),
            "tick" => self.input(Input::Tick),
            "retired" => self.input(Input::Retired),
            "drain" => {
                let live = words[1..].iter().map(|name| self.id(name)).collect();
                self.input(Input::Drain { live });
            }
            "hold" => self.hold = true,
            "commit" => self.commit(true),
            "fail" => self.commit(false),
            "stored" => {
                let id = self.id(arg(1));
                self.store.insert(id);
            }
            "show" => match arg(1) {
                "events" => self.show_events = true,
                "metrics" => self.show_metrics = true,
                other => panic!("show {other}?"),
            },
            "?" => self.show_states(),
            other => panic!("unknown scenario line `{other}`"),
        }
    }

    fn job(&mut self, resume: bool, words: &[&str]) {
        let mut job = Job {
            id: Uuid::from_u128(JOB),
            org_id: Uuid::from_u128(ORG),
            job_type: "run_script".into(),
            payload: serde_json::Value::Null,
            spec_hex: hex::encode(b"spec"),
            targets: serde_json::Value::Null,
            created_by: "test".into(),
            created_at: 0,
            timeout_s: 10,
            expires_at: None,
            batch_size: None,
            status: JobStatus::Active,
            cancel_requested_at: None,
            finished_at: None,
            total_targets: 0,
        };
        let mut grace = 2_000;
        let mut reconnect = 0;
        let mut rows = Vec::new();
        for w in words {
            let number = |v: &str| -> i64 { v.parse().unwrap_or_else(|_| panic!("number in {w}")) };
            match w.split_once('=') {
                Some(("timeout", v)) => job.timeout_s = number(v),
                Some(("grace", v)) => grace = number(v) as u64,
                Some(("reconnect", v)) => reconnect = number(v) as u64,
                Some(("batch", v)) => job.batch_size = Some(number(v)),
                Some(("expires", v)) => job.expires_at = Some(number(v)),
                Some((name, st)) if resume => {
                    let (st, dispatched_at) = match st.split_once('@') {
                        Some((st, at)) => (st, Some(number(at))),
                        None => (st, None),
                    };
                    let agent_id = self.id(name);
                    let state = state(st);
                    if state.is_terminal() {
                        self.store.insert(agent_id);
                    }
                    rows.push(JobTargetGrant {
                        agent_id,
                        state,
                        dispatched_at,
                        grant_hex: hex::encode(name),
                        signature_hex: hex::encode(b"sig"),
                        sealed_hex: Some(hex::encode(sealed_of(name))),
                    });
                }
                None if *w == "cancelled" => job.cancel_requested_at = Some(0),
                None => {
                    let agent_id = self.id(w);
                    rows.push(JobTargetGrant {
                        agent_id,
                        state: TargetState::Queued,
                        dispatched_at: None,
                        grant_hex: hex::encode(w),
                        signature_hex: hex::encode(b"sig"),
                        sealed_hex: Some(hex::encode(sealed_of(w))),
                    });
                }
                Some(_) => panic!("unknown job option {w}"),
            }
        }
        job.total_targets = rows.len() as i64;
        self.machine = Some(if resume {
            JobMachine::resume(job, rows, self.now, grace, reconnect)
        } else {
            let grants = rows.into_iter().map(|r| {
                let signed = SignedTarget {
                    grant: hex::decode(r.grant_hex).unwrap_or_default(),
                    signature: b"sig".to_vec(),
                    sealed: hex::decode(r.sealed_hex.unwrap_or_default()).unwrap_or_default(),
                };
                (r.agent_id, signed)
            });
            JobMachine::new(job, grants, grace)
        });
    }

    fn result(&self, end: &str) -> JobResult {
        let end = match end {
            "succeeded" => JobEnd::Succeeded,
            "failed" => JobEnd::Failed,
            "timed_out" => JobEnd::TimedOut,
            "cancelled" => JobEnd::Cancelled,
            "refused" => JobEnd::Refused,
            other => panic!("unknown job end {other}"),
        };
        JobResult {
            job_id: Uuid::from_u128(JOB).into_bytes(),
            end,
            exit_code: matches!(end, JobEnd::Succeeded).then_some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            data: None,
            error: None,
            started_at_ms: 0,
            finished_at_ms: self.now,
        }
    }

    fn agent_event(&mut self, name: &str, event: AgentJobEvent) {
        let agent_id = self.id(name);
        self.input(Input::FromAgent { agent_id, event });
    }

    /// Feeds one input, then the answers to its effects (deliveries, auto-commits), in order.
    fn input(&mut self, input: Input) {
        if self.stopped {
            let what = match &input {
                Input::FromAgent {
                    agent_id,
                    event: AgentJobEvent::Result(_),
                } => format!("result of {}", self.name(*agent_id)),
                other => format!("{other:?}"),
            };
            self.log.push(format!("dropped: {what}"));
            return;
        }
        let mut inputs = vec![input];
        while !inputs.is_empty() {
            let input = inputs.remove(0);
            let now = self.now;
            let machine = self
                .machine
                .as_mut()
                .unwrap_or_else(|| panic!("no job yet"));
            let effects = machine.handle(now, input);
            for effect in effects {
                if let Some(next) = self.effect(effect) {
                    inputs.push(next);
                }
            }
        }
    }

    fn effect(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Dispatch { agent_id, dispatch } => {
                let name = self.name(agent_id);
                assert_eq!(
                    dispatch.grant,
                    name.as_bytes(),
                    "dispatch carries its grant"
                );
                assert_eq!(
                    dispatch.sealed,
                    sealed_of(&name),
                    "dispatch carries its target's sealed secrets, also after a resume"
                );
                let delivered = self.connected.contains(&agent_id);
                self.log.push(if delivered {
                    format!("dispatch {name}")
                } else {
                    format!("dispatch {name} (not here)")
                });
                return Some(Input::Delivery {
                    agent_id,
                    delivered,
                });
            }
            Effect::SendCancel { agent_id } => {
                let line = format!("cancel {}", self.name(agent_id));
                self.log.push(line);
            }
            Effect::AckResult { agent_id } => {
                let line = format!("ack {}", self.name(agent_id));
                self.log.push(line);
            }
            Effect::Persist(batch) => {
                let line = self.render_batch(&batch);
                self.log.push(line);
                assert!(self.held.is_none(), "one batch in flight at a time");
                self.held = Some(batch);
                if !self.hold {
                    return self.answer_commit(true);
                }
            }
            Effect::ScheduleFlush { after_ms } => {
                if after_ms != FLUSH_DELAY_MS {
                    self.log.push(format!("flush in {after_ms}ms"));
                }
                self.flush_due += 1;
            }
            Effect::Publish(event) => {
                if self.show_events {
                    let line = self.render_event(&event);
                    self.log.push(line);
                }
            }
            Effect::Count(metric) => {
                if self.show_metrics {
                    self.log.push(match metric {
                        Metric::ResultStored => "count stored".into(),
                        Metric::ResultDuplicate => "count duplicate".into(),
                    });
                }
            }
            Effect::FinishJob(status) => {
                self.log.push(format!("finish {status}"));
                return Some(Input::FinishRecorded { recorded: true });
            }
            Effect::Retire => self.log.push("retire".into()),
            Effect::Drained => self.log.push("drained".into()),
            Effect::Stop => {
                self.log.push("stop".into());
                self.stopped = true;
            }
        }
        None
    }

    fn commit(&mut self, ok: bool) {
        if let Some(input) = self.answer_commit(ok) {
            self.input(input);
        }
    }

    /// The store's side of a commit: an outcome is applied unless its target is terminal.
    fn answer_commit(&mut self, ok: bool) -> Option<Input> {
        let batch = self.held.take()?;
        if !ok {
            return Some(Input::CommitFailed {
                commit: batch.commit,
            });
        }
        let applied = batch
            .outcomes
            .iter()
            .map(|o| self.store.insert(o.agent_id))
            .collect();
        Some(Input::Committed {
            commit: batch.commit,
            applied,
        })
    }

    /// Fires the flush timer until nothing more is scheduled (a held batch waits).
    fn settle(&mut self) {
        while self.flush_due > 0 && self.machine.is_some() {
            self.flush_due -= 1;
            self.input(Input::Flush);
        }
    }

    fn render_batch(&self, batch: &Batch) -> String {
        let mut line = format!("persist #{}", batch.commit);
        for s in &batch.steps {
            line += &format!(" {}:{}@{}", self.name(s.agent_id), s.to, s.at_ms);
            line += &times(&[("d", s.dispatched_at), ("a", s.acked_at)]);
        }
        if !batch.outcomes.is_empty() {
            line += " |";
        }
        for o in &batch.outcomes {
            line += &format!(" {}", self.render_outcome(o));
        }
        line
    }

    fn render_outcome(&self, o: &TargetOutcome) -> String {
        let mut s = format!("{}:{}@{}", self.name(o.agent_id), o.state, o.finished_at);
        s += &times(&[
            ("d", o.dispatched_at),
            ("a", o.acked_at),
            ("s", o.started_at),
        ]);
        if let Some(e) = &o.error {
            s += &format!(" \"{e}\"");
        }
        s
    }

    fn render_event(&self, event: &FleetEvent) -> String {
        match event {
            FleetEvent::JobUpdate {
                agent_id,
                state,
                counts,
                ..
            } => {
                let who = agent_id.map_or("job".to_string(), |a| self.name(a));
                format!(
                    "event {who} {state} (finished {}/{})",
                    counts.finished(),
                    counts.total()
                )
            }
            FleetEvent::JobOutput {
                agent_id,
                stream,
                data,
                ..
            } => format!("event output {} {stream} \"{data}\"", self.name(*agent_id)),
            other => format!("event {other:?}"),
        }
    }

    fn show_states(&mut self) {
        let machine = self
            .machine
            .as_ref()
            .unwrap_or_else(|| panic!("no job yet"));
        let states: Vec<String> = (1..=self.names.len())
            .filter_map(|i| {
                let id = Uuid::from_u128(i as u128);
                machine
                    .state(id)
                    .map(|s| format!("{}:{s}", self.names[i - 1]))
            })
            .collect();
        self.log.push(format!("= {}", states.join(" ")));
    }
}

/// `(d1,a2)`: the step times a write carries besides its own, if any.
fn times(parts: &[(&str, Option<i64>)]) -> String {
    let set: Vec<String> = parts
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}{v}")))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("({})", set.join(","))
    }
}

#[test]
fn the_rig_names_agents_in_order_of_appearance() {
    let mut names = Vec::new();
    assert_eq!(agent(&mut names, "a"), Uuid::from_u128(1));
    assert_eq!(agent(&mut names, "b"), Uuid::from_u128(2));
    assert_eq!(agent(&mut names, "a"), Uuid::from_u128(1));
}
