//! [`AgentCore`]: an agent's protocol state across its connections, pure. It owns the welcomed
//! [`Session`] of the current connection and applies the job rules over a [`JobStore`]:
//!
//! - a dispatch is verified (pinned server key, this agent's id, spec hash, expiry) and then
//!   accepted once: a job id in the ledger is never run again (`JobAck::Duplicate`, with the
//!   result again while it is still in the outbox); a refused dispatch is not recorded;
//! - a result goes to the outbox before it is sent, and stays there until `JobResultAck`;
//! - after every `Welcome`, everything in the outbox is sent again, each on a uni stream;
//!   and on a live connection, a result still unacknowledged after
//!   [`RESEND_AFTER_MS`](super::resend::RESEND_AFTER_MS) goes again ([`AgentCore::resend_due`]).
//!
//! Inputs are frames (with the connection and lane they came on) and local events (a job
//! finished); outputs are [`Effect`]s for the driver to carry out. Frames to send are given as
//! messages: the driver seals each with [`AgentCore::seal`] right before writing it.

use reap3r_wire::{
    AgentConfig, CloseReason, JobAck, JobAckOutcome, JobDispatch, JobResult, Message, MessageKind,
    VerifiedJob, VerifyingKey, Welcome, WireError,
};

use super::handshake::Session;
use super::resend::Resends;
use super::store::JobStore;

/// Clock difference allowed when checking a grant's expiry (docs/JOBS.md: 5 min).
pub const GRANT_SKEW_MS: u64 = 5 * 60 * 1000;

/// One connection of this agent, numbered by the core at each `Welcome`.
pub type ConnId = u64;
/// A job stream within a connection, numbered by the driver.
pub type StreamId = u64;

/// Where a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The bidirectional stream the server opened first.
    Control,
    /// A QUIC datagram (heartbeats).
    Datagram,
    /// A new unidirectional stream of the agent's (metrics, replayed results).
    Uni,
    /// A job stream the server opened for one dispatch.
    Job(StreamId),
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Seal `message` with [`AgentCore::seal`] right before writing it on `lane` of `conn`.
    Send {
        conn: ConnId,
        lane: Lane,
        message: Message,
    },
    /// End the job stream cleanly: nothing more goes on it.
    FinishStream { conn: ConnId, stream: StreamId },
    /// The job stream did not start with an acceptable dispatch: reset it.
    ResetStream {
        conn: ConnId,
        stream: StreamId,
        reason: String,
    },
    /// Run the job (recorded in the ledger already). Its live frames go on `stream` while
    /// that lasts; its result comes back through [`AgentCore::job_finished`].
    StartJob {
        conn: ConnId,
        stream: StreamId,
        job: VerifiedJob,
    },
    /// Stop a running job: it ends `Cancelled`.
    CancelJob { job_id: [u8; 16] },
    /// Adopt this configuration (clamped); persist it if it changed.
    ApplyConfig(AgentConfig),
    /// The server committed this result; `kept` says whether it was still in the outbox.
    Acked { job_id: [u8; 16], kept: bool },
    /// The server ended the session with a `Close`.
    Closed(CloseReason),
    /// The server sent something an agent does not act on; log it and go on.
    Ignored(MessageKind),
    /// The store failed; the rules carried on as documented. For the log.
    StoreFailed(String),
}

/// What a `Welcome` leaves the driver to do.
#[derive(Debug, Clone)]
pub struct Welcomed {
    /// The connection's id from now on.
    pub conn: ConnId,
    /// The server's config, clamped: adopt it, and persist it if it changed.
    pub config: AgentConfig,
    /// Every unacknowledged result, to send again on `conn`, each on its own uni stream.
    pub replay: Vec<JobResult>,
    /// The outbox could not be read (nothing is replayed this time). For the log.
    pub store_failed: Option<String>,
}

/// Why a received frame was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame came on a connection that is no longer the current one.
    #[error("frame on a connection that is no longer live")]
    NotLive,
    #[error("{0}")]
    Wire(#[from] WireError),
}

/// An agent's protocol core; see the module docs.
#[derive(Debug)]
pub struct AgentCore<S> {
    agent_id: [u8; 16],
    server_key: VerifyingKey,
    store: S,
    accepting: bool,
    live: Option<(ConnId, Session)>,
    conns: ConnId,
    resends: Resends,
}

