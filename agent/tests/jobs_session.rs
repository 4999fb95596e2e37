//! The agent's job streams against a minimal in-test QUIC server (no control plane): hello
//! capabilities, dispatch → ack/started/output/result on the job stream, duplicate and refused
//! dispatches, cancel, and results replayed from the outbox after reconnects until acked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use reap3r_agent::transport::{read_frame, write_frame};
use reap3r_agent::{AgentIdentity, IdentityStore, RunOptions};
use reap3r_wire::{
    ALPN, AgentConfig, Challenge, Envelope, InboundSession, JobAckOutcome, JobDispatch, JobEnd,
    JobGrant, JobPayload, JobResult, JobSpec, Message, OutboundSession, OutputStream,
    SERVER_SENDER, ScriptJob, SealingSecret, SigningKey, VerifyingKey, Welcome,
};
use tokio::sync::watch;

const AGENT_ID: [u8; 16] = [0x42; 16];
const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Server {
    endpoint: Endpoint,
    key: SigningKey,
    agent_key: VerifyingKey,
}

fn server_endpoint() -> (Endpoint, [u8; 32]) {
    let generated =
        rcgen::generate_simple_self_signed(vec![reap3r_wire::SERVER_NAME.into()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let fingerprint: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &cert)
        .as_ref()
        .try_into()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    (Endpoint::server(server, addr).unwrap(), fingerprint)
}

/// One accepted agent connection, as the server sees it.
struct Conn {
    conn: Connection,
    send: SendStream,
    recv: Option<RecvStream>,
    out: OutboundSession,
    inbound: InboundSession,
    agent_key: VerifyingKey,
    hello_capabilities: Vec<String>,
}

impl Server {
    async fn accept(&self) -> Conn {
        let incoming = tokio::time::timeout(WAIT, self.endpoint.accept())
            .await
            .expect("agent connects")
            .unwrap();
        let conn = incoming.await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&now_ms().to_be_bytes());
        let mut out = OutboundSession::new(SERVER_SENDER, nonce, self.key.clone());
        let challenge = out.seal(
            Message::Challenge(Challenge {
                server_time_ms: now_ms(),
            }),
            now_ms(),
        );
        write_frame(&mut send, &challenge).await.unwrap();
        let mut inbound = InboundSession::new(nonce);
        let frame = read_frame(&mut recv).await.unwrap();
        let hello = match inbound
            .accept(Envelope::parse(frame).unwrap(), &AGENT_ID, &self.agent_key)
            .unwrap()
            .into_message()
        {
            Message::Hello(h) => h,
            other => panic!("expected hello, got {other:?}"),
        };
        // Every hello announces the agent's sealing key (the stored one).
        assert_eq!(hello.sealing_key, Some(sealing_key().public()));
        let welcome = out.seal(
            Message::Welcome(Welcome {
                agent_id: AGENT_ID,
                config: AgentConfig {
                    heartbeat_interval_s: 3600,
                    metrics_interval_s: 3600,
                },
                release_key: None,
            }),
            now_ms(),
        );
        write_frame(&mut send, &welcome).await.unwrap();
        Conn {
            conn,
            send,
            recv: Some(recv),
            out,
            inbound,
            agent_key: self.agent_key,
            hello_capabilities: hello.capabilities,
        }
    }

    fn dispatch(&self, job_id: [u8; 16], agent_id: [u8; 16], spec: &JobSpec) -> JobDispatch {
        let spec = spec.to_bytes();
        let (grant, signature) = JobGrant {
            job_id,
            agent_id,
            spec_hash: JobSpec::hash_bytes(&spec),
            issued_at_ms: now_ms(),
            expires_at_ms: Some(now_ms() + 60_000),
            sealed_hash: None,
        }
        .sign(&self.key);
        JobDispatch {
            spec,
            grant,
            signature: signature.to_vec(),
            sealed: Vec::new(),
        }
    }
}

impl Conn {
    async fn control(&mut self, message: Message) {
        let frame = self.out.seal(message, now_ms());
        write_frame(&mut self.send, &frame).await.unwrap();
    }

    async fn open_job(&mut self, dispatch: JobDispatch) -> (SendStream, RecvStream) {
        let (mut send, recv) = self.conn.open_bi().await.unwrap();
        let frame = self.out.seal(Message::JobDispatch(dispatch), now_ms());
        write_frame(&mut send, &frame).await.unwrap();
        (send, recv)
    }

