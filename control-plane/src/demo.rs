//! `reap3r demo`: a whole fleet on one machine — server on the embedded store, an admin user,
//! and local agents enrolled and connected over real QUIC.

use std::time::Duration;

use anyhow::{Context, Result};
use reap3r_actors::access::{Caller, CreateUser, Role};

use reap3r_agent::{EnrolOptions, RunOptions};
use reap3r_store::AgentStatus;
use tokio::sync::watch;

use crate::cli::{TokenCreate, create_token};
use crate::config::Config;
use crate::node::Node;
use crate::serve::wait_for_signal;

pub async fn run(mut config: Config, agents: usize) -> Result<()> {
    if std::env::var_os("REAP3R_DATA_DIR").is_none() {
        config.data_dir = std::env::temp_dir().join(format!("reap3r-demo-{}", std::process::id()));
    }
    if std::env::var_os("REAP3R_HEARTBEAT_INTERVAL_S").is_none() {
        config.heartbeat_interval_s = 5;
    }
    let data_dir = config.data_dir.clone();
    let node = Node::start(config).await?;

    let password = random_password()?;
    let org = node.store.default_org(now_ms()).await?;
    let email = "admin@reap3r.local";
    let created = node.store.user_by_email(email).await?.is_none();
    if created {
        let domain = node.api.domain.clone();
        CreateUser {
            email: email.into(),
            password: password.clone(),
            role: Role::SuperAdmin,
            display_name: None,
        }
        .run(&domain, &Caller::cli(org.id).run_by("demo"))
        .await?;
    }
    let password = if created {
        format!("{password}   (shown once)")
    } else {
        "unchanged (this admin already existed)".to_string()
    };
    let agents = agents.clamp(1, 100);
    let token_args = TokenCreate {
        org: None,
        expires: "1h".into(),
        max_uses: Some(agents as u32),
        require_approval: false,
        label: Some("demo".into()),
        json: false,
    };
    let token = create_token(
        &node.store,
        &node.identity,
        &node.public_addr(),
        &token_args,
    )
    .await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..agents {
        let agent_dir = data_dir.join("agents").join(format!("agent-{}", i + 1));
        let opts = EnrolOptions {
            server: token.server.clone(),
            token: token.token.clone(),
            fingerprint: token.fingerprint.clone(),
            server_key: token.server_key.clone(),
            data_dir: agent_dir.clone(),
        };
        reap3r_agent::enrol(&opts)
            .await
            .with_context(|| format!("enrolling demo agent {}", i + 1))?;
        tasks.push(tokio::spawn(reap3r_agent::run(
            RunOptions::new(agent_dir),
            stop_rx.clone(),
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let online = loop {
        let online = node
            .store
            .list_agents(None)
            .await?
            .iter()
            .filter(|a| a.status() == AgentStatus::Online)
            .count();
        if online >= agents || tokio::time::Instant::now() > deadline {
            break online;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let dir = data_dir.display();
    println!(
        "\nReap3r demo is running.\n\n  QUIC gateway     {quic}\n  HTTP API         {http}/api  (Swagger UI: {http}/docs)\n  data dir         {dir}\n  agents online    {online} of {agents}\n  admin login      {email}\n  admin password   {password}\n\nIn another terminal:\n  REAP3R_DATA_DIR={dir} cargo run --release --bin reap3r -- agent list\n  REAP3R_DATA_DIR={dir} cargo run --release --bin reap3r -- token create --expires 1h\n\nEnrol another agent with:\n  {cmd}\n\nPress Ctrl-C to stop.\n",
        quic = node.quic_addr,
        http = node.api_url(),
        cmd = token.command,
    );
    wait_for_signal().await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    node.shutdown().await;
    Ok(())
}

fn now_ms() -> i64 {
    reap3r_actors::Clock::now_ms(&reap3r_actors::SystemClock) as i64
}

fn random_password() -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(bytes))
}
