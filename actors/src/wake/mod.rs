//! Wake-on-LAN: `POST /api/agents/{id}/wake`. The sleeping machine's last inventory names its
//! interfaces (MAC and IPv4 networks); an online agent with an address in one of those networks
//! relays: it gets a signed `wake_on_lan` job (like every job: permission, grant, audit) and
//! broadcasts the magic packet to that network. The choice is [`relay::pick_relay`], pure.

mod relay;

use reap3r_store::{AgentCursor, AgentFilter, AgentStatus, Job, MAX_AGENT_PAGE, Uuid};
use reap3r_wire::{Ipv4Net, JobType, WAKE_PORT, format_mac};
use serde_json::json;

pub use relay::{Interface, InterfaceFacts, Relay, interfaces_of, pick_relay};

use crate::Domain;
use crate::access::{Caller, Permission};
use crate::error::{DomainError, DomainResult};
use crate::jobs::{CreateJob, JobEngine, JobTargetChoice};

/// Most online agents looked at for a relay (they are read in pages, in enrolment order).
pub const MAX_RELAY_CANDIDATES: usize = 10_000;
/// The relay's job ends after this; sending three datagrams takes well under a second.
const WAKE_JOB_TIMEOUT_S: u32 = 30;

/// Wakes an agent's machine through a relay on its subnet.
#[derive(Debug, Clone)]
pub struct WakeAgent {
    pub agent_id: Uuid,
    /// The UDP port of the magic packet; [`WAKE_PORT`] when `None`.
    pub port: Option<u16>,
    /// Only relay through this network of the machine (for a machine on several).
    pub subnet: Option<Ipv4Net>,
}

/// What a wake did: the relay's job, and where the packet goes.
#[derive(Debug, Clone)]
pub struct Wake {
    pub job: Job,
    pub relay: Relay,
    pub port: u16,
}

impl WakeAgent {
    pub async fn run(
        self,
        domain: &Domain,
        engine: &JobEngine,
        caller: &Caller,
    ) -> DomainResult<Wake> {
        caller.require(Permission::RunJob(JobType::WakeOnLan))?;
        let port = self.port.unwrap_or(WAKE_PORT);
        if port == 0 {
            return Err(DomainError::invalid("port must be 1 to 65535"));
        }
        let target = domain
            .store
            .agent_in_org(caller.org_id, self.agent_id)
            .await?
            .ok_or(DomainError::NotFound("agent"))?;
        let interfaces = interfaces_of(&target.inventory);
        if interfaces.is_empty() {
            return Err(DomainError::conflict(
                "the agent has reported no network interface with a MAC address (its inventory \
                 comes with its hello)",
            ));
        }
        let candidates = relay_candidates(domain, caller.org_id, self.agent_id).await?;
        let relay = pick_relay(
            &interfaces,
            candidates.iter().map(|(id, i)| (*id, i.as_slice())),
            self.subnet,
        )
        .ok_or_else(|| {
            let networks: Vec<String> = interfaces
                .iter()
                .flat_map(|i| &i.ipv4)
                .map(|n| format!("{}/{}", std::net::Ipv4Addr::from(n.network()), n.prefix))
                .collect();
            DomainError::conflict(format!(
                "no online agent that can relay shares a network with this machine ({})",
                if networks.is_empty() {
                    "it reported no IPv4 network".to_owned()
                } else {
                    networks.join(", ")
                }
            ))
        })?;
        let job = CreateJob {
            job_type: JobType::WakeOnLan,
            targets: JobTargetChoice {
                agent_ids: Some(vec![relay.agent_id]),
                ..Default::default()
            },
            payload: Some(json!({
                "mac": format_mac(relay.mac),
                "broadcast": std::net::Ipv4Addr::from(relay.broadcast).to_string(),
                "port": port,
            })),
            timeout_s: WAKE_JOB_TIMEOUT_S,
            expires_at: None,
            batch_size: None,
            confirm: None,
            secrets: None,
        }
        .run(domain, engine, caller)
        .await?;
        Ok(Wake { job, relay, port })
    }
}

/// Online agents of the organisation that run `wake_on_lan`, other than `except`, with their
/// interfaces, in enrolment order.
async fn relay_candidates(
    domain: &Domain,
    org_id: Uuid,
    except: Uuid,
) -> DomainResult<Vec<(Uuid, Vec<Interface>)>> {
    let filter = AgentFilter {
        status: Some(AgentStatus::Online),
        ..Default::default()
    };
    let capability = JobType::WakeOnLan.capability();
    let mut out = Vec::new();
    let mut after: Option<AgentCursor> = None;
    let mut seen = 0;
    while seen < MAX_RELAY_CANDIDATES {
        let page = domain
            .store
            .list_agents_page(org_id, &filter, after.as_ref(), MAX_AGENT_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(AgentCursor::from(last));
        seen += page.len();
        out.extend(
            page.iter()
                .filter(|a| a.id != except && a.capabilities.iter().any(|c| c == capability))
                .map(|a| (a.id, interfaces_of(&a.inventory))),
        );
    }
    Ok(out)
}
