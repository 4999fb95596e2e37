//! Alert routing's API over a real server on each backend: notification policies, silences and
//! maintenance windows are created, listed, replaced and deleted (each change audited) within
//! the caller's organisation, permissions are per resource, and bad input is a 400 with the
//! error body, never a 500.

use anyhow::Result;
use reap3r_actors::access::Caller;
use reap3r_actors::orgs::CreateOrg;
use reap3r_store::{Backend, Uuid};
use serde_json::{Value, json};

use crate::api_harness::{Api, id_of, logged_in, now_ms};
use crate::harness::{TestServer, backends};

fn policy(name: &str) -> Value {
    json!({ "name": name, "integrations": [Uuid::new_v4()] })
}

fn silence(now: i64) -> Value {
    json!({
        "matchers": [{ "kind": "severity", "value": "warning" }, { "kind": "tag", "value": "lab" }],
        "ends_at_ms": now + 3_600_000,
        "comment": "lab rebuild",
    })
}

fn weekly() -> Value {
    json!({
        "name": "patch night",
        "tags": ["db"],
        "schedule": "weekly",
        "weekdays": ["sun"],
        "start_time": "01:00",
        "duration_minutes": 180,
        "time_zone": "Europe/Paris",
    })
}

async fn crud(api: &Api, path: &str, create: Value, replace: Value, field: &str) -> Result<()> {
    let made = api.post(path, create).await?.expect(200)?;
    let id = id_of(&made)?;
    let listed = api.get(path).await?.expect(200)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{path}: {listed}");
    assert_eq!(
        api.get(&format!("{path}/{id}")).await?.expect(200)?["id"],
        made["id"]
    );
    let replaced = api
        .send(
            reqwest::Method::PUT,
            &format!("{path}/{id}"),
            Some(replace.clone()),
        )
        .await?
        .expect(200)?;
    assert_eq!(replaced[field], replace[field], "{path}");
    assert_eq!(replaced["created_at"], made["created_at"]);
    api.delete(&format!("{path}/{id}")).await?.expect(200)?;
    assert_eq!(
        api.get(&format!("{path}/{id}")).await?.error(404)?,
        "not_found"
    );
    Ok(())
}

async fn create_org(server: &TestServer, name: &str) -> Result<Uuid> {
    let cli = Caller::cli(server.node().store.default_org(now_ms()).await?.id);
    let org = CreateOrg {
        name: name.into(),
        parent_org_id: None,
    }
    .run(&server.node().api.domain, &cli)
    .await?;
    Ok(org.id)
}

async fn routing_crud(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let org = create_org(&server, "Routing").await?;
    let admin = logged_in(&server, org, "admin@routing.test", "org_admin").await?;

    // Defaults are Alertmanager's; the group key is rule and org unless said otherwise.
    let made = admin
        .post("/api/alerting/policies", policy("defaults"))
        .await?
        .expect(200)?;
    assert_eq!(
        (
            &made["group_wait_s"],
            &made["group_interval_s"],
            &made["repeat_interval_s"]
        ),
        (&json!(30), &json!(300), &json!(14_400))
    );
    assert_eq!(made["group_by"], json!(["rule", "org"]));
    admin
        .delete(&format!("/api/alerting/policies/{}", id_of(&made)?))
        .await?
        .expect(200)?;

    let mut replaced = policy("renamed");
    replaced["severities"] = json!(["critical"]);
    replaced["escalation"] = json!([{ "after_minutes": 15, "integrations": [Uuid::new_v4()] }]);
    crud(
        &admin,
        "/api/alerting/policies",
        policy("on call"),
        replaced,
        "name",
    )
    .await?;
    let now = now_ms();
    let mut later = silence(now);
    later["ends_at_ms"] = json!(now + 7_200_000);
    crud(
        &admin,
        "/api/alerting/silences",
        silence(now),
        later,
        "ends_at_ms",
    )
    .await?;
    let mut once = weekly();
    once["schedule"] = json!("once");
    once["starts_at_ms"] = json!(now);
    once["ends_at_ms"] = json!(now + 3_600_000);
    crud(
        &admin,
        "/api/alerting/maintenance",
        weekly(),
        once,
        "schedule",
    )
    .await?;

    // Every change is in the audit log, in the caller's organisation.
    let store = &server.node().store;
    let records = store.list_audit(Some(org), 500).await?;
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    for noun in ["policy", "silence", "maintenance"] {
        for verb in ["create", "update", "delete"] {
            let action = format!("alerting.{noun}.{verb}");
            assert!(
                actions.contains(&action.as_str()),
                "{action} not in {actions:?}"
            );
        }
    }

    // Another organisation sees none of it.
    let kept = admin
        .post("/api/alerting/policies", policy("kept"))
        .await?
        .expect(200)?;
    let other = create_org(&server, "Other").await?;
    let outsider = logged_in(&server, other, "admin@other.test", "org_admin").await?;
    assert_eq!(
        outsider.get("/api/alerting/policies").await?.expect(200)?,
        json!([])
    );
    let path = format!("/api/alerting/policies/{}", id_of(&kept)?);
    assert_eq!(outsider.get(&path).await?.error(404)?, "not_found");
    assert_eq!(outsider.delete(&path).await?.error(404)?, "not_found");

    // Names are unique per organisation.
    admin
        .post("/api/alerting/policies", policy("kept"))
        .await?
        .error(409)?;

    // A technician may silence, not route.
    let tech = logged_in(&server, org, "tech@routing.test", "technician").await?;
    tech.post("/api/alerting/silences", silence(now))
        .await?
        .expect(200)?;
    tech.post("/api/alerting/policies", policy("x"))
        .await?
        .error(403)?;
    tech.post("/api/alerting/maintenance", weekly())
        .await?
        .error(403)?;
    Ok(())
}

