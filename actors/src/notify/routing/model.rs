//! What operators configure for routing — notification policies, silences and maintenance
//! windows — as validated values, and how each one matches an alert. The specs are stored as
//! JSON (the store keeps them opaque), so the same types are the API's, the store's and the
//! core's; every limit is one `pub const` the API schema uses too.

use reap3r_store::Uuid;
use serde::{Deserialize, Serialize};

use super::group::AlertFacts;
use super::schedule::Schedule;
use crate::alerts::Severity;
use crate::error::{DomainError, DomainResult, required_text};

/// Longest policy or maintenance window name, in characters.
pub const MAX_ROUTING_NAME_CHARS: usize = 200;
/// Most values in one list of a policy's or window's scope (severities, tags, folders).
pub const MAX_SCOPE_VALUES: usize = 32;
/// Longest tag name in a scope or matcher, in characters.
pub const MAX_MATCH_VALUE_CHARS: usize = 200;
/// Most integrations one policy or escalation step notifies.
pub const MAX_POLICY_INTEGRATIONS: usize = 16;
/// Most escalation steps of a policy.
pub const MAX_ESCALATION_STEPS: usize = 8;
/// Most matchers of a silence.
pub const MAX_SILENCE_MATCHERS: usize = 16;
/// Longest silence comment, in characters.
pub const MAX_SILENCE_COMMENT_CHARS: usize = 2000;

/// Alertmanager's defaults: wait 30 s for a group to fill, then at most one message per 5 min
/// for changes, and a reminder every 4 h while it still fires.
pub const DEFAULT_GROUP_WAIT_S: i64 = 30;
pub const DEFAULT_GROUP_INTERVAL_S: i64 = 5 * 60;
pub const DEFAULT_REPEAT_INTERVAL_S: i64 = 4 * 3600;
/// Bounds of the group timers, in seconds: a 0 s wait sends at once; an interval below 10 s
/// would turn grouping off; a day (interval) or a week (repeat, escalation) is the longest an
/// operator can mean.
pub const MAX_GROUP_WAIT_S: i64 = 3600;
pub const MIN_GROUP_INTERVAL_S: i64 = 10;
pub const MAX_GROUP_INTERVAL_S: i64 = 24 * 3600;
pub const MIN_REPEAT_INTERVAL_S: i64 = 60;
pub const MAX_REPEAT_INTERVAL_S: i64 = 7 * 24 * 3600;
/// Bounds of one escalation step's delay, in minutes.
pub const MIN_ESCALATION_MINUTES: i64 = 1;
pub const MAX_ESCALATION_MINUTES: i64 = 7 * 24 * 60;
/// Longest silence, in seconds (a year): a silence that never ends is a deleted policy.
pub const MAX_SILENCE_S: i64 = 366 * 24 * 3600;

/// What an alert group is keyed by (the policy's org is always part of the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupLabel {
    Rule,
    Org,
    Agent,
    Severity,
    Folder,
}

impl GroupLabel {
    pub const DEFAULT: &'static [GroupLabel] = &[GroupLabel::Rule, GroupLabel::Org];

    pub const ALL: &'static [GroupLabel] = &[
        GroupLabel::Rule,
        GroupLabel::Org,
        GroupLabel::Agent,
        GroupLabel::Severity,
        GroupLabel::Folder,
    ];

    /// `rule`, `org`, `agent`, `severity` or `folder`.
    pub fn parse(text: &str) -> DomainResult<GroupLabel> {
        GroupLabel::ALL
            .iter()
            .copied()
            .find(|l| l.as_str() == text)
            .ok_or_else(|| {
                DomainError::invalid(format!(
                    "unknown group_by label {text:?} (rule, org, agent, severity, folder)"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupLabel::Rule => "rule",
            GroupLabel::Org => "org",
            GroupLabel::Agent => "agent",
            GroupLabel::Severity => "severity",
            GroupLabel::Folder => "folder",
        }
    }
}

/// Not acknowledged `after_minutes` after the previous notification → these integrations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    pub after_minutes: i64,
    pub integrations: Vec<Uuid>,
}

/// A notification policy: which alerts of its org (by severity, tags, folders; an empty list
/// matches all), which integrations hear of them, how they are grouped and escalated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub name: String,
    pub enabled: bool,
    #[serde(with = "severity_list")]
    pub severities: Vec<Severity>,
    pub tags: Vec<String>,
    pub folder_ids: Vec<Uuid>,
    pub integrations: Vec<Uuid>,
    pub group_by: Vec<GroupLabel>,
    pub group_wait_s: i64,
    pub group_interval_s: i64,
    pub repeat_interval_s: i64,
    pub escalation: Vec<EscalationStep>,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: Uuid,
    pub org_id: Uuid,
    pub spec: PolicySpec,
}

