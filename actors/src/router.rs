//! How the server reaches an agent's live session: job dispatches, job cancels, result acks and
//! kicks go through an [`AgentRouter`], never to a session actor held from earlier. The router
//! finds the agent's *current* session, so a message follows an agent that reconnected (an ack
//! for a result that arrived on a connection since replaced reaches the new one).
//!
//! [`LocalRouter`] reaches sessions on this node through the [`SessionRegistry`]; a router
//! between nodes answers the same trait, so callers hold an `Arc<dyn AgentRouter>`.

use reap3r_store::Uuid;
use reap3r_wire::{CloseCode, JobDispatch, Message};

use crate::{SessionMsg, SessionRegistry};

/// What the server sends to an agent's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// A job to run, on a new stream of its own.
    DispatchJob {
        job_id: Uuid,
        dispatch: Box<JobDispatch>,
    },
    /// `JobCancel` on the control stream: the agent kills the job's process group.
    CancelJob { job_id: Uuid },
    /// `JobResultAck` on the control stream: the result is committed, the agent may drop it
    /// from its outbox.
    ResultAck { job_id: Uuid },
    /// Close the session (access withdrawn, superseded, shutdown) with a reason the agent sees.
    Kick { code: CloseCode, reason: String },
}

/// Whether a command reached a live session of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the agent's current session.
    Delivered,
    /// No live session of this agent here: the command is dropped (the agent gets what it
    /// still needs when it reconnects).
    NotOnThisNode,
}

/// Delivers commands to an agent's current session. Must not block.
pub trait AgentRouter: Send + Sync + std::fmt::Debug + 'static {
    fn deliver(&self, agent_id: Uuid, command: AgentCommand) -> Delivery;

    /// Whether the agent's live session is on this node (what a draining node can still
    /// reach before it closes its sessions).
    fn holds(&self, agent_id: Uuid) -> bool;

    /// Asks the agent's current session to open a channel (see [`ChannelRequest`]); the
    /// answer comes on the request's reply.
    fn open_channel(&self, agent_id: Uuid, request: ChannelRequest) -> Delivery;
}

/// A channel to open on an agent's live session: the session derives the channel's nonce from
/// its own, seals `opener` as the channel's first frame and opens the stream, then replies with
/// the channel (its keys, for the caller to seal and verify with) and the stream's frames.
#[derive(Debug)]
pub struct ChannelRequest {
    pub channel_id: [u8; 16],
    /// A message that opens a channel ([`Message::channel_id`] is `channel_id`).
    pub opener: Message,
    pub reply: tokio::sync::oneshot::Sender<Result<AgentChannel, String>>,
}

/// A channel opened on an agent's session.
#[derive(Debug)]
pub struct AgentChannel {
    pub channel: reap3r_wire::Channel,
    pub pipe: crate::ChannelPipe,
}

/// Reaches the sessions of this node.
#[derive(Debug, Clone, Default)]
pub struct LocalRouter {
    registry: SessionRegistry,
}

impl LocalRouter {
    pub fn new(registry: SessionRegistry) -> Self {
        Self { registry }
    }
}

impl AgentRouter for LocalRouter {
    fn holds(&self, agent_id: Uuid) -> bool {
        self.registry.get(agent_id).is_some()
    }

    fn deliver(&self, agent_id: Uuid, command: AgentCommand) -> Delivery {
        let Some(session) = self.registry.get(agent_id) else {
            return Delivery::NotOnThisNode;
        };
        let msg = match command {
            AgentCommand::DispatchJob { job_id, dispatch } => {
                SessionMsg::DispatchJob(job_id, dispatch)
            }
            AgentCommand::CancelJob { job_id } => SessionMsg::Send(Box::new(Message::JobCancel {
                job_id: job_id.into_bytes(),
            })),
            AgentCommand::ResultAck { job_id } => {
                SessionMsg::Send(Box::new(Message::JobResultAck {
                    job_id: job_id.into_bytes(),
                }))
            }
            AgentCommand::Kick { code, reason } => SessionMsg::Kick(code, reason),
        };
        match session.cast(msg) {
            Ok(()) => Delivery::Delivered,
            // The session stopped but has not unregistered yet.
            Err(_) => Delivery::NotOnThisNode,
        }
    }

