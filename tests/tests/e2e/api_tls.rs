//! The API over TLS, against a real server: with the node's own certificate (`api_tls = self`)
//! a client pinned to it speaks HTTP/2 and HTTP/1.1 as ALPN decides, plain HTTP to the port
//! gets nothing, and a client pinned to another certificate is refused; with PEM files
//! (`api_tls = files`, a chain issued by a throw-away CA) an ordinary client that trusts the CA
//! connects; and a bad TLS configuration stops `reap3r serve` with exit 64 before it creates or
//! binds anything.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use reap3r_control_plane::config::ApiTls;
use reap3r_testkit::{TestCa, pinned_client_config};
use reqwest::Version;
use rustls::pki_types::ServerName;
use serde_json::json;

use crate::api_harness::{Api, Http, PASSWORD, default_org, pinned_client, seed_user};
use crate::harness::{SERVER_BIN, TestFleet};

/// The protocol the server picked when the client offered `alpn`.
async fn negotiated(addr: SocketAddr, fingerprint: &str, alpn: &[&[u8]]) -> Result<Vec<u8>> {
    let config = pinned_client_config(fingerprint, alpn).map_err(|e| anyhow!(e))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from(reap3r_wire::SERVER_NAME)?, tcp)
        .await?;
    Ok(tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_certificate_serves_the_api_over_h2_and_http11() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(0)
        .api_tls(ApiTls::NodeCertificate)
        .spawn()
        .await?;
    let server = &fleet.server;
    let node = server.node();
    let tls = node.api_tls.as_ref().expect("TLS is on");
    // The very certificate agents pin for QUIC.
    assert_eq!(tls.fingerprint(), node.identity.fingerprint());
    assert!(node.api_url().starts_with("https://"));
    let fingerprint = tls.fingerprint();
    let addr = node.http_addr;

    // ALPN: h2 when offered, else http/1.1; a protocol the server does not speak is refused.
    assert_eq!(
        negotiated(addr, &fingerprint, Http::Any.alpn()).await?,
        b"h2"
    );
    assert_eq!(
        negotiated(addr, &fingerprint, Http::Http1.alpn()).await?,
        b"http/1.1"
    );
    assert!(negotiated(addr, &fingerprint, &[b"h3"]).await.is_err());

    let org = default_org(server).await?;
    seed_user(server, org.id, "ops@example.com", "org_admin").await?;
    for (http, version) in [
        (Http::Any, Version::HTTP_2),
        (Http::Http2, Version::HTTP_2),
        (Http::Http1, Version::HTTP_11),
    ] {
        let api = Api::over(server, http)?;
        let login = api
            .post(
                "/api/auth/login",
                json!({ "email": "ops@example.com", "password": PASSWORD }),
            )
            .await?;
        assert_eq!(login.version, version, "{http:?}");
        let token = login.expect(200)?["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token"))?
            .to_owned();
        let me = api.with_bearer(&token).get("/api/auth/me").await?;
        assert_eq!(me.version, version, "{http:?}");
        assert_eq!(me.expect(200)?["email"], "ops@example.com");
        // A body over the same connection: an API key created and used.
        let created = api
            .with_bearer(&token)
            .post(
                "/api/api-keys",
                json!({ "name": format!("{http:?}"), "scopes": ["agent:list"] }),
            )
            .await?
            .expect(200)?;
        let secret = created["secret"].as_str().unwrap_or_default();
        let agents = api.with_api_key(secret).get("/api/agents").await?;
        assert_eq!(agents.version, version);
        agents.expect(200)?;
        // Security headers are set whatever the version.
        let health = api.get("/api/health").await?;
        assert_eq!(health.headers["x-content-type-options"], "nosniff");
    }

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/api/health"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client pinned to another certificate refuses the server.
    let other = pinned_client(&"00".repeat(32), Http::Any)?
        .get(format!("{}/api/health", node.api_url()))
        .send()
        .await;
    assert!(other.is_err(), "a wrong pin connected: {other:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_files_from_a_ca_serve_the_api_to_a_client_that_trusts_the_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("Reap3r test API CA").map_err(|e| anyhow!(e))?;
    let leaf = ca.issue(&["127.0.0.1"]).map_err(|e| anyhow!(e))?;
    let cert = dir.path().join("api-chain.pem");
    let key = dir.path().join("api-key.pem");
    // The chain as operators get it: the server certificate, then its issuer.
    std::fs::write(&cert, format!("{}{}", leaf.cert_pem(), ca.pem()))?;
    std::fs::write(&key, leaf.key_pem())?;
    let fleet = TestFleet::builder()
        .agents(0)
        .api_tls(ApiTls::Files { cert, key })
        .spawn()
        .await?;
    let node = fleet.server.node();
    let tls = node.api_tls.as_ref().expect("TLS is on");
    assert_eq!(tls.certificate, leaf.cert);
    assert_ne!(tls.fingerprint(), node.identity.fingerprint());

    // reqwest's own rustls (ring), verifying the chain and the name against the CA only.
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes())?)
        .build()?;
    let reply = client
        .get(format!("{}/api/health", node.api_url()))
        .send()
        .await?;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.version(), Version::HTTP_2);
    // The same client with another CA is refused.
    let stranger = TestCa::new("Another CA").map_err(|e| anyhow!(e))?;
    let refused = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(stranger.pem().as_bytes())?)
        .build()?
        .get(format!("{}/api/health", node.api_url()))
        .send()
        .await;
    assert!(refused.is_err());
    Ok(())
}

