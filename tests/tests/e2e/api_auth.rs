//! Authentication over real HTTP: lockout, the MFA challenge, refresh rotation and reuse
//! detection, and revocation taking effect on the very next request.

use anyhow::Result;
use reap3r_actors::access::totp;
use reap3r_store::Backend;
use serde_json::json;

use crate::api_harness::{Api, PASSWORD, default_org, logged_in, now_ms, seed_user};
use crate::harness::{TestServer, backends};

#[tokio::test]
async fn repeated_failures_lock_the_account_and_every_attempt_is_recorded() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    seed_user(&server, org, "victim@test", "viewer").await?;
    let api = Api::new(&server);
    for _ in 0..5 {
        let code = api
            .post(
                "/api/auth/login",
                json!({ "email": "victim@test", "password": "wrong password!" }),
            )
            .await?
            .error(401)?;
        assert_eq!(code, "invalid_credentials");
    }
    // Locked: even the right password is refused for now.
    let code = api
        .post(
            "/api/auth/login",
            json!({ "email": "victim@test", "password": PASSWORD }),
        )
        .await?
        .error(429)?;
    assert_eq!(code, "account_locked");
    // Unknown accounts answer exactly like wrong passwords.
    let code = api
        .post(
            "/api/auth/login",
            json!({ "email": "nobody@test", "password": PASSWORD }),
        )
        .await?
        .error(401)?;
    assert_eq!(code, "invalid_credentials");

    let admin = logged_in(&server, org, "admin@test", "org_admin").await?;
    let events = admin
        .get("/api/admin/login-events?email=victim@test")
        .await?
        .expect(200)?;
    let outcomes: Vec<&str> = events
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["outcome"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(outcomes.first(), Some(&"account_locked"));
    assert_eq!(outcomes.iter().filter(|o| **o == "bad_password").count(), 5);
    Ok(())
}

#[tokio::test]
async fn a_flood_from_one_address_is_refused_across_accounts() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let api = Api::new(&server);
    // 20 failures from 127.0.0.1, spread over accounts so no single account locks.
    for i in 0..20 {
        api.post(
            "/api/auth/login",
            json!({ "email": format!("spray{i}@test"), "password": "guess guess guess" }),
        )
        .await?
        .error(401)?;
    }
    let code = api
        .post(
            "/api/auth/login",
            json!({ "email": "fresh@test", "password": "guess guess guess" }),
        )
        .await?
        .error(429)?;
    assert_eq!(code, "too_many_attempts");
    Ok(())
}

