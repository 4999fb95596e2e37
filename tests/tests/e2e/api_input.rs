//! Bad input gets a 4xx with the common JSON error body, never a 5xx: malformed JSON, wrong
//! types, unknown ids, oversized bodies, bad pagination, SQL-looking strings.

use anyhow::{Result, bail};
use reap3r_store::{Backend, Uuid};
use reqwest::Method;
use serde_json::json;

use crate::api_harness::{Api, default_org, logged_in};
use crate::harness::TestServer;

/// One bad request and the status it must get.
struct Case {
    method: Method,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
}

fn case(method: Method, path: &str, body: &str, status: u16) -> Case {
    Case {
        method,
        path: path.to_owned(),
        content_type: "application/json",
        body: body.as_bytes().to_vec(),
        status,
    }
}

async fn check(api: &Api, c: Case) -> Result<()> {
    let reply = api
        .send_raw(c.method.clone(), &c.path, c.content_type, c.body)
        .await?;
    if reply.status.as_u16() != c.status {
        bail!(
            "{} {}: expected {}, got {} {}",
            c.method,
            c.path,
            c.status,
            reply.status,
            reply.body
        );
    }
    if !reply.body["code"].is_string() || !reply.body["message"].is_string() {
        bail!(
            "{} {}: not the error shape: {}",
            c.method,
            c.path,
            reply.body
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_the_error_body() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    let admin = logged_in(&server, org, "input@test", "org_admin").await?;
    let nobody = Uuid::new_v4();
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let cases = vec![
        case(Method::POST, "/api/sites", "{\"name\": ", 400),
        case(Method::POST, "/api/sites", "[1, 2, 3]", 400),
        case(Method::POST, "/api/sites", "{\"name\": [\"x\"]}", 400),
        case(Method::POST, "/api/sites", "{\"name\": {\"a\": 1}}", 400),
        case(
            Method::POST,
            "/api/agents/00000000-0000-0000-0000-000000000000/tags",
            "{\"tag_id\": 7}",
            400,
        ),
        case(Method::POST, "/api/sites", "{}", 400),
        case(Method::POST, "/api/sites", "{\"name\": \"   \"}", 400),
        case(Method::POST, "/api/sites", &huge, 413),
        case(
            Method::POST,
            "/api/enrollment/tokens",
            "{\"max_uses\": -1}",
            400,
        ),
        case(
            Method::POST,
            "/api/enrollment/tokens",
            "{\"expires_in_s\": \"soon\"}",
            400,
        ),
        case(
            Method::POST,
            "/api/enrollment/tokens",
            "{\"expires_in_s\": 99999999999}",
            400,
        ),
        case(
            Method::POST,
            "/api/users",
            "{\"email\": \"not-an-email\", \"password\": \"correct horse battery\", \"role\": \"viewer\"}",
            400,
        ),
        case(
            Method::POST,
            "/api/users",
            "{\"email\": \"a@b.c\", \"password\": \"short\", \"role\": \"viewer\"}",
            400,
        ),
        case(
            Method::POST,
            "/api/users",
            "{\"email\": \"a@b.c\", \"password\": \"correct horse battery\", \"role\": \"god\"}",
            400,
        ),
        case(Method::GET, "/api/agents/not-a-uuid", "", 400),
        case(Method::GET, &format!("/api/agents/{nobody}"), "", 404),
        case(Method::DELETE, &format!("/api/sites/{nobody}"), "", 404),
        case(Method::GET, "/api/agents?limit=0", "", 400),
        case(Method::GET, "/api/agents?limit=100000", "", 400),
        case(Method::GET, "/api/agents?limit=ten", "", 400),
        case(Method::GET, "/api/agents?cursor=garbage", "", 400),
        case(Method::GET, "/api/agents?status=sleeping", "", 400),
        case(Method::GET, "/api/audit-logs?limit=-5", "", 400),
        case(Method::GET, "/api/no-such-route", "", 404),
        case(Method::PUT, "/api/agents", "", 405),
    ];
    for c in cases {
        check(&admin, c).await?;
    }
    // A body sent with the wrong content type.
    let reply = admin
        .send_raw(Method::POST, "/api/sites", "text/plain", b"name=x".to_vec())
        .await?;
    assert!(reply.status.is_client_error(), "{}", reply.status);

    // SQL-looking strings are data, stored and returned as given, and break nothing.
    let sneaky = "x'); DROP TABLE agents; --";
    let site = admin
        .post("/api/sites", json!({ "name": sneaky }))
        .await?
        .expect(200)?;
    assert_eq!(site["name"], sneaky);
    let found = admin
        .get("/api/agents?search=%25'%20OR%201%3D1%20--")
        .await?
        .expect(200)?;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(0));
    admin
        .get("/api/audit-logs?actor=%27%20OR%20%271%27%3D%271")
        .await?
        .expect(200)?;
    admin.get("/api/sites").await?.expect(200)?;
    Ok(())
}