impl<S: JobStore> AgentCore<S> {
    pub fn new(agent_id: [u8; 16], server_key: VerifyingKey, store: S) -> Self {
        Self {
            agent_id,
            server_key,
            store,
            accepting: true,
            live: None,
            conns: 0,
            resends: Resends::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The live connection, if any.
    pub fn current(&self) -> Option<ConnId> {
        self.live.as_ref().map(|(id, _)| *id)
    }

    /// A connection was welcomed: it is the live one from now on. Returns its id, the config
    /// to adopt and every unacknowledged result to send again.
    pub fn welcomed(&mut self, session: Session, welcome: &Welcome) -> Welcomed {
        self.conns += 1;
        let conn = self.conns;
        self.live = Some((conn, session));
        self.resends.clear();
        let (replay, store_failed) = match self.store.unacked() {
            Ok(results) => (results, None),
            Err(e) => (Vec::new(), Some(format!("cannot read the outbox: {e}"))),
        };
        Welcomed {
            conn,
            config: welcome.config.clamped(),
            replay,
            store_failed,
        }
    }

    /// The connection ended; results wait in the outbox until the next `Welcome`.
    pub fn disconnected(&mut self, conn: ConnId) {
        if self.current() == Some(conn) {
            self.live = None;
            self.resends.clear();
        }
    }

    /// Results sent on the live connection and still unacknowledged
    /// [`RESEND_AFTER_MS`](super::resend::RESEND_AFTER_MS) later, to send again, each on a uni
    /// stream. The driver calls this now and then (at each heartbeat): however an ack went
    /// missing, no result the server stored stays in the outbox for long.
    pub fn resend_due(&mut self, now_ms: u64) -> Vec<Effect> {
        let Some(conn) = self.current() else {
            return Vec::new();
        };
        let Ok(outbox) = self.store.unacked() else {
            return Vec::new();
        };
        let due = self.resends.due(outbox.iter().map(|r| r.job_id), now_ms);
        outbox
            .into_iter()
            .filter(|r| due.contains(&r.job_id))
            .map(|r| Effect::Send {
                conn,
                lane: Lane::Uni,
                message: Message::JobResult(r),
            })
            .collect()
    }

    /// From now on dispatches are refused ("the agent is stopping").
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    fn session(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.live
            .as_mut()
            .and_then(|(id, s)| (*id == conn).then_some(s))
    }

    /// The session nonce of `conn`; `None` if that connection is no longer live.
    pub fn session_nonce(&self, conn: ConnId) -> Option<[u8; 16]> {
        self.live
            .as_ref()
            .and_then(|(id, s)| (*id == conn).then(|| s.nonce()))
    }

    /// Signs `message` for `conn`; `None` if that connection is no longer live.
    pub fn seal(&mut self, conn: ConnId, message: Message, now_ms: u64) -> Option<Vec<u8>> {
        self.session(conn).map(|s| s.seal(message, now_ms))
    }

    /// Signs `message` for a datagram of `conn`; `None` if that connection is no longer live.
    pub fn seal_datagram(
        &mut self,
        conn: ConnId,
        message: Message,
        now_ms: u64,
    ) -> Option<Result<Vec<u8>, WireError>> {
        self.session(conn).map(|s| s.seal_datagram(message, now_ms))
    }

    /// A frame from the server on `lane` of `conn`. An error means the envelope was refused:
    /// on the control stream the driver ends the connection, on a job stream it resets it.
    pub fn on_frame(
        &mut self,
        conn: ConnId,
        lane: Lane,
        frame: Vec<u8>,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FrameError> {
        let message = self
            .session(conn)
            .ok_or(FrameError::NotLive)?
            .accept(frame)?;
        Ok(match lane {
            Lane::Job(stream) => match message {
                Message::JobDispatch(dispatch) => self.on_dispatch(conn, stream, &dispatch, now_ms),
                other => vec![Effect::ResetStream {
                    conn,
                    stream,
                    reason: format!("job stream opened with {:?}", other.kind()),
                }],
            },
            Lane::Control | Lane::Datagram | Lane::Uni => self.on_message(message),
        })
    }

    /// A verified message from the control stream.
    pub fn on_message(&mut self, message: Message) -> Vec<Effect> {
        vec![match message {
            Message::ConfigUpdate(config) => Effect::ApplyConfig(config.clamped()),
            Message::JobCancel { job_id } => Effect::CancelJob { job_id },
            Message::JobResultAck { job_id } => match self.store.drop_result(&job_id) {
                Ok(kept) => {
                    self.resends.acked(&job_id);
                    Effect::Acked { job_id, kept }
                }
                Err(e) => Effect::StoreFailed(format!("cannot drop an acknowledged result: {e}")),
            },
            Message::Close(reason) => Effect::Closed(reason),
            Message::Ack { .. } => return Vec::new(),
            other => Effect::Ignored(other.kind()),
        }]
    }

    /// The ledger rules for the `JobDispatch` of a verified envelope that opened job stream
    /// `stream` of `conn`: refused (not recorded), duplicate (never run twice; the result
    /// again if it is still in the outbox) or accepted (recorded, then started).
    pub fn on_dispatch(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        dispatch: &JobDispatch,
        now_ms: u64,
    ) -> Vec<Effect> {
        let ack = |job_id, outcome| Effect::Send {
            conn,
            lane: Lane::Job(stream),
            message: Message::JobAck(JobAck { job_id, outcome }),
        };
        let refuse = |job_id, reason: String| {
            vec![
                ack(job_id, JobAckOutcome::Refused(reason)),
                Effect::FinishStream { conn, stream },
            ]
        };
        let job = match dispatch.verify(&self.server_key, &self.agent_id, now_ms, GRANT_SKEW_MS) {
            Ok(job) => job,
            Err(refusal) => {
                return refuse(
                    dispatch.claimed_job_id().unwrap_or_default(),
                    refusal.to_string(),
                );
            }
        };
        let job_id = job.job_id;
        if !self.accepting {
            return refuse(job_id, "the agent is stopping".into());
        }
        match self.store.record(&job, now_ms) {
            Ok(true) => vec![
                ack(job_id, JobAckOutcome::Accepted),
                Effect::StartJob { conn, stream, job },
            ],
            Ok(false) => {
                let mut effects = vec![ack(job_id, JobAckOutcome::Duplicate)];
                match self.store.kept_result(&job_id) {
                    Ok(Some(result)) => effects.push(Effect::Send {
                        conn,
                        lane: Lane::Job(stream),
                        message: Message::JobResult(result),
                    }),
                    Ok(None) => {}
                    Err(e) => {
                        effects.push(Effect::StoreFailed(format!("cannot read the outbox: {e}")))
                    }
                }
                effects.push(Effect::FinishStream { conn, stream });
                effects
            }
            Err(e) => refuse(job_id, format!("cannot record the job: {e}")),
        }
    }

    /// A job ended with `result`: it goes to the outbox, then on the job's own stream if that
    /// belongs to the live connection, else on a uni stream of the live connection, else it
    /// waits for the next `Welcome`.
    pub fn job_finished(
        &mut self,
        result: JobResult,
        stream: Option<(ConnId, StreamId)>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Err(e) = self.store.keep_result(&result) {
            effects.push(Effect::StoreFailed(format!(
                "cannot persist the result; sending it anyway: {e}"
            )));
        }
        match stream {
            Some((conn, stream)) if self.current() == Some(conn) => {
                effects.push(Effect::Send {
                    conn,
                    lane: Lane::Job(stream),
                    message: Message::JobResult(result),
                });
                effects.push(Effect::FinishStream { conn, stream });
            }
            _ => effects.extend(self.reroute(result)),
        }
        effects
    }

    /// A kept result could not go where it was sent (its stream is gone): a uni stream of the
    /// live connection, if there is one; otherwise it waits in the outbox.
    pub fn reroute(&self, result: JobResult) -> Vec<Effect> {
        match self.current() {
            Some(conn) => vec![Effect::Send {
                conn,
                lane: Lane::Uni,
                message: Message::JobResult(result),
            }],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rig::{Rig, check, job};
    use super::*;

    #[test]
    fn a_dispatch_is_accepted_once_then_duplicate() {
        check(
            |r| {
                r.connect();
                r.dispatch(1, r.grant(job(1)));
                r.dispatch(2, r.grant(job(1)));
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 accepted; start j1 on #1
            c1 job#2: ack j1 duplicate; finish #2
            ",
        );
    }

    #[test]
    fn a_duplicate_resends_the_result_still_in_the_outbox() {
        check(
            |r| {
                r.connect();
                r.dispatch(1, r.grant(job(1)));
                r.finish(job(1), Some(1));
                r.dispatch(2, r.grant(job(1)));
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 accepted; start j1 on #1
            j1 finished: send c1 job#1 result j1; finish #1
            c1 job#2: ack j1 duplicate; send c1 job#2 result j1; finish #2
            ",
        );
    }

    #[test]
    fn bad_signature_wrong_agent_and_expired_grants_are_refused_and_not_recorded() {
        check(
            |r| {
                r.connect();
                let forged = r.grant(job(1)).signed_by_impostor();
                r.dispatch(1, forged);
                r.dispatch(2, r.grant(job(2)).for_agent([0xaa; 16]));
                r.dispatch(3, r.grant(job(3)).expired());
                r.dispatch(4, r.grant(job(4)).tampered_spec());
                // None of them was recorded: a good grant for the same id still runs.
                r.dispatch(5, r.grant(job(1)));
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 refused(job grant is not signed by the pinned server key); finish #1
            c1 job#2: ack j2 refused(job grant is for another agent); finish #2
            c1 job#3: ack j3 refused(job grant expired); finish #3
            c1 job#4: ack j4 refused(job spec does not match the signed grant); finish #4
            c1 job#5: ack j1 accepted; start j1 on #5
            ",
        );
    }

    #[test]
    fn a_stopping_agent_refuses_new_dispatches() {
        check(
            |r| {
                r.connect();
                r.core.stop_accepting();
                r.dispatch(1, r.grant(job(1)));
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 refused(the agent is stopping); finish #1
            ",
        );
    }

    #[test]
    fn a_result_is_kept_until_its_ack() {
        check(
            |r| {
                r.connect();
                r.dispatch(1, r.grant(job(1)));
                r.finish(job(1), Some(1));
                r.outbox();
                r.control(Message::JobResultAck { job_id: job(1) });
                r.outbox();
                r.dispatch(2, r.grant(job(1)));
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 accepted; start j1 on #1
            j1 finished: send c1 job#1 result j1; finish #1
            outbox: j1
            c1 control: acked j1 kept
            outbox: -
            c1 job#2: ack j1 duplicate; finish #2
            ",
        );
    }

    #[test]
    fn unacked_results_are_replayed_after_every_welcome() {
        check(
            |r| {
                r.connect();
                r.dispatch(1, r.grant(job(1)));
                r.dispatch(2, r.grant(job(2)));
                r.disconnect();
                // Offline: the result waits in the outbox.
                r.finish(job(1), Some(1));
                r.connect();
                // The job's old stream is gone: the result goes on a uni stream.
                r.finish(job(2), Some(2));
                r.control(Message::JobResultAck { job_id: job(1) });
                r.disconnect();
                r.connect();
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 accepted; start j1 on #1
            c1 job#2: ack j2 accepted; start j2 on #2
            c1 down
            j1 finished: -
            welcome c2: config 30s; send c2 uni result j1
            j2 finished: send c2 uni result j2
            c2 control: acked j1 kept
            c2 down
            welcome c3: config 30s; send c3 uni result j2
            ",
        );
    }

    #[test]
    fn an_ack_for_an_unknown_id_is_ignored() {
        check(
            |r| {
                r.connect();
                r.control(Message::JobResultAck { job_id: job(7) });
                r.outbox();
            },
            "
            welcome c1: config 30s
            c1 control: acked j7 unknown
            outbox: -
            ",
        );
    }

    #[test]
    fn control_messages_become_effects() {
        check(
            |r| {
                r.connect();
                r.control(Message::ConfigUpdate(AgentConfig {
                    heartbeat_interval_s: 0,
                    metrics_interval_s: 9999,
                }));
                r.control(Message::JobCancel { job_id: job(3) });
                r.control(Message::Ack { seq: 1 });
                r.control(Message::JobDispatch(r.grant(job(4)).dispatch()));
                r.control(Message::Close(CloseReason {
                    code: reap3r_wire::CloseCode::Normal,
                    message: "bye".into(),
                }));
            },
            "
            welcome c1: config 30s
            c1 control: config 1s
            c1 control: cancel j3
            c1 control: -
            c1 control: ignored JobDispatch
            c1 control: closed normal: bye
            ",
        );
    }

    #[test]
    fn frames_that_fail_verification_or_arrive_late_are_errors() {
        check(
            |r| {
                r.connect();
                r.replay_last_control();
                r.control(Message::Heartbeat(reap3r_wire::Heartbeat {
                    uptime_s: 0,
                    cpu_centipercent: 0,
                    memory_used_bytes: 0,
                }));
                r.job_stream_with(1, Message::JobCancel { job_id: job(1) });
                r.disconnect();
                r.stale_frame(1);
            },
            "
            welcome c1: config 30s
            c1 control: error sequence number 2 was already seen or is too old
            c1 control: ignored Heartbeat
            c1 job#1: reset #1 (job stream opened with JobCancel)
            c1 down
            c1 control: error frame on a connection that is no longer live
            ",
        );
    }

    #[test]
    fn sealing_for_an_old_connection_gives_nothing() {
        let mut r = Rig::new();
        r.connect();
        let old = r.conn;
        r.disconnect();
        r.connect();
        assert!(r.core.seal(old, Message::Ack { seq: 1 }, 0).is_none());
        let frame = r.core.seal(r.conn, Message::Ack { seq: 1 }, 0).unwrap();
        assert_eq!(r.server.receive(&frame).unwrap(), MessageKind::Ack);
    }
}