impl PolicySpec {
    /// Checks every cap and bound; trims the name and tags and sorts away duplicates.
    pub fn validated(mut self) -> DomainResult<Self> {
        self.name = required_text("name", &self.name, MAX_ROUTING_NAME_CHARS)?;
        cap("severities", self.severities.len(), MAX_SCOPE_VALUES)?;
        self.tags = tags("tags", self.tags)?;
        cap("folder_ids", self.folder_ids.len(), MAX_SCOPE_VALUES)?;
        if self.integrations.is_empty() {
            return Err(DomainError::invalid("integrations must not be empty"));
        }
        cap(
            "integrations",
            self.integrations.len(),
            MAX_POLICY_INTEGRATIONS,
        )?;
        cap("group_by", self.group_by.len(), 5)?;
        if self.group_by.is_empty() {
            self.group_by = GroupLabel::DEFAULT.to_vec();
        }
        for list in [&mut self.folder_ids, &mut self.integrations] {
            list.sort();
            list.dedup();
        }
        self.severities.sort();
        self.severities.dedup();
        self.group_by.sort();
        self.group_by.dedup();
        bounded("group_wait_s", self.group_wait_s, 0, MAX_GROUP_WAIT_S)?;
        bounded(
            "group_interval_s",
            self.group_interval_s,
            MIN_GROUP_INTERVAL_S,
            MAX_GROUP_INTERVAL_S,
        )?;
        bounded(
            "repeat_interval_s",
            self.repeat_interval_s,
            MIN_REPEAT_INTERVAL_S,
            MAX_REPEAT_INTERVAL_S,
        )?;
        cap("escalation", self.escalation.len(), MAX_ESCALATION_STEPS)?;
        for step in &mut self.escalation {
            bounded(
                "escalation.after_minutes",
                step.after_minutes,
                MIN_ESCALATION_MINUTES,
                MAX_ESCALATION_MINUTES,
            )?;
            if step.integrations.is_empty() {
                return Err(DomainError::invalid(
                    "escalation.integrations must not be empty",
                ));
            }
            cap(
                "escalation.integrations",
                step.integrations.len(),
                MAX_POLICY_INTEGRATIONS,
            )?;
        }
        Ok(self)
    }
}

impl Policy {
    /// Whether this policy routes `alert`: same org, and each non-empty scope list matches.
    pub fn matches(&self, alert: &AlertFacts) -> bool {
        let s = &self.spec;
        s.enabled
            && alert.org_id == self.org_id
            && (s.severities.is_empty() || s.severities.contains(&alert.severity))
            && (s.tags.is_empty() || s.tags.iter().any(|t| alert.agent_tags.contains(t)))
            && (s.folder_ids.is_empty()
                || alert.folder_id.is_some_and(|f| s.folder_ids.contains(&f)))
    }

