//! The vault over real HTTP on every backend: a secret's value is never in a list, a reveal by a
//! user with MFA needs a fresh step-up (403 `step_up_required` before), sharing decides who sees
//! it, API keys reveal only with the scope, and neither the value nor the TOTP secret set up
//! through the API is anywhere in the database's files in plain text. Bad input (an oversized
//! value, unknown or foreign secrets in a job, bad variable names) is a 4xx that never echoes a
//! value.

use anyhow::Result;
use reap3r_actors::access::totp;
use reap3r_store::Uuid;
use serde_json::{Value, json};

use reap3r_store::Backend;

use crate::api_harness::{Api, Reply, create_org, default_org, logged_in, now_ms};
use crate::harness::{TestServer, backends};

const VALUE: &str = "Vault-e2e-Value-93#kq";

/// Every file under `dir` (the SQLite database, its WAL, keys), as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveal_needs_a_step_up_sharing_decides_and_nothing_is_stored_in_plain_text() -> Result<()>
{
    for backend in backends().await? {
        let server = TestServer::start(backend).await?;
        let org = default_org(&server).await?.id;
        let owner = logged_in(&server, org, "owner@vault.test", "technician").await?;
        let other = logged_in(&server, org, "other@vault.test", "technician").await?;

        // MFA for the owner, through the API.
        let setup = owner
            .post("/api/auth/mfa/setup", json!({}))
            .await?
            .expect(200)?;
        let totp_secret = setup["secret"].as_str().unwrap_or_default().to_owned();
        owner
            .post(
                "/api/auth/mfa/enable",
                json!({ "code": totp::code_at(&totp_secret, now_ms())? }),
            )
            .await?
            .expect(200)?;

        let created = owner
            .post(
                "/api/vault",
                json!({ "name": "customer-db", "kind": "password", "value": VALUE, "tags": ["sql"] }),
            )
            .await?
            .expect(200)?;
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        assert!(
            !created.to_string().contains(VALUE),
            "an answer carries the value"
        );
        let list = owner.get("/api/vault").await?.expect(200)?;
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        assert!(!list.to_string().contains(VALUE));

        // MFA on, no step-up yet: 403 step_up_required; a reason is required.
        let refused = reveal(&owner, &id).await?.error(403)?;
        assert_eq!(refused, "step_up_required");
        owner
            .post(&format!("/api/vault/{id}/reveal"), json!({ "reason": "" }))
            .await?
            .error(400)?;
        // The code that enabled MFA is spent; wait for the next step's code.
        let code = next_code(&totp_secret).await?;
        owner
            .post("/api/auth/step-up", json!({ "code": code }))
            .await?
            .expect(200)?;
        let shown = reveal(&owner, &id).await?.expect(200)?;
        assert_eq!(shown["value"], VALUE);

        // Not shared: another technician gets 404, and sees nothing in the list.
        reveal(&other, &id).await?.error(404)?;
        assert_eq!(
            other
                .get("/api/vault")
                .await?
                .expect(200)?
                .as_array()
                .map(Vec::len),
            Some(0)
        );
        let other_id = other.get("/api/auth/me").await?.expect(200)?["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        owner
            .post(
                &format!("/api/vault/{id}/share"),
                json!({ "subject_kind": "user", "subject": other_id, "reveal": true }),
            )
            .await?
            .expect(200)?;
        assert_eq!(reveal(&other, &id).await?.expect(200)?["value"], VALUE);

        // An API key reveals only when its scopes say so.
        for (scopes, status) in [
            (json!(["secret:list", "secret:read"]), 403),
            (json!(["secret:list", "secret:read", "secret:reveal"]), 200),
        ] {
            let key = other
                .post(
                    "/api/api-keys",
                    json!({ "name": format!("k{status}"), "scopes": scopes }),
                )
                .await?
                .expect(200)?;
            let api = other
                .anonymous()
                .with_api_key(key["secret"].as_str().unwrap_or_default());
            let answer = reveal(&api, &id).await?;
            assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
        }
        let log = owner
            .get(&format!("/api/vault/{id}/access-logs"))
            .await?
            .expect(200)?;
        let reveals = log
            .as_array()
            .map(|a| a.iter().filter(|e| e["action"] == "reveal").count())
            .unwrap_or_default();
        assert_eq!(reveals, 3);

        // Neither the value nor the TOTP secret is stored in plain text: not in any table,
        // and (SQLite) not in any file of the data dir, the WAL included.
        let store = &server.node().store;
        let mut text = String::new();
        for table in [
            "users",
            "vault_secret_versions",
            "vault_secrets",
            "audit_log",
            "vault_access_log",
        ] {
            let rows = store
                .raw_query_text(&format!("SELECT * FROM {table}"))
                .await?;
            text.push_str(&rows.join("\n"));
        }
        assert!(!text.contains(VALUE) && !text.contains(&totp_secret));
        assert!(text.contains("r3v1:"), "sealed values are there");
        if backend == Backend::Sqlite {
            let files = files_under(&server.config.data_dir);
            assert!(files.iter().any(|(p, _)| p.ends_with("reap3r.db")));
            for (path, bytes) in files {
                assert!(
                    !contains(&bytes, VALUE),
                    "{} holds the value",
                    path.display()
                );
                assert!(
                    !contains(&bytes, &totp_secret),
                    "{} holds the TOTP secret",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Bad vault input over HTTP: an answer in the 4xx range with the error shape, and no value in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_vault_input_is_a_4xx_that_echoes_no_value() -> Result<()> {
    for backend in backends().await? {
        let server = TestServer::start(backend).await?;
        let org = default_org(&server).await?.id;
        let admin = logged_in(&server, org, "admin@vault.test", "org_admin").await?;
        let other_org = create_org(&server, "Elsewhere").await?;
        let foreign = logged_in(&server, other_org, "admin@elsewhere.test", "org_admin").await?;
        let theirs = foreign
            .post(
                "/api/vault",
                json!({ "name": "their-db", "kind": "password", "value": VALUE }),
            )
            .await?
            .expect(200)?;
        let theirs = theirs["id"].as_str().unwrap_or_default().to_owned();
        let ours = admin
            .post(
                "/api/vault",
                json!({ "name": "our-db", "kind": "password", "value": VALUE }),
            )
            .await?
            .expect(200)?;
        let ours = ours["id"].as_str().unwrap_or_default().to_owned();

        // Over the cap (64 KiB), on create and on a new version.
        let big = format!("{VALUE}-").repeat(4_000);
        let refused = [
            admin
                .post(
                    "/api/vault",
                    json!({ "name": "big", "kind": "note", "value": big }),
                )
                .await?,
            admin
                .patch(&format!("/api/vault/{ours}"), json!({ "value": big }))
                .await?,
        ];
        for reply in refused {
            no_value_in(&reply, 400, "", backend)?;
        }

        // Another organisation's secret does not exist here: not readable, not revealed, not
        // usable in a job.
        let their_path = format!("/api/vault/{theirs}");
        no_value_in(&admin.get(&their_path).await?, 404, "not_found", backend)?;
        no_value_in(&reveal(&admin, &theirs).await?, 404, "not_found", backend)?;
        let job = |secrets: Value| {
            json!({
                "type": "run_script",
                "targets": { "agent_ids": [Uuid::now_v7()] },
                "payload": { "interpreter": "sh", "script": "true" },
                "timeout_s": 30,
                "secrets": secrets,
            })
        };
        for (secrets, status, code) in [
            (
                json!([{ "env": "DB", "secret_id": theirs }]),
                404,
                "not_found",
            ),
            (
                json!([{ "env": "DB", "secret_id": Uuid::now_v7() }]),
                404,
                "not_found",
            ),
            (
                json!([{ "env": "1BAD", "secret_id": ours }]),
                400,
                "invalid",
            ),
            (
                json!([{ "env": "DB", "secret_id": ours }, { "env": "DB", "secret_id": ours }]),
                400,
                "invalid",
            ),
            (
                Value::Array(
                    (0..17)
                        .map(|i| json!({ "env": format!("S{i}"), "secret_id": ours }))
                        .collect(),
                ),
                400,
                "",
            ),
            (json!([{ "env": "DB", "secret_id": "not-an-id" }]), 400, ""),
        ] {
            let reply = admin.post("/api/jobs", job(secrets.clone())).await?;
            no_value_in(&reply, status, code, backend)
                .map_err(|e| e.context(format!("secrets {secrets}")))?;
        }
        let jobs = admin.get("/api/jobs").await?.expect(200)?;
        assert!(
            jobs["items"].as_array().is_some_and(Vec::is_empty),
            "[{backend}] no job was created: {jobs}"
        );
    }
    Ok(())
}

/// `reply` has `status`, an error body whose code starts with `code`, and no value in it.
fn no_value_in(reply: &Reply, status: u16, code: &str, backend: Backend) -> Result<()> {
    let text = reply.body.to_string();
    anyhow::ensure!(
        !text.contains(VALUE),
        "[{backend}] the answer echoes the value: {text}"
    );
    let got = reply.clone().error(status)?;
    anyhow::ensure!(
        got.starts_with(code),
        "[{backend}] expected {code}, got {got}: {text}"
    );
    Ok(())
}

async fn reveal(api: &Api, id: &str) -> Result<Reply> {
    api.post(
        &format!("/api/vault/{id}/reveal"),
        json!({ "reason": "ticket 4711" }),
    )
    .await
}

/// A TOTP code of the next 30 s step (the current one may be spent).
/// The TOTP code of the next 30 s step (the current one may be spent already).
pub(crate) async fn next_code(secret: &str) -> Result<String> {
    let step = now_ms() / 30_000;
    while now_ms() / 30_000 == step {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(totp::code_at(secret, now_ms())?)
}