    /// The next agent message on `recv`, verified in this session (sequence numbers included).
    async fn read(&mut self, recv: &mut RecvStream) -> Option<Message> {
        let frame = tokio::time::timeout(WAIT, read_frame(recv))
            .await
            .expect("agent answers in time")
            .ok()?;
        Some(
            self.inbound
                .accept(Envelope::parse(frame).unwrap(), &AGENT_ID, &self.agent_key)
                .unwrap()
                .into_message(),
        )
    }

    /// A result replayed on a uni stream, if one comes within `within`.
    async fn replayed(&mut self, within: Duration) -> Option<JobResult> {
        let mut recv = tokio::time::timeout(within, self.conn.accept_uni())
            .await
            .ok()?
            .ok()?;
        match self.read(&mut recv).await? {
            Message::JobResult(r) => Some(r),
            other => panic!("expected a result on the uni stream, got {other:?}"),
        }
    }
}

fn sh(script: &str, timeout_s: u32) -> JobSpec {
    JobSpec {
        timeout_s,
        payload: JobPayload::RunScript(ScriptJob {
            interpreter: "sh".into(),
            script: script.into(),
            args: vec![],
            env: vec![],
            working_dir: None,
            secret_env: vec![],
        }),
    }
}

fn sealing_key() -> SealingSecret {
    SealingSecret::from_bytes(&[6; 32]).unwrap()
}

fn enrol(dir: &Path, server: SocketAddr, fingerprint: [u8; 32], key: &SigningKey) -> SigningKey {
    let agent_key = SigningKey::from_bytes(&[5; 32]);
    let store = IdentityStore::open(dir).unwrap();
    store
        .save(&AgentIdentity {
            agent_id: AGENT_ID,
            signing_key: agent_key.clone(),
            sealing: sealing_key(),
            server: server.to_string(),
            fingerprint,
            server_key: key.verifying_key(),
            config: AgentConfig::default(),
            release_key: None,
        })
        .unwrap();
    agent_key
}

