//! Typed server configuration: optional TOML file, then `REAP3R_*` environment overrides.
//! Every problem is collected and reported at once, before any port is bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reap3r_actors::files::FileSettings;
use reap3r_actors::metrics::{DEFAULT_FLUSH_MAX, DEFAULT_INTAKE_CAPACITY};
use reap3r_actors::shell::ShellSettings;
use reap3r_actors::vault::KeySource;

use reap3r_api::rate_limit::RateSettings;

mod api;
mod files;
mod shell;

pub use api::ApiTls;
use api::{API_RATE_BURST, FileNumber, parse_api_tls, parse_rate};
use serde::Deserialize;

/// Exit code for configuration errors (EX_CONFIG is 78; EX_USAGE 64 is what operators grep for).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The master key file (default: `master.key` in the data dir, created on a fresh database).
    pub master_key_file: Option<PathBuf>,
    /// A command that prints the master keys (a KMS or HSM client) instead of a file.
    pub master_key_command: Option<String>,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    /// `host:port` agents dial; defaults to the QUIC address (loopback if it is unspecified).
    pub public_addr: String,
    /// PostgreSQL URL; `None` means the embedded SQLite file in the data dir.
    pub database_url: Option<String>,
    pub node_id: String,
    pub heartbeat_interval_s: u32,
    pub missed_heartbeats: u32,
    pub shutdown_grace: Duration,
    pub max_concurrent_handshakes: usize,
    /// Seconds past a job's timeout (or a cancel) the server waits for an agent's result.
    pub job_grace_s: u64,
    /// Let alerting integrations reach loopback, link-local and metadata addresses, and speak
    /// plain SMTP to a loopback server (local tests only; refused otherwise, against SSRF).
    pub alerting_allow_loopback: bool,
    /// How often agents sample metrics (pushed to them in their config).
    pub metrics_interval_s: u32,
    /// Raw metric samples are kept this many hours; also the oldest buffered sample accepted.
    pub metrics_raw_retention_h: u32,
    /// Rollup retention in days: 1 m, 5 m, 1 h, 1 d.
    pub metrics_rollup_retention_d: [u32; 4],
    /// Most metric samples waiting for the writer (also what a failed flush keeps for its
    /// retry); past it new samples are dropped and counted.
    pub metrics_queue: u32,
    /// TLS on the HTTP API: off (plain HTTP), the node's own certificate, or PEM files.
    pub api_tls: ApiTls,
    /// The API's token bucket per credential (and per client address without one).
    pub api_rate: RateSettings,
    /// Remote shells: limits, timeouts, recordings.
    pub shell: ShellSettings,
    /// File transfers: size cap, limits, rate limit, resume window.
    pub files: FileSettings,
}

/// Metrics settings: (file key and variable suffix, default, allowed range). 1 h rollups must
/// outlive a day so the 1 d pass reads complete days.
const METRICS_INTERVAL: (&str, u32, std::ops::RangeInclusive<u32>) =
    ("metrics_interval_s", 60, 5..=3600);
const METRICS_RAW_RETENTION: (&str, u32, std::ops::RangeInclusive<u32>) =
    ("metrics_raw_retention_h", 48, 2..=8760);
/// At least one flush's worth; at most what a node's memory holds easily (~1 KiB a sample).
const METRICS_QUEUE: (&str, u32, std::ops::RangeInclusive<u32>) = (
    "metrics_queue",
    DEFAULT_INTAKE_CAPACITY as u32,
    DEFAULT_FLUSH_MAX as u32..=2_000_000,
);
const METRICS_ROLLUP_RETENTION: [(&str, u32, std::ops::RangeInclusive<u32>); 4] = [
    ("metrics_retention_1m_d", 7, 1..=3650),
    ("metrics_retention_5m_d", 30, 1..=3650),
    ("metrics_retention_1h_d", 180, 2..=3650),
    ("metrics_retention_1d_d", 730, 1..=36500),
];

/// The file form: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
    master_key_command: Option<String>,
    http_addr: Option<String>,
    quic_addr: Option<String>,
    public_addr: Option<String>,
    database_url: Option<String>,
    node_id: Option<String>,
    heartbeat_interval_s: Option<u32>,
    missed_heartbeats: Option<u32>,
    shutdown_grace_s: Option<u64>,
    max_concurrent_handshakes: Option<usize>,
    job_grace_s: Option<u64>,
    alerting_allow_loopback: Option<bool>,
    metrics_interval_s: Option<u32>,
    metrics_raw_retention_h: Option<u32>,
    metrics_retention_1m_d: Option<u32>,
    metrics_retention_5m_d: Option<u32>,
    metrics_retention_1h_d: Option<u32>,
    metrics_retention_1d_d: Option<u32>,
    metrics_queue: Option<u32>,
    api_tls: Option<String>,
    api_tls_cert: Option<PathBuf>,
    api_tls_key: Option<PathBuf>,
    api_rate_per_s: Option<FileNumber>,
    api_rate_burst: Option<u32>,
    #[serde(flatten)]
    shell: shell::ShellFile,
    #[serde(flatten)]
    files: files::FilesFile,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

