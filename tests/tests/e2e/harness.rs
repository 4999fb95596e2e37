//! The test fleet: servers on ephemeral ports, agents as real processes, and a raw protocol
//! client for hostile input. Everything waits by polling with a deadline, never by sleeping.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use reap3r_agent::protocol::{Answer, Challenged, Pending, ServerChannel, Session};
use reap3r_api::rate_limit::RateSettings;
use reap3r_control_plane::cli::{CreatedToken, TokenCreate, create_token};
use reap3r_control_plane::config::ApiTls;
use reap3r_control_plane::{Config, Node};
use reap3r_store::{Agent, AgentStatus, Backend, Uuid};
use reap3r_testkit::TestDatabase;
use reap3r_wire::{
    CloseCode, EnrolRequest, Hello, Message, OutboundSession, SigningKey, encode_frame,
};
use tempfile::TempDir;

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_e2e-agent");
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_e2e-reap3r");

pub fn init() {
    reap3r_control_plane::install_crypto_provider();
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The backends to run a test against: SQLite always, PostgreSQL when configured.
pub async fn backends() -> Result<Vec<Backend>> {
    let mut out = vec![Backend::Sqlite];
    if TestDatabase::postgres().await?.is_some() {
        out.push(Backend::Postgres);
    }
    Ok(out)
}

/// A fresh database for `backend`: `None` for SQLite (the server's file in its data dir), a
/// throw-away PostgreSQL database otherwise.
pub async fn database(backend: Backend) -> Result<Option<TestDatabase>> {
    Ok(match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            TestDatabase::postgres()
                .await?
                .context("PostgreSQL not configured")?,
        ),
    })
}

