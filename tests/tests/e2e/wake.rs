//! Wake-on-LAN with real agents: the test makes its own network namespace and veth pair, so the
//! host's side of the pair (a MAC and an IPv4 network only this test uses) shows in every
//! agent's inventory. One agent is stopped, as a sleeping machine is; waking it has the other,
//! online on the same network, broadcast the magic packet, and a listener inside the namespace
//! receives it from the wire. Plus the refusals: unknown agent, bad or foreign subnet, a role
//! without the permission.

use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reap3r_store::{AgentStatus, Backend, Uuid};
use reap3r_wire::{MAGIC_PACKET_LEN, magic_packet, parse_mac};
use serde_json::json;

use crate::api_harness::{default_org, logged_in};
use crate::harness::{TestFleet, eventually};
use crate::jobs::{WAIT, result, wait_job};

/// A network namespace with one end of a veth pair; the other end stays on the host with
/// `10.213.<n>.1/24`. Removed on drop.
struct NetLab {
    netns: String,
    host_if: String,
    net: u8,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {} (these tests need root for network namespaces)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NetLab {
    fn create() -> Result<Self> {
        let pid = std::process::id();
        // Names of at most 15 bytes; a network per process so parallel runs do not meet.
        let lab = NetLab {
            netns: format!("r3wake-{pid}"),
            host_if: format!("r3w{}h", pid % 100_000),
            net: (pid % 250) as u8 + 1,
        };
        let peer = format!("r3w{}n", pid % 100_000);
        // Left over by a killed run with the same pid, if any.
        let _ = ip(&["netns", "del", &lab.netns]);
        let _ = ip(&["link", "del", &lab.host_if]);
        ip(&["netns", "add", &lab.netns])?;
        ip(&[
            "link",
            "add",
            &lab.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &lab.netns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", lab.prefix()),
            "dev",
            &lab.host_if,
        ])?;
        ip(&["link", "set", &lab.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", lab.netns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&[
            "addr",
            "add",
            &format!("{}.2/24", lab.prefix()),
            "dev",
            &peer,
        ])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(lab)
    }

    fn prefix(&self) -> String {
        format!("10.213.{}", self.net)
    }

    /// The host side's MAC, as the agents report it.
    fn host_mac(&self) -> Result<[u8; 6]> {
        let text = std::fs::read_to_string(format!("/sys/class/net/{}/address", self.host_if))?;
        parse_mac(text.trim()).context("the veth's MAC")
    }

    /// A UDP socket bound inside the namespace (the thread enters it, binds, and leaves the
    /// socket to the caller: a socket stays in the namespace it was made in).
    fn listener(&self) -> Result<std::net::UdpSocket> {
        let path = format!("/var/run/netns/{}", self.netns);
        std::thread::scope(|s| {
            s.spawn(|| -> Result<std::net::UdpSocket> {
                let ns = std::fs::File::open(&path)?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
                socket.set_read_timeout(Some(WAIT))?;
                Ok(socket)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the listener thread panicked"))?
        })
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_is_woken_by_a_relay_on_its_network() -> Result<()> {
    let lab = NetLab::create()?;
    let listener = lab.listener()?;
    let port = listener.local_addr()?.port();
    let mac = lab.host_mac()?;
    let mut fleet = TestFleet::builder()
        .agents(2)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let (sleeper, relay) = (fleet.agents[0].id, fleet.agents[1].id);
    let subnet = format!("{}.0/24", lab.prefix());

    // The sleeping machine's inventory names the host's side of the pair.
    let shown = api
        .get(&format!("/api/agents/{sleeper}"))
        .await?
        .expect(200)?;
    let interfaces = shown["inventory"]["interfaces"].to_string();
    assert!(
        interfaces.contains(&format!("{}.1/24", lab.prefix())),
        "{interfaces}"
    );
    fleet.agents[0].kill().await?;
    fleet
        .server
        .wait_status(sleeper, AgentStatus::Offline, WAIT)
        .await?;

    // The listener waits inside the namespace while the wake is asked for.
    let receiving = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut buf = [0u8; 512];
        let (n, _) = listener.recv_from(&mut buf)?;
        Ok(buf[..n].to_vec())
    });
    let woke = api
        .post(
            &format!("/api/agents/{sleeper}/wake"),
            json!({ "port": port, "subnet": subnet }),
        )
        .await?
        .expect(200)?;
    assert_eq!(woke["relay_agent_id"], relay.to_string(), "{woke}");
    assert_eq!(woke["network"], subnet.as_str(), "{woke}");
    assert_eq!(woke["broadcast"], format!("{}.255", lab.prefix()), "{woke}");
    assert_eq!(woke["port"], port);
    assert_eq!(woke["job"]["type"], "wake_on_lan", "{woke}");
    let packet = receiving.await?.context("the magic packet")?;
    assert_eq!(packet.len(), MAGIC_PACKET_LEN);
    assert_eq!(
        packet,
        magic_packet(mac),
        "six 0xFF, then the sleeper's MAC 16 times"
    );

    // The relay's job says so.
    let job: Uuid = woke["job"]["id"].as_str().unwrap_or_default().parse()?;
    wait_job(&api, job, "the wake job to complete", |j| {
        j["status"] == "completed"
    })
    .await?;
    let r = result(&api, job, relay).await?;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(
        r["data"]["sent_to"],
        format!("{}.255:{port}", lab.prefix()),
        "{r}"
    );

    // Refusals, each a clear 4xx.
    let wake = |id: Uuid, body: serde_json::Value| {
        let api = api.clone();
        async move { api.post(&format!("/api/agents/{id}/wake"), body).await }
    };
    assert_eq!(
        wake(Uuid::now_v7(), json!({})).await?.error(404)?,
        "not_found"
    );
    assert_eq!(
        wake(sleeper, json!({ "subnet": "10.213.0.0/99" }))
            .await?
            .error(400)?,
        "invalid_input"
    );
    // A network the machine is not on (every wake here names a subnet of the lab, so no packet
    // goes to a network the test did not make).
    let foreign = format!("{}.0/25", lab.prefix());
    assert!(!interfaces.contains(&foreign), "{interfaces}");
    let conflict = wake(sleeper, json!({ "subnet": foreign })).await?;
    assert!(
        conflict.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("no online agent")),
        "{:?}",
        conflict.body
    );
    conflict.error(409)?;
    let viewer = logged_in(&fleet.server, org, "viewer@example.com", "viewer").await?;
    viewer
        .post(
            &format!("/api/agents/{sleeper}/wake"),
            json!({ "subnet": subnet }),
        )
        .await?
        .error(403)?;

    // With the relay gone too, nobody can wake it.
    fleet.agents[1].kill().await?;
    fleet
        .server
        .wait_status(relay, AgentStatus::Offline, WAIT)
        .await?;
    eventually("no relay left", Duration::from_secs(5), || async {
        let r = wake(sleeper, json!({ "subnet": subnet })).await?;
        Ok((r.status.as_u16() == 409).then_some(()))
    })
    .await?;
    drop(lab);
    Ok(())
}