const ENV_KEYS: &[&str] = &[
    "REAP3R_DATA_DIR",
    "REAP3R_MASTER_KEY_FILE",
    "REAP3R_MASTER_KEY_COMMAND",
    "REAP3R_HTTP_ADDR",
    "REAP3R_QUIC_ADDR",
    "REAP3R_PUBLIC_ADDR",
    "REAP3R_DATABASE_URL",
    "REAP3R_NODE_ID",
    "REAP3R_HEARTBEAT_INTERVAL_S",
    "REAP3R_MISSED_HEARTBEATS",
    "REAP3R_SHUTDOWN_GRACE_S",
    "REAP3R_MAX_CONCURRENT_HANDSHAKES",
    "REAP3R_JOB_GRACE_S",
    "REAP3R_ALERTING_ALLOW_LOOPBACK",
    "REAP3R_METRICS_INTERVAL_S",
    "REAP3R_METRICS_RAW_RETENTION_H",
    "REAP3R_METRICS_RETENTION_1M_D",
    "REAP3R_METRICS_RETENTION_5M_D",
    "REAP3R_METRICS_RETENTION_1H_D",
    "REAP3R_METRICS_RETENTION_1D_D",
    "REAP3R_METRICS_QUEUE",
    "REAP3R_API_TLS",
    "REAP3R_API_TLS_CERT",
    "REAP3R_API_TLS_KEY",
    "REAP3R_API_RATE_PER_S",
    "REAP3R_API_RATE_BURST",
    "REAP3R_SHELL_REQUIRE_STEP_UP",
    "REAP3R_SHELL_MAX_PER_AGENT",
    "REAP3R_SHELL_MAX_PER_OPERATOR",
    "REAP3R_SHELL_OPEN_TIMEOUT_S",
    "REAP3R_SHELL_IDLE_TIMEOUT_S",
    "REAP3R_SHELL_MAX_DURATION_S",
    "REAP3R_SHELL_REATTACH_GRACE_S",
    "REAP3R_SHELL_RECORDING_CAP_MB",
    "REAP3R_SHELL_RETENTION_D",
    "REAP3R_FILE_MAX_MB",
    "REAP3R_FILE_MAX_PER_AGENT",
    "REAP3R_FILE_RATE_LIMIT_KIB_S",
    "REAP3R_FILE_RESUME_TIMEOUT_S",
];

