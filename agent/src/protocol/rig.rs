//! A deterministic test rig for the protocol core: a scripted server (its own keys, nonce and
//! sequence numbers, grants signed or forged at will) and an agent core over a
//! [`MemoryStore`], with a transcript of every input and the effects it produced. No sockets,
//! no clock, no sleeps.

use reap3r_wire::{
    Challenge, CloseReason, Envelope, Hello, InboundSession, InventorySummary, JobAckOutcome,
    JobDispatch, JobGrant, JobPayload, JobResult, JobSpec, Message, MessageKind, SERVER_SENDER,
    ScriptJob, SigningKey, VerifyingKey, Welcome, WireError,
};

use super::core::{AgentCore, ConnId, Effect, GRANT_SKEW_MS, Lane, StreamId};
use super::handshake::{Answer, Challenged};
use super::store::{JobStore, MemoryStore};

/// The rig's clock, fixed.
pub const NOW_MS: u64 = 1_800_000_000_000;

/// A job id whose bytes are all `n` (rendered `j<n>`).
pub fn job(n: u8) -> [u8; 16] {
    [n; 16]
}

/// The server end of one connection at a time.
pub struct Server {
    key: SigningKey,
    signer: SigningKey,
    agent_key: SigningKey,
    agent_id: [u8; 16],
    nonce: [u8; 16],
    seq: u64,
    inbound: InboundSession,
    first: Vec<u8>,
    conns: u8,
}

impl Server {
    pub fn new() -> Self {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut server = Self {
            signer: key.clone(),
            key,
            agent_key: SigningKey::from_bytes(&[2; 32]),
            agent_id: [0x42; 16],
            nonce: [0; 16],
            seq: 0,
            inbound: InboundSession::new([0; 16]),
            first: Vec::new(),
            conns: 0,
        };
        server.new_connection();
        server
    }

    /// A fresh connection: new nonce, sequence numbers from 1, signed by the real key.
    pub fn new_connection(&mut self) {
        self.conns += 1;
        self.nonce = [0x10 + self.conns; 16];
        self.seq = 0;
        self.inbound = InboundSession::new(self.nonce);
        self.signer = self.key.clone();
    }

    /// From now on envelopes are signed by a key the agent did not pin.
    pub fn impostor(&mut self) {
        self.signer = SigningKey::from_bytes(&[3; 32]);
    }

    pub fn pinned(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn agent_id(&self) -> [u8; 16] {
        self.agent_id
    }

    pub fn agent_key(&self) -> SigningKey {
        self.agent_key.clone()
    }

    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }

    pub fn seal(&mut self, message: Message) -> Vec<u8> {
        self.seq += 1;
        Envelope::seal(
            message,
            SERVER_SENDER,
            self.nonce,
            self.seq,
            NOW_MS,
            &self.signer,
        )
        .into_bytes()
    }

    pub fn challenge(&mut self) -> Vec<u8> {
        let frame = self.seal(Message::Challenge(Challenge {
            server_time_ms: NOW_MS,
        }));
        self.first = frame.clone();
        frame
    }

    /// The connection's challenge again, byte for byte.
    pub fn challenge_again(&mut self) -> Vec<u8> {
        self.first.clone()
    }

    /// Verifies a frame from the enrolled agent; returns its kind.
    pub fn receive(&mut self, frame: &[u8]) -> Result<MessageKind, WireError> {
        let env = Envelope::parse(frame.to_vec())?;
        let key = self.agent_key.verifying_key();
        Ok(self
            .inbound
            .accept(env, &self.agent_id, &key)?
            .into_message()
            .kind())
    }

    /// Verifies an enrolment request against the key it carries.
    pub fn receive_enrol(&mut self, frame: &[u8]) -> Result<MessageKind, WireError> {
        let env = Envelope::parse(frame.to_vec())?;
        Ok(self.inbound.accept_enrol(env)?.into_message().kind())
    }
}

/// A grant for one job, signed by the server unless told otherwise.
pub struct Grant {
    grant: JobGrant,
    spec: Vec<u8>,
    key: SigningKey,
}

impl Grant {
    pub fn signed_by_impostor(mut self) -> Self {
        self.key = SigningKey::from_bytes(&[3; 32]);
        self
    }

    pub fn for_agent(mut self, agent_id: [u8; 16]) -> Self {
        self.grant.agent_id = agent_id;
        self
    }

    pub fn expired(mut self) -> Self {
        self.grant.expires_at_ms = Some(NOW_MS - GRANT_SKEW_MS - 1);
        self
    }

    /// The spec is changed after the grant was signed for it.
    pub fn tampered_spec(mut self) -> Self {
        self.spec.push(0);
        self
    }

