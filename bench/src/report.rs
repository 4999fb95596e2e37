//! What a run found: figures (ours, and the peer's where there is one), correctness checks, and
//! the design targets. Printed as a table, or as JSON with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub key: String,
    pub name: String,
    pub unit: String,
    pub value: f64,
    /// The same workload against the peer (nats-server), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<f64>,
    /// `value / peer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// The run was not the size or shape the target is about.
    NotApplicable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Self {
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0 / 1024.0)
            .unwrap_or(f64::NAN);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_gib,
            kernel,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub agents: usize,
    pub machine: Machine,
    pub params: BTreeMap<String, Value>,
    pub figures: Vec<Figure>,
    pub checks: Vec<Check>,
    pub targets: Vec<Target>,
    /// Connection failures and losses the simulated agents saw, by kind.
    pub agent_errors: BTreeMap<String, u64>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, agents: usize) -> Self {
        Self {
            scenario: scenario.to_string(),
            agents,
            machine: Machine::detect(),
            params: BTreeMap::new(),
            figures: Vec::new(),
            checks: Vec::new(),
            targets: Vec::new(),
            agent_errors: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.to_string(), value.into());
    }

    pub fn fig(&mut self, key: &str, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            key: key.into(),
            name: name.into(),
            unit: unit.into(),
            value,
            peer: None,
            ratio: None,
        });
    }

    /// Adds the peer's figure to an existing one (by key).
    pub fn peer(&mut self, key: &str, peer: f64) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.key == key) {
            f.peer = Some(peer);
            f.ratio =
                (peer != 0.0 && peer.is_finite() && f.value.is_finite()).then(|| f.value / peer);
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    pub fn figure(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    pub fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn target(&mut self, name: &str, verdict: Verdict, detail: impl Into<String>) {
        self.targets.push(Target {
            name: name.into(),
            verdict,
            detail: detail.into(),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "reap3r-bench {} · {} agents · {} cores, {:.0} GiB, Linux {}",
            self.scenario, self.agents, m.cores, m.memory_gib, m.kernel
        );
        if !self.params.is_empty() {
            let params: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "  {}", params.join(" "));
        }
        let has_peer = self.figures.iter().any(|f| f.peer.is_some());
        let _ = writeln!(out);
        if has_peer {
            let _ = writeln!(
                out,
                "  {:<46} {:>14} {:>14} {:>8}",
                "figure", "reap3r", "nats-server", "ratio"
            );
        } else {
            let _ = writeln!(out, "  {:<46} {:>14}", "figure", "value");
        }
        for f in &self.figures {
            let ours = fmt_value(f.value, &f.unit);
            match (has_peer, f.peer) {
                (true, Some(p)) => {
                    let ratio = f
                        .ratio
                        .map(|r| format!("{r:.2}×"))
                        .unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "  {:<46} {:>14} {:>14} {:>8}",
                        f.name,
                        ours,
                        fmt_value(p, &f.unit),
                        ratio
                    );
                }
                (true, None) => {
                    let _ = writeln!(out, "  {:<46} {:>14} {:>14} {:>8}", f.name, ours, "", "");
                }
                (false, _) => {
                    let _ = writeln!(out, "  {:<46} {:>14}", f.name, ours);
                }
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "\nchecks");
            for c in &self.checks {
                let _ = writeln!(
                    out,
                    "  [{}] {} — {}",
                    if c.ok { " ok " } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets");
            for t in &self.targets {
                let v = match t.verdict {
                    Verdict::Met => "  met ",
                    Verdict::Missed => "MISSED",
                    Verdict::NotApplicable => " n/a  ",
                };
                let _ = writeln!(out, "  [{v}] {} — {}", t.name, t.detail);
            }
        }
        if !self.agent_errors.is_empty() {
            let errs: Vec<String> = self
                .agent_errors
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect();
            let _ = writeln!(out, "\nagent connection events: {}", errs.join(", "));
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let num = if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if unit.is_empty() {
        num
    } else {
        format!("{num} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_figures_checks_and_targets() {
        let mut r = Report::new("fanout", 10);
        r.fig("p99", "per-result p99", 12.5, "ms");
        r.peer("p99", 5.0);
        r.check("all results", true, "10/10");
        r.target("p99 ≤ 1 s", Verdict::Met, "12.5 ms");
        let text = r.render();
        assert!(text.contains("2.50×"), "{text}");
        assert!(text.contains("[ ok ] all results"));
        assert!(r.passed());
        assert!(r.to_json().contains("\"ratio\": 2.5"));
    }
}
