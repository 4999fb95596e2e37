//! The route × role matrix, derived from the route table: for every route and every role,
//! allowed roles get something other than 403, the rest get 403, and no credential gets 401.

use anyhow::Result;
use reap3r_api::rbac::Role;
use reap3r_api::routes::{Access, ROUTES, Route};
use reap3r_store::{Backend, Uuid};
use reqwest::Method;
use serde_json::json;

use crate::api_harness::{Api, default_org, logged_in};
use crate::harness::TestServer;

/// Fills `{param}` segments with ids that exist nowhere, so allowed callers reach the handler
/// and get a 404 or 400 rather than changing anything that matters.
fn concrete_path(route: &Route) -> String {
    route
        .path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                Uuid::new_v4().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn method(route: &Route) -> Method {
    Method::from_bytes(route.method.as_bytes()).unwrap_or(Method::GET)
}

fn allowed(role: Role, route: &Route) -> bool {
    match route.access {
        Access::Public | Access::Authenticated => true,
        Access::Perm(p) => role.grants(p),
    }
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_table_says() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    let anonymous = Api::new(&server);
    let mut clients = Vec::new();
    for role in Role::ALL {
        let email = format!("{}@matrix.test", role.as_str());
        clients.push((*role, logged_in(&server, org, &email, role.as_str()).await?));
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for route in ROUTES {
        let path = concrete_path(route);
        let body = matches!(route.method, "POST" | "PATCH").then(|| json!({}));
        let reply = anonymous.send(method(route), &path, body.clone()).await?;
        let want_anon = route.access == Access::Public;
        if want_anon == (reply.status.as_u16() == 401) {
            failures.push(format!(
                "{} {} anonymous: got {}",
                route.method, route.path, reply.status
            ));
        }
        for (role, client) in &clients {
            // Logging out ends the session every other cell uses; give it its own.
            let client = if route.path == "/api/auth/logout" {
                let email = format!("{}@matrix.test", role.as_str());
                client.login(&email, crate::api_harness::PASSWORD).await?.0
            } else {
                client.clone()
            };
            let reply = client.send(method(route), &path, body.clone()).await?;
            let forbidden = reply.status.as_u16() == 403;
            if allowed(*role, route) == forbidden || reply.status.as_u16() == 401 {
                failures.push(format!(
                    "{} {} as {}: got {} {}",
                    route.method, route.path, role, reply.status, reply.body
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "matrix failures:\n{}",
        failures.join("\n")
    );
    assert_eq!(checked, ROUTES.len() * Role::ALL.len());
    // The sessions used above are still valid: nothing in the matrix logged them out.
    for (_, client) in &clients {
        client.get("/api/auth/me").await?.expect(200)?;
    }
    Ok(())
}

#[tokio::test]
async fn api_keys_are_limited_to_their_scopes_and_expire() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    let admin = logged_in(&server, org, "keys-admin@test", "org_admin").await?;

    let created = admin
        .post(
            "/api/api-keys",
            json!({ "name": "inventory sync", "scopes": ["agent:list", "agent:view"] }),
        )
        .await?
        .expect(200)?;
    let secret = created["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("r3k_"));
    let key = admin.anonymous().with_api_key(&secret);
    key.get("/api/agents").await?.expect(200)?;
    // The owner may create tokens, but the key was not given that scope.
    let code = key
        .post("/api/enrollment/tokens", json!({}))
        .await?
        .error(403)?;
    assert_eq!(code, "forbidden");
    // The key works as a bearer token too.
    admin
        .anonymous()
        .with_bearer(&secret)
        .get("/api/agents")
        .await?
        .expect(200)?;
    // Scopes beyond the creator's own permissions are refused.
    let viewer = logged_in(&server, org, "keys-viewer@test", "viewer").await?;
    viewer
        .post(
            "/api/api-keys",
            json!({ "name": "x", "scopes": ["agent:delete"] }),
        )
        .await?
        .error(403)?;
    // Only a short prefix is kept to recognise the key; the key itself is stored as a hash.
    let rows = server.node().store.list_api_keys(org).await?;
    assert!(
        rows.iter()
            .any(|k| secret.starts_with(&k.prefix) && k.prefix.len() < secret.len())
    );

    // Expiry: a key made to expire in 60 s is refused once the server clock passes it.
    let short = admin
        .post(
            "/api/api-keys",
            json!({ "name": "short", "scopes": ["agent:list"], "expires_in_s": 60 }),
        )
        .await?
        .expect(200)?;
    let short_key = admin
        .anonymous()
        .with_api_key(short["secret"].as_str().unwrap_or_default());
    short_key.get("/api/agents").await?.expect(200)?;
    let id = short["key"]["id"].as_str().unwrap_or_default().to_owned();
    server
        .node()
        .store
        .raw_execute(&format!(
            "UPDATE api_keys SET expires_at = 1 WHERE id = '{id}'"
        ))
        .await?;
    let code = short_key.get("/api/agents").await?.error(401)?;
    assert_eq!(code, "api_key_expired");

    // Deleting a key stops it on the next request.
    let key_id = created["key"]["id"].as_str().unwrap_or_default();
    admin
        .delete(&format!("/api/api-keys/{key_id}"))
        .await?
        .expect(200)?;
    key.get("/api/agents").await?.error(401)?;
    Ok(())
}