#[tokio::test]
async fn mfa_login_needs_a_fresh_code_and_each_code_works_once() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    let user = logged_in(&server, org, "mfa@test", "technician").await?;
    let setup = user
        .post("/api/auth/mfa/setup", json!({}))
        .await?
        .expect(200)?;
    let secret = setup["secret"].as_str().unwrap_or_default().to_owned();
    assert!(
        setup["otpauth_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("otpauth://totp/"))
    );
    // A wrong code does not enable MFA.
    user.post("/api/auth/mfa/enable", json!({ "code": "000000" }))
        .await?
        .error(400)?;
    let now = now_ms();
    user.post(
        "/api/auth/mfa/enable",
        json!({ "code": totp::code_at(&secret, now)? }),
    )
    .await?
    .expect(200)?;
    assert_eq!(
        user.get("/api/auth/me").await?.expect(200)?["mfa_enabled"],
        true
    );

    // The password alone now yields a challenge, not tokens.
    let anon = user.anonymous();
    let login = || async {
        anon.post(
            "/api/auth/login",
            json!({ "email": "mfa@test", "password": PASSWORD }),
        )
        .await?
        .expect(200)
    };
    let first = login().await?;
    assert_eq!(first["mfa_required"], true);
    assert!(first["access_token"].is_null());
    let challenge = first["challenge_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The code used to enable MFA cannot be replayed.
    let code = anon
        .post(
            "/api/auth/login/mfa",
            json!({ "challenge_token": challenge, "code": totp::code_at(&secret, now)? }),
        )
        .await?
        .error(401)?;
    assert_eq!(code, "code_already_used");
    // The next step's code (within the allowed skew) finishes the login.
    let next = totp::code_at(&secret, now + 30_000)?;
    let done = anon
        .post(
            "/api/auth/login/mfa",
            json!({ "challenge_token": challenge, "code": next }),
        )
        .await?
        .expect(200)?;
    let token = done["access_token"].as_str().unwrap_or_default();
    anon.with_bearer(token)
        .get("/api/auth/me")
        .await?
        .expect(200)?;
    // A finished challenge cannot be used again, and the same code cannot open a new one.
    anon.post(
        "/api/auth/login/mfa",
        json!({ "challenge_token": challenge, "code": next }),
    )
    .await?
    .error(401)?;
    let second = login().await?;
    let challenge2 = second["challenge_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let code = anon
        .post(
            "/api/auth/login/mfa",
            json!({ "challenge_token": challenge2, "code": next }),
        )
        .await?
        .error(401)?;
    assert_eq!(code, "code_already_used");
    // Codes are rate limited per challenge.
    let third = login().await?;
    let challenge3 = third["challenge_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = anon
            .post(
                "/api/auth/login/mfa",
                json!({ "challenge_token": challenge3, "code": "123456" }),
            )
            .await?;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_session() -> Result<()> {
    for backend in backends().await? {
        let server = TestServer::start(backend).await?;
        let org = default_org(&server).await?.id;
        seed_user(&server, org, "rot@test", "viewer").await?;
        let (first, body) = Api::new(&server).login("rot@test", PASSWORD).await?;
        let refresh1 = body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(body["expires_in"], 900);

        let rotated = first
            .anonymous()
            .post("/api/auth/refresh", json!({ "refresh_token": refresh1 }))
            .await?
            .expect(200)?;
        let second = first
            .anonymous()
            .with_bearer(rotated["access_token"].as_str().unwrap_or_default());
        let refresh2 = rotated["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_ne!(refresh1, refresh2);
        second.get("/api/auth/me").await?.expect(200)?;
        // The old access token was replaced by the rotation.
        first.get("/api/auth/me").await?.error(401)?;

        // Someone replays the first refresh token: the whole session dies.
        let code = first
            .anonymous()
            .post("/api/auth/refresh", json!({ "refresh_token": refresh1 }))
            .await?
            .error(401)?;
        assert_eq!(code, "refresh_token_reused", "[{backend}]");
        second.get("/api/auth/me").await?.error(401)?;
        first
            .anonymous()
            .post("/api/auth/refresh", json!({ "refresh_token": refresh2 }))
            .await?
            .error(401)?;
    }
    Ok(())
}

#[tokio::test]
async fn revocations_take_effect_on_the_next_request() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    let admin = logged_in(&server, org, "boss@test", "org_admin").await?;
    let tech = logged_in(&server, org, "worker@test", "technician").await?;
    let me = tech.get("/api/auth/me").await?.expect(200)?;
    let tech_id = me["user_id"].as_str().unwrap_or_default().to_owned();

    // Logout ends the session.
    let (other, _) = tech.login("worker@test", PASSWORD).await?;
    other
        .post("/api/auth/logout", json!({}))
        .await?
        .expect(200)?;
    other.get("/api/auth/me").await?.error(401)?;
    tech.get("/api/auth/me").await?.expect(200)?;

    // An admin revokes one session.
    let sessions = admin
        .get(&format!("/api/admin/users/{tech_id}/sessions"))
        .await?
        .expect(200)?;
    let live = sessions
        .as_array()
        .and_then(|s| s.iter().find(|x| x["revoked_at"].is_null()))
        .and_then(|s| s["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    admin
        .delete(&format!("/api/admin/sessions/{live}"))
        .await?
        .expect(200)?;
    tech.get("/api/auth/me").await?.error(401)?;

    // Suspension ends every session and refuses new logins.
    let (again, _) = tech.login("worker@test", PASSWORD).await?;
    admin
        .patch(
            &format!("/api/admin/users/{tech_id}/suspend"),
            json!({ "suspended": true }),
        )
        .await?
        .expect(200)?;
    again.get("/api/auth/me").await?.error(401)?;
    admin
        .anonymous()
        .post(
            "/api/auth/login",
            json!({ "email": "worker@test", "password": PASSWORD }),
        )
        .await?
        .error(403)?;

    // A role change applies to the next request of a live session.
    let viewer = logged_in(&server, org, "promote@test", "viewer").await?;
    viewer.get("/api/users").await?.error(403)?;
    let vid = viewer.get("/api/auth/me").await?.expect(200)?["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    admin
        .post(
            &format!("/api/admin/users/{vid}/role"),
            json!({ "role": "org_admin" }),
        )
        .await?
        .expect(200)?;
    viewer.get("/api/users").await?.expect(200)?;
    // Nobody grants above their own role.
    admin
        .post(
            &format!("/api/admin/users/{vid}/role"),
            json!({ "role": "super_admin" }),
        )
        .await?
        .error(403)?;
    Ok(())
}