    pub fn dispatch(&self) -> JobDispatch {
        let (grant, signature) = self.grant.sign(&self.key);
        JobDispatch {
            spec: self.spec.clone(),
            grant,
            signature: signature.to_vec(),
            sealed: Vec::new(),
        }
    }
}

/// An agent core and a server, driven by hand; every step adds a line to `transcript`.
pub struct Rig {
    pub server: Server,
    pub core: AgentCore<MemoryStore>,
    pub conn: ConnId,
    pub transcript: Vec<String>,
    last_control: Vec<u8>,
}

impl Rig {
    pub fn new() -> Self {
        let server = Server::new();
        let core = AgentCore::new(server.agent_id(), server.pinned(), MemoryStore::new());
        Self {
            server,
            core,
            conn: 0,
            transcript: Vec::new(),
            last_control: Vec::new(),
        }
    }

    fn log(&mut self, what: String, effects: &[Effect]) {
        self.transcript.push(format!("{what}: {}", render(effects)));
    }

    /// A new connection through the whole handshake: challenge, hello, welcome.
    pub fn connect(&mut self) {
        if self.conn > 0 {
            self.server.new_connection();
        }
        let challenged = Challenged::from_frame(self.server.challenge(), &self.server.pinned())
            .expect("challenge");
        let hello = Hello {
            agent_version: "rig".into(),
            hostname: "rig".into(),
            capabilities: Vec::new(),
            inventory: InventorySummary::default(),
            sealing_key: None,
        };
        let (frame, pending) = challenged.hello(
            self.server.agent_id(),
            &self.server.agent_key(),
            hello,
            NOW_MS,
        );
        assert_eq!(self.server.receive(&frame), Ok(MessageKind::Hello));
        let welcome = Welcome {
            agent_id: self.server.agent_id(),
            config: reap3r_wire::AgentConfig::default(),
            release_key: None,
        };
        let frame = self.server.seal(Message::Welcome(welcome));
        self.last_control = frame.clone();
        let Ok(Answer::Welcomed { session, welcome }) = pending.on_frame(frame) else {
            panic!("no welcome");
        };
        let welcomed = self.core.welcomed(session, &welcome);
        let conn = welcomed.conn;
        self.conn = conn;
        let mut effects = vec![Effect::ApplyConfig(welcomed.config)];
        effects.extend(welcomed.replay.into_iter().map(|r| Effect::Send {
            conn,
            lane: Lane::Uni,
            message: Message::JobResult(r),
        }));
        self.log(format!("welcome c{conn}"), &effects);
    }

    pub fn disconnect(&mut self) {
        self.core.disconnected(self.conn);
        self.transcript.push(format!("c{} down", self.conn));
    }

    pub fn grant(&self, job_id: [u8; 16]) -> Grant {
        let spec = JobSpec {
            timeout_s: 60,
            payload: JobPayload::RunScript(ScriptJob {
                interpreter: "sh".into(),
                script: "true".into(),
                args: Vec::new(),
                env: Vec::new(),
                working_dir: None,
                secret_env: Vec::new(),
            }),
        }
        .to_bytes();
        Grant {
            grant: JobGrant {
                job_id,
                agent_id: self.server.agent_id(),
                spec_hash: JobSpec::hash_bytes(&spec),
                issued_at_ms: NOW_MS,
                expires_at_ms: Some(NOW_MS + 60_000),
                sealed_hash: None,
            },
            spec,
            key: self.server.key.clone(),
        }
    }

    fn frame(&mut self, what: String, lane: Lane, frame: Vec<u8>) {
        match self.core.on_frame(self.conn, lane, frame, NOW_MS) {
            Ok(effects) => self.log(what, &effects),
            Err(e) => self.transcript.push(format!("{what}: error {e}")),
        }
    }

    /// The server opens job stream `stream` with this grant's dispatch.
    pub fn dispatch(&mut self, stream: StreamId, grant: Grant) {
        self.job_stream_with(stream, Message::JobDispatch(grant.dispatch()));
    }

    pub fn job_stream_with(&mut self, stream: StreamId, message: Message) {
        let frame = self.server.seal(message);
        self.frame(
            format!("c{} job#{stream}", self.conn),
            Lane::Job(stream),
            frame,
        );
    }

    pub fn control(&mut self, message: Message) {
        let frame = self.server.seal(message);
        self.last_control = frame.clone();
        self.frame(format!("c{} control", self.conn), Lane::Control, frame);
    }

    pub fn replay_last_control(&mut self) {
        let frame = self.last_control.clone();
        self.frame(format!("c{} control", self.conn), Lane::Control, frame);
    }