pub struct TestServer {
    node: Option<Node>,
    pub config: Config,
    pub dir: Arc<TempDir>,
    _db: Option<TestDatabase>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Result<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestServer::start`], with the test's changes to the config.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        init();
        let dir = Arc::new(tempfile::tempdir()?);
        let mut config = Config::for_test(&dir.path().join("server"));
        adjust(&mut config);
        let db = database(backend).await?;
        config.database_url = db.as_ref().map(|d| d.url.clone());
        let node = Node::start(config.clone()).await?;
        config.quic_addr = node.quic_addr;
        Ok(Self {
            node: Some(node),
            config,
            dir,
            _db: db,
        })
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("server is running")
    }

    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Graceful stop, then a new node on the same address, data dir and database.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.node = Some(Node::start(self.config.clone()).await?);
        Ok(())
    }

    pub async fn token(
        &self,
        require_approval: bool,
        max_uses: Option<u32>,
        expires: &str,
    ) -> Result<CreatedToken> {
        let node = self.node();
        let args = TokenCreate {
            org: None,
            expires: expires.into(),
            max_uses,
            require_approval,
            label: None,
            json: true,
        };
        create_token(&node.store, &node.identity, &node.public_addr(), &args).await
    }

    pub async fn agent(&self, id: Uuid) -> Result<Agent> {
        self.node()
            .store
            .agent(id)
            .await?
            .ok_or_else(|| anyhow!("agent {id} not found"))
    }

    pub async fn wait_status(
        &self,
        id: Uuid,
        status: AgentStatus,
        timeout: Duration,
    ) -> Result<()> {
        eventually(
            &format!("agent {id} to be {status:?}"),
            timeout,
            || async move { Ok((self.agent(id).await?.status() == status).then_some(())) },
        )
        .await
    }

    pub fn close_count(&self, code: CloseCode) -> u64 {
        self.node().stats().closes(code)
    }
}

/// A real `reap3r-agent` process.
pub struct AgentProcess {
    pub id: Uuid,
    pub data_dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl AgentProcess {
    /// Runs `enrol` as a process and returns the enrolled agent (not yet running).
    pub async fn enrol(dir: &Path, name: &str, token: &CreatedToken) -> Result<Self> {
        let data_dir = dir.join(name);
        let out = enrol_command(token, &data_dir, &token.fingerprint, &token.server_key)
            .output()
            .await?;
        if !out.status.success() {
            bail!("enrol failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8(out.stdout)?;
        let id = stdout
            .split_whitespace()
            .nth(2)
            .context("enrol output")?
            .parse()?;
        Ok(Self {
            id,
            data_dir,
            child: None,
        })
    }

    pub fn start(&mut self) -> Result<()> {
        let child = tokio::process::Command::new(AGENT_BIN)
            .args(["run", "--data-dir"])
            .arg(&self.data_dir)
            .env("REAP3R_AGENT_MAX_BACKOFF_MS", "1000")
            .env("REAP3R_LOG", "warn")
            // The agent's shells start the real default shell (bash -i), which reads
            // ~/.bashrc: a home of its own keeps the machine's rc files (pyenv hooks on every
            // prompt, say) out of the tests' timing.
            .env("HOME", &self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the agent vanishes without a goodbye, as on a power cut.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

pub fn enrol_command(
    token: &CreatedToken,
    data_dir: &Path,
    fingerprint: &str,
    server_key: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(AGENT_BIN);
    cmd.args([
        "enroll",
        "--server",
        &token.server,
        "--token",
        &token.token,
        "--fingerprint",
        fingerprint,
        "--server-key",
        server_key,
        "--data-dir",
    ])
    .arg(data_dir)
    .env("REAP3R_LOG", "warn")
    .kill_on_drop(true);
    cmd
}

pub struct TestFleet {
    pub server: TestServer,
    pub agents: Vec<AgentProcess>,
}

/// A change to the server's test config.
type Adjust = Box<dyn FnOnce(&mut Config) + Send>;

pub struct FleetBuilder {
    agents: usize,
    backend: Backend,
    api_tls: ApiTls,
    api_rate: Option<RateSettings>,
    adjust: Option<Adjust>,
}

impl TestFleet {
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            agents: 1,
            backend: Backend::Sqlite,
            api_tls: ApiTls::Off,
            api_rate: None,
            adjust: None,
        }
    }
}

impl FleetBuilder {
    pub fn agents(mut self, n: usize) -> Self {
        self.agents = n;
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Serves the API over TLS (`Api::new` then connects pinned to the served certificate).
    pub fn api_tls(mut self, tls: ApiTls) -> Self {
        self.api_tls = tls;
        self
    }

    /// The API's rate limit per credential (and per client address).
    pub fn api_rate(mut self, rate: RateSettings) -> Self {
        self.api_rate = Some(rate);
        self
    }

    /// Any other change to the server's config (applied last).
    pub fn configure(mut self, adjust: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.adjust = Some(Box::new(adjust));
        self
    }

    /// Starts a server, enrols the agents with one token, runs them and waits until all are online.
    pub async fn spawn(self) -> Result<TestFleet> {
        let (api_tls, api_rate, adjust) = (self.api_tls, self.api_rate, self.adjust);
        let server = TestServer::start_with(self.backend, |c| {
            c.api_tls = api_tls;
            if let Some(rate) = api_rate {
                c.api_rate = rate;
            }
            if let Some(adjust) = adjust {
                adjust(c);
            }
        })
        .await?;
        let mut agents = Vec::new();
        if self.agents == 0 {
            return Ok(TestFleet { server, agents });
        }
        let token = server.token(false, Some(self.agents as u32), "1h").await?;
        for i in 0..self.agents {
            let mut agent =
                AgentProcess::enrol(server.dir.path(), &format!("agent-{i}"), &token).await?;
            agent.start()?;
            agents.push(agent);
        }
        for agent in &agents {
            server
                .wait_status(agent.id, AgentStatus::Online, Duration::from_secs(20))
                .await?;
        }
        Ok(TestFleet { server, agents })
    }
}

/// A hand-driven protocol client. The normal path (hello or enrolment, then signing) goes
/// through the agent's protocol core; the hostile path can sign as anyone with any key, replay,
/// and send raw bytes.
pub struct RawClient {
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    phase: Phase,
    nonce: [u8; 16],
    _endpoint: Endpoint,
}

/// Where the client is in the core's handshake.
enum Phase {
    Challenged(Challenged),
    Pending(Pending),
    Live(Session),
    /// A step failed; nothing more to verify with.
    Spent,
}

impl RawClient {
    pub async fn connect(server: &TestServer) -> Result<Self> {
        let node = server.node();
        let fingerprint: [u8; 32] = hex::decode(node.identity.fingerprint())?
            .try_into()
            .map_err(|_| anyhow!("fingerprint"))?;
        let endpoint = reap3r_agent::transport::client_endpoint(node.quic_addr)?;
        let config = reap3r_agent::transport::client_config(fingerprint, Duration::from_secs(10))?;
        let (conn, send, mut recv) =
            reap3r_agent::transport::connect(&endpoint, node.quic_addr, config).await?;
        let frame = reap3r_agent::transport::read_frame(&mut recv).await?;
        let challenged = Challenged::from_frame(frame, &node.identity.signing_key.verifying_key())?;
        Ok(Self {
            conn,
            send,
            recv,
            nonce: challenged.nonce(),
            phase: Phase::Challenged(challenged),
            _endpoint: endpoint,
        })
    }

    /// Hostile path: a signer for this session as `sender` with `key`.
    pub fn outbound(&self, sender: [u8; 16], key: &SigningKey) -> OutboundSession {
        OutboundSession::new(sender, self.nonce, key.clone())
    }

    fn challenged(&mut self) -> Result<Challenged> {
        match std::mem::replace(&mut self.phase, Phase::Spent) {
            Phase::Challenged(c) => Ok(c),
            _ => bail!("the opening was sent already"),
        }
    }

    /// Normal path: says hello as agent `id` (signed with `key`) through the core.
    pub async fn hello(&mut self, id: Uuid, key: &SigningKey, hello: Hello) -> Result<()> {
        let (frame, pending) = self.challenged()?.hello(id.into_bytes(), key, hello, 0);
        self.phase = Phase::Pending(pending);
        self.send_envelope(&frame).await
    }

    /// Normal path: enrols `key` with the request's token through the core.
    pub async fn enrol(&mut self, key: &SigningKey, request: EnrolRequest) -> Result<()> {
        let (frame, pending) = self.challenged()?.enrol(key, request, 0);
        self.phase = Phase::Pending(pending);
        self.send_envelope(&frame).await
    }

    /// Normal path: the server's answer to the hello (`Welcome`, after which [`seal`](Self::seal)
    /// signs for the live session) or to the enrolment (`EnrolResult`).
    pub async fn read_answer(&mut self) -> Result<Message> {
        let Phase::Pending(pending) = std::mem::replace(&mut self.phase, Phase::Spent) else {
            bail!("no hello or enrolment is waiting for an answer");
        };
        let frame = reap3r_agent::transport::read_frame(&mut self.recv).await?;
        Ok(match pending.on_frame(frame)? {
            Answer::Welcomed { session, welcome } => {
                self.phase = Phase::Live(session);
                Message::Welcome(welcome)
            }
            Answer::Enrolled(result) => Message::EnrolResult(result),
        })
    }

    /// Normal path: signs `message` for the live session (after [`read_answer`](Self::read_answer)
    /// returned a welcome).
    pub fn seal(&mut self, message: Message) -> Result<Vec<u8>> {
        match &mut self.phase {
            Phase::Live(session) => Ok(session.seal(message, 1)),
            _ => bail!("the session is not live"),
        }
    }

    pub async fn send_envelope(&mut self, bytes: &[u8]) -> Result<()> {
        self.send_raw(&encode_frame(bytes)).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.send.write_all(bytes).await?;
        Ok(())
    }

    fn channel(&mut self) -> Result<&mut ServerChannel> {
        Ok(match &mut self.phase {
            Phase::Challenged(c) => c.channel_mut(),
            Phase::Pending(p) => p.channel_mut(),
            Phase::Live(s) => s.channel_mut(),
            Phase::Spent => bail!("no session to verify with"),
        })
    }

    /// Reads the next server message, verified against the server key pinned at connect.
    pub async fn read_message(&mut self, _server: &TestServer) -> Result<Message> {
        let frame = reap3r_agent::transport::read_frame(&mut self.recv).await?;
        Ok(self.channel()?.accept(frame)?)
    }

    /// Waits for the server to close the connection and returns its close code and reason.
    pub async fn closed(&self) -> Result<(CloseCode, String)> {
        let err = tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .context("server did not close the connection")?;
        match reap3r_agent::transport::connection_error(err) {
            reap3r_agent::AgentError::Refused { code, reason } => Ok((code, reason)),
            other => bail!("connection ended without a close reason: {other}"),
        }
    }
}
