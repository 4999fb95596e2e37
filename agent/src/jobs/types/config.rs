//! `config_update`: the session applies the configuration, as it would a `ConfigUpdate`.

use reap3r_wire::AgentConfig;
use serde_json::json;
use tokio::sync::oneshot;

use crate::jobs::ConfigRequest;
use crate::jobs::ctx::{JobCtx, Outcome};

pub(super) async fn config_update(ctx: &mut JobCtx<'_>, config: AgentConfig) -> Outcome {
    ctx.started(None);
    let (reply, answer) = oneshot::channel();
    if ctx
        .shared
        .config_tx
        .send(ConfigRequest { config, reply })
        .is_err()
    {
        return Outcome::failed("the agent is stopping");
    }
    match ctx.interruptible(answer).await {
        Ok(Ok(Ok(applied))) => Outcome::succeeded(Some(
            json!({
                "heartbeat_interval_s": applied.heartbeat_interval_s,
                "metrics_interval_s": applied.metrics_interval_s,
            })
            .to_string(),
        )),
        Ok(Ok(Err(err))) => Outcome::failed(format!("cannot apply the configuration: {err}")),
        Ok(Err(_)) => Outcome::failed("the agent is stopping"),
        Err(why) => Outcome::interrupted(why, ctx.timeout_s),
    }
}
