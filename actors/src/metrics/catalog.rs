//! The metric catalog: every name a sample, a query or an alert rule may use. A name outside it
//! is refused with [`UnknownMetric`] (a 400 at the API), so a typo in a rule is an error, not a
//! rule that never fires.

use std::fmt;
use std::str::FromStr;

use reap3r_store::Uuid;

macro_rules! metrics {
    ($($variant:ident => $name:literal, $labelled:literal, $doc:literal;)+) => {
        /// One metric an agent reports. Labelled metrics carry a mount point or an interface
        /// name in [`SeriesValue::label`]; the others carry an empty label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric {
            $(#[doc = $doc] $variant,)+
        }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)+
                }
            }

            /// Whether series of this metric are per mount or per interface.
            pub fn labelled(self) -> bool {
                match self {
                    $(Metric::$variant => $labelled,)+
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(Metric::$variant => $doc,)+
                }
            }
        }

        impl FromStr for Metric {
            type Err = UnknownMetric;
            fn from_str(s: &str) -> Result<Self, UnknownMetric> {
                match s {
                    $($name => Ok(Metric::$variant),)+
                    other => Err(UnknownMetric(other.chars().take(64).collect())),
                }
            }
        }
    };
}

metrics! {
    CpuPercent => "cpu.percent", false, "CPU use over the sample interval, percent of all cores.";
    Load1 => "load.1", false, "Load average over 1 minute.";
    Load5 => "load.5", false, "Load average over 5 minutes.";
    Load15 => "load.15", false, "Load average over 15 minutes.";
    MemUsedBytes => "mem.used_bytes", false, "Memory in use, bytes.";
    MemTotalBytes => "mem.total_bytes", false, "Memory installed, bytes.";
    MemUsedPercent => "mem.used_percent", false, "Memory in use, percent of total.";
    SwapUsedBytes => "swap.used_bytes", false, "Swap in use, bytes.";
    SwapTotalBytes => "swap.total_bytes", false, "Swap configured, bytes.";
    DiskUsedBytes => "disk.used_bytes", true, "Space used on a mount, bytes.";
    DiskTotalBytes => "disk.total_bytes", true, "Size of a mount, bytes.";
    DiskUsedPercent => "disk.used_percent", true, "Space used on a mount, percent of its size.";
    NetRxBytes => "net.rx_bytes", true, "Bytes received on an interface since boot.";
    NetTxBytes => "net.tx_bytes", true, "Bytes sent on an interface since boot.";
    NetRxErrors => "net.rx_errors", true, "Receive errors on an interface since boot.";
    NetTxErrors => "net.tx_errors", true, "Transmit errors on an interface since boot.";
    ProcessCount => "processes.count", false, "Processes running.";
    UptimeSeconds => "uptime.seconds", false, "Seconds since the machine booted.";
}

/// Longest mount point or interface name kept in a label; longer ones are cut at a char boundary.
pub const MAX_LABEL_LEN: usize = 128;

/// A metric name outside the catalog (kept to 64 characters for the error message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?}")]
pub struct UnknownMetric(pub String);

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of one series in a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub metric: Metric,
    /// Mount point or interface name for labelled metrics, empty otherwise.
    pub label: String,
    pub value: f64,
}

/// One verified sample of one agent, as the metrics writer stores it and hands it, after the
/// commit, to whoever evaluates rules on it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSample {
    pub agent_id: Uuid,
    pub org_id: Uuid,
    /// When the agent took it (agent clock, checked against the server's on ingestion).
    pub taken_at_ms: i64,
    pub values: Vec<SeriesValue>,
}

/// Where the metrics writer hands each committed flush of samples. Alerting implements it; it
/// must not block (it queues and returns): the writer calls it from its handler.
pub trait SampleSink: Send + Sync + 'static {
    fn samples_committed(&self, batch: std::sync::Arc<[AgentSample]>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>(), Ok(*m));
        }
        assert_eq!(
            "cpu.percnt".parse::<Metric>(),
            Err(UnknownMetric("cpu.percnt".into()))
        );
    }
}