    /// A frame for the connection that just went down.
    pub fn stale_frame(&mut self, stream: StreamId) {
        let frame = self.server.seal(Message::JobCancel {
            job_id: job(stream as u8),
        });
        self.frame(format!("c{} control", self.conn), Lane::Control, frame);
    }

    /// Job `job_id` finished, having been started on `stream` of the connection of that time.
    pub fn finish(&mut self, job_id: [u8; 16], stream: Option<StreamId>) {
        let result = JobResult {
            job_id,
            end: reap3r_wire::JobEnd::Succeeded,
            exit_code: Some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            data: None,
            error: None,
            started_at_ms: NOW_MS,
            finished_at_ms: NOW_MS,
        };
        let started_on = stream.map(|s| (self.started_conn(job_id).unwrap_or(self.conn), s));
        let effects = self.core.job_finished(result, started_on);
        self.log(format!("{} finished", id(&job_id)), &effects);
    }

    /// The connection a job was started on, from the transcript.
    fn started_conn(&self, job_id: [u8; 16]) -> Option<ConnId> {
        let needle = format!("start {} on", id(&job_id));
        self.transcript
            .iter()
            .rev()
            .find(|l| l.contains(&needle))
            .and_then(|l| l.strip_prefix('c')?.split_whitespace().next()?.parse().ok())
    }

    /// The driver asks at `now_ms` which results to send again.
    pub fn resend(&mut self, now_ms: u64) {
        let effects = self.core.resend_due(now_ms);
        self.log("resend".into(), &effects);
    }

    pub fn outbox(&mut self) {
        let ids: Vec<String> = self
            .core
            .store()
            .unacked()
            .unwrap_or_default()
            .iter()
            .map(|r| id(&r.job_id))
            .collect();
        let ids = if ids.is_empty() {
            "-".into()
        } else {
            ids.join(" ")
        };
        self.transcript.push(format!("outbox: {ids}"));
    }
}

/// Runs `steps` on a fresh rig and compares its transcript (one line per input, with the
/// effects it produced) with `expect`.
#[track_caller]
pub fn check(steps: impl FnOnce(&mut Rig), expect: &str) {
    let mut rig = Rig::new();
    steps(&mut rig);
    let want: Vec<&str> = expect.trim().lines().map(str::trim).collect();
    let got: Vec<&str> = rig.transcript.iter().map(String::as_str).collect();
    assert_eq!(got, want, "\ntranscript:\n{}", rig.transcript.join("\n"));
}

fn id(job_id: &[u8; 16]) -> String {
    format!("j{}", job_id[0])
}

fn lane(lane: &Lane) -> String {
    match lane {
        Lane::Control => "control".into(),
        Lane::Datagram => "datagram".into(),
        Lane::Uni => "uni".into(),
        Lane::Job(s) => format!("job#{s}"),
    }
}

fn message(message: &Message) -> String {
    match message {
        Message::JobAck(ack) => {
            let outcome = match &ack.outcome {
                JobAckOutcome::Accepted => "accepted".to_string(),
                JobAckOutcome::Duplicate => "duplicate".to_string(),
                JobAckOutcome::Refused(r) => format!("refused({r})"),
            };
            format!("ack {} {outcome}", id(&ack.job_id))
        }
        Message::JobResult(r) => format!("result {}", id(&r.job_id)),
        other => format!("{:?}", other.kind()),
    }
}

/// Effects in one line, compact.
pub fn render(effects: &[Effect]) -> String {
    if effects.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = effects
        .iter()
        .map(|e| match e {
            Effect::Send {
                conn,
                lane: Lane::Job(_),
                message: m @ Message::JobAck(_),
            } => {
                let _ = conn;
                message(m)
            }
            Effect::Send {
                conn,
                lane: l,
                message: m,
            } => format!("send c{conn} {} {}", lane(l), message(m)),
            Effect::FinishStream { stream, .. } => format!("finish #{stream}"),
            Effect::ResetStream { stream, reason, .. } => format!("reset #{stream} ({reason})"),
            Effect::StartJob { stream, job, .. } => {
                format!("start {} on #{stream}", id(&job.job_id))
            }
            Effect::CancelJob { job_id } => format!("cancel {}", id(job_id)),
            Effect::ApplyConfig(c) => format!("config {}s", c.heartbeat_interval_s),
            Effect::Acked { job_id, kept } => {
                format!(
                    "acked {} {}",
                    id(job_id),
                    if *kept { "kept" } else { "unknown" }
                )
            }
            Effect::Closed(CloseReason { code, message }) => format!("closed {code}: {message}"),
            Effect::Ignored(kind) => format!("ignored {kind:?}"),
            Effect::StoreFailed(e) => format!("store failed: {e}"),
        })
        .collect();
    parts.join("; ")
}
