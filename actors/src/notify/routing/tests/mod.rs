//! A deterministic rig for [`RoutingCore`]: no database, no sockets, no sleeping. A scenario is
//! a few lines of text; the rig plays the driver — it fires every wake the core asked for, in
//! order, as time moves, keeps the groups the core reports dirty as the store would and the
//! alert event rows as alerting commits them (so `restart` rebuilds the core from exactly what
//! was persisted and reconciles it with the rows) — and writes each enqueued message as one
//! line, which [`check`] compares with the expected text.
//!
//! Scenario lines (`#` starts a comment; T is a duration from the start like `5m30s`, or an
//! instant like `2027-03-28T00:00:00Z` after `start`):
//!
//! | line | meaning |
//! |---|---|
//! | `start INSTANT` | the clock starts at INSTANT (times print as instants) |
//! | `policy P [to=i,j] [sev=s,..] [tags=t,..] [folders=f,..] [by=rule,agent,..] [wait=D] [interval=D] [repeat=D] [escalate=D:i+j,D:k] [off]` | adds or replaces a policy (default: to=mail, Alertmanager's timers) |
//! | `silence S [rule=r] [agent=a] [tag=t] [sev=s] [org] [from=T] until=T` / `unsilence S` | adds / deletes a silence |
//! | `window W once from=T until=T [tags=..] [folders=..]` | a one-off maintenance window |
//! | `window W weekly days=sun,.. at=HH:MM for=D tz=ZONE [tags=..] [folders=..]` | a weekly one |
//! | `fire A,B \| h1..hN [rule=r] [sev=s] [tags=..] [folder=f] [org=o]` | alerts fire (rule `cpu`, critical, by default) |
//! | `resolve A,..` / `ack A,..` (same `rule=`) | they resolve / are acknowledged |
//! | `snooze A,.. until=T` (same `rule=`) | an operator snoozes them (a later `fire` of a snoozed pending alert carries it) |
//! | any of these four `... lost` | committed, but the change never reaches routing (a crash between the two) |
//! | `at T` | time moves to T, every wake due on the way fired in order |
//! | `restart` | a new core from the persisted groups and the same configuration, fed what it missed |
//!
//! Effect lines: `TIME INTEGRATION KIND TOTAL SAMPLE`, the sample as hostnames (or `N sampled`
//! past five).

mod escalation;
mod grouping;
mod maintenance;
mod reconcile;
mod schedule;
mod silences;
mod snooze;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use reap3r_store::{AlertEvent, Uuid};

use super::*;
use crate::alerts::{AgentFacts, AlertChange, AlertChangeKind, Severity};
use crate::notify::NotificationKind;

/// Runs `scenario` and compares the messages it produced, line by line, with `expected`.
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