impl Config {
    /// Loads from an optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("REAP3R_"))
            .collect();
        let text =
            match file {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    ConfigErrors(vec![format!("config file {}: {e}", path.display())])
                })?),
                None => None,
            };
        Self::from_parts(text.as_deref(), &env)
    }

    /// Builds a config from TOML text and environment variables (testable without a process env).
    pub fn from_parts(
        toml_text: Option<&str>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let file: FileConfig = match toml_text.map(toml::from_str) {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                errors.push(format!("config file: {}", e.message()));
                FileConfig::default()
            }
            None => FileConfig::default(),
        };
        for key in env.keys() {
            if !ENV_KEYS.contains(&key.as_str())
                && !key.starts_with("REAP3R_TEST_")
                && !key.starts_with("REAP3R_REQUIRE_")
                && key != "REAP3R_LOG"
                && !key.starts_with("REAP3R_AGENT_")
            {
                errors.push(format!("unknown environment variable {key}"));
            }
        }
        let pick = |key: &str, from_file: Option<String>| env.get(key).cloned().or(from_file);

        let data_dir = pick(
            "REAP3R_DATA_DIR",
            file.data_dir.map(|p| p.display().to_string()),
        )
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("reap3r-data"));
        let master_key_file = pick(
            "REAP3R_MASTER_KEY_FILE",
            file.master_key_file.map(|p| p.display().to_string()),
        )
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
        let master_key_command =
            pick("REAP3R_MASTER_KEY_COMMAND", file.master_key_command).filter(|c| !c.is_empty());
        if master_key_file.is_some() && master_key_command.is_some() {
            errors.push(
                "master_key_file and master_key_command are exclusive: the keys come from one place"
                    .into(),
            );
        }
        let http_addr = parse_addr(
            &mut errors,
            "http_addr",
            pick("REAP3R_HTTP_ADDR", file.http_addr),
            "127.0.0.1:8080",
        );
        let quic_addr = parse_addr(
            &mut errors,
            "quic_addr",
            pick("REAP3R_QUIC_ADDR", file.quic_addr),
            "127.0.0.1:4433",
        );
        let public_addr = pick("REAP3R_PUBLIC_ADDR", file.public_addr)
            .unwrap_or_else(|| default_public_addr(quic_addr));
        let database_url = pick("REAP3R_DATABASE_URL", file.database_url).filter(|u| !u.is_empty());
        let known_scheme = |u: &str| {
            ["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| u.starts_with(p))
        };
        if database_url.as_deref().is_some_and(|u| !known_scheme(u)) {
            errors
                .push("database_url must start with postgres://, postgresql:// or sqlite:".into());
        }
        let node_id = pick("REAP3R_NODE_ID", file.node_id).unwrap_or_else(|| "node-1".into());
        if node_id.is_empty() || node_id.len() > 64 {
            errors.push("node_id must be 1 to 64 characters".into());
        }
        let heartbeat_interval_s = parse_num(
            &mut errors,
            "heartbeat_interval_s",
            env.get("REAP3R_HEARTBEAT_INTERVAL_S"),
            file.heartbeat_interval_s,
            30u32,
        );
        if !(1..=3600).contains(&heartbeat_interval_s) {
            errors.push("heartbeat_interval_s must be between 1 and 3600".into());
        }
        let missed_heartbeats = parse_num(
            &mut errors,
            "missed_heartbeats",
            env.get("REAP3R_MISSED_HEARTBEATS"),
            file.missed_heartbeats,
            3u32,
        );
        if !(2..=20).contains(&missed_heartbeats) {
            errors.push("missed_heartbeats must be between 2 and 20".into());
        }
        let grace = parse_num(
            &mut errors,
            "shutdown_grace_s",
            env.get("REAP3R_SHUTDOWN_GRACE_S"),
            file.shutdown_grace_s,
            10u64,
        );
        let max_concurrent_handshakes = parse_num(
            &mut errors,
            "max_concurrent_handshakes",
            env.get("REAP3R_MAX_CONCURRENT_HANDSHAKES"),
            file.max_concurrent_handshakes,
            512usize,
        );
        if max_concurrent_handshakes == 0 {
            errors.push("max_concurrent_handshakes must be at least 1".into());
        }
        let job_grace_s = parse_num(
            &mut errors,
            "job_grace_s",
            env.get("REAP3R_JOB_GRACE_S"),
            file.job_grace_s,
            10u64,
        );
        if !(1..=3600).contains(&job_grace_s) {
            errors.push("job_grace_s must be between 1 and 3600".into());
        }
        let alerting_allow_loopback = parse_bool(
            &mut errors,
            "REAP3R_ALERTING_ALLOW_LOOPBACK",
            env,
            file.alerting_allow_loopback,
            false,
        );
        let shell_step_up = parse_bool(
            &mut errors,
            "REAP3R_SHELL_REQUIRE_STEP_UP",
            env,
            file.shell.shell_require_step_up,
            true,
        );
        let mut ranged = |(name, default, range): (&str, u32, std::ops::RangeInclusive<u32>),
                          from_file: Option<u32>| {
            let var = format!("REAP3R_{}", name.to_uppercase());
            let v = parse_num(&mut errors, name, env.get(&var), from_file, default);
            if !range.contains(&v) {
                errors.push(format!(
                    "{name} must be between {} and {}",
                    range.start(),
                    range.end()
                ));
            }
            v
        };
        let metrics_interval_s = ranged(METRICS_INTERVAL, file.metrics_interval_s);
        let metrics_raw_retention_h = ranged(METRICS_RAW_RETENTION, file.metrics_raw_retention_h);
        let [r1m, r5m, r1h, r1d] = METRICS_ROLLUP_RETENTION;
        let metrics_rollup_retention_d = [
            ranged(r1m, file.metrics_retention_1m_d),
            ranged(r5m, file.metrics_retention_5m_d),
            ranged(r1h, file.metrics_retention_1h_d),
            ranged(r1d, file.metrics_retention_1d_d),
        ];
        let metrics_queue = ranged(METRICS_QUEUE, file.metrics_queue);
        let shell = shell::shell_settings(&mut ranged, &file.shell, shell_step_up);
        let files = files::file_settings(&mut ranged, &file.files);
        let api_tls = parse_api_tls(
            &mut errors,
            pick("REAP3R_API_TLS", file.api_tls),
            env.get("REAP3R_API_TLS_CERT")
                .map(PathBuf::from)
                .or(file.api_tls_cert),
            env.get("REAP3R_API_TLS_KEY")
                .map(PathBuf::from)
                .or(file.api_tls_key),
        );
        let api_rate = RateSettings {
            milli_per_s: parse_rate(
                &mut errors,
                env.get("REAP3R_API_RATE_PER_S"),
                file.api_rate_per_s,
            ),
            burst: {
                let (name, range) = API_RATE_BURST;
                let v = parse_num(
                    &mut errors,
                    name,
                    env.get("REAP3R_API_RATE_BURST"),
                    file.api_rate_burst,
                    RateSettings::DEFAULT.burst,
                );
                if !range.contains(&v) {
                    errors.push(format!(
                        "{name} must be between {} and {}",
                        range.start(),
                        range.end()
                    ));
                }
                v
            },
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            data_dir,
            master_key_file,
            master_key_command,
            http_addr,
            quic_addr,
            public_addr,
            database_url,
            node_id,
            heartbeat_interval_s,
            missed_heartbeats,
            shutdown_grace: Duration::from_secs(grace),
            max_concurrent_handshakes,
            job_grace_s,
            alerting_allow_loopback,
            metrics_interval_s,
            metrics_raw_retention_h,
            metrics_rollup_retention_d,
            metrics_queue,
            api_tls,
            api_rate,
            shell,
            files,
        })
    }

    /// A config for tests: everything in `data_dir`, ephemeral loopback ports, 1 s heartbeats.
    pub fn for_test(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            master_key_file: None,
            master_key_command: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_addr: String::new(),
            database_url: None,
            node_id: "test-node".into(),
            heartbeat_interval_s: 1,
            missed_heartbeats: 3,
            shutdown_grace: Duration::from_secs(5),
            max_concurrent_handshakes: 256,
            job_grace_s: 2,
            alerting_allow_loopback: false,
            metrics_interval_s: METRICS_INTERVAL.1,
            metrics_raw_retention_h: METRICS_RAW_RETENTION.1,
            metrics_rollup_retention_d: METRICS_ROLLUP_RETENTION.map(|(_, d, _)| d),
            metrics_queue: METRICS_QUEUE.1,
            api_tls: ApiTls::Off,
            api_rate: RateSettings::DEFAULT,
            shell: ShellSettings::default(),
            files: FileSettings::default(),
        }
    }
}

