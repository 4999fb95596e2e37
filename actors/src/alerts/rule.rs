//! What an alert rule watches: its kind (metric threshold, agent offline, job failed, agent
//! waiting for approval) with its durations, and its scope (org, optional tags, folders,
//! agents). Every limit is a `pub const` the API schema uses too; [`RuleKind::validate`] and
//! [`RuleScope::validate`] are the one place they are checked.
//!
//! The kind is stored as JSON (`alert_rules.spec`), so it is (de)serialised with serde; the
//! metric is kept by its catalog name and parsed back to a [`Metric`] when a rule is loaded.
//!
//! EDR seam: a kind fed by an external source (EDR detections) would be one more variant whose
//! condition arrives as `machine::Input::Condition` from that source (active on a detection,
//! inactive when the detection is closed); the machine, events, history and routing need no
//! change. It is not built: there is no detection source yet.

use reap3r_store::Uuid;
use reap3r_wire::JobType;
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, DomainResult};
use crate::metrics::{MAX_LABEL_LEN, Metric};

/// Longest rule name, in characters.
pub const MAX_RULE_NAME_CHARS: usize = 200;
/// Most tags, folders or agents one rule's scope may list (each list on its own).
pub const MAX_SCOPE_ITEMS: usize = 100;
/// Longest aggregation window of a threshold rule, in seconds (1 h).
pub const MAX_WINDOW_S: u32 = 3600;
/// Longest `for` duration of any rule, in seconds (7 days).
pub const MAX_FOR_S: u32 = 7 * 24 * 3600;
/// Longest minimum firing hold, in seconds (1 day).
pub const MAX_HOLD_S: u32 = 24 * 3600;
/// Shortest offline or pending-approval duration, in seconds: below it a heartbeat hiccup
/// would alert.
pub const MIN_PRESENCE_FOR_S: u32 = 10;
/// Largest absolute threshold value (keeps JSON and both databases exact enough).
pub const MAX_THRESHOLD_ABS: f64 = 1e15;

/// A comparison of the aggregated value with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Operator {
    pub const ALL: &'static [Operator] = &[Operator::Gt, Operator::Ge, Operator::Lt, Operator::Le];

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| DomainError::invalid(format!("unknown operator {s:?} (> >= < <=)")))
    }

    /// Whether `value` is on the alerting side of `line`.
    pub fn holds(self, value: f64, line: f64) -> bool {
        match self {
            Operator::Gt => value > line,
            Operator::Ge => value >= line,
            Operator::Lt => value < line,
            Operator::Le => value <= line,
        }
    }

    /// Whether `recovery` lies on the non-alerting side of (or at) `line`, as hysteresis needs.
    fn recovery_fits(self, line: f64, recovery: f64) -> bool {
        match self {
            Operator::Gt | Operator::Ge => recovery <= line,
            Operator::Lt | Operator::Le => recovery >= line,
        }
    }
}

/// How the samples in the window become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Avg,
    Min,
    Max,
    Last,
}

impl Aggregation {
    pub const ALL: &'static [Aggregation] = &[
        Aggregation::Avg,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Last,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Last => "last",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid(format!("unknown aggregation {s:?} (avg, min, max, last)"))
            })
    }
}

/// A metric threshold: `aggregation(metric[label]) over window  operator  value`, held for
/// `for_s`; once firing it clears only past `recovery` (hysteresis) and not before `hold_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// A name from the [`Metric`] catalog.
    pub metric: String,
    /// Mount point or interface for labelled metrics; `None` watches every series of the metric
    /// and alerts on the worst one.
    pub label: Option<String>,
    pub operator: Operator,
    pub value: f64,
    /// Where a firing alert clears; `None` clears at `value` itself.
    pub recovery: Option<f64>,
    pub aggregation: Aggregation,
    pub window_s: u32,
    pub for_s: u32,
    pub hold_s: u32,
}

