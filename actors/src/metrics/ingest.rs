//! From a verified wire sample to the series the writer stores: the metric catalog applied to
//! the agent's figures, labels cut to [`MAX_LABEL_LEN`], and the sample's time checked against
//! the server clock. Pure functions: the session calls them, the writer stores the result.

use reap3r_store::{NewSample, Point, Uuid};
use reap3r_wire::MetricsSample;

use super::catalog::{AgentSample, MAX_LABEL_LEN, Metric, SeriesValue};

/// A sample more than this far ahead of the server clock is refused (an agent clock that far off
/// would put points in the future of every chart).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60_000;

/// Ingestion, rollup and retention settings (server config `metrics_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Raw samples kept this long; also the oldest buffered sample accepted.
    pub raw_retention_ms: i64,
    /// Rollup retention: 1 m, 5 m, 1 h, 1 d.
    pub rollup_retention_ms: [i64; 4],
    /// The writer flushes this often, or sooner once [`Self::flush_max`] samples wait.
    pub flush_interval_ms: u64,
    /// Samples per flush (one INSERT of 4 parameters each).
    pub flush_max: usize,
    /// Samples waiting for the writer beyond this are dropped and counted.
    pub intake_capacity: usize,
    /// How often rollup passes and expiry run.
    pub maintain_interval_ms: u64,
    /// A bucket is rolled up this long after it ends, so samples in flight make it in.
    pub rollup_delay_ms: i64,
}

/// Samples waiting for the writer, at most, unless configured (`metrics_queue`).
pub const DEFAULT_INTAKE_CAPACITY: usize = 20_000;
/// Samples per flush.
pub const DEFAULT_FLUSH_MAX: usize = 2_000;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            raw_retention_ms: 48 * HOUR_MS,
            rollup_retention_ms: [7 * DAY_MS, 30 * DAY_MS, 180 * DAY_MS, 730 * DAY_MS],
            flush_interval_ms: 1_000,
            flush_max: DEFAULT_FLUSH_MAX,
            intake_capacity: DEFAULT_INTAKE_CAPACITY,
            maintain_interval_ms: 10_000,
            rollup_delay_ms: 15_000,
        }
    }
}

/// Why a sample was not admitted (counted, never a reason to close the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Future,
    TooOld,
}

/// Whether a sample taken at `taken_at_ms` may be stored at server time `now_ms`.
pub fn admit(taken_at_ms: u64, now_ms: u64, settings: &MetricsSettings) -> Result<i64, Refused> {
    let at = i64::try_from(taken_at_ms).map_err(|_| Refused::Future)?;
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    if at > now.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(Refused::Future);
    }
    if at < now.saturating_sub(settings.raw_retention_ms) {
        return Err(Refused::TooOld);
    }
    Ok(at)
}

/// The store's code for a metric: its position in [`Metric::ALL`] (the catalog only grows at
/// its end, so codes of stored rows keep their meaning).
pub fn code(metric: Metric) -> u8 {
    Metric::ALL.iter().position(|m| *m == metric).unwrap_or(0) as u8
}

pub fn from_code(code: u8) -> Option<Metric> {
    Metric::ALL.get(usize::from(code)).copied()
}

