//! One actor per agent connection: challenge, enrolment or hello, verification, liveness.
//!
//! This module holds the actor, its messages and its state; the phases live in their own files:
//! [`handshake`] (enrolment and hello), [`live`] (verified frames, heartbeats, timeouts), [`jobs`]
//! (job frames to and from the job engine) and [`refusal`] (why a session closes, and the checks
//! on what an agent sends).

mod handshake;
mod jobs;
mod live;
mod refusal;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use reap3r_store::Uuid;
use reap3r_wire::{
    Challenge, CloseCode, InboundSession, Message, OutboundSession, SERVER_SENDER, VerifyingKey,
};
use tracing::{debug, info, warn};

use self::refusal::Refusal;
use crate::{AgentLink, FleetContext, FleetEvent, FleetStats, PresenceMsg, SessionRegistry};

#[derive(Debug)]
pub struct AgentSession;

pub struct SessionArgs {
    pub ctx: FleetContext,
    pub link: Arc<dyn AgentLink>,
    pub registry: SessionRegistry,
    pub presence: crate::slot::ActorSlot<PresenceMsg>,
}

// `InjectFault` is a hidden test hook, not a non-exhaustive marker.
#[allow(clippy::manual_non_exhaustive)]
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
    /// result acks). Boxed: a `Message` can be a large hello, and mailboxes hold many of these.
    Send(Box<Message>),
    /// Send a job to the agent on a new stream of its own.
    DispatchJob(Uuid, Box<reap3r_wire::JobDispatch>),
    /// Open a channel (a remote shell) to the agent on a new stream of its own.
    OpenChannel(Box<crate::ChannelRequest>),
    /// Test hook: makes the handler panic, to exercise supervision. Not reachable from the network.
    #[doc(hidden)]
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
                .send(*message)
                .map_err(|e| Refusal::new(CloseCode::Internal, e.to_string())),
            SessionMsg::DispatchJob(job_id, dispatch) => {
                state.dispatch_job(job_id, *dispatch);
                Ok(())
            }
            SessionMsg::OpenChannel(request) => {
                state.open_channel(*request);
                Ok(())
            }
            SessionMsg::InjectFault => {
                #[allow(clippy::panic)]
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
}
