//! Session actors driven through an in-memory link and a manual clock: protocol and timeout
//! logic without sockets or sleeping, on a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use reap3r_actors::access::Caller;
use reap3r_actors::enrolment::{CreateEnrolmentToken, EnrolAgent, EnrolmentInfo};
use reap3r_actors::*;
use reap3r_store::{AgentStatus, NewAgent, Store, Uuid};
use reap3r_testkit::TestDatabase;
use reap3r_wire::*;

/// The X25519 key the rig's agent announces in its hello.
const SEALING_KEY: [u8; 32] = [0x5e; 32];

#[derive(Default)]
struct MemoryLink {
    frames: Mutex<Vec<Vec<u8>>>,
    closed: Mutex<Option<(CloseCode, String)>>,
    job_streams: Mutex<Vec<Vec<u8>>>,
}

impl AgentLink for MemoryLink {
    fn send_frame(&self, envelope: Vec<u8>) -> Result<(), LinkError> {
        self.frames.lock().unwrap().push(envelope);
        Ok(())
    }
    fn close(&self, code: CloseCode, reason: &str) {
        // Keep the first close: it carries the real reason.
        self.closed
            .lock()
            .unwrap()
            .get_or_insert((code, reason.to_string()));
    }
    fn remote(&self) -> String {
        "memory".into()
    }
    fn open_job_stream(&self, envelope: Vec<u8>) -> Result<(), LinkError> {
        self.job_streams.lock().unwrap().push(envelope);
        Ok(())
    }
}

struct Rig {
    _db: TestDatabase,
    store: Store,
    clock: ManualClock,
    ctx: FleetContext,
    registry: SessionRegistry,
    supervisor: ActorRef<SupervisorMsg>,
    agent_id: Uuid,
    agent_key: SigningKey,
}