fn label(name: &str) -> String {
    let mut end = name.len().min(MAX_LABEL_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn percent(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

/// The series of one wire sample. A mount or interface named twice keeps its first figures.
pub fn series_of(s: &MetricsSample) -> Vec<SeriesValue> {
    let mut out = Vec::with_capacity(16 + s.mounts.len() * 3 + s.interfaces.len() * 4);
    let mut push = |metric, label: &str, value: f64| {
        out.push(SeriesValue {
            metric,
            label: label.to_string(),
            value,
        })
    };
    push(
        Metric::CpuPercent,
        "",
        f64::from(s.cpu_centipercent) / 100.0,
    );
    push(Metric::Load1, "", f64::from(s.load1_centi) / 100.0);
    push(Metric::Load5, "", f64::from(s.load5_centi) / 100.0);
    push(Metric::Load15, "", f64::from(s.load15_centi) / 100.0);
    push(Metric::MemUsedBytes, "", s.memory_used_bytes as f64);
    push(Metric::MemTotalBytes, "", s.memory_total_bytes as f64);
    if let Some(p) = percent(s.memory_used_bytes, s.memory_total_bytes) {
        push(Metric::MemUsedPercent, "", p);
    }
    push(Metric::SwapUsedBytes, "", s.swap_used_bytes as f64);
    push(Metric::SwapTotalBytes, "", s.swap_total_bytes as f64);
    let mut seen: Vec<String> = Vec::new();
    for m in s.mounts.iter() {
        let name = label(m.mount.as_str());
        if seen.contains(&name) {
            continue;
        }
        push(Metric::DiskUsedBytes, &name, m.used_bytes as f64);
        push(Metric::DiskTotalBytes, &name, m.total_bytes as f64);
        if let Some(p) = percent(m.used_bytes, m.total_bytes) {
            push(Metric::DiskUsedPercent, &name, p);
        }
        seen.push(name);
    }
    seen.clear();
    for i in s.interfaces.iter() {
        let name = label(i.name.as_str());
        if seen.contains(&name) {
            continue;
        }
        push(Metric::NetRxBytes, &name, i.rx_bytes as f64);
        push(Metric::NetTxBytes, &name, i.tx_bytes as f64);
        push(Metric::NetRxErrors, &name, i.rx_errors as f64);
        push(Metric::NetTxErrors, &name, i.tx_errors as f64);
        seen.push(name);
    }
    push(Metric::ProcessCount, "", f64::from(s.process_count));
    push(Metric::UptimeSeconds, "", s.uptime_s as f64);
    out
}

/// A verified sample of `agent_id`, if its time is admissible.
pub fn agent_sample(
    agent_id: Uuid,
    org_id: Uuid,
    s: &MetricsSample,
    now_ms: u64,
    settings: &MetricsSettings,
) -> Result<AgentSample, Refused> {
    Ok(AgentSample {
        agent_id,
        org_id,
        taken_at_ms: admit(s.taken_at_ms, now_ms, settings)?,
        values: series_of(s),
    })
}

/// The store's form of a sample.
pub fn new_sample(s: &AgentSample) -> NewSample {
    NewSample {
        org_id: s.org_id,
        agent_id: s.agent_id,
        taken_at_ms: s.taken_at_ms,
        points: s
            .values
            .iter()
            .map(|v| Point {
                code: code(v.metric),
                label: v.label.clone(),
                value: v.value,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use reap3r_wire::{Capped, InterfaceCounters, MountUsage, Name};

    use super::*;

    fn wire(at: u64) -> MetricsSample {
        MetricsSample {
            taken_at_ms: at,
            cpu_centipercent: 1250,
            load1_centi: 150,
            load5_centi: 100,
            load15_centi: 50,
            memory_used_bytes: 1,
            memory_total_bytes: 4,
            swap_used_bytes: 0,
            swap_total_bytes: 0,
            mounts: Capped::truncated(vec![
                MountUsage {
                    mount: Name::truncated("/"),
                    used_bytes: 3,
                    total_bytes: 4,
                },
                MountUsage {
                    mount: Name::truncated("/"),
                    used_bytes: 9,
                    total_bytes: 9,
                },
            ]),
            interfaces: Capped::truncated(vec![InterfaceCounters {
                name: Name::truncated("eth0"),
                rx_bytes: 10,
                tx_bytes: 20,
                rx_errors: 1,
                tx_errors: 2,
            }]),
            process_count: 42,
            uptime_s: 7,
        }
    }

    #[test]
    fn series_cover_the_catalog_and_codes_round_trip() {
        let series = series_of(&wire(0));
        let get = |m: Metric, l: &str| {
            series
                .iter()
                .find(|v| v.metric == m && v.label == l)
                .map(|v| v.value)
        };
        assert_eq!(get(Metric::CpuPercent, ""), Some(12.5));
        assert_eq!(get(Metric::MemUsedPercent, ""), Some(25.0));
        assert_eq!(get(Metric::DiskUsedPercent, "/"), Some(75.0));
        assert_eq!(get(Metric::NetTxErrors, "eth0"), Some(2.0));
        // No total: no percent rather than a division by zero.
        assert_eq!(get(Metric::DiskTotalBytes, "/"), Some(4.0));
        assert!(
            series
                .iter()
                .all(|v| v.metric != Metric::SwapUsedBytes || v.value == 0.0)
        );
        assert_eq!(
            series
                .iter()
                .filter(|v| v.metric == Metric::DiskUsedBytes)
                .count(),
            1
        );
        for m in Metric::ALL {
            assert_eq!(from_code(code(*m)), Some(*m));
            assert!(series.iter().any(|v| v.metric == *m) || *m == Metric::MemUsedPercent);
        }
    }

    #[test]
    fn far_future_is_refused_and_old_buffered_samples_are_admitted_up_to_raw_retention() {
        let s = MetricsSettings::default();
        let now = 1_000_000_000_000u64;
        assert_eq!(admit(now + 60_000, now, &s), Ok(now as i64 + 60_000));
        assert_eq!(admit(now + 6 * 60_000, now, &s), Err(Refused::Future));
        assert_eq!(admit(u64::MAX, now, &s), Err(Refused::Future));
        let hour_ago = now - 3_600_000;
        assert_eq!(admit(hour_ago, now, &s), Ok(hour_ago as i64));
        assert_eq!(admit(now - 49 * 3_600_000, now, &s), Err(Refused::TooOld));
    }
}
