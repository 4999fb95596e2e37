//! Reading metrics: one agent's series over a time range at the coarsest level that satisfies
//! the requested step (downsampled to that step), its CSV export, and the fleet view (the latest
//! value of one metric per agent, top N, by folder or tag). Scoped to the caller's organisation.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use reap3r_store::{Agg, FleetFilter, MetricLevel, Uuid, merge_series};

use super::catalog::Metric;
use super::ingest::{code, from_code};
use crate::access::Caller;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// Metric names per query.
pub const MAX_QUERY_NAMES: usize = 16;
/// Points per series a query may return: `(to - from) / step` must not exceed it.
pub const MAX_QUERY_POINTS: i64 = 2_000;
/// Longest step, in seconds (30 days).
pub const MAX_STEP_S: i64 = 30 * 86_400;
/// Agents a fleet view returns at most, and by default.
pub const MAX_FLEET_TOP: u32 = 1_000;
pub const DEFAULT_FLEET_TOP: u32 = 10;
/// Longest metric-names parameter, in characters (16 names of the longest catalog name fit).
pub const MAX_NAMES_PARAM_CHARS: usize = 512;

/// The coarsest level whose bucket is no wider than `step_ms` (raw below one minute).
pub fn level_for_step(step_ms: i64) -> MetricLevel {
    MetricLevel::ALL
        .into_iter()
        .rev()
        .find(|l| l.width_ms() <= step_ms)
        .unwrap_or(MetricLevel::Raw)
}

/// Parses a comma-separated list of catalog names (unknown → `Invalid` naming it).
pub fn parse_names(names: &str) -> DomainResult<Vec<Metric>> {
    if names.chars().count() > MAX_NAMES_PARAM_CHARS {
        return Err(DomainError::invalid(format!(
            "names must be at most {MAX_NAMES_PARAM_CHARS} characters"
        )));
    }
    let mut out: Vec<Metric> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let metric: Metric = name
            .parse()
            .map_err(|e: super::UnknownMetric| DomainError::invalid(e.to_string()))?;
        if !out.contains(&metric) {
            out.push(metric);
        }
    }
    if out.is_empty() {
        return Err(DomainError::invalid("names must name at least one metric"));
    }
    if out.len() > MAX_QUERY_NAMES {
        return Err(DomainError::invalid(format!(
            "at most {MAX_QUERY_NAMES} metric names per query"
        )));
    }
    Ok(out)
}

/// One agent's series.
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    pub agent_id: Uuid,
    /// Comma-separated catalog names.
    pub names: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_s: i64,
}

/// One point of a series: the step bucket starting at `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub at_ms: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub last: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub metric: Metric,
    pub label: String,
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsAnswer {
    /// The level read.
    pub level: MetricLevel,
    pub step_ms: i64,
    pub series: Vec<MetricSeries>,
}

impl QueryMetrics {
    fn check(&self) -> DomainResult<(Vec<Metric>, i64)> {
        let names = parse_names(&self.names)?;
        if self.from_ms < 0 || self.to_ms <= self.from_ms {
            return Err(DomainError::invalid("from must be ≥ 0 and before to"));
        }
        if !(1..=MAX_STEP_S).contains(&self.step_s) {
            return Err(DomainError::invalid(format!(
                "step must be between 1 and {MAX_STEP_S} seconds"
            )));
        }
        let step_ms = self.step_s * 1000;
        let span = self.to_ms - self.from_ms;
        let points = span / step_ms + i64::from(span % step_ms != 0);
        if points > MAX_QUERY_POINTS {
            return Err(DomainError::invalid(format!(
                "from..to at this step is {points} points; at most {MAX_QUERY_POINTS}"
            )));
        }
        Ok((names, step_ms))
    }

    pub async fn run(&self, domain: &Domain, caller: &Caller) -> DomainResult<MetricsAnswer> {
        let (names, step_ms) = self.check()?;
        let agent = domain
            .store
            .agent(self.agent_id)
            .await?
            .filter(|a| a.org_id == caller.org_id)
            .ok_or(DomainError::NotFound("agent"))?;
        let level = level_for_step(step_ms);
        // A level row is no wider than a step, and agents sample at most every 5 s: this bounds
        // the rows read whatever the level.
        let limit = MAX_QUERY_POINTS * (step_ms / level.width_ms().max(5_000)).clamp(1, 12) + 1;
        let rows = domain
            .store
            .metric_rows(
                agent.org_id,
                agent.id,
                level,
                self.from_ms,
                self.to_ms,
                limit,
            )
            .await?;
        let codes: Vec<u8> = names.iter().map(|m| code(*m)).collect();
        // (metric position in the request, label) → step bucket → merged aggregate.
        let mut by_series: BTreeMap<(usize, String), BTreeMap<i64, Vec<Agg>>> = BTreeMap::new();
        for row in rows {
            let bucket = self.from_ms + (row.at_ms - self.from_ms).div_euclid(step_ms) * step_ms;
            for agg in row.series {
                let Some(pos) = codes.iter().position(|c| *c == agg.code) else {
                    continue;
                };
                let cell = by_series
                    .entry((pos, agg.label.clone()))
                    .or_default()
                    .entry(bucket)
                    .or_default();
                merge_series(cell, std::slice::from_ref(&agg));
            }
        }
        let series = by_series
            .into_iter()
            .map(|((pos, label), buckets)| MetricSeries {
                metric: names[pos],
                label,
                points: buckets
                    .into_iter()
                    .filter_map(|(at_ms, aggs)| aggs.into_iter().next().map(|a| (at_ms, a)))
                    .map(|(at_ms, a)| MetricPoint {
                        at_ms,
                        min: a.min,
                        avg: a.avg(),
                        max: a.max,
                        last: a.last,
                        count: a.count,
                    })
                    .collect(),
            })
            .collect();
        Ok(MetricsAnswer {
            level,
            step_ms,
            series,
        })
    }
}

