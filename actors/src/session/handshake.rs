//! The handshake phase: a new agent enrols with a token (through the enrolment operation), an
//! enrolled one says hello and goes live once its signature and approval check out.

use ractor::ActorRef;
use reap3r_store::{AgentHello, AgentStatus, NewAgent, StoreError, Uuid};
use reap3r_wire::{Approval, CloseCode, EnrolResult, Envelope, Message, VerifyingKey, Welcome};
use tracing::info;

use super::refusal::{Refusal, check_text};
use super::{Live, Phase, SessionMsg, SessionState};
use crate::enrolment::EnrolAgent;
use crate::{DomainError, FleetEvent, FleetStats};

/// Most capabilities an agent may declare.
const MAX_CAPABILITIES: usize = 64;

impl SessionState {
    pub(super) async fn enrol(
        &mut self,
        env: Envelope<reap3r_wire::Unverified>,
    ) -> Result<(), Refusal> {
        let env = self.inbound.accept_enrol(env)?;
        let Message::Enrol(req) = env.into_message() else {
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
        let enrol = EnrolAgent {
            token: req.token.clone(),
            agent: NewAgent {
                hostname: req.hostname.clone(),
                os: req.os.clone(),
                arch: req.arch.clone(),
                agent_version: req.agent_version.clone(),
                public_key: req.public_key,
            },
            remote: self.args.link.remote(),
        };
        let ctx = self.ctx().clone();
        let agent = enrol.run(&ctx.domain()).await.map_err(|e| match e {
            DomainError::Store(StoreError::Token(refusal)) => {
                Refusal::new(CloseCode::TokenInvalid, refusal.to_string())
            }
            other => Refusal::internal(other),
        })?;
        let pending = agent.status() == AgentStatus::Pending;
        FleetStats::bump(&ctx.stats.enrolments);
        info!(agent_id = %agent.id, hostname = %agent.hostname, pending, "agent enrolled");
        let approval = if pending {
            Approval::Pending
        } else {
            Approval::Approved
        };
        self.send(Message::EnrolResult(EnrolResult {
            agent_id: agent.id.into_bytes(),
            approval,
        }))
        .map_err(|e| Refusal::new(CloseCode::Internal, e.to_string()))?;
        self.phase = Phase::Enrolled { since_ms: now };
        self.args.link.handshake_done();
        Ok(())
    }

    pub(super) async fn hello(
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
            // Covered by the hello's signature, verified above with the agent's Ed25519 key.
            sealing_key: hello.sealing_key,
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
            release_key: ctx.settings.release_key,
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
    interfaces: Vec<crate::wake::InterfaceFacts>,
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
            interfaces: i
                .interfaces
                .iter()
                .map(crate::wake::InterfaceFacts::from)
                .collect(),
        }
    }
}
