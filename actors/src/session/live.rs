//! The live phase: frames and datagrams from a connected agent, checked (session, replay window,
//! signature) and acted on; and the liveness tick that closes silent or stalled sessions.

use ractor::ActorRef;
use reap3r_wire::{CloseCode, Envelope, MAX_OUTPUT_CHUNK, Message, VerifyingKey};

use super::jobs::check_result;
use super::refusal::Refusal;
use super::{Phase, SessionMsg, SessionState};
use crate::jobs::AgentJobEvent;
use crate::metrics::agent_sample;
use crate::{FleetStats, PresenceMsg, VerifyError};

impl SessionState {
    pub(super) async fn on_frame(
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
                reap3r_wire::MessageKind::Enrol => Box::pin(self.enrol(env)).await,
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

    pub(super) async fn on_datagram(&mut self, bytes: Vec<u8>) -> Result<(), Refusal> {
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
    pub(super) async fn accept(
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
        let (agent_id, org_id, key) = (live.agent_id, live.org_id, live.key);
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
            Message::Metrics(sample) => {
                self.to_metrics(agent_id, org_id, now, std::iter::once(sample));
                Ok(())
            }
            Message::MetricsBatch(batch) => {
                self.to_metrics(agent_id, org_id, now, batch.samples.into_vec());
                Ok(())
            }
            Message::Ack { .. } => Ok(()),
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

    /// Hands verified samples to the metrics writer's bounded intake. A sample whose time the
    /// server refuses (far future, older than raw retention) is counted and dropped: a bad agent
    /// clock is not a reason to close its session.
    fn to_metrics(
        &self,
        agent_id: reap3r_store::Uuid,
        org_id: reap3r_store::Uuid,
        now: u64,
        samples: impl IntoIterator<Item = reap3r_wire::MetricsSample>,
    ) {
        let ctx = self.ctx();
        let admitted: Vec<_> = samples
            .into_iter()
            .filter_map(|s| {
                let sample = agent_sample(agent_id, org_id, &s, now, &ctx.settings.metrics);
                if sample.is_err() {
                    ctx.metrics.count_refused();
                }
                sample.ok()
            })
            .collect();
        ctx.metrics.offer(admitted);
    }

    pub(super) fn on_tick(&mut self, now: u64) -> Result<(), Refusal> {
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