impl Rig {
    async fn new() -> Rig {
        let db = TestDatabase::sqlite().await.unwrap();
        let store = db.open().await.unwrap();
        let org = store.default_org(0).await.unwrap();
        let domain = Domain::new(
            store.clone(),
            Arc::new(ManualClock::new(0)),
            EventBus::default(),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        let token = CreateEnrolmentToken::default()
            .run(&domain, &Caller::cli(org.id), &EnrolmentInfo::default())
            .await
            .unwrap();
        let agent_key = SigningKey::from_bytes(&[3; 32]);
        let agent = EnrolAgent {
            token: token.secret,
            agent: NewAgent {
                hostname: "h".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                agent_version: "0".into(),
                public_key: agent_key.verifying_key().to_bytes(),
            },
            remote: "memory".into(),
        }
        .run(&domain)
        .await
        .unwrap();
        let clock = ManualClock::new(1_000_000);
        let stats = Arc::new(FleetStats::default());
        let ctx = FleetContext {
            store: store.clone(),
            server_key: Arc::new(SigningKey::from_bytes(&[1; 32])),
            clock: Arc::new(clock.clone()),
            settings: Arc::new(FleetSettings::for_test()),
            stats: stats.clone(),
            events: EventBus::default(),
            jobs: Default::default(),
            verifier: SignatureVerifier::start(1, stats).unwrap(),
            metrics: Default::default(),
            keys: reap3r_actors::vault::Keyring::ephemeral(),
        };
        let registry = SessionRegistry::default();
        let presence = PresenceWriter::start(ctx.clone(), registry.clone())
            .await
            .unwrap();
        let slot = reap3r_actors::ActorSlot::default();
        slot.set(presence);
        let (supervisor, _) = SessionSupervisor::start(ctx.clone(), registry.clone(), slot)
            .await
            .unwrap();
        Rig {
            _db: db,
            store,
            clock,
            ctx,
            registry,
            supervisor,
            agent_id: agent.id,
            agent_key,
        }
    }

    async fn spawn(&self) -> (ActorRef<SessionMsg>, Arc<MemoryLink>) {
        let link = Arc::new(MemoryLink::default());
        let dyn_link: Arc<dyn AgentLink> = link.clone();
        let session = match self
            .supervisor
            .call(|r| SupervisorMsg::Spawn(dyn_link, r), None)
            .await
            .unwrap()
        {
            CallResult::Success(Ok(s)) => s,
            other => panic!("spawn failed: {other:?}"),
        };
        (session, link)
    }

    /// Completes challenge → hello → welcome; returns the agent's outbound session.
    async fn connect(&self) -> (ActorRef<SessionMsg>, Arc<MemoryLink>, OutboundSession) {
        let (session, link) = self.spawn().await;
        let challenge = link.frames.lock().unwrap()[0].clone();
        let server_key = self.ctx.server_key.verifying_key();
        let (_, _) = InboundSession::from_challenge(
            Envelope::parse(challenge.clone()).unwrap(),
            &server_key,
        )
        .unwrap();
        let nonce = Envelope::parse(challenge).unwrap().header().nonce;
        let mut out =
            OutboundSession::new(self.agent_id.into_bytes(), nonce, self.agent_key.clone());
        let hello = Message::Hello(Hello {
            agent_version: "0".into(),
            hostname: "h".into(),
            capabilities: vec!["heartbeat".into()],
            inventory: InventorySummary::default(),
            sealing_key: Some(SEALING_KEY),
        });
        assert!(frame(&session, out.seal(hello, 0)).await, "hello accepted");
        let welcome = link.frames.lock().unwrap()[1].clone();
        assert_eq!(
            Envelope::parse(welcome).unwrap().header().kind,
            MessageKind::Welcome
        );
        (session, link, out)
    }

    async fn status(&self) -> AgentStatus {
        self.store
            .agent(self.agent_id)
            .await
            .unwrap()
            .unwrap()
            .status()
    }
}

async fn frame(session: &ActorRef<SessionMsg>, bytes: Vec<u8>) -> bool {
    matches!(
        session.call(|r| SessionMsg::Frame(bytes, r), None).await,
        Ok(CallResult::Success(true))
    )
}

async fn datagram(session: &ActorRef<SessionMsg>, bytes: Vec<u8>) -> bool {
    matches!(
        session.call(|r| SessionMsg::Datagram(bytes, r), None).await,
        Ok(CallResult::Success(true))
    )
}

async fn until(mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

fn heartbeat() -> Message {
    Message::Heartbeat(Heartbeat {
        uptime_s: 1,
        cpu_centipercent: 0,
        memory_used_bytes: 0,
    })
}

#[tokio::test]
async fn offline_exactly_after_three_missed_heartbeat_intervals() {
    let rig = Rig::new().await;
    let (session, link, mut out) = rig.connect().await;
    assert_eq!(rig.status().await, AgentStatus::Online);
    // The hello's sealing key is what secrets are sealed to from now on.
    let org_id = rig.store.agent(rig.agent_id).await.unwrap().unwrap().org_id;
    assert_eq!(
        rig.store
            .sealing_keys(org_id, &[rig.agent_id])
            .await
            .unwrap()
            .get(&rig.agent_id),
        Some(&SEALING_KEY)
    );
    let start = rig.clock.now_ms();

    // 2 s later a heartbeat arrives: the 3 s window restarts from there.
    rig.clock.advance(2_000);
    assert!(datagram(&session, out.seal(heartbeat(), 0)).await);
    session.cast(SessionMsg::Tick(start + 4_900)).unwrap();
    session.cast(SessionMsg::Tick(start + 5_000)).unwrap();
    assert!(
        frame(&session, out.seal(Message::Ack { seq: 0 }, 0)).await,
        "still live at 3.0 s after the heartbeat"
    );
    assert!(link.closed.lock().unwrap().is_none());

    // Nothing more: just past 3 intervals after the last message, the session is closed.
    session
        .cast(SessionMsg::Tick(start + 2_000 + 3_001))
        .unwrap();
    until(async || link.closed.lock().unwrap().is_some()).await;
    assert_eq!(
        link.closed.lock().unwrap().as_ref().unwrap().0,
        CloseCode::HeartbeatTimeout
    );
    until(async || rig.status().await == AgentStatus::Offline).await;
    assert!(rig.registry.is_empty());
    assert_eq!(rig.ctx.stats.closes(CloseCode::HeartbeatTimeout), 1);
}

#[tokio::test]
async fn a_second_connection_supersedes_the_first_without_flapping_offline() {
    let rig = Rig::new().await;
    let (_old, old_link, _) = rig.connect().await;
    let (new, _new_link, _) = rig.connect().await;
    until(async || old_link.closed.lock().unwrap().is_some()).await;
    assert_eq!(
        old_link.closed.lock().unwrap().as_ref().unwrap().0,
        CloseCode::Superseded
    );
    // Let the old session finish stopping, then check it did not mark the agent offline.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rig.status().await, AgentStatus::Online);
    assert_eq!(
        rig.registry.get(rig.agent_id).unwrap().get_id(),
        new.get_id()
    );
}

#[tokio::test]
async fn a_panicking_session_is_contained_by_the_supervisor() {
    let rig = Rig::new().await;
    let (session, link, _) = rig.connect().await;
    session.cast(SessionMsg::InjectFault).unwrap();
    until(async || link.closed.lock().unwrap().is_some()).await;
    assert_eq!(
        link.closed.lock().unwrap().as_ref().unwrap().0,
        CloseCode::Internal
    );
    until(async || rig.status().await == AgentStatus::Offline).await;
    assert_eq!(
        rig.ctx
            .stats
            .session_crashes
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The supervisor is alive and serves the agent's reconnection.
    let (_again, _, _) = rig.connect().await;
    assert_eq!(rig.status().await, AgentStatus::Online);
}

#[tokio::test]
async fn handshake_without_hello_times_out_and_garbage_is_refused() {
    let rig = Rig::new().await;
    let (session, link) = rig.spawn().await;
    session
        .cast(SessionMsg::Tick(rig.clock.now_ms() + 5_001))
        .unwrap();
    until(async || link.closed.lock().unwrap().is_some()).await;
    assert_eq!(
        link.closed.lock().unwrap().as_ref().unwrap().0,
        CloseCode::ProtocolError
    );

    let (session, link) = rig.spawn().await;
    assert!(!frame(&session, vec![1, 2, 3]).await);
    assert_eq!(
        link.closed.lock().unwrap().as_ref().unwrap().0,
        CloseCode::ProtocolError
    );
}

#[tokio::test]
async fn last_seen_is_written_at_most_twice_per_heartbeat_interval() {
    let rig = Rig::new().await;
    let (session, _link, mut out) = rig.connect().await;
    let last_seen = async || {
        rig.store
            .agent(rig.agent_id)
            .await
            .unwrap()
            .unwrap()
            .last_seen
    };
    // Hello recorded the connect time. The test interval is 1 s, so the grain is 500 ms.
    assert_eq!(last_seen().await, Some(1_000_000));
    for _ in 0..20 {
        rig.clock.advance(20);
        assert!(datagram(&session, out.seal(heartbeat(), 0)).await);
    }
    // 400 ms of heartbeats every 20 ms: verified and counted, none written. Two presence
    // flushes (every 200 ms) pass before looking.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(rig.ctx.stats.snapshot().heartbeats, 20);
    assert_eq!(last_seen().await, Some(1_000_000));
    // Past the grain, the next heartbeat is written.
    rig.clock.advance(100);
    assert!(datagram(&session, out.seal(heartbeat(), 0)).await);
    until(async || last_seen().await == Some(1_000_500)).await;
}
