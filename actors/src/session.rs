//! One actor per agent connection: challenge, enrolment or hello, verification, liveness.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use reap3r_store::{AgentHello, AgentStatus, NewAgent, NewAuditEntry, StoreError, Uuid};
use reap3r_wire::{
    Approval, Challenge, CloseCode, EnrollResult, Envelope, InboundSession, MAX_OUTPUT_CHUNK,
    MAX_RESULT_DATA_BYTES, MAX_STDERR_BYTES, MAX_STDOUT_BYTES, Message, OutboundSession,
    SERVER_SENDER, VerifyingKey, Welcome, WireError,
};
use tracing::{debug, info, warn};

use crate::jobs::AgentJobEvent;
use crate::{
    AgentLink, FleetContext, FleetEvent, FleetStats, PresenceMsg, SessionRegistry, VerifyError,
    hash_enrollment_token,
};

/// Longest string field accepted from an agent (hostnames, versions, tokens).
const MAX_TEXT: usize = 255;
/// Most capabilities an agent may declare.
const MAX_CAPABILITIES: usize = 64;
/// Longest error text in a job result.
const MAX_ERROR_TEXT: usize = 4096;

#[derive(Debug)]
pub struct AgentSession;

pub struct SessionArgs {
    pub ctx: FleetContext,
    pub link: Arc<dyn AgentLink>,
    pub registry: SessionRegistry,
    pub presence: ActorRef<PresenceMsg>,
}

