//! The `reap3r` binary as an operator uses it: config errors, token and agent commands while
//! the server runs, and graceful shutdown on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use reap3r_control_plane::cli::{AgentRow, CreatedToken};
use tokio::io::AsyncWriteExt;

use crate::harness::{AgentProcess, SERVER_BIN, eventually};

fn reap3r(data_dir: &std::path::Path, quic: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(SERVER_BIN);
    cmd.env("REAP3R_DATA_DIR", data_dir)
        .env("REAP3R_QUIC_ADDR", quic)
        .env("REAP3R_HEARTBEAT_INTERVAL_S", "1")
        .env("REAP3R_LOG", "warn")
        .env_remove("REAP3R_DATABASE_URL")
        .kill_on_drop(true);
    cmd
}

async fn run_ok(mut cmd: tokio::process::Command) -> Result<String> {
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_are_all_reported_before_binding_with_exit_64() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = reap3r(dir.path(), "not-an-address")
        .env("REAP3R_HEARTBEAT_INTERVAL_S", "0")
        .env("REAP3R_DATABASE_URL", "mysql://x")
        .arg("serve")
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["quic_addr", "heartbeat_interval_s", "database_url"] {
        assert!(stderr.contains(needle), "missing {needle} in: {stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_work_while_serving_and_sigterm_drains() -> Result<()> {
    reap3r_control_plane::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    // Find a free UDP port for the server process.
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let mut server = reap3r(&data, &quic)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;

    let token: CreatedToken = serde_json::from_str(
        &run_ok({
            let mut c = reap3r(&data, &quic);
            c.args([
                "token",
                "create",
                "--expires",
                "1h",
                "--max-uses",
                "2",
                "--json",
            ]);
            c
        })
        .await?,
    )?;
    assert!(
        token.command.contains(&token.fingerprint)
            && token.command.contains(&token.server_key)
            && token.command.contains(&quic)
    );

    let mut user = reap3r(&data, &quic)
        .args([
            "user",
            "create",
            "--email",
            "ops@example.com",
            "--role",
            "technician",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    user.stdin
        .take()
        .context("stdin")?
        .write_all(b"a long enough password\n")
        .await?;
    assert!(user.wait_with_output().await?.status.success());
    let bad_role = reap3r(&data, &quic)
        .args([
            "user",
            "create",
            "--email",
            "x@example.com",
            "--role",
            "god",
            "--password-stdin",
        ])
        .stdin(Stdio::null())
        .output()
        .await?;
    assert!(!bad_role.status.success());

    let mut agent = AgentProcess::enrol(dir.path(), "agent", &token).await?;
    agent.start()?;
    let list = || async {
        let rows: Vec<AgentRow> = serde_json::from_str(
            &run_ok({
                let mut c = reap3r(&data, &quic);
                c.args(["agent", "list", "--json"]);
                c
            })
            .await?,
        )?;
        anyhow::Ok(rows)
    };
    eventually(
        "the agent to be listed online",
        Duration::from_secs(20),
        || async {
            Ok(list()
                .await?
                .into_iter()
                .find(|r| r.id == agent.id && r.status == "online")
                .map(|_| ()))
        },
    )
    .await?;

    // SIGTERM: the server tells the agent why, marks it offline and exits 0.
    let pid = server.id().context("server pid")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(15), server.wait()).await??;
    assert!(status.success(), "server exit status {status:?}");
    let rows = list().await?;
    assert_eq!(
        rows.iter()
            .find(|r| r.id == agent.id)
            .map(|r| r.status.as_str()),
        Some("offline")
    );
    agent.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_master_key_stops_the_server_with_exit_64() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let quic = "127.0.0.1:0";
    // The first command binds the fresh database to the master key it creates.
    let status = run_ok({
        let mut c = reap3r(&data, quic);
        c.args(["vault", "status"]);
        c
    })
    .await?;
    let key_id = status
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(status.contains("primary") && key_id.len() == 16, "{status}");
    let key_file = data.join("master.key");
    let original = std::fs::read(&key_file)?;

    // The key file moved away: the server refuses to start, names the key, creates none.
    std::fs::rename(&key_file, dir.path().join("kept.key"))?;
    let out = reap3r(&data, quic).arg("serve").output().await?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&key_id) && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        !key_file.exists(),
        "a missing master key is not replaced by a new one"
    );

    // Another key: refused as the wrong one.
    let other = dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32)))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600))?;
    }
    let out = reap3r(&data, quic)
        .env("REAP3R_MASTER_KEY_FILE", &other)
        .arg("serve")
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wrong master key") && stderr.contains(&key_id),
        "{stderr}"
    );

    // The right key back: rotation works from the CLI and the file keeps the old key after
    // the new one.
    std::fs::rename(dir.path().join("kept.key"), &key_file)?;
    assert_eq!(std::fs::read(&key_file)?, original);
    let rotated = run_ok({
        let mut c = reap3r(&data, quic);
        c.args(["vault", "rotate-master-key"]);
        c
    })
    .await?;
    assert!(
        rotated.contains(&format!("master key rotated: {key_id} -> ")),
        "{rotated}"
    );
    let keys = std::fs::read_to_string(&key_file)?;
    assert_eq!(keys.lines().filter(|l| !l.starts_with('#')).count(), 2);
    Ok(())
}
