//! Job frames: verified job messages from the agent go to the job engine; dispatches from the
//! engine go out on a stream of their own.

use ractor::ActorRef;
use reap3r_store::Uuid;
use reap3r_wire::{CloseCode, MAX_RESULT_DATA_BYTES, MAX_STDERR_BYTES, MAX_STDOUT_BYTES, Message};
use tracing::{debug, warn};

use super::refusal::Refusal;
use super::{Phase, SessionMsg, SessionState};
use crate::FleetStats;
use crate::jobs::AgentJobEvent;

/// Longest error text in a job result.
const MAX_ERROR_TEXT: usize = 4096;

impl SessionState {
    /// Hands a verified job message to the job engine.
    pub(super) fn to_job(
        &self,
        agent_id: Uuid,
        job_id: [u8; 16],
        event: AgentJobEvent,
        myself: Option<&ActorRef<SessionMsg>>,
    ) -> Result<(), Refusal> {
        // Only frames that came in on a stream carry the session's own reference.
        if myself.is_none() {
            return Err(Refusal::new(
                CloseCode::ProtocolError,
                "job messages travel on streams",
            ));
        }
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
        if !self.ctx().jobs.from_agent(agent_id, job_id, event) {
            debug!(%agent_id, %job_id, "no job engine on this node; job message dropped");
        }
        Ok(())
    }

    /// Seals a dispatch and opens the job's own stream for it.
    pub(super) fn dispatch_job(&mut self, job_id: Uuid, dispatch: reap3r_wire::JobDispatch) {
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
}

impl SessionState {
    /// Opens a channel on this session: its keys derive from this session's nonce, its opener
    /// is sealed as the channel's first frame, and the stream's frames go to the requester.
    pub(super) fn open_channel(&mut self, request: crate::ChannelRequest) {
        let crate::ChannelRequest {
            channel_id,
            opener,
            reply,
        } = request;
        let Phase::Live(live) = &self.phase else {
            let _ = reply.send(Err("the agent's session is not live".into()));
            return;
        };
        if opener.channel_id() != Some(channel_id) {
            let _ = reply.send(Err("the opener does not open this channel".into()));
            return;
        }
        let mut channel = reap3r_wire::Channel::open(
            &self.inbound.nonce(),
            channel_id,
            live.agent_id.into_bytes(),
            live.key,
            (*self.ctx().server_key).clone(),
        );
        let first = channel.seal(opener, self.now());
        FleetStats::bump(&self.ctx().stats.messages_out);
        let answer = self
            .args
            .link
            .open_channel(first)
            .map(|pipe| crate::AgentChannel { channel, pipe })
            .map_err(|e| format!("cannot open a stream to the agent: {e}"));
        let _ = reply.send(answer);
    }
}

/// A result larger than the agent's caps is a protocol violation, not something to store.
pub(super) fn check_result(r: &reap3r_wire::JobResult) -> Result<(), Refusal> {
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
