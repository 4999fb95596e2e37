//! Audit over HTTP: every mutation leaves a record, filters work, the chain verifies, and a
//! tampered row is reported by `/api/audit-logs/verify`.

use anyhow::Result;
use serde_json::json;

use crate::api_harness::{default_org, logged_in};
use crate::harness::{TestServer, backends};

#[tokio::test]
async fn mutations_are_audited_and_tampering_is_reported() -> Result<()> {
    for backend in backends().await? {
        let server = TestServer::start(backend).await?;
        let org = default_org(&server).await?.id;
        let admin = logged_in(&server, org, "auditor@test", "org_admin").await?;

        let site = admin
            .post("/api/sites", json!({ "name": "Paris" }))
            .await?
            .expect(200)?;
        let site_id = site["id"].as_str().unwrap_or_default().to_owned();
        admin
            .patch(&format!("/api/sites/{site_id}"), json!({ "name": "Lyon" }))
            .await?
            .expect(200)?;
        admin
            .post("/api/enrollment/tokens", json!({ "max_uses": 3 }))
            .await?
            .expect(200)?;

        let target = format!("site:{site_id}");
        let records = admin
            .get(&format!("/api/audit-logs?target={target}"))
            .await?
            .expect(200)?;
        let actions: Vec<&str> = records
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["action"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(actions, vec!["site.update", "site.create"], "[{backend}]");
        assert_eq!(records[0]["actor"], "user:auditor@test");
        let by_action = admin
            .get("/api/audit-logs?action=enrollment_token.create&limit=5")
            .await?
            .expect(200)?;
        assert_eq!(by_action.as_array().map(Vec::len), Some(1));
        // Logins are audited too.
        let logins = admin
            .get("/api/audit-logs?action=auth.login")
            .await?
            .expect(200)?;
        assert!(logins.as_array().is_some_and(|l| !l.is_empty()));

        // The chain spans every organisation, so verifying it is a super admin's job.
        admin.get("/api/audit-logs/verify").await?.error(403)?;
        let root = logged_in(&server, org, "root-auditor@test", "super_admin").await?;
        let report = root.get("/api/audit-logs/verify").await?.expect(200)?;
        assert_eq!(report["intact"], true, "[{backend}] {report}");
        assert!(report["checked"].as_u64().unwrap_or(0) >= 4);

        // Someone with database access rewrites history.
        let seq = records[1]["seq"].as_i64().unwrap_or_default();
        server
            .node()
            .store
            .raw_execute(&format!(
                "UPDATE audit_log SET actor = 'user:someone-else@test' WHERE seq = {seq}"
            ))
            .await?;
        let report = root.get("/api/audit-logs/verify").await?.expect(200)?;
        assert_eq!(report["intact"], false, "[{backend}]");
        assert_eq!(report["first_broken_seq"], seq, "[{backend}]");
    }
    Ok(())
}
