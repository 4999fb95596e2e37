//! One handler per job type. Each checks what it was given (a bad request is a `Refused`
//! result), reports the start, does the work within the deadline, and returns an [`Outcome`].
//!
//! [`execute`] picks the handler: [`script`] (`run_script`), [`process`] (`process_list`,
//! `process_kill`), [`service`] (`service_list`, `service_action`), [`inventory`]
//! (`collect_inventory`), [`config`] (`config_update`) and [`power`] (`reboot`, `shutdown`).
//! Here also: the output caps they share and the capping of structured data.

mod config;
mod inventory;
mod power;
mod process;
mod script;
mod service;
mod wake;

use reap3r_wire::{
    JobPayload, MAX_RESULT_DATA_BYTES, MAX_STDERR_BYTES, MAX_STDOUT_BYTES, SealedEnv,
};
use serde_json::Value;

use super::ctx::{JobCtx, Outcome};
use config::config_update;
use inventory::collect_inventory;
use power::power;
use process::{process_kill, process_list};
use script::run_script;
use service::{service_action, service_list};

const STDOUT_CAP: usize = MAX_STDOUT_BYTES as usize;
const STDERR_CAP: usize = MAX_STDERR_BYTES as usize;
/// Output of a command the agent parses itself (unit and package lists) is read up to this.
const PARSE_CAP: usize = 4 * 1024 * 1024;

/// Runs `payload`; `sealed` (verified against the grant, names matching the spec) goes to a
/// script, the only type that takes secrets.
pub(crate) async fn execute(
    ctx: &mut JobCtx<'_>,
    payload: &JobPayload,
    sealed: Option<&SealedEnv>,
) -> Outcome {
    match payload {
        JobPayload::RunScript(script) => run_script(ctx, script, sealed).await,
        JobPayload::ProcessList => process_list(ctx).await,
        JobPayload::ProcessKill { pid } => process_kill(ctx, *pid).await,
        JobPayload::ServiceList => service_list(ctx).await,
        JobPayload::ServiceAction { service, action } => {
            service_action(ctx, service, *action).await
        }
        JobPayload::CollectInventory => collect_inventory(ctx).await,
        JobPayload::ConfigUpdate(config) => config_update(ctx, *config).await,
        JobPayload::Reboot { delay_s } => power(ctx, "-r", *delay_s).await,
        JobPayload::Shutdown { delay_s } => power(ctx, "-h", *delay_s).await,
        JobPayload::WakeOnLan {
            mac,
            broadcast,
            port,
        } => wake::wake_on_lan(*mac, *broadcast, *port).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Structured data

/// Serialises `items` as a JSON array of at most `cap` bytes; returns it with how many items it
/// holds and how many there were.
fn capped_array(items: impl IntoIterator<Item = Value>, cap: usize) -> (String, usize, usize) {
    let mut out = String::from("[");
    let (mut kept, mut total, mut full) = (0, 0, false);
    for item in items {
        total += 1;
        if full {
            continue;
        }
        let text = item.to_string();
        let extra = text.len() + usize::from(kept > 0);
        if out.len() + extra + 1 > cap {
            full = true;
            continue;
        }
        if kept > 0 {
            out.push(',');
        }
        out.push_str(&text);
        kept += 1;
    }
    out.push(']');
    (out, kept, total)
}

fn truncation_note(what: &str, kept: usize, total: usize) -> Option<String> {
    (kept < total).then(|| format!("{what} truncated to {kept} of {total} entries (data is capped at {MAX_RESULT_DATA_BYTES} bytes)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_are_capped() {
        let items = (0..1000).map(|i| json!({"n": i}));
        let (text, kept, total) = capped_array(items, 200);
        assert!(text.len() <= 200);
        assert_eq!(total, 1000);
        assert!(kept > 0 && kept < 1000);
        let parsed: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.len(), kept);
        assert_eq!(capped_array(Vec::new(), 10).0, "[]");
    }
}
