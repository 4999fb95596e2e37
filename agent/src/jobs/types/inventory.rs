//! `collect_inventory`: host facts (OS, CPU, memory, disks, network) and installed packages,
//! fitted into the result's data cap.

use reap3r_wire::MAX_RESULT_DATA_BYTES;
use serde_json::{Value, json};
use tokio::process::Command;

use super::{PARSE_CAP, STDERR_CAP, capped_array};
use crate::jobs::ctx::{JobCtx, Outcome, truncate_text};

fn host_facts() -> Value {
    use sysinfo::{Disks, Networks, System};
    let sys = System::new().ok().map(|mut s| {
        s.refresh_memory();
        s.refresh_cpu_all();
        s
    });
    let disks: Vec<Value> = Disks::new_with_refreshed_list()
        .map(|disks| {
            disks
                .iter()
                .map(|d| {
                    json!({
                        "mount": d.mount_point().to_string_lossy(),
                        "fs": d.file_system().to_string_lossy(),
                        "total_bytes": d.total_space(),
                        "available_bytes": d.available_space(),
                        "removable": d.is_removable(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut interfaces: Vec<Value> = Networks::new_with_refreshed_list()
        .map(|nets| {
            nets.iter()
                .map(|(name, n)| {
                    let mac = n.mac_address();
                    json!({
                        "name": name,
                        "macs": if mac.is_unspecified() { vec![] } else { vec![mac.to_string()] },
                        "ips": n.ip_networks().iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
                        "rx_bytes": n.total_received(),
                        "tx_bytes": n.total_transmitted(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "os": {
            "name": System::name().unwrap_or_default(),
            "version": System::os_version().unwrap_or_default(),
            "long_version": System::long_os_version().unwrap_or_default(),
            "kernel": System::kernel_version().unwrap_or_default(),
            "hostname": crate::inventory::hostname(),
            "arch": System::cpu_arch(),
            "boot_time_s": System::boot_time().unwrap_or_default(),
            "uptime_s": System::uptime().unwrap_or_default(),
        },
        "cpu": {
            "model": sys.as_ref().and_then(|s| s.cpus().first().map(|c| c.brand().to_string())).unwrap_or_default(),
            "cores": sys.as_ref().map(|s| s.cpus().len()).unwrap_or_default(),
            "physical_cores": System::physical_core_count().ok(),
        },
        "memory": {
            "total_bytes": sys.as_ref().map(|s| s.total_memory()).unwrap_or_default(),
            "available_bytes": sys.as_ref().map(|s| s.available_memory()).unwrap_or_default(),
            "swap_total_bytes": sys.as_ref().map(|s| s.total_swap()).unwrap_or_default(),
        },
        "disks": disks,
        "network": interfaces,
    })
}

/// `name\tversion` lines (dpkg lines start with the status, kept only if installed).
pub(crate) fn parse_packages(text: &str, with_status: bool) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            if with_status && !fields.next()?.starts_with("ii") {
                return None;
            }
            let name = fields.next()?.trim();
            let version = fields.next().unwrap_or("").trim();
            (!name.is_empty()).then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

async fn installed_packages(ctx: &mut JobCtx<'_>) -> Value {
    let caps = &ctx.shared.caps;
    let (manager, mut cmd, with_status) = if let Some(dpkg) = &caps.dpkg_query {
        let mut cmd = Command::new(dpkg);
        cmd.args([
            "-W",
            "--showformat=${db:Status-Abbrev}\t${Package}\t${Version}\n",
        ]);
        ("dpkg", cmd, true)
    } else if let Some(rpm) = &caps.rpm {
        let mut cmd = Command::new(rpm);
        cmd.args(["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"]);
        ("rpm", cmd, false)
    } else {
        return json!({"manager": null, "items": []});
    };
    let run = ctx.run(&mut cmd, false, PARSE_CAP, STDERR_CAP).await;
    let timeout_s = ctx.timeout_s;
    let outcome = Outcome::from_run(run, timeout_s);
    if outcome.end != reap3r_wire::JobEnd::Succeeded {
        let reason = outcome.error.unwrap_or_else(|| {
            truncate_text(String::from_utf8_lossy(&outcome.stderr).into_owned(), 512)
        });
        return json!({"manager": manager, "items": [], "error": reason});
    }
    let mut packages = parse_packages(&String::from_utf8_lossy(&outcome.stdout), with_status);
    packages.sort();
    packages.dedup();
    json!({
        "manager": manager,
        "items": packages.into_iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
    })
}

/// Fits the inventory into `cap` bytes, cutting the package list first, then the network and
/// disk lists. Returns the JSON and what was cut.
pub(crate) fn cap_inventory(mut inv: Value, cap: usize) -> (String, Option<String>) {
    let text = inv.to_string();
    if text.len() <= cap {
        return (text, None);
    }
    let mut notes = Vec::new();
    for path in [["packages", "items"], ["network", ""], ["disks", ""]] {
        let taken = {
            let slot = if path[1].is_empty() {
                inv.get_mut(path[0])
            } else {
                inv.get_mut(path[0]).and_then(|v| v.get_mut(path[1]))
            };
            match slot {
                Some(Value::Array(items)) => std::mem::take(items),
                _ => continue,
            }
        };
        let base = inv.to_string().len();
        let (array, kept, total) = capped_array(taken, cap.saturating_sub(base + 64));
        let fitted: Value = serde_json::from_str(&array).unwrap_or(Value::Array(vec![]));
        let slot = if path[1].is_empty() {
            inv.get_mut(path[0])
        } else {
            inv.get_mut(path[0]).and_then(|v| v.get_mut(path[1]))
        };
        if let Some(slot) = slot {
            *slot = fitted;
        }
        if kept < total {
            let name = if path[1].is_empty() {
                path[0]
            } else {
                "packages"
            };
            notes.push(format!("{name} truncated to {kept} of {total}"));
        }
        let text = inv.to_string();
        if text.len() <= cap {
            return (
                text,
                Some(format!("inventory truncated: {}", notes.join(", "))),
            );
        }
    }
    // Only the fixed facts are left and they still do not fit: send a minimal document.
    let text = json!({"error": "inventory too large"}).to_string();
    (text, Some("inventory too large to send".into()))
}

pub(super) async fn collect_inventory(ctx: &mut JobCtx<'_>) -> Outcome {
    ctx.started(None);
    let mut inv = match ctx.blocking(host_facts).await {
        Ok(Ok(facts)) => facts,
        Ok(Err(err)) => return Outcome::failed(err),
        Err(why) => return Outcome::interrupted(why, ctx.timeout_s),
    };
    let packages = installed_packages(ctx).await;
    if let Err(why) = ctx.check() {
        return Outcome::interrupted(why, ctx.timeout_s);
    }
    if let Some(obj) = inv.as_object_mut() {
        obj.insert("packages".into(), packages);
    }
    let (data, note) = cap_inventory(inv, MAX_RESULT_DATA_BYTES);
    let mut outcome = Outcome::succeeded(Some(data));
    outcome.error = note;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_parse() {
        let dpkg = "ii \tbash\t5.2-1\nrc \told\t1.0\nii \tzlib1g\t1:1.2\n";
        assert_eq!(
            parse_packages(dpkg, true),
            vec![
                ("bash".to_string(), "5.2-1".to_string()),
                ("zlib1g".to_string(), "1:1.2".to_string())
            ]
        );
        assert_eq!(parse_packages("a\t1-2\n", false).len(), 1);
    }

    #[test]
    fn inventory_cuts_packages_first() {
        let inv = json!({
            "os": {"name": "x"},
            "disks": [{"mount": "/"}],
            "network": [{"name": "lo"}],
            "packages": {"manager": "dpkg", "items": (0..5000).map(|i| json!({"name": format!("pkg{i}"), "version": "1.0"})).collect::<Vec<_>>()},
        });
        let (text, note) = cap_inventory(inv, 4096);
        assert!(text.len() <= 4096);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["network"][0]["name"], "lo");
        assert!(!v["packages"]["items"].as_array().unwrap().is_empty());
        assert!(note.unwrap().contains("packages truncated"));
    }
}
