//! Wake-on-LAN: an online agent on the sleeping machine's subnet broadcasts the magic packet, as
//! a signed `wake_on_lan` job (`WakeAgent` in the domain).

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::wake::WakeAgent;
use reap3r_store::Uuid;
use reap3r_wire::{Ipv4Net, format_mac};

use super::ApiTags;
use super::jobs::{JobView, engine};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

/// How to wake the machine; both fields may be left out.
#[derive(Debug, Object, Default)]
pub struct WakeRequest {
    /// The magic packet's UDP port (default 9).
    #[oai(validator(minimum(value = "1"), maximum(value = "65535")))]
    pub port: Option<u16>,
    /// Only relay through this IPv4 network of the machine, `a.b.c.d/prefix` (for a machine on
    /// several networks).
    #[oai(validator(max_length = 18))]
    pub subnet: Option<String>,
}

/// The relay chosen and its job (`job`: the relay's `wake_on_lan` job; its result says whether
/// the packet was sent).
#[derive(Debug, Object)]
pub struct WakeView {
    /// The agent that broadcasts the packet.
    pub relay_agent_id: Uuid,
    /// The sleeping machine's MAC address on the shared network.
    pub mac: String,
    /// The shared network, as the machine has it.
    pub network: String,
    /// Where the packet goes: the network's broadcast address and the port.
    pub broadcast: String,
    pub port: u16,
    pub job: JobView,
}

pub struct WakeApi;

#[OpenApi(tag = "ApiTags::Agents")]
impl WakeApi {
    /// Wake an agent's machine: an online agent sharing one of its networks (from its last
    /// inventory) broadcasts the magic packet. Needs `job:create` and `job:wake_on_lan`; 409
    /// when no online agent shares a network with it.
    #[oai(
        path = "/api/agents/:id/wake",
        method = "post",
        operation_id = "wakeAgent"
    )]
    async fn wake(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<Option<WakeRequest>>,
    ) -> ApiResult<Json<WakeView>> {
        let body = body.0.unwrap_or_default();
        let subnet = body
            .subnet
            .map(|s| s.parse::<Ipv4Net>())
            .transpose()
            .map_err(|e| ApiError::bad_request("invalid_input", format!("subnet: {e}")))?;
        let wake = WakeAgent {
            agent_id: id.0,
            port: body.port,
            subnet,
        }
        .run(&ctx.domain, engine(&ctx)?, auth.caller())
        .await?;
        let network = wake.relay.network;
        Ok(Json(WakeView {
            relay_agent_id: wake.relay.agent_id,
            mac: format_mac(wake.relay.mac),
            network: format!(
                "{}/{}",
                std::net::Ipv4Addr::from(network.network()),
                network.prefix
            ),
            broadcast: std::net::Ipv4Addr::from(wake.relay.broadcast).to_string(),
            port: wake.port,
            job: JobView::created(wake.job),
        }))
    }
}