/// Variables for one `reap3r serve`.
type Env = Vec<(&'static str, String)>;

/// `reap3r serve` with the extra variables: its exit code and stderr.
async fn serve_with(data: &Path, env: &Env) -> Result<(Option<i32>, String)> {
    let mut cmd = tokio::process::Command::new(SERVER_BIN);
    cmd.env("REAP3R_DATA_DIR", data)
        .env("REAP3R_QUIC_ADDR", "127.0.0.1:0")
        .env("REAP3R_HTTP_ADDR", "127.0.0.1:0")
        .env("REAP3R_LOG", "warn")
        .env_remove("REAP3R_DATABASE_URL")
        .kill_on_drop(true)
        .arg("serve");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output()).await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tls_configuration_exits_64_before_anything_is_created() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("Reap3r test API CA").map_err(|e| anyhow!(e))?;
    let leaf = ca.issue(&["127.0.0.1"]).map_err(|e| anyhow!(e))?;
    let other = ca.issue(&["127.0.0.1"]).map_err(|e| anyhow!(e))?;
    let file = |name: &str, text: &str| -> Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let cert = file("cert.pem", leaf.cert_pem())?;
    let wrong_key = file("other-key.pem", other.key_pem())?;
    let junk = file("junk.pem", "-----BEGIN NOTHING-----\n")?;
    let missing = dir.path().join("missing.pem").display().to_string();
    let files = ("REAP3R_API_TLS", "files".to_owned());
    let cases: Vec<(Env, &[&str])> = vec![
        (
            vec![files.clone(), ("REAP3R_API_TLS_CERT", cert.clone())],
            &["api_tls = files needs api_tls_key (REAP3R_API_TLS_KEY)"],
        ),
        (
            vec![
                files.clone(),
                ("REAP3R_API_TLS_CERT", cert.clone()),
                ("REAP3R_API_TLS_KEY", wrong_key),
            ],
            &["does not match the certificate"],
        ),
        (
            vec![
                files.clone(),
                ("REAP3R_API_TLS_CERT", missing.clone()),
                ("REAP3R_API_TLS_KEY", junk),
            ],
            &[
                "api_tls_cert",
                "cannot read",
                "api_tls_key",
                "no PEM private key",
            ],
        ),
        (
            vec![("REAP3R_API_TLS", "on".to_owned())],
            &["api_tls must be off, self or files"],
        ),
        (
            vec![
                ("REAP3R_API_TLS", "self".to_owned()),
                ("REAP3R_API_TLS_CERT", cert),
            ],
            &["api_tls_cert is set but api_tls is self"],
        ),
        (
            vec![("REAP3R_API_RATE_PER_S", "-1".to_owned())],
            &["api_rate_per_s must be 0 (off) or between"],
        ),
    ];
    for (i, (env, needles)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        let (code, stderr) = serve_with(&data, env).await?;
        assert_eq!(code, Some(64), "case {i}: {stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "case {i}: no {needle:?} in {stderr}"
            );
        }
        assert!(!data.exists(), "case {i}: the data dir was created");
    }
    Ok(())
}
