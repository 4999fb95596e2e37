//! `service_list` and `service_action` through systemctl, with unit names checked so that
//! none is read as an option.

use reap3r_wire::{MAX_RESULT_DATA_BYTES, ServiceVerb};
use serde_json::{Value, json};
use tokio::process::Command;

use super::{PARSE_CAP, STDERR_CAP, STDOUT_CAP, capped_array, truncation_note};
use crate::jobs::ctx::{JobCtx, Outcome};

/// Parses `systemctl list-units --no-legend --plain` lines: unit, load, active, sub, description.
pub(crate) fn parse_units(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().peekable();
            // Some versions still mark failed units with a bullet.
            if fields
                .peek()
                .is_some_and(|f| !f.chars().any(|c| c.is_ascii_alphanumeric()))
            {
                fields.next();
            }
            let name = fields.next()?;
            let load = fields.next()?;
            let active = fields.next()?;
            let sub = fields.next()?;
            let description = fields.collect::<Vec<_>>().join(" ");
            Some(json!({
                "name": name,
                "load": load,
                "active": active,
                "sub": sub,
                "description": description,
            }))
        })
        .collect()
}

/// A unit name systemctl will take as a name, never as an option.
pub(crate) fn valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._:-".contains(&b))
}

pub(super) async fn service_list(ctx: &mut JobCtx<'_>) -> Outcome {
    let Some(systemctl) = ctx.shared.caps.systemctl.clone() else {
        return Outcome::refused("systemctl is not available on this agent");
    };
    let mut cmd = Command::new(systemctl);
    cmd.args([
        "list-units",
        "--type=service",
        "--all",
        "--no-legend",
        "--no-pager",
        "--plain",
    ]);
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, false, PARSE_CAP, STDERR_CAP).await;
    let mut outcome = Outcome::from_run(run, timeout_s);
    if outcome.end == reap3r_wire::JobEnd::Succeeded {
        let units = parse_units(&String::from_utf8_lossy(&outcome.stdout));
        let (data, kept, total) = capped_array(units, MAX_RESULT_DATA_BYTES);
        outcome.data = Some(data);
        outcome.error = truncation_note("service list", kept, total);
        outcome.stdout.clear();
        outcome.stdout_truncated = false;
    } else if outcome.stdout.len() > STDOUT_CAP {
        outcome.stdout.truncate(STDOUT_CAP);
        outcome.stdout_truncated = true;
    }
    outcome
}

pub(super) async fn service_action(
    ctx: &mut JobCtx<'_>,
    service: &str,
    action: ServiceVerb,
) -> Outcome {
    let Some(systemctl) = ctx.shared.caps.systemctl.clone() else {
        return Outcome::refused("systemctl is not available on this agent");
    };
    if !valid_unit_name(service) {
        return Outcome::refused(format!("invalid service name {service:?}"));
    }
    let mut cmd = Command::new(systemctl);
    cmd.args(["--no-pager", action.as_str(), service]);
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, true, STDOUT_CAP, STDERR_CAP).await;
    Outcome::from_run(run, timeout_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        for ok in ["sshd.service", "getty@tty1.service", "a:b-c_d.e", "x"] {
            assert!(valid_unit_name(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "-H",
            "--help",
            "a b",
            "a;b",
            "a/b",
            "$(x)",
            long.as_str(),
        ] {
            assert!(!valid_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn units_parse() {
        let text = "ssh.service loaded active running OpenBSD Secure Shell server\n\
                    ● foo.service not-found inactive dead foo.service\n\
                    bad line\n";
        let units = parse_units(text);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0]["name"], "ssh.service");
        assert_eq!(units[0]["sub"], "running");
        assert_eq!(units[0]["description"], "OpenBSD Secure Shell server");
        assert_eq!(units[1]["name"], "foo.service");
        assert_eq!(units[1]["load"], "not-found");
    }
}
