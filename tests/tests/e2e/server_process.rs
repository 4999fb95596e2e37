//! A `reap3r serve` process with fixed ports and data dir, so a test can SIGKILL or SIGTERM it
//! and start it again on the same state, plus the admin CLI run against that data dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use crate::api_harness::{Api, PASSWORD};
use crate::harness::{AgentProcess, SERVER_BIN, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// The heartbeat settings the server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeats {
    /// 1 s heartbeats and a 2 s job grace, for tests about something else.
    Quick,
    /// What a user gets: nothing set.
    Defaults,
}

pub struct ServerProcess {
    data: PathBuf,
    quic: String,
    pub http: String,
    heartbeats: Heartbeats,
    /// More `REAP3R_*` variables for the server (and the CLI).
    env: Vec<(String, String)>,
    /// Where the server's output goes (appended across starts); discarded when `None`.
    log: Option<PathBuf>,
    child: Option<tokio::process::Child>,
}

impl ServerProcess {
    pub fn new(dir: &Path, heartbeats: Heartbeats) -> Result<Self> {
        reap3r_control_plane::install_crypto_provider();
        Ok(Self {
            data: dir.join("server"),
            quic: free_port(true)?,
            http: free_port(false)?,
            heartbeats,
            env: Vec::new(),
            log: None,
            child: None,
        })
    }

    /// Sets a server variable for every later start (and CLI run).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps the server's stdout and stderr in `path`, to read what it logged.
    pub fn with_log(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    /// The SQLite file of this server's data dir (read by tests while the server is down).
    pub fn database(&self) -> PathBuf {
        self.data.join("reap3r.db")
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(SERVER_BIN);
        cmd.env("REAP3R_DATA_DIR", &self.data)
            .env("REAP3R_QUIC_ADDR", &self.quic)
            .env("REAP3R_HTTP_ADDR", &self.http)
            .env("REAP3R_LOG", "warn")
            .env_remove("REAP3R_DATABASE_URL")
            .kill_on_drop(true);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if self.heartbeats == Heartbeats::Quick {
            cmd.env("REAP3R_HEARTBEAT_INTERVAL_S", "1")
                .env("REAP3R_JOB_GRACE_S", "2");
        }
        cmd
    }

    pub async fn start(&mut self) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("serve");
        match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                cmd.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        let child = cmd.spawn()?;
        self.child = Some(child);
        let url = format!("http://{}/api/ready", self.http);
        eventually("the server to be ready", WAIT, || async {
            Ok(reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        })
        .await
    }

    /// Starts the server, enrols `agents` agent processes and an org admin, and waits until every
    /// agent is online.
    pub async fn start_with_fleet(&mut self, agents: usize) -> Result<(Api, Vec<AgentProcess>)> {
        self.start().await?;
        let uses = agents.to_string();
        let token: reap3r_control_plane::cli::CreatedToken = serde_json::from_str(
            &self
                .cli(
                    &[
                        "token",
                        "create",
                        "--expires",
                        "1h",
                        "--max-uses",
                        &uses,
                        "--json",
                    ],
                    None,
                )
                .await?,
        )?;
        let dir = self.data.parent().context("data dir has a parent")?;
        let mut fleet = Vec::new();
        for i in 0..agents {
            let mut agent = AgentProcess::enrol(dir, &format!("agent-{i}"), &token).await?;
            agent.start()?;
            fleet.push(agent);
        }
        self.cli(
            &[
                "user",
                "create",
                "--email",
                "ops@example.com",
                "--role",
                "org_admin",
                "--password-stdin",
            ],
            Some(&format!("{PASSWORD}\n")),
        )
        .await?;
        let api = Api::from_base(&format!("http://{}", self.http))
            .login("ops@example.com", PASSWORD)
            .await?
            .0;
        let online = i64::try_from(agents)?;
        eventually("agents online", WAIT, || async {
            let stats = api.get("/api/agents/stats").await?.expect(200)?;
            Ok((stats["online"] == online).then_some(()))
        })
        .await?;
        Ok((api, fleet))
    }

    pub async fn sigkill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, as systemd stops a service; returns once the process has exited, and fails
    /// unless it exited cleanly.
    pub async fn sigterm(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().context("server pid")?;
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let exit = tokio::time::timeout(WAIT, child.wait())
            .await
            .context("the server to exit after SIGTERM")??;
        if !exit.success() {
            bail!("the server exited with {exit} after SIGTERM");
        }
        Ok(())
    }

    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

fn free_port(udp: bool) -> Result<String> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string()
    })
}