/// A stable id for a name of a kind (`agent`, `rule`, …), so scenarios need no UUIDs.
pub(super) fn id(kind: &str, name: &str) -> Uuid {
    let hash = blake3::hash(format!("{kind}:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    Uuid::from_bytes(bytes)
}

const ORG: &str = "acme";

struct Rig {
    core: RoutingCore,
    config: RoutingConfig,
    base: i64,
    now: i64,
    instants: bool,
    wakes: BTreeSet<i64>,
    /// What the store holds, as the driver writes it: group id → JSON.
    persisted: BTreeMap<GroupId, String>,
    /// How many times each (rule, agent) alert has resolved, so a new firing is a new event.
    generation: HashMap<(String, String), u32>,
    /// Each (rule, agent) alert's current snooze, as alert_events holds it.
    snoozes: HashMap<(String, String), i64>,
    /// The alert_events rows, as alerting commits them (whether routing heard or not).
    rows: BTreeMap<Uuid, AlertEvent>,
    agent_facts: HashMap<Uuid, AgentFacts>,
    names: HashMap<Uuid, String>,
    log: Vec<String>,
}

impl Rig {
    fn play(scenario: &str) -> Vec<String> {
        let mut rig = Rig {
            core: RoutingCore::new(RoutingConfig::default(), Vec::new()),
            config: RoutingConfig::default(),
            base: 0,
            now: 0,
            instants: false,
            wakes: BTreeSet::new(),
            persisted: BTreeMap::new(),
            generation: HashMap::new(),
            snoozes: HashMap::new(),
            rows: BTreeMap::new(),
            agent_facts: HashMap::new(),
            names: HashMap::new(),
            log: Vec::new(),
        };
        for line in scenario.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                rig.line(line);
                // The driver persists once per batch of inputs; a line is one batch.
                rig.persist();
            }
        }
        rig.log
    }

    fn line(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        let (args, opts) = split_opts(&rest);
        match verb {
            "start" => {
                self.base = instant(args[0]);
                self.now = self.base;
                self.instants = true;
            }
            "policy" => self.policy(args[0], &opts),
            "silence" => self.silence(args[0], &opts),
            "unsilence" => {
                let gone = id("silence", args[0]);
                self.config.silences.retain(|s| s.id != gone);
                self.reconfigure();
            }
            "window" => self.window(args[0], args[1], &opts),
            "fire" => self.alerts(AlertChangeKind::Fired, args[0], &opts),
            "resolve" => self.alerts(AlertChangeKind::Resolved, args[0], &opts),
            "ack" => self.alerts(AlertChangeKind::Acked, args[0], &opts),
            "snooze" => self.alerts(AlertChangeKind::Snoozed, args[0], &opts),
            "at" => self.run_until(self.time(args[0])),
            "restart" => {
                let groups = self
                    .persisted
                    .values()
                    .map(|json| serde_json::from_str(json).unwrap())
                    .collect();
                // Anything not persisted yet is lost, as in a crash; the rows tell what was.
                self.core = RoutingCore::new(self.config.clone(), groups);
                let rows: Vec<AlertEvent> = self.rows.values().cloned().collect();
                let missed = missed_changes(self.core.groups(), &rows, &self.agent_facts, self.now);
                for change in missed {
                    let effects = self.core.handle(self.now, Input::Change(change));
                    self.apply(effects);
                }
                let effects = self.core.handle(self.now, Input::Tick);
                self.apply(effects);
            }
            other => panic!("unknown scenario line {other:?}"),
        }
    }

    fn time(&self, text: &str) -> i64 {
        if text.contains('T') {
            instant(text)
        } else {
            self.base + duration_ms(text)
        }
    }

    fn fmt_time(&self, ms: i64) -> String {
        if self.instants {
            Timestamp::from_millisecond(ms).unwrap().to_string()
        } else {
            fmt_duration(ms - self.base)
        }
    }

    fn integration(&mut self, name: &str) -> Uuid {
        let uuid = id("integration", name);
        self.names.insert(uuid, name.to_owned());
        uuid
    }

    fn integrations(&mut self, list: &str) -> Vec<Uuid> {
        list.split('+').map(|n| self.integration(n)).collect()
    }

    fn policy(&mut self, name: &str, opts: &HashMap<&str, &str>) {
        let list = |key: &str| -> Vec<String> {
            opts.get(key)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let to = opts.get("to").copied().unwrap_or("mail").to_owned();
        let integrations = to.split(',').map(|n| self.integration(n)).collect();
        let escalation = list("escalate")
            .iter()
            .map(|step| {
                let (after, to) = step.split_once(':').unwrap();
                EscalationStep {
                    after_minutes: duration_ms(after) / 60_000,
                    integrations: self.integrations(to),
                }
            })
            .collect();
        let secs =
            |key: &str, default: i64| opts.get(key).map_or(default, |d| duration_ms(d) / 1000);
        let spec = PolicySpec {
            name: name.to_owned(),
            enabled: !opts.contains_key("off"),
            severities: list("sev").iter().map(|s| s.parse().unwrap()).collect(),
            tags: list("tags"),
            folder_ids: list("folders").iter().map(|f| id("folder", f)).collect(),
            integrations,
            group_by: list("by")
                .iter()
                .map(|l| serde_json::from_value(serde_json::json!(l)).unwrap())
                .collect(),
            group_wait_s: secs("wait", DEFAULT_GROUP_WAIT_S),
            group_interval_s: secs("interval", DEFAULT_GROUP_INTERVAL_S),
            repeat_interval_s: secs("repeat", DEFAULT_REPEAT_INTERVAL_S),
            escalation,
        }
        .validated()
        .unwrap();
        let policy = Policy {
            id: id("policy", name),
            org_id: id("org", ORG),
            spec,
        };
        self.config.policies.retain(|p| p.id != policy.id);
        self.config.policies.push(policy);
        self.reconfigure();
    }

    fn silence(&mut self, name: &str, opts: &HashMap<&str, &str>) {
        let org = id("org", ORG);
        let mut matchers = Vec::new();
        for (key, value) in opts {
            matchers.push(match *key {
                "rule" => Matcher::Rule(id("rule", value)),
                "agent" => Matcher::Agent(id("agent", value)),
                "tag" => Matcher::Tag((*value).to_owned()),
                "sev" => Matcher::Severity(value.parse().unwrap()),
                "org" => Matcher::Org(org),
                _ => continue,
            });
        }
        let spec = SilenceSpec {
            matchers,
            starts_at_ms: opts.get("from").map_or(self.now, |t| self.time(t)),
            ends_at_ms: self.time(opts["until"]),
            comment: format!("silence {name}"),
        }
        .validated(org)
        .unwrap();
        let silence = Silence {
            id: id("silence", name),
            org_id: org,
            created_by: "rig".into(),
            spec,
        };
        self.config.silences.retain(|s| s.id != silence.id);
        self.config.silences.push(silence);
        self.reconfigure();
    }

    fn window(&mut self, name: &str, kind: &str, opts: &HashMap<&str, &str>) {
        let list = |key: &str| -> Vec<String> {
            opts.get(key)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let schedule = match kind {
            "once" => Schedule::Once {
                starts_at_ms: self.time(opts["from"]),
                ends_at_ms: self.time(opts["until"]),
            },
            "weekly" => Schedule::Weekly {
                weekdays: list("days")
                    .iter()
                    .map(|d| serde_json::from_value(serde_json::json!(d)).unwrap())
                    .collect(),
                start_time: opts["at"].to_owned(),
                duration_minutes: duration_ms(opts["for"]) / 60_000,
                time_zone: opts["tz"].to_owned(),
            },
            other => panic!("unknown window kind {other:?}"),
        };
        let spec = WindowSpec {
            name: name.to_owned(),
            scope: WindowScope {
                folder_ids: list("folders").iter().map(|f| id("folder", f)).collect(),
                tags: list("tags"),
            },
            schedule,
        }
        .validated()
        .unwrap();
        let window = MaintenanceWindow {
            id: id("window", name),
            org_id: id("org", ORG),
            spec,
        };
        self.config.windows.retain(|w| w.id != window.id);
        self.config.windows.push(window);
        self.reconfigure();
    }

    fn reconfigure(&mut self) {
        let effects = self
            .core
            .handle(self.now, Input::Config(self.config.clone()));
        self.apply(effects);
    }

    fn alerts(&mut self, kind: AlertChangeKind, who: &str, opts: &HashMap<&str, &str>) {
        let rule = opts.get("rule").copied().unwrap_or("cpu");
        for agent in agents(who) {
            let key = (rule.to_owned(), agent.clone());
            let generation = *self.generation.get(&key).unwrap_or(&0);
            if kind == AlertChangeKind::Snoozed {
                self.snoozes.insert(key.clone(), self.time(opts["until"]));
            }
            let snoozed_until_ms = self.snoozes.get(&key).copied();
            if kind == AlertChangeKind::Resolved {
                self.snoozes.remove(&key);
                self.generation.insert(key, generation + 1);
            }
            let change = AlertChange {
                event_id: id("event", &format!("{rule}/{agent}/{generation}")),
                rule_id: id("rule", rule),
                rule_name: rule.to_owned(),
                org_id: id("org", opts.get("org").copied().unwrap_or(ORG)),
                agent_id: Some(id("agent", &agent)),
                hostname: Some(agent.clone()),
                agent_tags: opts
                    .get("tags")
                    .map(|t| t.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                folder_id: opts.get("folder").map(|f| id("folder", f)),
                severity: opts
                    .get("sev")
                    .map_or(Severity::Critical, |s| s.parse().unwrap()),
                kind,
                fired_at_ms: self.now,
                at_ms: self.now,
                summary: format!("{rule} on {agent}"),
                value: None,
                snoozed_until_ms,
            };
            self.commit(&change);
            if !opts.contains_key("lost") {
                let effects = self.core.handle(self.now, Input::Change(change));
                self.apply(effects);
            }
        }
    }

    /// What alerting writes to alert_events for `change`.
    fn commit(&mut self, c: &AlertChange) {
        if let Some(agent) = c.agent_id {
            self.agent_facts.insert(
                agent,
                AgentFacts {
                    hostname: c.hostname.clone(),
                    tags: c.agent_tags.clone(),
                    folder_id: c.folder_id,
                },
            );
        }
        if c.kind == AlertChangeKind::Fired {
            self.rows.insert(
                c.event_id,
                AlertEvent {
                    id: c.event_id,
                    org_id: c.org_id,
                    rule_id: c.rule_id,
                    rule_name: c.rule_name.clone(),
                    agent_id: c.agent_id,
                    severity: c.severity.as_str().to_owned(),
                    state: "firing".into(),
                    summary: c.summary.clone(),
                    value: c.value,
                    pending_at: c.fired_at_ms,
                    fired_at: Some(c.fired_at_ms),
                    resolved_at: None,
                    resolved_by: None,
                    acked_at: None,
                    acked_by: None,
                    snoozed_until: c.snoozed_until_ms,
                    updated_at: c.at_ms,
                },
            );
        }
        let Some(row) = self.rows.get_mut(&c.event_id) else {
            return;
        };
        match c.kind {
            AlertChangeKind::Fired => {}
            AlertChangeKind::Resolved => {
                row.state = "resolved".into();
                row.resolved_at = Some(c.at_ms);
            }
            AlertChangeKind::Acked => row.acked_at = Some(c.at_ms),
            AlertChangeKind::Snoozed => row.snoozed_until = c.snoozed_until_ms,
        }
    }

    fn run_until(&mut self, until: i64) {
        let mut guard = 0;
        while let Some(&at) = self.wakes.first() {
            if at > until {
                break;
            }
            self.wakes.remove(&at);
            self.now = self.now.max(at);
            let effects = self.core.handle(self.now, Input::Tick);
            self.apply(effects);
            self.persist();
            guard += 1;
            assert!(guard < 100_000, "the core keeps asking to wake at {at}");
        }
        self.now = until;
    }

    /// Carries out effects as the driver does.
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Wake(at) => {
                    assert!(at > self.now, "a wake at {at} is not in the future");
                    self.wakes.insert(at);
                }
                Effect::Enqueue {
                    integration_id,
                    message,
                    ..
                } => {
                    let kind = match message.kind {
                        NotificationKind::Firing => "firing",
                        NotificationKind::Resolved => "resolved",
                        NotificationKind::Reminder => "reminder",
                        NotificationKind::Escalation => "escalation",
                        NotificationKind::Test => "test",
                    };
                    assert!(message.alerts.len() <= crate::notify::NotificationMessage::SAMPLE);
                    let sample = if message.alerts.len() > 5 {
                        format!("{} sampled", message.alerts.len())
                    } else {
                        message
                            .alerts
                            .iter()
                            .filter_map(|a| a.hostname.clone())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    self.log.push(format!(
                        "{} {} {kind} {} {sample}",
                        self.fmt_time(self.now),
                        self.names[&integration_id],
                        message.total
                    ));
                }
            }
        }
    }

    /// Writes the groups the core reports dirty, as the driver does after each batch.
    fn persist(&mut self) {
        for (gid, group) in self.core.take_dirty() {
            match group {
                Some(g) => {
                    self.persisted
                        .insert(gid, serde_json::to_string(&g).unwrap());
                }
                None => {
                    self.persisted.remove(&gid);
                }
            }
        }
    }
}

/// `a,b,c` or `h1..h10000`.
fn agents(who: &str) -> Vec<String> {
    if let Some((from, to)) = who.split_once("..") {
        let prefix: String = from.chars().take_while(|c| c.is_alphabetic()).collect();
        let first: usize = from[prefix.len()..].parse().unwrap();
        let last: usize = to[prefix.len()..].parse().unwrap();
        (first..=last).map(|n| format!("{prefix}{n}")).collect()
    } else {
        who.split(',').map(str::to_owned).collect()
    }
}

fn split_opts<'a>(words: &[&'a str]) -> (Vec<&'a str>, HashMap<&'a str, &'a str>) {
    let mut args = Vec::new();
    let mut opts = HashMap::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) => {
                opts.insert(k, v);
            }
            None if is_flag(w) => {
                opts.insert(*w, "");
            }
            None => args.push(*w),
        }
    }
    (args, opts)
}

fn is_flag(word: &str) -> bool {
    matches!(word, "off" | "org" | "lost")
}

fn instant(text: &str) -> i64 {
    text.parse::<Timestamp>().unwrap().as_millisecond()
}

/// `0`, `30s`, `5m30s`, `4h`, `2d`.
fn duration_ms(text: &str) -> i64 {
    let mut total = 0;
    let mut n = 0;
    for c in text.chars() {
        match c {
            '0'..='9' => n = n * 10 + i64::from(c as u8 - b'0'),
            's' => (total, n) = (total + n * 1000, 0),
            'm' => (total, n) = (total + n * 60_000, 0),
            'h' => (total, n) = (total + n * 3_600_000, 0),
            'd' => (total, n) = (total + n * 86_400_000, 0),
            _ => panic!("bad duration {text:?}"),
        }
    }
    total + n
}

fn fmt_duration(ms: i64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