#[tokio::test]
async fn alerting_routing_specs_are_crud_audited_and_scoped() -> Result<()> {
    for backend in backends().await? {
        routing_crud(backend).await?;
    }
    Ok(())
}

async fn bad_input(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let org = create_org(&server, "Inputs").await?;
    let admin = logged_in(&server, org, "admin@inputs.test", "org_admin").await?;
    let now = now_ms();
    let with = |base: Value, key: &str, value: Value| {
        let mut v = base;
        v[key] = value;
        v
    };
    let many = |n: usize| -> Vec<Uuid> { (0..n).map(|_| Uuid::new_v4()).collect() };
    let policies = [
        with(policy("p"), "group_wait_s", json!(99_999)),
        with(policy("p"), "group_interval_s", json!(1)),
        with(policy("p"), "repeat_interval_s", json!(-5)),
        with(policy("p"), "severities", json!(["urgent"])),
        with(policy("p"), "group_by", json!(["hostname"])),
        with(policy("p"), "integrations", json!([])),
        with(policy("p"), "integrations", json!(many(17))),
        with(policy("p"), "tags", json!(vec!["t"; 33])),
        with(policy("p"), "name", json!("x".repeat(201))),
        with(policy("p"), "name", json!("   ")),
        with(
            policy("p"),
            "escalation",
            json!([{ "after_minutes": 0, "integrations": many(1) }]),
        ),
        with(
            policy("p"),
            "escalation",
            json!([{ "after_minutes": 5, "integrations": [] }]),
        ),
        with(
            policy("p"),
            "escalation",
            json!(vec![
                json!({ "after_minutes": 5, "integrations": many(1) });
                9
            ]),
        ),
        json!({ "name": "p" }),
    ];
    for body in policies {
        let code = admin
            .post("/api/alerting/policies", body.clone())
            .await?
            .error(400);
        assert!(code.is_ok(), "{body}: {code:?}");
    }
    let matcher = |kind: &str, value: &str| json!([{ "kind": kind, "value": value }]);
    let silences = [
        with(silence(now), "matchers", json!([])),
        with(
            silence(now),
            "matchers",
            json!(vec![json!({"kind": "tag", "value": "x"}); 17]),
        ),
        with(silence(now), "matchers", matcher("host", "a")),
        with(silence(now), "matchers", matcher("rule", "not-an-id")),
        with(silence(now), "matchers", matcher("severity", "urgent")),
        with(
            silence(now),
            "matchers",
            matcher("org", &Uuid::new_v4().to_string()),
        ),
        with(silence(now), "matchers", matcher("tag", &"t".repeat(201))),
        with(silence(now), "ends_at_ms", json!(now - 1)),
        with(
            silence(now),
            "ends_at_ms",
            json!(now + 400 * 86_400_000_i64),
        ),
        with(silence(now), "comment", json!("")),
        with(silence(now), "comment", json!("c".repeat(2001))),
    ];
    for body in silences {
        let code = admin
            .post("/api/alerting/silences", body.clone())
            .await?
            .error(400);
        assert!(code.is_ok(), "{body}: {code:?}");
    }
    let windows = [
        with(weekly(), "time_zone", json!("Mars/Olympus")),
        with(weekly(), "time_zone", json!("x".repeat(65))),
        with(weekly(), "start_time", json!("25:00")),
        with(weekly(), "start_time", json!("1:00")),
        with(weekly(), "weekdays", json!(["someday"])),
        with(weekly(), "weekdays", json!([])),
        with(weekly(), "duration_minutes", json!(0)),
        with(weekly(), "duration_minutes", json!(10_081)),
        with(weekly(), "schedule", json!("monthly")),
        with(weekly(), "schedule", json!("once")),
        json!({ "name": "o", "schedule": "once", "starts_at_ms": now, "ends_at_ms": now - 1 }),
        json!({ "name": "o", "schedule": "once", "starts_at_ms": now,
                "ends_at_ms": now + 91 * 86_400_000_i64 }),
        with(weekly(), "name", json!("")),
    ];
    for body in windows {
        let code = admin
            .post("/api/alerting/maintenance", body.clone())
            .await?
            .error(400);
        assert!(code.is_ok(), "{body}: {code:?}");
    }
    // Nothing of it was stored.
    for path in ["policies", "silences", "maintenance"] {
        let listed = admin
            .get(&format!("/api/alerting/{path}"))
            .await?
            .expect(200)?;
        assert_eq!(listed, json!([]), "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn alerting_routing_bad_input_is_400_with_the_error_body() -> Result<()> {
    for backend in backends().await? {
        bad_input(backend).await?;
    }
    Ok(())
}
