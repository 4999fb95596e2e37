//! The agent trusts exactly the certificate and server key it pinned.

use anyhow::Result;
use reap3r_store::AgentStatus;

use crate::harness::{TestFleet, enrol_command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_server_whose_certificate_or_key_does_not_match_its_pins() -> Result<()> {
    let fleet = TestFleet::builder().agents(0).spawn().await?;
    let server = &fleet.server;
    let token = server.token(false, None, "1h").await?;
    let dir = server.dir.path();
    let wrong = "ab".repeat(32);
    // A valid Ed25519 public key that is not the server's.
    let other_key = hex::encode(
        reap3r_wire::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_bytes(),
    );

    for (name, fingerprint, server_key, needle) in [
        (
            "wrong-cert",
            wrong.as_str(),
            token.server_key.as_str(),
            "certificate",
        ),
        (
            "wrong-key",
            token.fingerprint.as_str(),
            other_key.as_str(),
            "server key",
        ),
    ] {
        let out = enrol_command(&token, &dir.join(name), fingerprint, server_key)
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: enrolment should fail");
        assert!(
            stderr.contains(needle),
            "{name}: stderr should mention '{needle}': {stderr}"
        );
    }
    // Nothing was enrolled, and the token was not consumed by the refused attempts.
    assert!(server.node().store.list_agents(None).await?.is_empty());
    let good = enrol_command(
        &token,
        &dir.join("good"),
        &token.fingerprint,
        &token.server_key,
    )
    .output()
    .await?;
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let agents = server.node().store.list_agents(None).await?;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].status(), AgentStatus::Offline);
    Ok(())
}