/// Reads a job stream to its result: (ack, started?, stdout chunks joined, result).
async fn read_job(
    c: &mut Conn,
    recv: &mut RecvStream,
) -> (JobAckOutcome, bool, Vec<u8>, Option<JobResult>) {
    let ack = match c.read(recv).await {
        Some(Message::JobAck(a)) => a.outcome,
        other => panic!("expected an ack, got {other:?}"),
    };
    let (mut started, mut stdout, mut result) = (false, Vec::new(), None);
    while let Some(message) = c.read(recv).await {
        match message {
            Message::JobStarted { .. } => started = true,
            Message::JobOutput(o) => {
                assert!(o.data.len() <= reap3r_wire::MAX_OUTPUT_CHUNK);
                if o.stream == OutputStream::Stdout {
                    assert_eq!(o.offset, stdout.len() as u64);
                    stdout.extend_from_slice(&o.data);
                }
            }
            Message::JobResult(r) => {
                result = Some(r);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (ack, started, stdout, result)
}

#[tokio::test]
async fn jobs_over_a_real_quic_session() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // REAP3R_LOG=info shows the agent's side of the story.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REAP3R_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, fingerprint) = server_endpoint();
    let addr = endpoint.local_addr().unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let agent_key = enrol(dir.path(), addr, fingerprint, &key).verifying_key();
    let server = Server {
        endpoint,
        key,
        agent_key,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let agent = start_agent(dir.path(), stop_rx.clone());

    let mut c = server.accept().await;
    for cap in [
        "heartbeat",
        "job:run_script",
        "job:process_list",
        "interpreter:sh",
    ] {
        assert!(
            c.hello_capabilities.iter().any(|c| c == cap),
            "{cap} missing from {:?}",
            c.hello_capabilities
        );
    }

    // A job: ack, started, live output, result; the live output is the stored output.
    let job = [1; 16];
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("echo hello; sleep 0.3; echo bye", 30)))
        .await;
    let (ack, started, live, result) = read_job(&mut c, &mut r).await;
    assert_eq!(ack, JobAckOutcome::Accepted);
    assert!(started);
    let result = result.expect("result on the job stream");
    assert_eq!(result.end, JobEnd::Succeeded);
    assert_eq!(result.stdout, b"hello\nbye\n");
    assert_eq!(live, result.stdout);

    // Same job again before the ack: duplicate, and the result is sent again.
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("echo hello", 30)))
        .await;
    let (ack, _, _, again) = read_job(&mut c, &mut r).await;
    assert_eq!(ack, JobAckOutcome::Duplicate);
    assert_eq!(again, Some(result));

    // After the ack: still a duplicate, nothing to resend.
    c.control(Message::JobResultAck { job_id: job }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("echo hello", 30)))
        .await;
    let (ack, _, _, again) = read_job(&mut c, &mut r).await;
    assert_eq!(ack, JobAckOutcome::Duplicate);
    assert_eq!(again, None);

    // A grant for another agent: refused, nothing runs.
    let (_s, mut r) = c
        .open_job(server.dispatch([2; 16], [7; 16], &sh("touch /tmp/never", 30)))
        .await;
    let (ack, started, _, none) = read_job(&mut c, &mut r).await;
    assert!(matches!(ack, JobAckOutcome::Refused(ref why) if why.contains("another agent")));
    assert!(!started && none.is_none());

    // Cancel: the job ends cancelled.
    let job = [3; 16];
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("sleep 300", 30)))
        .await;
    assert!(matches!(c.read(&mut r).await, Some(Message::JobAck(_))));
    assert!(matches!(
        c.read(&mut r).await,
        Some(Message::JobStarted { .. })
    ));
    c.control(Message::JobCancel { job_id: job }).await;
    match c.read(&mut r).await {
        Some(Message::JobResult(res)) => assert_eq!(res.end, JobEnd::Cancelled),
        other => panic!("{other:?}"),
    }
    c.control(Message::JobResultAck { job_id: job }).await;

    // A job that outlives its connection: its result comes on the next one, and again on the
    // one after until it is acknowledged.
    let job = [4; 16];
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("sleep 1; echo late", 30)))
        .await;
    assert!(matches!(c.read(&mut r).await, Some(Message::JobAck(_))));
    assert!(matches!(
        c.read(&mut r).await,
        Some(Message::JobStarted { .. })
    ));
    c.conn.close(0u32.into(), b"test drops the agent");
    let mut c = server.accept().await;
    let late = c.replayed(WAIT).await.expect("result after reconnecting");
    assert_eq!(late.job_id, job);
    assert_eq!(late.stdout, b"late\n");
    c.conn.close(0u32.into(), b"test drops the agent again");
    let mut c = server.accept().await;
    let again = c.replayed(WAIT).await.expect("replayed until acked");
    assert_eq!(again, late);
    c.control(Message::JobResultAck { job_id: job }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.conn.close(0u32.into(), b"and again");
    let mut c = server.accept().await;
    assert!(c.replayed(Duration::from_millis(700)).await.is_none());

    // The agent dies mid-job (its task is dropped, nothing is cleaned up): the next run
    // reports the job failed, once, from its outbox.
    let job = [5; 16];
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("sleep 300", 30)))
        .await;
    assert!(matches!(c.read(&mut r).await, Some(Message::JobAck(_))));
    assert!(matches!(
        c.read(&mut r).await,
        Some(Message::JobStarted { .. })
    ));
    agent.abort();
    let _ = agent.await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = start_agent(dir.path(), stop_rx.clone());
    let mut c = server.accept().await;
    let crashed = c.replayed(WAIT).await.expect("interrupted job reported");
    assert_eq!(crashed.job_id, job);
    assert_eq!(crashed.end, JobEnd::Failed);
    assert_eq!(
        crashed.error.as_deref(),
        Some("agent restarted while the job was running")
    );
    c.control(Message::JobResultAck { job_id: job }).await;

    // Shutdown with a job running: the job is stopped, its result goes out on its stream, then
    // the agent says goodbye and stops.
    let job = [6; 16];
    let (_s, mut r) = c
        .open_job(server.dispatch(job, AGENT_ID, &sh("sleep 300", 30)))
        .await;
    assert!(matches!(c.read(&mut r).await, Some(Message::JobAck(_))));
    assert!(matches!(
        c.read(&mut r).await,
        Some(Message::JobStarted { .. })
    ));
    stop_tx.send(true).unwrap();
    match c.read(&mut r).await {
        Some(Message::JobResult(res)) => {
            assert_eq!(res.end, JobEnd::Failed);
            assert_eq!(
                res.error.as_deref(),
                Some("agent stopped while the job was running")
            );
        }
        other => panic!("{other:?}"),
    }
    let mut control = c.recv.take().unwrap();
    match c.read(&mut control).await {
        Some(Message::Close(_)) | None => {}
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();

    // Not acknowledged before the stop: replayed by the next run.
    let (stop_tx, stop_rx) = watch::channel(false);
    let agent = start_agent(dir.path(), stop_rx);
    let mut c = server.accept().await;
    let replayed = c.replayed(WAIT).await.expect("replayed after a restart");
    assert_eq!(replayed.job_id, job);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

fn start_agent(
    dir: &Path,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), reap3r_agent::AgentError>> {
    let mut opts = RunOptions::new(dir.to_path_buf());
    opts.base_backoff = Duration::from_millis(50);
    opts.max_backoff = Duration::from_millis(200);
    tokio::spawn(reap3r_agent::run(opts, stop))
}