impl Config {
    /// Where the master keys come from.
    pub fn key_source(&self) -> KeySource {
        match (&self.master_key_command, &self.master_key_file) {
            (Some(cmd), _) => KeySource::Command(cmd.clone()),
            (None, Some(path)) => KeySource::File(path.clone()),
            (None, None) => KeySource::File(self.data_dir.join(MASTER_KEY_FILE)),
        }
    }
}

/// The default master key file's name in the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

fn default_public_addr(quic: SocketAddr) -> String {
    if quic.ip().is_unspecified() {
        format!("127.0.0.1:{}", quic.port())
    } else {
        quic.to_string()
    }
}

fn parse_addr(
    errors: &mut Vec<String>,
    name: &str,
    value: Option<String>,
    default: &str,
) -> SocketAddr {
    let text = value.unwrap_or_else(|| default.to_string());
    text.parse().unwrap_or_else(|_| {
        errors.push(format!(
            "{name}: '{text}' is not an address like 127.0.0.1:4433"
        ));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A boolean from `key` in the environment (`1`, `0`, `true`, `false`), else the file, else
/// `default`.
fn parse_bool(
    errors: &mut Vec<String>,
    key: &str,
    env: &HashMap<String, String>,
    from_file: Option<bool>,
    default: bool,
) -> bool {
    match env.get(key).map(String::as_str) {
        None => from_file.unwrap_or(default),
        Some("1" | "true") => true,
        Some("0" | "false") => false,
        Some(other) => {
            errors.push(format!("{key} must be 1, 0, true or false, not {other:?}"));
            default
        }
    }
}

fn parse_num<T: std::str::FromStr + Copy>(
    errors: &mut Vec<String>,
    name: &str,
    env: Option<&String>,
    file: Option<T>,
    default: T,
) -> T {
    match env {
        Some(text) => text.parse().unwrap_or_else(|_| {
            errors.push(format!("{name}: '{text}' is not a valid number"));
            default
        }),
        None => file.unwrap_or(default),
    }
}

#[cfg(test)]
mod tests;