impl Threshold {
    pub fn metric(&self) -> DomainResult<Metric> {
        self.metric
            .parse::<Metric>()
            .map_err(|e| DomainError::bad_request("unknown_metric", e.to_string()))
    }
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleKind {
    MetricThreshold(Threshold),
    /// The agent has been offline for `for_s`.
    AgentOffline {
        for_s: u32,
    },
    /// A job target failed on the agent (optionally only jobs of one type); resolves when a
    /// later job of the same filter succeeds there, or by hand.
    JobFailed {
        job_type: Option<JobType>,
    },
    /// The agent enrolled and has waited for approval for `for_s`.
    AgentPendingApproval {
        for_s: u32,
    },
}

impl RuleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::MetricThreshold(_) => "metric_threshold",
            RuleKind::AgentOffline { .. } => "agent_offline",
            RuleKind::JobFailed { .. } => "job_failed",
            RuleKind::AgentPendingApproval { .. } => "agent_pending_approval",
        }
    }

    /// Checks every field against its limit; `unknown_metric` for a name outside the catalog.
    pub fn validate(&self) -> DomainResult<()> {
        match self {
            RuleKind::MetricThreshold(t) => {
                let metric = t.metric()?;
                if let Some(label) = &t.label {
                    if !metric.labelled() {
                        return Err(DomainError::invalid(format!(
                            "metric {metric} has no label (mount or interface)"
                        )));
                    }
                    if label.is_empty() || label.len() > MAX_LABEL_LEN {
                        return Err(DomainError::invalid(format!(
                            "label must be 1 to {MAX_LABEL_LEN} bytes"
                        )));
                    }
                }
                for (field, v) in [("value", Some(t.value)), ("recovery", t.recovery)] {
                    if let Some(v) = v
                        && (!v.is_finite() || v.abs() > MAX_THRESHOLD_ABS)
                    {
                        return Err(DomainError::invalid(format!(
                            "{field} must be a finite number within ±{MAX_THRESHOLD_ABS}"
                        )));
                    }
                }
                if let Some(r) = t.recovery
                    && !t.operator.recovery_fits(t.value, r)
                {
                    return Err(DomainError::invalid(
                        "recovery must lie on the clear side of value (hysteresis)",
                    ));
                }
                bounded("window_s", t.window_s, 1, MAX_WINDOW_S)?;
                bounded("for_s", t.for_s, 0, MAX_FOR_S)?;
                bounded("hold_s", t.hold_s, 0, MAX_HOLD_S)
            }
            RuleKind::AgentOffline { for_s } | RuleKind::AgentPendingApproval { for_s } => {
                bounded("for_s", *for_s, MIN_PRESENCE_FOR_S, MAX_FOR_S)
            }
            RuleKind::JobFailed { .. } => Ok(()),
        }
    }

    /// `for` in ms: how long the condition must hold before the alert fires.
    pub fn for_ms(&self) -> i64 {
        let s = match self {
            RuleKind::MetricThreshold(t) => t.for_s,
            RuleKind::AgentOffline { for_s } | RuleKind::AgentPendingApproval { for_s } => *for_s,
            RuleKind::JobFailed { .. } => 0,
        };
        i64::from(s) * 1000
    }

    /// The minimum firing hold in ms.
    pub fn hold_ms(&self) -> i64 {
        match self {
            RuleKind::MetricThreshold(t) => i64::from(t.hold_s) * 1000,
            _ => 0,
        }
    }
}

fn bounded(field: &str, v: u32, min: u32, max: u32) -> DomainResult<()> {
    if v < min || v > max {
        return Err(DomainError::bad_request(
            "invalid_duration",
            format!("{field} must be between {min} and {max} seconds"),
        ));
    }
    Ok(())
}

/// Which agents of the rule's organisation it watches: all of them when every list is empty,
/// otherwise those that are listed, or carry a listed tag, or sit in a listed folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleScope {
    #[serde(default)]
    pub tags: Vec<Uuid>,
    #[serde(default)]
    pub folders: Vec<Uuid>,
    #[serde(default)]
    pub agents: Vec<Uuid>,
}