#[derive(Debug)]
pub enum SessionMsg {
    /// An envelope read from the control stream; the reply says whether to keep reading.
    Frame(Vec<u8>, RpcReplyPort<bool>),
    /// An envelope received as a QUIC datagram (heartbeats); replied to like `Frame`, so the
    /// gateway never has more than one datagram per connection in the mailbox.
    Datagram(Vec<u8>, RpcReplyPort<bool>),
    /// Liveness check at the given time.
    Tick(u64),
    /// The transport went away.
    LinkClosed(String),
    /// The server ends this session (shutdown, superseded, access withdrawn).
    Kick(CloseCode, String),
    /// Send a server message to the agent on the control stream (config updates, job cancels,
    /// result acks).
    Send(Message),
    /// Send a job to the agent on a new stream of its own.
    DispatchJob(Uuid, Box<reap3r_wire::JobDispatch>),
    /// Test hook: makes the handler panic, to exercise supervision. Not reachable from the network.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

#[derive(Debug)]
enum Phase {
    Handshake { started_ms: u64 },
    Enrolled { since_ms: u64 },
    Live(Box<Live>),
}

#[derive(Debug)]
struct Live {
    agent_id: Uuid,
    org_id: Uuid,
    key: VerifyingKey,
    last_heard_ms: u64,
    /// When this session last handed `last_seen` to the presence writer.
    last_seen_sent_ms: u64,
}

pub struct SessionState {
    args: SessionArgs,
    inbound: InboundSession,
    outbound: OutboundSession,
    phase: Phase,
    close_reason: String,
}

/// Why a session is being closed, as the agent will see it.
#[derive(Debug)]
struct Refusal {
    code: CloseCode,
    reason: String,
}

impl Refusal {
    fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    fn internal(err: impl std::fmt::Display) -> Self {
        warn!(%err, "session internal error");
        Self::new(CloseCode::Internal, "internal server error")
    }
}

impl From<WireError> for Refusal {
    fn from(err: WireError) -> Self {
        let code = match err {
            WireError::BadSignature | WireError::BadKey => CloseCode::BadSignature,
            WireError::Replay(_) | WireError::WrongSession => CloseCode::Replay,
            WireError::FrameTooLarge { .. } | WireError::DatagramTooLarge { .. } => {
                CloseCode::FrameTooLarge
            }
            _ => CloseCode::ProtocolError,
        };
        Self::new(code, err.to_string())
    }
}

impl Actor for AgentSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let now = args.ctx.clock.now_ms();
        let nonce = Uuid::new_v4().into_bytes();
        let mut outbound =
            OutboundSession::new(SERVER_SENDER, nonce, (*args.ctx.server_key).clone());
        let challenge = outbound.seal(
            Message::Challenge(Challenge {
                server_time_ms: now,
            }),
            now,
        );
        args.link.send_frame(challenge)?;
        let tick = tick_period(&args.ctx);
        let clock = args.ctx.clock.clone();
        myself.send_interval(tick, move || SessionMsg::Tick(clock.now_ms()));
        Ok(SessionState {
            args,
            inbound: InboundSession::new(nonce),
            outbound,
            phase: Phase::Handshake { started_ms: now },
            close_reason: "closed".into(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let result = match msg {
            SessionMsg::Frame(bytes, reply) => {
                // Boxed per message, like the datagram below: the future (envelope, key and the
                // verifier round trip) would otherwise be part of every session's idle run loop,
                // ~2 KiB per connected agent (massif); an allocation per message is cheaper.
                let result = Box::pin(state.on_frame(bytes, &myself)).await;
                // The gateway may have gone; nothing to do if so.
                let _ = reply.send(result.is_ok());
                result
            }
            SessionMsg::Datagram(bytes, reply) => {
                let result = Box::pin(state.on_datagram(bytes)).await;
                let _ = reply.send(result.is_ok());
                result
            }
            SessionMsg::Tick(now) => state.on_tick(now),
            SessionMsg::LinkClosed(reason) => {
                state.close_reason = reason;
                myself.stop(None);
                Ok(())
            }
            SessionMsg::Kick(code, reason) => Err(Refusal::new(code, reason)),
            SessionMsg::Send(message) => state
                .send(message)
                .map_err(|e| Refusal::new(CloseCode::Internal, e.to_string())),
            SessionMsg::DispatchJob(job_id, dispatch) => {
                state.dispatch_job(job_id, *dispatch);
                Ok(())
            }
            #[cfg(feature = "fault-injection")]
            SessionMsg::InjectFault => {
                #[expect(clippy::panic, reason = "the fault being injected")]
                {
                    panic!("fault injected into agent session")
                }
            }
        };
        if let Err(refusal) = result {
            state.refuse(refusal);
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state
            .args
            .link
            .close(CloseCode::Normal, &state.close_reason);
        if let Phase::Live(live) = &state.phase {
            // Boxed for the same reason as hello: a database future, once per session.
            Box::pin(go_offline(
                &state.args,
                &myself,
                live.agent_id,
                live.org_id,
                &state.close_reason,
            ))
            .await;
        }
        Ok(())
    }
}

/// Marks the agent offline unless a newer session of the same agent took over.
pub(crate) async fn go_offline(
    args: &SessionArgs,
    myself: &ActorRef<SessionMsg>,
    agent_id: Uuid,
    org_id: Uuid,
    reason: &str,
) {
    if !args.registry.unregister_if(agent_id, myself.get_id()) {
        return;
    }
    mark_offline(&args.ctx, agent_id, org_id, reason).await;
}

pub(crate) async fn mark_offline(ctx: &FleetContext, agent_id: Uuid, org_id: Uuid, reason: &str) {
    ctx.stats
        .sessions_online
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let now = ctx.clock.now_ms() as i64;
    if let Err(err) = ctx
        .store
        .mark_agent_offline(agent_id, &ctx.settings.node_id, now)
        .await
    {
        warn!(%agent_id, %err, "could not mark agent offline");
    }
    info!(%agent_id, reason, "agent offline");
    ctx.events.publish(FleetEvent::AgentOffline {
        agent_id,
        org_id,
        reason: reason.to_string(),
    });
}

fn tick_period(ctx: &FleetContext) -> Duration {
    let hb_ms = u64::from(ctx.settings.agent_config.heartbeat_interval_s) * 1000;
    Duration::from_millis((hb_ms / 4).clamp(100, 5_000))
}

impl SessionState {
    fn ctx(&self) -> &FleetContext {
        &self.args.ctx
    }

    fn now(&self) -> u64 {
        self.ctx().clock.now_ms()
    }

    fn send(&mut self, message: Message) -> Result<(), crate::LinkError> {
        let now = self.now();
        let bytes = self.outbound.seal(message, now);
        FleetStats::bump(&self.ctx().stats.messages_out);
        self.args.link.send_frame(bytes)
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.args.link.handshake_done();
        let stats = &self.ctx().stats;
        stats.count_close(refusal.code);
        match refusal.code {
            CloseCode::ServerShutdown | CloseCode::Normal | CloseCode::Superseded => {
                debug!(remote = %self.args.link.remote(), code = %refusal.code, reason = %refusal.reason, "closing session")
            }
            _ => {
                warn!(remote = %self.args.link.remote(), code = %refusal.code, reason = %refusal.reason, "closing session")
            }
        }
        self.args.link.close(refusal.code, &refusal.reason);
        self.close_reason = format!("{}: {}", refusal.code, refusal.reason);
    }

    async fn on_frame(
        &mut self,
        bytes: Vec<u8>,
        myself: &ActorRef<SessionMsg>,
    ) -> Result<(), Refusal> {
        FleetStats::bump(&self.ctx().stats.messages_in);
        let env = Envelope::parse(bytes)?;
        match &self.phase {
            Phase::Handshake { .. } => match env.header().kind {
                // Boxed: these run once per connection and hold large database futures. Inline,
                // they would size every session's long-lived message loop (measured with
                // massif: ~7 KiB of the ~50 KiB a connected agent costs).
                reap3r_wire::MessageKind::Enroll => Box::pin(self.enroll(env)).await,
                reap3r_wire::MessageKind::Hello => Box::pin(self.hello(env, myself)).await,
                other => Err(Refusal::new(
                    CloseCode::ProtocolError,
                    format!("expected hello or enrolment, got {other:?}"),
                )),
            },
            Phase::Live(_) => self.on_live(env, Some(myself)).await,
            Phase::Enrolled { .. } => Err(Refusal::new(
                CloseCode::ProtocolError,
                "message after enrolment",
            )),
        }
    }

    async fn on_datagram(&mut self, bytes: Vec<u8>) -> Result<(), Refusal> {
        FleetStats::bump(&self.ctx().stats.messages_in);
        if !matches!(self.phase, Phase::Live(_)) {
            // Datagrams before hello carry nothing we can check; drop them.
            FleetStats::bump(&self.ctx().stats.datagrams_dropped);
            return Ok(());
        }
        let env = Envelope::parse(bytes)?;
        if env.header().kind != reap3r_wire::MessageKind::Heartbeat {
            return Err(Refusal::new(
                CloseCode::ProtocolError,
                "only heartbeats travel as datagrams",
            ));
        }
        self.on_live(env, None).await
    }

    /// Checks an envelope from the agent: session and replay state here, the signature in the
    /// shared batch verifier. A sequence number is recorded only once its signature verified.
    async fn accept(
        &mut self,
        env: Envelope<reap3r_wire::Unverified>,
        sender: &[u8; 16],
        key: VerifyingKey,
    ) -> Result<Envelope<reap3r_wire::Verified>, Refusal> {
        self.inbound.precheck_from(&env, sender)?;
        let verified = match self.ctx().verifier.verify(env, key).await {
            Ok(verified) => verified,
            Err(VerifyError::Wire(err)) => return Err(err.into()),
            Err(err @ VerifyError::Stopped) => return Err(Refusal::internal(err)),
        };
        self.inbound.record_verified(&verified)?;
        Ok(verified)
    }

    async fn on_live(
        &mut self,
        env: Envelope<reap3r_wire::Unverified>,
        myself: Option<&ActorRef<SessionMsg>>,
    ) -> Result<(), Refusal> {
        let Phase::Live(live) = &self.phase else {
            return Err(Refusal::new(CloseCode::ProtocolError, "not live"));
        };
        let (agent_id, key) = (live.agent_id, live.key);
        let env = self.accept(env, agent_id.as_bytes(), key).await?;
        let now = self.now();
        let grain = self.args.ctx.settings.last_seen_grain_ms();
        let Phase::Live(live) = &mut self.phase else {
            return Err(Refusal::new(CloseCode::ProtocolError, "not live"));
        };
        live.last_heard_ms = now;
        match env.into_message() {
            Message::Heartbeat(_) => {
                FleetStats::bump(&self.args.ctx.stats.heartbeats);
                // `last_seen` follows heartbeats, no finer than half a heartbeat interval: an
                // agent sending faster than its interval is not a database write per message.
                if now.saturating_sub(live.last_seen_sent_ms) >= grain {
                    live.last_seen_sent_ms = now;
                    let _ = self.args.presence.cast(PresenceMsg::Seen(agent_id, now));
                }
                Ok(())
            }
            Message::Metrics(_) | Message::Ack { .. } => Ok(()),
            Message::JobAck(ack) => self.to_job(
                agent_id,
                ack.job_id,
                AgentJobEvent::Ack(ack.outcome),
                myself,
            ),
            Message::JobStarted {
                job_id,
                started_at_ms,
            } => self.to_job(
                agent_id,
                job_id,
                AgentJobEvent::Started {
                    at_ms: started_at_ms,
                },
                myself,
            ),
            Message::JobOutput(out) => {
                if out.data.len() > MAX_OUTPUT_CHUNK {
                    return Err(Refusal::new(
                        CloseCode::ProtocolError,
                        "job output chunk too large",
                    ));
                }
                self.to_job(agent_id, out.job_id, AgentJobEvent::Output(out), myself)
            }
            Message::JobResult(result) => {
                check_result(&result)?;
                self.to_job(
                    agent_id,
                    result.job_id,
                    AgentJobEvent::Result(Box::new(result)),
                    myself,
                )
            }
            Message::Close(reason) => Err(Refusal::new(
                CloseCode::Normal,
                format!("agent closed: {}", reason.message),
            )),
            other => Err(Refusal::new(
                CloseCode::ProtocolError,
                format!("unexpected {:?} from agent", other.kind()),
            )),
        }
    }

    /// Hands a verified job message to the job engine.
    fn to_job(
        &self,
        agent_id: Uuid,
        job_id: [u8; 16],
        event: AgentJobEvent,
        myself: Option<&ActorRef<SessionMsg>>,
    ) -> Result<(), Refusal> {
        let Some(myself) = myself else {
            return Err(Refusal::new(
                CloseCode::ProtocolError,
                "job messages travel on streams",
            ));
        };
        let job_id = Uuid::from_bytes(job_id);
        match &event {
            AgentJobEvent::Ack(reap3r_wire::JobAckOutcome::Refused(reason)) => {
                warn!(%agent_id, %job_id, %reason, "agent refused a job dispatch");
                FleetStats::bump(&self.ctx().stats.job_refusals);
            }
            AgentJobEvent::Ack(reap3r_wire::JobAckOutcome::Duplicate) => {
                FleetStats::bump(&self.ctx().stats.job_duplicate_acks);
            }
            _ => {}
        }
        if !self
            .ctx()
            .jobs
            .from_agent(agent_id, job_id, event, myself.clone())
        {
            debug!(%agent_id, %job_id, "no job engine on this node; job message dropped");
        }
        Ok(())
    }

    /// Seals a dispatch and opens the job's own stream for it.
    fn dispatch_job(&mut self, job_id: Uuid, dispatch: reap3r_wire::JobDispatch) {
        if !matches!(self.phase, Phase::Live(_)) {
            return;
        }
        let now = self.now();
        let bytes = self.outbound.seal(Message::JobDispatch(dispatch), now);
        FleetStats::bump(&self.ctx().stats.messages_out);
        if let Err(err) = self.args.link.open_job_stream(bytes) {
            // The job stays dispatched; it goes out again when the agent reconnects, or times out.
            warn!(%job_id, %err, "could not open a job stream");
        }
    }

    async fn enroll(&mut self, env: Envelope<reap3r_wire::Unverified>) -> Result<(), Refusal> {
        let env = self.inbound.accept_enroll(env)?;
        let Message::Enroll(req) = env.into_message() else {
            return Err(Refusal::new(CloseCode::ProtocolError, "expected enrolment"));
        };
        for (field, value) in [
            ("token", &req.token),
            ("hostname", &req.hostname),
            ("os", &req.os),
            ("arch", &req.arch),
            ("agent_version", &req.agent_version),
        ] {
            check_text(field, value)?;
        }
        let now = self.now();
        let new = NewAgent {
            hostname: req.hostname.clone(),
            os: req.os.clone(),
            arch: req.arch.clone(),
            agent_version: req.agent_version.clone(),
            public_key: req.public_key,
        };
        let ctx = self.ctx().clone();
        let agent = ctx
            .store
            .enroll_agent(&hash_enrollment_token(&req.token), &new, now as i64)
            .await
            .map_err(|e| match e {
                StoreError::Token(refusal) => {
                    Refusal::new(CloseCode::TokenInvalid, refusal.to_string())
                }
                other => Refusal::internal(other),
            })?;
        let pending = agent.status() == AgentStatus::Pending;
        let audit = NewAuditEntry {
            org_id: Some(agent.org_id),
            actor: format!(
                "enrollment_token:{}",
                agent.token_id.map(|t| t.to_string()).unwrap_or_default()
            ),
            action: "agent.enroll".into(),
            target: Some(format!("agent:{}", agent.id)),
            details: serde_json::json!({ "hostname": agent.hostname, "pending_approval": pending, "remote": self.args.link.remote() }),
        };
        ctx.store
            .append_audit(&audit, now as i64)
            .await
            .map_err(Refusal::internal)?;
        FleetStats::bump(&ctx.stats.enrolments);
        info!(agent_id = %agent.id, hostname = %agent.hostname, pending, "agent enrolled");
        ctx.events.publish(FleetEvent::AgentEnrolled {
            agent_id: agent.id,
            org_id: agent.org_id,
            hostname: agent.hostname.clone(),
            pending,
        });
        let approval = if pending {
            Approval::Pending
        } else {
            Approval::Approved
        };
        self.send(Message::EnrollResult(EnrollResult {
            agent_id: agent.id.into_bytes(),
            approval,
        }))
        .map_err(|e| Refusal::new(CloseCode::Internal, e.to_string()))?;
        self.phase = Phase::Enrolled { since_ms: now };
        self.args.link.handshake_done();
        Ok(())
    }

    async fn hello(
        &mut self,
        env: Envelope<reap3r_wire::Unverified>,
        myself: &ActorRef<SessionMsg>,
    ) -> Result<(), Refusal> {
        let sender = env.header().sender;
        let agent_id = Uuid::from_bytes(sender);
        let ctx = self.ctx().clone();
        let agent = ctx
            .store
            .agent(agent_id)
            .await
            .map_err(Refusal::internal)?
            .ok_or_else(|| {
                Refusal::new(
                    CloseCode::UnknownAgent,
                    "agent is not enrolled on this server",
                )
            })?;
        let key = VerifyingKey::from_bytes(&agent.public_key).map_err(Refusal::internal)?;
        // Signature first: approval state is only revealed to the key holder.
        let env = self.accept(env, &sender, key).await?;
        match agent.status() {
            AgentStatus::Revoked => {
                return Err(Refusal::new(CloseCode::Revoked, "agent has been revoked"));
            }
            AgentStatus::Rejected => {
                return Err(Refusal::new(
                    CloseCode::Rejected,
                    "agent enrolment was rejected",
                ));
            }
            AgentStatus::Pending => {
                return Err(Refusal::new(
                    CloseCode::PendingApproval,
                    "agent is waiting for approval",
                ));
            }
            AgentStatus::Online | AgentStatus::Offline => {}
        }
        let Message::Hello(hello) = env.into_message() else {
            return Err(Refusal::new(CloseCode::ProtocolError, "expected hello"));
        };
        check_text("hostname", &hello.hostname)?;
        check_text("agent_version", &hello.agent_version)?;
        if hello.capabilities.len() > MAX_CAPABILITIES {
            return Err(Refusal::new(
                CloseCode::ProtocolError,
                "too many capabilities",
            ));
        }
        for cap in &hello.capabilities {
            check_text("capability", cap)?;
        }
        let inv = &hello.inventory;
        for (field, value) in [
            ("os_name", &inv.os_name),
            ("os_version", &inv.os_version),
            ("kernel_version", &inv.kernel_version),
            ("arch", &inv.arch),
            ("cpu_model", &inv.cpu_model),
        ] {
            check_text(field, value)?;
        }
        let now = self.now();
        let info = AgentHello {
            hostname: hello.hostname.clone(),
            agent_version: hello.agent_version.clone(),
            capabilities: hello.capabilities.clone(),
            inventory: serde_json::to_value(InventoryJson::from(&hello.inventory))
                .unwrap_or_default(),
        };
        if let Some(previous) = self.args.registry.register(agent_id, myself.clone()) {
            // The agent reconnected before we noticed the old connection died.
            let _ = previous.cast(SessionMsg::Kick(
                CloseCode::Superseded,
                "a newer connection of this agent took over".into(),
            ));
        } else {
            ctx.stats
                .sessions_online
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ctx.store
            .mark_agent_online(agent_id, &ctx.settings.node_id, &info, now as i64)
            .await
            .map_err(|e| {
                // Undo the registration so the registry and gauge stay true.
                if self.args.registry.unregister_if(agent_id, myself.get_id()) {
                    ctx.stats
                        .sessions_online
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                Refusal::internal(e)
            })?;
        self.phase = Phase::Live(Box::new(Live {
            agent_id,
            org_id: agent.org_id,
            key,
            last_heard_ms: now,
            // Hello just wrote `last_seen`.
            last_seen_sent_ms: now,
        }));
        self.args.link.handshake_done();
        self.send(Message::Welcome(Welcome {
            agent_id: sender,
            config: ctx.settings.agent_config,
        }))
        .map_err(|e| Refusal::new(CloseCode::Internal, e.to_string()))?;
        info!(%agent_id, hostname = %hello.hostname, remote = %self.args.link.remote(), "agent online");
        ctx.jobs.agent_online(agent_id);
        ctx.events.publish(FleetEvent::AgentOnline {
            agent_id,
            org_id: agent.org_id,
            hostname: hello.hostname,
        });
        Ok(())
    }

    fn on_tick(&mut self, now: u64) -> Result<(), Refusal> {
        let settings = &self.ctx().settings;
        match &self.phase {
            Phase::Handshake { started_ms }
                if now.saturating_sub(*started_ms) > settings.handshake_timeout_ms =>
            {
                Err(Refusal::new(
                    CloseCode::ProtocolError,
                    "no hello or enrolment in time",
                ))
            }
            Phase::Enrolled { since_ms }
                if now.saturating_sub(*since_ms) > settings.handshake_timeout_ms =>
            {
                Err(Refusal::new(CloseCode::Normal, "enrolment complete"))
            }
            Phase::Live(live)
                if now.saturating_sub(live.last_heard_ms) > settings.heartbeat_timeout_ms() =>
            {
                Err(Refusal::new(
                    CloseCode::HeartbeatTimeout,
                    format!(
                        "no message for {} missed heartbeat intervals",
                        settings.missed_heartbeats
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A result larger than the agent's caps is a protocol violation, not something to store.
fn check_result(r: &reap3r_wire::JobResult) -> Result<(), Refusal> {
    let over = r.stdout.len() > MAX_STDOUT_BYTES as usize
        || r.stderr.len() > MAX_STDERR_BYTES as usize
        || r.data
            .as_ref()
            .is_some_and(|d| d.len() > MAX_RESULT_DATA_BYTES)
        || r.error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_TEXT);
    if over {
        return Err(Refusal::new(
            CloseCode::ProtocolError,
            "job result exceeds the output caps",
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str) -> Result<(), Refusal> {
    if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(Refusal::new(
            CloseCode::ProtocolError,
            format!("{field} is too long or has control characters"),
        ));
    }
    Ok(())
}

/// The inventory summary as stored (JSON with stable field names).
#[derive(serde::Serialize)]
struct InventoryJson<'a> {
    os_name: &'a str,
    os_version: &'a str,
    kernel_version: &'a str,
    arch: &'a str,
    cpu_model: &'a str,
    cpu_cores: u32,
    memory_total_bytes: u64,
    disk_total_bytes: u64,
    boot_time_s: u64,
}

impl<'a> From<&'a reap3r_wire::InventorySummary> for InventoryJson<'a> {
    fn from(i: &'a reap3r_wire::InventorySummary) -> Self {
        Self {
            os_name: &i.os_name,
            os_version: &i.os_version,
            kernel_version: &i.kernel_version,
            arch: &i.arch,
            cpu_model: &i.cpu_model,
            cpu_cores: i.cpu_cores,
            memory_total_bytes: i.memory_total_bytes,
            disk_total_bytes: i.disk_total_bytes,
            boot_time_s: i.boot_time_s,
        }
    }
}
