//! Prometheus text metrics: HTTP request latency histograms per route template, authentication
//! failures, and the fleet counters kept by the actors.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use reap3r_actors::FleetStats;

use crate::rate_limit::RateKind;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_s: f64,
}

#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// (method, route template, status) → histogram. Templates keep the label set bounded.
    requests: Mutex<BTreeMap<(String, &'static str, u16), Histogram>>,
    pub auth_failures: AtomicU64,
    pub logins: AtomicU64,
    pub ws_clients: AtomicU64,
    /// Requests refused with 429 by the rate limits, by [`RateKind`] (in `RateKind::ALL` order).
    rate_limited: [AtomicU64; 3],
}

impl HttpMetrics {
    pub fn observe(&self, method: &str, route: &'static str, status: u16, seconds: f64) {
        let Ok(mut map) = self.requests.lock() else {
            return;
        };
        let h = map.entry((method.to_owned(), route, status)).or_default();
        h.count += 1;
        h.sum_s += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused by the rate limit of a `kind` of budget.
    pub fn rate_limited(&self, kind: RateKind) {
        Self::bump(&self.rate_limited[kind as usize]);
    }

    pub fn rate_limited_count(&self, kind: RateKind) -> u64 {
        self.rate_limited[kind as usize].load(Ordering::Relaxed)
    }

    /// The whole exposition, HTTP and fleet.
    pub fn render(&self, fleet: &FleetStats) -> String {
        let mut out = String::with_capacity(4096);
        self.render_http(&mut out);
        render_fleet(&mut out, fleet);
        out
    }

    fn render_http(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP reap3r_http_request_duration_seconds HTTP request latency by route template.\n\
             # TYPE reap3r_http_request_duration_seconds histogram"
        );
        if let Ok(map) = self.requests.lock() {
            for ((method, route, status), h) in map.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "reap3r_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "reap3r_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                     reap3r_http_request_duration_seconds_sum{{{labels}}} {}\n\
                     reap3r_http_request_duration_seconds_count{{{labels}}} {}",
                    h.count, h.sum_s, h.count
                );
            }
        }
        counter(
            out,
            "reap3r_auth_failures_total",
            "Requests refused for a missing or bad credential, and failed logins.",
            self.auth_failures.load(Ordering::Relaxed),
        );
        counter(
            out,
            "reap3r_logins_total",
            "Successful logins.",
            self.logins.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP reap3r_http_rate_limited_total Requests refused with 429 by the rate limits, \
             by budget: api_key, session, or the client address (no valid credential).\n\
             # TYPE reap3r_http_rate_limited_total counter"
        );
        for kind in RateKind::ALL {
            let _ = writeln!(
                out,
                "reap3r_http_rate_limited_total{{credential=\"{}\"}} {}",
                kind.as_str(),
                self.rate_limited_count(kind)
            );
        }
        gauge(
            out,
            "reap3r_ws_clients",
            "Connected event WebSocket clients.",
            self.ws_clients.load(Ordering::Relaxed),
        );
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn render_fleet(out: &mut String, fleet: &FleetStats) {
    let s = fleet.snapshot();
    gauge(
        out,
        "reap3r_agents_connected",
        "Agents with a live session on this node.",
        s.sessions_online,
    );
    counter(
        out,
        "reap3r_agent_connections_total",
        "QUIC connections accepted.",
        s.connections_accepted,
    );
    counter(
        out,
        "reap3r_agent_messages_in_total",
        "Verified agent messages received.",
        s.messages_in,
    );
    counter(
        out,
        "reap3r_agent_messages_out_total",
        "Signed messages sent to agents.",
        s.messages_out,
    );
    counter(
        out,
        "reap3r_agent_heartbeats_total",
        "Heartbeats received.",
        s.heartbeats,
    );
    counter(
        out,
        "reap3r_agent_enrolments_total",
        "Agents enrolled.",
        s.enrolments,
    );
    counter(
        out,
        "reap3r_actor_restarts_total",
        "Agent session actors that crashed and were replaced when the agent reconnected.",
        s.session_crashes,
    );
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "reap3r_jobs_created_total",
            "Jobs created.",
            get(&fleet.jobs_created),
        ),
        (
            "reap3r_job_dispatches_total",
            "Job dispatches sent to agents (first sends and re-sends).",
            get(&fleet.job_dispatches),
        ),
        (
            "reap3r_job_results_stored_total",
            "Job results committed (each target at most once).",
            get(&fleet.job_results_stored),
        ),
        (
            "reap3r_job_results_duplicate_total",
            "Job results for already finished targets: acknowledged, not stored.",
            get(&fleet.job_results_duplicate),
        ),
        (
            "reap3r_job_actor_restarts_total",
            "Job actors that crashed and were restarted from the database.",
            get(&fleet.job_actor_crashes),
        ),
        (
            "reap3r_job_refusals_total",
            "Job dispatches an agent refused.",
            get(&fleet.job_refusals),
        ),
        (
            "reap3r_job_duplicate_acks_total",
            "Job dispatches an agent already had.",
            get(&fleet.job_duplicate_acks),
        ),
        (
            "reap3r_signature_batches_total",
            "Batches of agent signatures verified together.",
            get(&fleet.signature_batches),
        ),
        (
            "reap3r_signatures_verified_total",
            "Agent signatures verified (in batches of any size).",
            get(&fleet.signatures_verified),
        ),
        (
            "reap3r_handshakes_shed_total",
            "Agent connections refused before TLS: too long a wait for admission, or a full queue.",
            get(&fleet.handshakes_shed),
        ),
        (
            "reap3r_subsystem_restarts_total",
            "Long-lived subsystems (presence writer, session or job supervisor) restarted after a crash.",
            get(&fleet.subsystem_restarts),
        ),
        (
            "reap3r_metrics_flushes_total",
            "Metrics writer flushes (one multi-row insert each).",
            get(&fleet.metrics_flushes),
        ),
        (
            "reap3r_metrics_samples_stored_total",
            "Agent metrics samples stored.",
            get(&fleet.metrics_stored),
        ),
        (
            "reap3r_metrics_samples_dropped_total",
            "Agent metrics samples dropped because the metrics writer's intake was full.",
            get(&fleet.metrics_dropped),
        ),
        (
            "reap3r_metrics_samples_refused_total",
            "Agent metrics samples refused: taken in the far future or before raw retention.",
            get(&fleet.metrics_refused),
        ),
        (
            "reap3r_metrics_flush_failures_total",
            "Metrics writer flushes whose transaction failed (their samples are retried).",
            get(&fleet.metrics_flush_failures),
        ),
        (
            "reap3r_metrics_samples_lost_total",
            "Agent metrics samples a failed flush could not keep for a retry (intake full, or \
             refused by the database for good).",
            get(&fleet.metrics_lost),
        ),
        (
            "reap3r_metrics_late_buckets_total",
            "Finished rollup buckets that late (buffered) samples were merged into.",
            get(&fleet.metrics_late_buckets),
        ),
        (
            "reap3r_metrics_rollup_rows_total",
            "Metrics rollup rows written by rollup passes.",
            get(&fleet.metrics_rollup_rows),
        ),
        (
            "reap3r_metrics_expired_rows_total",
            "Metrics rows deleted by retention.",
            get(&fleet.metrics_expired_rows),
        ),
    ] {
        counter(out, name, help, value);
    }
    let _ = writeln!(
        out,
        "# HELP reap3r_agent_connection_closes_total Agent connections closed, by reason.\n\
         # TYPE reap3r_agent_connection_closes_total counter"
    );
    for (reason, n) in s.closes {
        let _ = writeln!(
            out,
            "reap3r_agent_connection_closes_total{{reason=\"{reason}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = HttpMetrics::default();
        m.observe("GET", "/api/agents", 200, 0.003);
        m.observe("GET", "/api/agents", 200, 0.2);
        let text = m.render(&FleetStats::default());
        let line = |le: &str| {
            format!(
                "reap3r_http_request_duration_seconds_bucket{{method=\"GET\",route=\"/api/agents\",status=\"200\",le=\"{le}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 0\n", line("0.0025"))));
        assert!(text.contains(&format!("{} 1\n", line("0.005"))));
        assert!(text.contains(&format!("{} 2\n", line("0.25"))));
        assert!(text.contains(&format!("{} 2\n", line("+Inf"))));
        assert!(text.contains("reap3r_agents_connected 0"));
        assert!(text.contains("reap3r_actor_restarts_total 0"));
        assert!(text.contains("reap3r_http_rate_limited_total{credential=\"api_key\"} 0\n"));
    }

    #[test]
    fn rate_limited_requests_are_counted_by_budget() {
        let m = HttpMetrics::default();
        m.rate_limited(RateKind::Session);
        m.rate_limited(RateKind::Session);
        m.rate_limited(RateKind::Address);
        let text = m.render(&FleetStats::default());
        for (kind, n) in [("api_key", 0), ("session", 2), ("address", 1)] {
            let line = format!("reap3r_http_rate_limited_total{{credential=\"{kind}\"}} {n}\n");
            assert!(text.contains(&line), "missing {line} in {text}");
        }
    }
}