    fn open_channel(&self, agent_id: Uuid, request: ChannelRequest) -> Delivery {
        let Some(session) = self.registry.get(agent_id) else {
            return Delivery::NotOnThisNode;
        };
        match session.cast(SessionMsg::OpenChannel(Box::new(request))) {
            Ok(()) => Delivery::Delivered,
            Err(_) => Delivery::NotOnThisNode,
        }
    }
}

/// An agent of the caller's organisation that a channel can be opened to now: online, not
/// revoked, announcing `capability` in its hello (else `absent`, the 409's message), and held
/// by this node. Shells and file transfers check this before they record anything.
pub(crate) async fn reachable_agent(
    domain: &crate::Domain,
    router: &dyn AgentRouter,
    org_id: Uuid,
    agent_id: Uuid,
    capability: &str,
    absent: &str,
) -> crate::DomainResult<reap3r_store::Agent> {
    use crate::DomainError;
    let agent = domain
        .store
        .agent_in_org(org_id, agent_id)
        .await?
        .ok_or(DomainError::NotFound("agent"))?;
    if !agent.connected || agent.revoked {
        return Err(DomainError::conflict("the agent is not online"));
    }
    if !agent.capabilities.iter().any(|c| c == capability) {
        return Err(DomainError::conflict(absent));
    }
    if !router.holds(agent.id) {
        return Err(DomainError::conflict(
            "the agent is connected to another server node",
        ));
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    //! [`LocalRouter`] over real session actors (in the handshake phase, on an in-memory link
    //! and a SQLite store): what reaches which session is read back from the link.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ractor::{Actor, ActorRef};
    use reap3r_testkit::TestDatabase;
    use reap3r_wire::{Envelope, InboundSession, SERVER_SENDER, SigningKey};

    use super::*;
    use crate::{
        AgentLink, AgentSession, EventBus, FleetContext, FleetSettings, FleetStats, LinkError,
        ManualClock, PresenceWriter, SessionArgs, SignatureVerifier,
    };

    #[derive(Default)]
    struct MemoryLink {
        frames: Mutex<Vec<Vec<u8>>>,
        job_streams: Mutex<usize>,
        closed: Mutex<Option<(CloseCode, String)>>,
    }

    impl AgentLink for MemoryLink {
        fn send_frame(&self, envelope: Vec<u8>) -> Result<(), LinkError> {
            self.frames.lock().unwrap().push(envelope);
            Ok(())
        }
        fn close(&self, code: CloseCode, reason: &str) {
            self.closed
                .lock()
                .unwrap()
                .get_or_insert((code, reason.to_string()));
        }
        fn open_job_stream(&self, _envelope: Vec<u8>) -> Result<(), LinkError> {
            *self.job_streams.lock().unwrap() += 1;
            Ok(())
        }
        fn remote(&self) -> String {
            "memory".into()
        }
    }

    impl MemoryLink {
        /// The server messages sent on the control stream after the challenge.
        fn messages(&self, server_key: &SigningKey) -> Vec<Message> {
            let frames = self.frames.lock().unwrap().clone();
            let key = server_key.verifying_key();
            let (mut inbound, _) =
                InboundSession::from_challenge(Envelope::parse(frames[0].clone()).unwrap(), &key)
                    .unwrap();
            frames[1..]
                .iter()
                .map(|f| {
                    inbound
                        .accept(Envelope::parse(f.clone()).unwrap(), &SERVER_SENDER, &key)
                        .unwrap()
                        .into_message()
                })
                .collect()
        }
    }

    struct Rig {
        _db: TestDatabase,
        ctx: FleetContext,
        registry: SessionRegistry,
        presence: crate::ActorSlot<crate::PresenceMsg>,
    }

    impl Rig {
        async fn new() -> Self {
            let db = TestDatabase::sqlite().await.unwrap();
            let store = db.open().await.unwrap();
            let stats = Arc::new(FleetStats::default());
            let ctx = FleetContext {
                store,
                server_key: Arc::new(SigningKey::from_bytes(&[1; 32])),
                clock: Arc::new(ManualClock::new(1_000_000)),
                settings: Arc::new(FleetSettings::for_test()),
                stats: stats.clone(),
                events: EventBus::default(),
                jobs: Default::default(),
                verifier: SignatureVerifier::start(1, stats).unwrap(),
                metrics: Default::default(),
                keys: crate::vault::Keyring::ephemeral(),
            };
            let registry = SessionRegistry::default();
            let presence = PresenceWriter::start(ctx.clone(), registry.clone())
                .await
                .unwrap();
            let slot = crate::ActorSlot::default();
            slot.set(presence);
            Self {
                _db: db,
                ctx,
                registry,
                presence: slot,
            }
        }

        async fn session(&self) -> (ActorRef<SessionMsg>, Arc<MemoryLink>) {
            let link = Arc::new(MemoryLink::default());
            let args = SessionArgs {
                ctx: self.ctx.clone(),
                link: link.clone(),
                registry: self.registry.clone(),
                presence: self.presence.clone(),
            };
            let (session, _) = Actor::spawn(None, AgentSession, args).await.unwrap();
            (session, link)
        }
    }

    /// Polls until `f` holds (the session handles its mailbox on its own task).
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn commands_reach_the_agents_current_session_only() {
        let rig = Rig::new().await;
        let router = LocalRouter::new(rig.registry.clone());
        let agent = Uuid::from_u128(7);
        let job_id = Uuid::from_u128(9);
        assert_eq!(
            router.deliver(agent, AgentCommand::ResultAck { job_id }),
            Delivery::NotOnThisNode
        );

        let (first, first_link) = rig.session().await;
        rig.registry.register(agent, first.clone());
        assert_eq!(
            router.deliver(agent, AgentCommand::ResultAck { job_id }),
            Delivery::Delivered
        );
        until("ack on the first session", || {
            first_link.frames.lock().unwrap().len() == 2
        })
        .await;

        // The agent reconnects: the next ack follows it to the new session.
        let (second, second_link) = rig.session().await;
        rig.registry.register(agent, second.clone());
        assert_eq!(
            router.deliver(agent, AgentCommand::ResultAck { job_id }),
            Delivery::Delivered
        );
        assert_eq!(
            router.deliver(agent, AgentCommand::CancelJob { job_id }),
            Delivery::Delivered
        );
        until("ack and cancel on the second session", || {
            second_link.frames.lock().unwrap().len() == 3
        })
        .await;
        let key = &rig.ctx.server_key;
        let id = job_id.into_bytes();
        assert_eq!(
            second_link.messages(key),
            vec![
                Message::JobResultAck { job_id: id },
                Message::JobCancel { job_id: id }
            ]
        );
        assert_eq!(
            first_link.messages(key),
            vec![Message::JobResultAck { job_id: id }]
        );

        // A dispatch is only opened by a live session; before hello it is dropped there.
        let dispatch = Box::new(JobDispatch {
            spec: vec![],
            grant: vec![],
            signature: vec![],
            sealed: vec![],
        });
        assert_eq!(
            router.deliver(agent, AgentCommand::DispatchJob { job_id, dispatch }),
            Delivery::Delivered
        );

        assert_eq!(
            router.deliver(
                agent,
                AgentCommand::Kick {
                    code: CloseCode::Revoked,
                    reason: "access withdrawn: revoked".into(),
                }
            ),
            Delivery::Delivered
        );
        until("kick closes the second session", || {
            second_link.closed.lock().unwrap().is_some()
        })
        .await;
        assert_eq!(
            second_link.closed.lock().unwrap().clone().unwrap(),
            (CloseCode::Revoked, "access withdrawn: revoked".to_string())
        );
        assert_eq!(*second_link.job_streams.lock().unwrap(), 0);
        assert!(first_link.closed.lock().unwrap().is_none());

        // Once stopped, the session is no longer reachable, registered or not.
        until("second session stopped", || {
            second.get_status() == ractor::ActorStatus::Stopped
        })
        .await;
        rig.registry.register(agent, second);
        assert_eq!(
            router.deliver(agent, AgentCommand::ResultAck { job_id }),
            Delivery::NotOnThisNode
        );
        first.stop(None);
    }
}