    /// The group `alert` joins under this policy, e.g. `rule=<id>,org=<id>`.
    pub fn group_key(&self, alert: &AlertFacts) -> String {
        let none = || "-".to_owned();
        self.spec
            .group_by
            .iter()
            .map(|label| {
                let value = match label {
                    GroupLabel::Rule => alert.rule_id.to_string(),
                    GroupLabel::Org => alert.org_id.to_string(),
                    GroupLabel::Agent => alert.agent_id.map_or_else(none, |a| a.to_string()),
                    GroupLabel::Severity => alert.severity.as_str().to_owned(),
                    GroupLabel::Folder => alert.folder_id.map_or_else(none, |f| f.to_string()),
                };
                format!("{}={value}", label.as_str())
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One condition of a silence; a silence mutes an alert when all of its matchers match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Matcher {
    Rule(Uuid),
    Agent(Uuid),
    Tag(String),
    #[serde(with = "severity_one")]
    Severity(Severity),
    Org(Uuid),
}

/// A severity name as the API sends it.
pub fn parse_severity(text: &str) -> DomainResult<Severity> {
    text.parse().map_err(DomainError::invalid)
}

impl Matcher {
    /// A matcher from the API's `{kind, value}`: rule, agent and org take an id, tag a name,
    /// severity a severity name.
    pub fn parse(kind: &str, value: &str) -> DomainResult<Matcher> {
        let id = || {
            value.trim().parse::<Uuid>().map_err(|_| {
                DomainError::invalid(format!("matcher {kind} needs an id, not {value:?}"))
            })
        };
        Ok(match kind {
            "rule" => Matcher::Rule(id()?),
            "agent" => Matcher::Agent(id()?),
            "org" => Matcher::Org(id()?),
            "tag" => Matcher::Tag(value.to_owned()),
            "severity" => Matcher::Severity(parse_severity(value)?),
            other => {
                return Err(DomainError::invalid(format!(
                    "unknown matcher kind {other:?} (rule, agent, tag, severity, org)"
                )));
            }
        })
    }

    /// The matcher as the API shows it: `(kind, value)`.
    pub fn parts(&self) -> (&'static str, String) {
        match self {
            Matcher::Rule(id) => ("rule", id.to_string()),
            Matcher::Agent(id) => ("agent", id.to_string()),
            Matcher::Org(id) => ("org", id.to_string()),
            Matcher::Tag(t) => ("tag", t.clone()),
            Matcher::Severity(s) => ("severity", s.as_str().to_owned()),
        }
    }

    fn matches(&self, alert: &AlertFacts) -> bool {
        match self {
            Matcher::Rule(id) => alert.rule_id == *id,
            Matcher::Agent(id) => alert.agent_id == Some(*id),
            Matcher::Tag(tag) => alert.agent_tags.contains(tag),
            Matcher::Severity(s) => alert.severity == *s,
            Matcher::Org(id) => alert.org_id == *id,
        }
    }
}

/// A silence: matching alerts between `starts_at_ms` and `ends_at_ms` are not notified (they
/// stay visible as alert events). It expires by time; deleting it ends it early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceSpec {
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub comment: String,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: Uuid,
    pub org_id: Uuid,
    pub created_by: String,
    pub spec: SilenceSpec,
}

impl SilenceSpec {
    /// Checks caps and the time range; an `org` matcher must name the silence's own org (a
    /// silence never reaches into another tenant).
    pub fn validated(mut self, org_id: Uuid) -> DomainResult<Self> {
        if self.matchers.is_empty() {
            return Err(DomainError::invalid(
                "matchers must not be empty (an org matcher silences the whole organisation)",
            ));
        }
        cap("matchers", self.matchers.len(), MAX_SILENCE_MATCHERS)?;
        for m in &mut self.matchers {
            match m {
                Matcher::Tag(tag) => {
                    *tag = required_text("matchers.tag", tag, MAX_MATCH_VALUE_CHARS)?
                }
                Matcher::Org(id) if *id != org_id => {
                    return Err(DomainError::invalid(
                        "an org matcher must name the silence's own organisation",
                    ));
                }
                _ => {}
            }
        }
        self.comment = required_text("comment", &self.comment, MAX_SILENCE_COMMENT_CHARS)?;
        if self.ends_at_ms <= self.starts_at_ms {
            return Err(DomainError::invalid("ends_at must be after starts_at"));
        }
        if self.ends_at_ms - self.starts_at_ms > MAX_SILENCE_S * 1000 {
            return Err(DomainError::invalid(format!(
                "a silence lasts at most {MAX_SILENCE_S} s"
            )));
        }
        Ok(self)
    }
}

impl Silence {
    /// Whether this silence mutes `alert` at `now_ms`.
    pub fn mutes(&self, alert: &AlertFacts, now_ms: i64) -> bool {
        alert.org_id == self.org_id
            && self.spec.starts_at_ms <= now_ms
            && now_ms < self.spec.ends_at_ms
            && self.spec.matchers.iter().all(|m| m.matches(alert))
    }
}

/// Which alerts of its org a maintenance window covers: agents in one of `folder_ids` or with
/// one of `tags`; both empty covers the whole org.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowScope {
    pub folder_ids: Vec<Uuid>,
    pub tags: Vec<String>,
}

/// A maintenance window: inside it nothing is notified and escalation is paused; when it ends,
/// what still fires is notified once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub name: String,
    pub scope: WindowScope,
    pub schedule: Schedule,
}

/// A stored maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub spec: WindowSpec,
}

impl WindowSpec {
    pub fn validated(mut self) -> DomainResult<Self> {
        self.name = required_text("name", &self.name, MAX_ROUTING_NAME_CHARS)?;
        cap(
            "scope.folder_ids",
            self.scope.folder_ids.len(),
            MAX_SCOPE_VALUES,
        )?;
        self.scope.tags = tags("scope.tags", std::mem::take(&mut self.scope.tags))?;
        self.scope.folder_ids.sort();
        self.scope.folder_ids.dedup();
        self.schedule = self.schedule.validated()?;
        Ok(self)
    }
}

impl MaintenanceWindow {
    /// Whether `alert` is in this window's scope (its time is checked by the schedule).
    pub fn covers(&self, alert: &AlertFacts) -> bool {
        let scope = &self.spec.scope;
        alert.org_id == self.org_id
            && ((scope.folder_ids.is_empty() && scope.tags.is_empty())
                || alert
                    .folder_id
                    .is_some_and(|f| scope.folder_ids.contains(&f))
                || scope.tags.iter().any(|t| alert.agent_tags.contains(t)))
    }
}

fn cap(field: &str, len: usize, max: usize) -> DomainResult<()> {
    if len > max {
        return Err(DomainError::invalid(format!(
            "{field} has at most {max} entries"
        )));
    }
    Ok(())
}

fn bounded(field: &str, value: i64, min: i64, max: i64) -> DomainResult<()> {
    if !(min..=max).contains(&value) {
        return Err(DomainError::invalid(format!(
            "{field} must be between {min} and {max}"
        )));
    }
    Ok(())
}

fn tags(field: &str, values: Vec<String>) -> DomainResult<Vec<String>> {
    cap(field, values.len(), MAX_SCOPE_VALUES)?;
    let mut out = values
        .iter()
        .map(|t| required_text(field, t, MAX_MATCH_VALUE_CHARS))
        .collect::<DomainResult<Vec<_>>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Severities as their names in JSON (the shared `Severity` has no serde of its own).
mod severity_list {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::alerts::Severity;

    pub fn serialize<S: Serializer>(v: &[Severity], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Severity>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|x| x.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

pub(super) mod severity_one {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::alerts::Severity;

    pub fn serialize<S: Serializer>(v: &Severity, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
