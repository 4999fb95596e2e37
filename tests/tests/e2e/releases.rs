//! Agent releases with the real `reap3r` binary and a real agent: `reap3r release add` stores a
//! build and signs its manifest with a release key of its own (not the server's); the server
//! sends the release key's public half in its welcome, and the agent pins it (and says so in
//! its hello); bad versions, bad platforms and a second release of a version are refused.

use std::time::Duration;

use anyhow::{Context, Result};
use reap3r_actors::{AgentCommand, AgentRouter, Delivery, LocalRouter};
use reap3r_store::{AgentStatus, Backend};
use reap3r_wire::{CloseCode, ReleaseManifest, VerifyingKey, release_key_capability};

use crate::harness::{AGENT_BIN, SERVER_BIN, TestFleet, eventually};

fn release_cli(data_dir: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(SERVER_BIN);
    cmd.env("REAP3R_DATA_DIR", data_dir)
        .env("REAP3R_LOG", "warn")
        .env_remove("REAP3R_DATABASE_URL")
        .arg("release")
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_signed_by_its_own_key_and_agents_pin_that_key() -> Result<()> {
    let mut fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let data = fleet.server.config.data_dir.clone();
    let agent = fleet.agents[0].id;
    let shown = fleet.server.agent(agent).await?;
    assert!(
        !shown
            .capabilities
            .iter()
            .any(|c| c.starts_with("release_key:")),
        "no release key yet: {:?}",
        shown.capabilities
    );

    let build = std::fs::read(AGENT_BIN)?;
    let out = release_cli(&data)
        .args([
            "add",
            "--version",
            "9.9.9",
            "--platform",
            "linux-x86_64",
            "--file",
        ])
        .arg(AGENT_BIN)
        .output()
        .await?;
    assert!(
        out.status.success(),
        "release add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout)?;
    assert!(
        printed.contains(&blake3::hash(&build).to_hex().to_string()),
        "{printed}"
    );

    // The key files: private 0600, public half beside it; not the server's key.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("release.key"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let public: [u8; 32] = std::fs::read(data.join("release.pub"))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("release.pub is 32 bytes"))?;
    let release_key = VerifyingKey::from_bytes(&public)?;
    let server_key = fleet.server.node().identity.signing_key.verifying_key();
    assert_ne!(release_key, server_key);

    // The stored manifest verifies under the release key only, and names the build.
    let releases = fleet.server.node().store.list_releases().await?;
    let release = releases.first().context("one release")?;
    let manifest = ReleaseManifest::verify(&release.manifest, &release.signature, &release_key)?;
    assert_eq!(manifest.version, "9.9.9");
    assert_eq!(manifest.size, build.len() as u64);
    assert_eq!(manifest.blake3, *blake3::hash(&build).as_bytes());
    assert!(ReleaseManifest::verify(&release.manifest, &release.signature, &server_key).is_err());
    let listed = release_cli(&data).args(["list", "--json"]).output().await?;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(listed[0]["version"], "9.9.9", "{listed}");

    // Refusals: the same release again, a version or platform that does not parse.
    for (version, platform, needle) in [
        ("9.9.9", "linux-x86_64", "exists"),
        ("9.9", "linux-x86_64", "MAJOR.MINOR.PATCH"),
        ("9.9.10", "Linux x86", "platform"),
    ] {
        let out = release_cli(&data)
            .args([
                "add",
                "--version",
                version,
                "--platform",
                platform,
                "--file",
            ])
            .arg(AGENT_BIN)
            .output()
            .await?;
        assert!(!out.status.success(), "{version} {platform}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{version} {platform}: {stderr}");
    }

    // The server sends the key from its next start on; the agent pins it at its next welcome
    // and reports it in the hello after that.
    fleet.server.restart().await?;
    let want = release_key_capability(&public);
    eventually(
        "the agent to report the pinned release key",
        Duration::from_secs(60),
        || async {
            fleet
                .server
                .wait_status(agent, AgentStatus::Online, Duration::from_secs(30))
                .await?;
            let shown = fleet.server.agent(agent).await?;
            if shown.capabilities.contains(&want) {
                return Ok(Some(()));
            }
            // Reconnect, so the next hello says what the agent holds now.
            let router = LocalRouter::new(fleet.server.node().registry.clone());
            let kicked = router.deliver(
                agent,
                AgentCommand::Kick {
                    code: CloseCode::Internal,
                    reason: "test: hello again".into(),
                },
            );
            assert_eq!(kicked, Delivery::Delivered);
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(None)
        },
    )
    .await?;
    Ok(())
}
