//! The server under test: a `reap3r serve` child process with its own data dir and ports (so
//! /proc/<pid> measures only the server), or an external server given by address. Admin work
//! (tokens, users) goes through the `reap3r` CLI against the same data dir, as an operator would.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::http::Api;
use crate::transport::Pins;

/// How to run (or reach) the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub bin: PathBuf,
    pub heartbeat_interval_s: u32,
    pub max_handshakes: Option<usize>,
    pub shutdown_grace_s: u64,
    pub log: String,
    /// Reuse this data dir (kept after the run) instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Talk to an already running server instead of starting one.
    pub external: Option<External>,
    /// More server configuration (`REAP3R_*` variables) a scenario needs.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct External {
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub pid: Option<u32>,
}

/// What `reap3r token create --json` prints (the fields the bench uses).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenInfo {
    pub token: String,
    pub fingerprint: String,
    pub server_key: String,
}

pub struct ServerProcess {
    pub opts: ServerOptions,
    pub data_dir: PathBuf,
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub log_path: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
    /// Each start appends to the same log file.
    starts: u32,
    _tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.pid)
            .field("quic_addr", &self.quic_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

/// The default server binary: `reap3r` next to this executable (the same target dir), else the
/// `bench-reap3r` wrapper built with the bench package.
pub fn default_server_bin() -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    // Test binaries live in target/<profile>/deps; the binaries one level up.
    for d in [
        dir.clone(),
        dir.parent().map(Path::to_path_buf).unwrap_or_default(),
    ] {
        for name in ["reap3r", "bench-reap3r"] {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    dir.join("reap3r")
}

fn free_ports() -> Result<(u16, u16)> {
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    Ok((udp.local_addr()?.port(), tcp.local_addr()?.port()))
}

impl ServerProcess {
    /// Starts a server (or attaches to the external one) and waits until it is ready.
    pub async fn start(opts: ServerOptions) -> Result<Self> {
        if let Some(ext) = opts.external.clone() {
            let data_dir = opts
                .data_dir
                .clone()
                .context("an external server needs --data-dir (for `reap3r token create`)")?;
            let server = Self {
                log_path: data_dir.join("server.log"),
                data_dir,
                quic_addr: ext.quic_addr,
                http_addr: ext.http_addr,
                child: None,
                pid: ext.pid,
                starts: 0,
                opts,
                _tmp: None,
            };
            server
                .wait_ready(Duration::from_secs(30))
                .await
                .context("external server not ready")?;
            return Ok(server);
        }
        if !opts.bin.is_file() {
            bail!(
                "server binary {} not found; build it with `cargo build --release --workspace --bin reap3r --bin reap3r-bench` or pass --server-bin",
                opts.bin.display()
            );
        }
        let (tmp, data_dir) = match &opts.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new().prefix("reap3r-bench-").tempdir()?;
                let d = t.path().join("server");
                (Some(t), d)
            }
        };
        let log_path = data_dir
            .parent()
            .map(|p| p.join("server.log"))
            .unwrap_or_else(|| PathBuf::from("server.log"));
        let mut last_err = anyhow!("server did not start");
        // Ports are picked free and then handed over; retry if another process took one meanwhile.
        for _ in 0..3 {
            let (quic, http) = free_ports()?;
            let mut server = Self {
                opts: opts.clone(),
                data_dir: data_dir.clone(),
                quic_addr: SocketAddr::from(([127, 0, 0, 1], quic)),
                http_addr: SocketAddr::from(([127, 0, 0, 1], http)),
                log_path: log_path.clone(),
                child: None,
                pid: None,
                starts: 0,
                _tmp: None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => {
                    server._tmp = tmp;
                    return Ok(server);
                }
                Err(err) => {
                    server.kill().await;
                    last_err = err;
                }
            }
        }
        Err(last_err)
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn owns_process(&self) -> bool {
        self.child.is_some()
    }

    /// A `reap3r` command with this server's configuration (and no other REAP3R_* variables,
    /// which the server would refuse as unknown).
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.opts.bin);
        for (key, _) in std::env::vars() {
            if key.starts_with("REAP3R_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("REAP3R_DATA_DIR", &self.data_dir)
            .env("REAP3R_QUIC_ADDR", self.quic_addr.to_string())
            .env("REAP3R_HTTP_ADDR", self.http_addr.to_string())
            .env(
                "REAP3R_HEARTBEAT_INTERVAL_S",
                self.opts.heartbeat_interval_s.to_string(),
            )
            .env(
                "REAP3R_SHUTDOWN_GRACE_S",
                self.opts.shutdown_grace_s.to_string(),
            )
            .env("REAP3R_LOG", &self.opts.log)
            .kill_on_drop(true);
        if let Some(n) = self.opts.max_handshakes {
            cmd.env("REAP3R_MAX_CONCURRENT_HANDSHAKES", n.to_string());
        }
        // The bench polls /metrics and samples the API from one address faster than any UI
        // would; the API's rate limits are not what it measures (a scenario's `env` can set them).
        cmd.env("REAP3R_API_RATE_PER_S", "0");
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        self.spawn().await?;
        self.wait_ready(Duration::from_secs(60)).await.map(|_| ())
    }

    /// Spawns `reap3r serve` (the caller waits for readiness as it sees fit).
    pub async fn spawn(&mut self) -> Result<()> {
        if self.opts.external.is_some() {
            bail!("cannot start an external server");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("server log {}", self.log_path.display()))?;
        self.starts += 1;
        let child = self
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.opts.bin.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    /// Polls `GET /api/ready` until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let api = Api::new(self.http_addr)?;
        let start = Instant::now();
        loop {
            if api.ready().await {
                return Ok(start.elapsed());
            }
            if let Some(child) = &self.child
                && let Some(pid) = child.id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                bail!("server exited; see {}", self.log_path.display());
            }
            if start.elapsed() > timeout {
                bail!(
                    "server not ready after {timeout:?}; see {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after `timeout`).
    pub async fn terminate(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let Some(mut child) = self.child.take() else {
            bail!("no server process of ours to stop");
        };
        if let Some(pid) = child.id() {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
            if !status.success() {
                bail!("kill -TERM {pid} failed");
            }
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!("server did not stop within {timeout:?} of SIGTERM");
            }
        }
        self.pid = None;
        Ok(start.elapsed())
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Resident set size of the server process, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.pid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        parse_vm_rss(&status)
    }

    /// User + system CPU time of the server process, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(self.pid?)
    }

    async fn run_cli(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(text.as_bytes()).await?;
            drop(input);
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "`reap3r {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `reap3r token create --json --max-uses N` against this server's data dir.
    pub async fn create_token(&self, max_uses: usize) -> Result<(TokenInfo, Pins)> {
        let uses = max_uses.max(1).to_string();
        let out = self
            .run_cli(
                &[
                    "token",
                    "create",
                    "--json",
                    "--expires",
                    "24h",
                    "--max-uses",
                    &uses,
                    "--label",
                    "reap3r-bench",
                ],
                None,
            )
            .await?;
        let token: TokenInfo = serde_json::from_str(&out).context("token create output")?;
        let pins = Pins::from_hex(&token.fingerprint, &token.server_key)?;
        Ok((token, pins))
    }

    /// `reap3r user create --role ROLE --password-stdin`.
    pub async fn create_user(&self, email: &str, role: &str, password: &str) -> Result<()> {
        self.run_cli(
            &[
                "user",
                "create",
                "--email",
                email,
                "--role",
                role,
                "--password-stdin",
            ],
            Some(password),
        )
        .await
        .map(|_| ())
    }
}

/// `perf record` attached to the server for the measured phase of a scenario (`--perf FILE`).
pub struct Profiler {
    child: Child,
}

impl std::fmt::Debug for Profiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiler").finish_non_exhaustive()
    }
}

impl Profiler {
    /// Starts sampling `pid` into `out` (cpu-clock at 499 Hz with DWARF call graphs).
    pub fn start(pid: u32, out: &Path) -> Result<Self> {
        let child = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting perf record (is perf installed?)")?;
        Ok(Self { child })
    }

    /// SIGINT, so perf writes its file, then waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
    }
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Clock ticks per second for /proc/<pid>/stat (`getconf CLK_TCK`; 100 on Linux in practice).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks())
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// This process's own CPU seconds (the simulator's load on the shared cores).
pub fn self_cpu_seconds() -> Option<f64> {
    proc_cpu_seconds(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t  1234 kB\nVmSwap: 0 kB\n"),
            Some(1234 * 1024)
        );
        let stat = "42 (re ap3r) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert!(self_cpu_seconds().is_some());
    }
}