/// The same query as CSV: `time_ms,metric,label,min,avg,max,last,count`, one line per point.
#[derive(Debug, Clone)]
pub struct ExportMetrics(pub QueryMetrics);

/// Quotes a CSV field when it needs it (labels are mount points and interface names).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl ExportMetrics {
    pub async fn run(&self, domain: &Domain, caller: &Caller) -> DomainResult<String> {
        let answer = self.0.run(domain, caller).await?;
        let mut out = String::from("time_ms,metric,label,min,avg,max,last,count\n");
        for s in &answer.series {
            for p in &s.points {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    p.at_ms,
                    s.metric,
                    csv_field(&s.label),
                    p.min,
                    p.avg,
                    p.max,
                    p.last,
                    p.count
                );
            }
        }
        Ok(out)
    }
}

/// The fleet view: the latest value of one metric per agent, highest first.
#[derive(Debug, Clone, Default)]
pub struct FleetMetrics {
    pub metric: String,
    /// For labelled metrics: this mount or interface; without it an agent's highest one counts.
    pub label: Option<String>,
    pub top: Option<u32>,
    pub tag_id: Option<Uuid>,
    pub folder_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FleetEntry {
    pub agent_id: Uuid,
    pub hostname: String,
    pub label: String,
    pub value: f64,
    pub taken_at_ms: i64,
}

impl FleetMetrics {
    pub async fn run(&self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<FleetEntry>> {
        let metric: Metric = self
            .metric
            .parse()
            .map_err(|e: super::UnknownMetric| DomainError::invalid(e.to_string()))?;
        let top = self.top.unwrap_or(DEFAULT_FLEET_TOP);
        if !(1..=MAX_FLEET_TOP).contains(&top) {
            return Err(DomainError::invalid(format!(
                "top must be between 1 and {MAX_FLEET_TOP}"
            )));
        }
        if let Some(label) = &self.label
            && label.len() > super::MAX_LABEL_LEN
        {
            return Err(DomainError::invalid(format!(
                "label must be at most {} bytes",
                super::MAX_LABEL_LEN
            )));
        }
        // Only agents heard from within raw retention have a latest sample; the store bounds it.
        let filter = FleetFilter {
            tag_id: self.tag_id,
            folder_id: self.folder_id,
        };
        let latest = domain
            .store
            .latest_metric_samples(caller.org_id, &filter, 0)
            .await?;
        let wanted = code(metric);
        let mut entries: Vec<FleetEntry> = latest
            .into_iter()
            .filter_map(|l| {
                let best = l
                    .series
                    .iter()
                    .filter(|a| a.code == wanted && from_code(a.code).is_some())
                    .filter(|a| self.label.as_ref().is_none_or(|want| &a.label == want))
                    .max_by(|a, b| a.last.total_cmp(&b.last))?;
                Some(FleetEntry {
                    agent_id: l.agent_id,
                    hostname: l.hostname,
                    label: best.label.clone(),
                    value: best.last,
                    taken_at_ms: l.taken_at_ms,
                })
            })
            .collect();
        entries.sort_by(|a, b| {
            b.value
                .total_cmp(&a.value)
                .then(a.agent_id.cmp(&b.agent_id))
        });
        entries.truncate(top as usize);
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarsest_level_that_satisfies_the_step_is_chosen() {
        let cases = [
            (1_000, MetricLevel::Raw),
            (59_999, MetricLevel::Raw),
            (60_000, MetricLevel::Minute),
            (299_999, MetricLevel::Minute),
            (300_000, MetricLevel::FiveMinutes),
            (3_600_000, MetricLevel::Hour),
            (86_399_999, MetricLevel::Hour),
            (86_400_000, MetricLevel::Day),
            (30 * 86_400_000, MetricLevel::Day),
        ];
        for (step, want) in cases {
            assert_eq!(level_for_step(step), want, "step {step}");
        }
    }

    #[test]
    fn names_are_checked_against_the_catalog_and_capped() {
        assert_eq!(
            parse_names("cpu.percent, load.1,cpu.percent").unwrap(),
            vec![Metric::CpuPercent, Metric::Load1]
        );
        assert!(matches!(
            parse_names("cpu.percnt"),
            Err(DomainError::Invalid { .. })
        ));
        assert!(parse_names(" , ").is_err());
        let many: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
        assert!(parse_names(&many.join(",")).is_err());
        assert_eq!(csv_field("a,b\"c"), "\"a,b\"\"c\"");
    }
}