impl RuleScope {
    pub fn validate(&self) -> DomainResult<()> {
        for (field, list) in [
            ("tags", &self.tags),
            ("folders", &self.folders),
            ("agents", &self.agents),
        ] {
            if list.len() > MAX_SCOPE_ITEMS {
                return Err(DomainError::bad_request(
                    "scope_too_large",
                    format!("scope {field} may list at most {MAX_SCOPE_ITEMS} items"),
                ));
            }
        }
        Ok(())
    }

    /// Whether an agent with this folder and these tags is in scope.
    pub fn matches(&self, agent_id: Uuid, folder_id: Option<Uuid>, tags: &[Uuid]) -> bool {
        if self.tags.is_empty() && self.folders.is_empty() && self.agents.is_empty() {
            return true;
        }
        self.agents.contains(&agent_id)
            || folder_id.is_some_and(|f| self.folders.contains(&f))
            || tags.iter().any(|t| self.tags.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(metric: &str) -> Threshold {
        Threshold {
            metric: metric.into(),
            label: None,
            operator: Operator::Gt,
            value: 90.0,
            recovery: Some(80.0),
            aggregation: Aggregation::Avg,
            window_s: 60,
            for_s: 120,
            hold_s: 0,
        }
    }

    #[test]
    fn bad_kinds_are_refused_with_their_code() {
        let code = |k: RuleKind| match k.validate() {
            Err(DomainError::Invalid { code, .. }) => code,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert!(
            RuleKind::MetricThreshold(threshold("cpu.percent"))
                .validate()
                .is_ok()
        );
        assert_eq!(
            code(RuleKind::MetricThreshold(threshold("cpu.percnt"))),
            "unknown_metric"
        );
        let mut t = threshold("cpu.percent");
        t.window_s = 0;
        assert_eq!(code(RuleKind::MetricThreshold(t)), "invalid_duration");
        let mut t = threshold("cpu.percent");
        t.for_s = MAX_FOR_S + 1;
        assert_eq!(code(RuleKind::MetricThreshold(t)), "invalid_duration");
        let mut t = threshold("cpu.percent");
        t.recovery = Some(95.0);
        assert_eq!(code(RuleKind::MetricThreshold(t)), "invalid_input");
        let mut t = threshold("cpu.percent");
        t.label = Some("/".into());
        assert_eq!(code(RuleKind::MetricThreshold(t)), "invalid_input");
        let mut t = threshold("disk.used_percent");
        t.label = Some("/".into());
        assert!(RuleKind::MetricThreshold(t).validate().is_ok());
        let mut t = threshold("cpu.percent");
        t.value = f64::NAN;
        assert_eq!(code(RuleKind::MetricThreshold(t)), "invalid_input");
        assert_eq!(
            code(RuleKind::AgentOffline {
                for_s: MIN_PRESENCE_FOR_S - 1
            }),
            "invalid_duration"
        );
    }

    #[test]
    fn scope_matches_any_listed_item_or_everything_when_empty() {
        let (a, b, f, t) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        assert!(RuleScope::default().matches(a, None, &[]));
        let by_folder = RuleScope {
            folders: vec![f],
            ..Default::default()
        };
        assert!(by_folder.matches(a, Some(f), &[]));
        assert!(!by_folder.matches(a, None, &[t]));
        let by_tag_or_agent = RuleScope {
            tags: vec![t],
            agents: vec![b],
            ..Default::default()
        };
        assert!(by_tag_or_agent.matches(a, None, &[t]));
        assert!(by_tag_or_agent.matches(b, None, &[]));
        assert!(!by_tag_or_agent.matches(a, Some(f), &[]));
        let big = RuleScope {
            agents: vec![a; MAX_SCOPE_ITEMS + 1],
            ..Default::default()
        };
        assert!(matches!(
            big.validate(),
            Err(DomainError::Invalid {
                code: "scope_too_large",
                ..
            })
        ));
    }
}
