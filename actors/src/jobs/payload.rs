//! A job's payload: parsing the JSON a caller sends for each job type into what the agent
//! receives, the rules each payload must follow, and the payload as the audit log keeps it.

use std::collections::BTreeMap;

use reap3r_wire::{
    AgentConfig, INTERPRETERS, JobPayload, JobType, MAX_SCRIPT_BYTES, ScriptJob, ServiceVerb,
};
use serde::Deserialize;
use serde_json::json;

use crate::error::{DomainError, DomainResult};

/// Most script arguments, and most environment variables.
pub const MAX_SCRIPT_ARGS: usize = 64;
/// Longest script argument, environment entry (name and value) or working directory, in bytes.
pub const MAX_SCRIPT_ARG_BYTES: usize = 4096;
/// Longest systemd unit name a service action may name, in bytes.
pub const MAX_SERVICE_NAME_BYTES: usize = 255;
/// Longest delay before a reboot or shutdown, in seconds (one day).
pub const MAX_POWER_DELAY_S: u32 = 86_400;

// Payload shapes per type; unknown fields are refused so typos do not pass silently.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptPayload {
    interpreter: String,
    script: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PidPayload {
    pid: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePayload {
    service: String,
    action: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPayload {
    heartbeat_interval_s: u32,
    metrics_interval_s: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PowerPayload {
    #[serde(default)]
    delay_s: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EmptyPayload {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WakePayload {
    /// `aa:bb:cc:dd:ee:ff`.
    mac: String,
    /// The directed broadcast address of the sleeping machine's subnet, `a.b.c.d`.
    broadcast: std::net::Ipv4Addr,
    #[serde(default = "wake_port")]
    port: u16,
}

fn wake_port() -> u16 {
    reap3r_wire::WAKE_PORT
}

fn parse<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> DomainResult<T> {
    serde_json::from_value(value.clone()).map_err(|e| DomainError::invalid(format!("payload: {e}")))
}

/// Turns the request's `payload` (a JSON object) into what the agent receives; checks only its
/// shape. [`check`] applies the rules.
pub(super) fn parse_payload(
    job_type: JobType,
    payload: &serde_json::Value,
) -> DomainResult<JobPayload> {
    Ok(match job_type {
        JobType::RunScript => {
            let p: ScriptPayload = parse(payload)?;
            JobPayload::RunScript(ScriptJob {
                interpreter: p.interpreter,
                script: p.script,
                args: p.args,
                env: p.env.into_iter().collect(),
                working_dir: p.working_dir,
                // Only the job's sealed secrets name these (`CreateJob::secrets`), never the
                // request's payload.
                secret_env: Vec::new(),
            })
        }
        JobType::ProcessList => {
            parse::<EmptyPayload>(payload)?;
            JobPayload::ProcessList
        }
        JobType::ProcessKill => JobPayload::ProcessKill {
            pid: parse::<PidPayload>(payload)?.pid,
        },
        JobType::ServiceList => {
            parse::<EmptyPayload>(payload)?;
            JobPayload::ServiceList
        }
        JobType::ServiceAction => {
            let p: ServicePayload = parse(payload)?;
            let action = match p.action.as_str() {
                "start" => ServiceVerb::Start,
                "stop" => ServiceVerb::Stop,
                "restart" => ServiceVerb::Restart,
                "status" => ServiceVerb::Status,
                _ => {
                    return Err(DomainError::invalid(
                        "payload: action must be start, stop, restart or status",
                    ));
                }
            };
            JobPayload::ServiceAction {
                service: p.service,
                action,
            }
        }
        JobType::CollectInventory => {
            parse::<EmptyPayload>(payload)?;
            JobPayload::CollectInventory
        }
        JobType::ConfigUpdate => {
            let p: ConfigPayload = parse(payload)?;
            let range = AgentConfig::MIN_INTERVAL_S..=AgentConfig::MAX_INTERVAL_S;
            let metrics = AgentConfig::MIN_METRICS_INTERVAL_S..=AgentConfig::MAX_INTERVAL_S;
            if !range.contains(&p.heartbeat_interval_s) || !metrics.contains(&p.metrics_interval_s)
            {
                return Err(DomainError::invalid(format!(
                    "payload: heartbeat_interval_s must be between {} and {} seconds, \
                     metrics_interval_s between {} and {}",
                    AgentConfig::MIN_INTERVAL_S,
                    AgentConfig::MAX_INTERVAL_S,
                    AgentConfig::MIN_METRICS_INTERVAL_S,
                    AgentConfig::MAX_INTERVAL_S
                )));
            }
            JobPayload::ConfigUpdate(AgentConfig {
                heartbeat_interval_s: p.heartbeat_interval_s,
                metrics_interval_s: p.metrics_interval_s,
            })
        }
        JobType::Reboot => JobPayload::Reboot {
            delay_s: parse::<PowerPayload>(payload)?.delay_s,
        },
        JobType::Shutdown => JobPayload::Shutdown {
            delay_s: parse::<PowerPayload>(payload)?.delay_s,
        },
        JobType::WakeOnLan => {
            let p: WakePayload = parse(payload)?;
            JobPayload::WakeOnLan {
                mac: reap3r_wire::parse_mac(&p.mac).ok_or_else(|| {
                    DomainError::invalid("payload: mac must look like aa:bb:cc:dd:ee:ff")
                })?,
                broadcast: p.broadcast.octets(),
                port: p.port,
            }
        }
    })
}

/// The rules of each payload beyond its shape.
pub(super) fn check(payload: &JobPayload) -> DomainResult<()> {
    let invalid = |msg: String| Err(DomainError::invalid(msg));
    match payload {
        JobPayload::RunScript(s) => {
            if !INTERPRETERS.contains(&s.interpreter.as_str()) {
                return invalid(format!(
                    "interpreter must be one of {}",
                    INTERPRETERS.join(", ")
                ));
            }
            if s.script.is_empty() || s.script.len() > MAX_SCRIPT_BYTES {
                return invalid(format!("script must be 1 to {MAX_SCRIPT_BYTES} bytes"));
            }
            if s.args.len() > MAX_SCRIPT_ARGS || s.env.len() > MAX_SCRIPT_ARGS {
                return invalid(format!("at most {MAX_SCRIPT_ARGS} args and env entries"));
            }
            let too_long = s.args.iter().any(|a| a.len() > MAX_SCRIPT_ARG_BYTES)
                || s.env
                    .iter()
                    .any(|(k, v)| k.len() + v.len() > MAX_SCRIPT_ARG_BYTES);
            if too_long {
                return invalid(format!(
                    "each arg and env entry must be at most {MAX_SCRIPT_ARG_BYTES} bytes"
                ));
            }
            let bad_key = s
                .env
                .iter()
                .any(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'));
            if bad_key || s.args.iter().any(|a| a.contains('\0')) {
                return invalid(
                    "env names must be non-empty without '=' and no value may contain NUL".into(),
                );
            }
            if let Some(dir) = &s.working_dir
                && (dir.is_empty() || dir.len() > MAX_SCRIPT_ARG_BYTES || dir.contains('\0'))
            {
                return invalid("working_dir is empty, too long or has NUL".into());
            }
            Ok(())
        }
        JobPayload::ProcessKill { pid } if *pid <= 1 => {
            invalid("pid must be greater than 1".into())
        }
        JobPayload::ServiceAction { service, .. } => {
            let ok = !service.is_empty()
                && service.len() <= MAX_SERVICE_NAME_BYTES
                && service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c));
            if ok {
                Ok(())
            } else {
                invalid(format!(
                    "service must be a systemd unit name ([A-Za-z0-9@._:-], at most \
                     {MAX_SERVICE_NAME_BYTES})"
                ))
            }
        }
        JobPayload::Reboot { delay_s } | JobPayload::Shutdown { delay_s }
            if *delay_s > MAX_POWER_DELAY_S =>
        {
            invalid(format!("delay_s must be at most {MAX_POWER_DELAY_S}"))
        }
        JobPayload::WakeOnLan { port: 0, .. } => invalid("port must be 1 to 65535".into()),
        JobPayload::WakeOnLan { broadcast, .. }
            if *broadcast == [0; 4] || broadcast[0] == 127 || broadcast[0] >= 224 =>
        {
            invalid("broadcast must be a subnet's broadcast address, not 0.0.0.0, loopback or multicast".into())
        }
        JobPayload::ProcessKill { .. }
        | JobPayload::WakeOnLan { .. }
        | JobPayload::Reboot { .. }
        | JobPayload::Shutdown { .. }
        | JobPayload::ProcessList
        | JobPayload::ServiceList
        | JobPayload::CollectInventory
        | JobPayload::ConfigUpdate(_) => Ok(()),
    }
}

/// The payload as the audit log keeps it: a script is replaced by its BLAKE3 hash (the job
/// record has its text).
pub(super) fn audited(payload: &serde_json::Value) -> serde_json::Value {
    let mut shown = payload.clone();
    if let Some(script) = shown.get("script").and_then(|s| s.as_str()) {
        let hash = blake3::hash(script.as_bytes()).to_hex().to_string();
        shown["script_blake3"] = json!(hash);
    }
    if let Some(o) = shown.as_object_mut() {
        o.remove("script");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_its_own_payload_only() {
        for t in JobType::ALL {
            let empty = parse_payload(*t, &json!({}));
            let needs_fields = matches!(
                t,
                JobType::RunScript
                    | JobType::ProcessKill
                    | JobType::ServiceAction
                    | JobType::ConfigUpdate
                    | JobType::WakeOnLan
            );
            assert_eq!(empty.is_err(), needs_fields, "{t}");
            if let Ok(p) = empty {
                assert_eq!(p.job_type(), *t);
            }
            assert!(parse_payload(*t, &json!({ "typo": 1 })).is_err(), "{t}");
        }
    }

    #[test]
    fn scripts_are_audited_by_hash() {
        let shown = audited(&json!({ "interpreter": "sh", "script": "echo hi" }));
        assert_eq!(
            shown,
            json!({
                "interpreter": "sh",
                "script_blake3": blake3::hash(b"echo hi").to_hex().to_string(),
            })
        );
    }

    #[test]
    fn payload_rules() {
        assert!(check(&JobPayload::ProcessKill { pid: 1 }).is_err());
        assert!(check(&JobPayload::ProcessKill { pid: 2 }).is_ok());
        assert!(
            check(&JobPayload::Reboot {
                delay_s: MAX_POWER_DELAY_S + 1
            })
            .is_err()
        );
        let unit = |s: &str| JobPayload::ServiceAction {
            service: s.into(),
            action: ServiceVerb::Status,
        };
        assert!(check(&unit("ssh.service")).is_ok());
        assert!(check(&unit("a b")).is_err());
        assert!(check(&unit(&"a".repeat(MAX_SERVICE_NAME_BYTES + 1))).is_err());
    }

    #[test]
    fn a_wake_names_a_mac_and_a_subnet_broadcast() {
        let wake = |v: serde_json::Value| {
            parse_payload(JobType::WakeOnLan, &v).and_then(|p| check(&p).map(|()| p))
        };
        let ok = wake(json!({ "mac": "02:00:00:00:00:09", "broadcast": "10.0.0.255" })).unwrap();
        assert_eq!(
            ok,
            JobPayload::WakeOnLan {
                mac: [2, 0, 0, 0, 0, 9],
                broadcast: [10, 0, 0, 255],
                port: reap3r_wire::WAKE_PORT,
            }
        );
        for bad in [
            json!({ "mac": "02:00:00:00:00", "broadcast": "10.0.0.255" }),
            json!({ "mac": "02:00:00:00:00:09", "broadcast": "10.0.0" }),
            json!({ "mac": "02:00:00:00:00:09", "broadcast": "0.0.0.0" }),
            json!({ "mac": "02:00:00:00:00:09", "broadcast": "127.255.255.255" }),
            json!({ "mac": "02:00:00:00:00:09", "broadcast": "239.1.1.1" }),
            json!({ "mac": "02:00:00:00:00:09", "broadcast": "10.0.0.255", "port": 0 }),
            json!({ "mac": "02:00:00:00:00:09", "broadcast": "10.0.0.255", "port": 70000 }),
        ] {
            assert!(wake(bad.clone()).is_err(), "{bad}");
        }
    }
}
