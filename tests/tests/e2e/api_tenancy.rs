//! Tenancy: two organisations side by side; nothing listed, read or changed in one reaches the
//! other. Plus the MSSP model: a provider's technician acts in a customer organisation only
//! while assigned to it.

use anyhow::Result;
use reap3r_actors::enrolment::EnrolAgent;
use reap3r_store::{Backend, NewAgent, Uuid};
use serde_json::{Value, json};

use crate::api_harness::{Api, create_org, id_of, logged_in, now_ms};
use crate::harness::{TestServer, backends};

/// Everything an org admin can create in their organisation, with its ids.
struct Estate {
    agent: Uuid,
    groups: Vec<(&'static str, Uuid)>,
    token: Uuid,
    api_key: Uuid,
    user: Uuid,
}

async fn build_estate(server: &TestServer, admin: &Api, name: &str) -> Result<Estate> {
    let mut groups = Vec::new();
    for kind in ["sites", "companies", "folders", "tags"] {
        let g = admin
            .post(
                &format!("/api/{kind}"),
                json!({ "name": format!("{name} {kind}") }),
            )
            .await?
            .expect(200)?;
        groups.push((kind, id_of(&g)?));
    }
    let token = admin
        .post("/api/enrollment/tokens", json!({ "label": name }))
        .await?
        .expect(200)?;
    let secret = token["secret"].as_str().unwrap_or_default();
    let agent = EnrolAgent {
        token: secret.to_owned(),
        agent: NewAgent {
            hostname: format!("{name}-host"),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "0.1.0".into(),
            public_key: *blake3::hash(name.as_bytes()).as_bytes(),
        },
        remote: "test".into(),
    }
    .run(&server.node().api.domain)
    .await?;
    let key = admin
        .post(
            "/api/api-keys",
            json!({ "name": name, "scopes": ["agent:list"] }),
        )
        .await?
        .expect(200)?;
    let user = admin
        .post(
            "/api/users",
            json!({ "email": format!("tech@{name}.test"), "password": crate::api_harness::PASSWORD, "role": "technician" }),
        )
        .await?
        .expect(200)?;
    Ok(Estate {
        agent: agent.id,
        groups,
        token: id_of(&token["token"])?,
        api_key: id_of(&key["key"])?,
        user: id_of(&user)?,
    })
}

fn ids_in(list: &Value) -> Vec<String> {
    let items = list.get("items").unwrap_or(list);
    items
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn no_list_detail_or_mutation_crosses_organisations() -> Result<()> {
    for backend in backends().await? {
        check_isolation(backend).await?;
    }
    Ok(())
}

async fn check_isolation(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let store = &server.node().store;
    let org_a = create_org(&server, "Alpha").await?;
    let org_b = create_org(&server, "Bravo").await?;
    let admin_a = logged_in(&server, org_a, "admin@alpha.test", "org_admin").await?;
    let admin_b = logged_in(&server, org_b, "admin@bravo.test", "org_admin").await?;
    let a = build_estate(&server, &admin_a, "alpha").await?;
    let b = build_estate(&server, &admin_b, "bravo").await?;

    // Lists in B show B's things and none of A's.
    let a_ids: Vec<String> = [a.agent, a.token, a.api_key, a.user]
        .into_iter()
        .chain(a.groups.iter().map(|(_, id)| *id))
        .map(|id| id.to_string())
        .collect();
    for list in [
        "/api/agents",
        "/api/users",
        "/api/enrollment/tokens",
        "/api/api-keys",
        "/api/sites",
        "/api/companies",
        "/api/folders",
        "/api/tags",
    ] {
        let ids = ids_in(&admin_b.get(list).await?.expect(200)?);
        assert!(
            !ids.is_empty(),
            "[{backend}] {list} should show B's own rows"
        );
        for id in &a_ids {
            assert!(!ids.contains(id), "[{backend}] {list} leaked {id} from A");
        }
    }
    let stats = admin_b.get("/api/agents/stats").await?.expect(200)?;
    assert_eq!(stats["total"], 1, "[{backend}] stats count only B's agent");

    // Details and mutations on A's ids answer 404 in B, and change nothing.
    let agent = a.agent;
    let mut attempts = vec![
        ("GET", format!("/api/agents/{agent}"), None),
        ("DELETE", format!("/api/agents/{agent}"), None),
        ("POST", format!("/api/agents/{agent}/approve"), None),
        ("POST", format!("/api/agents/{agent}/reject"), None),
        ("POST", format!("/api/agents/{agent}/revoke"), None),
        (
            "POST",
            format!("/api/agents/{agent}/move"),
            Some(json!({ "folder_id": null })),
        ),
        (
            "POST",
            format!("/api/agents/{agent}/tags"),
            Some(json!({ "tag_id": b.groups[3].1 })),
        ),
        ("GET", format!("/api/users/{}", a.user), None),
        (
            "PATCH",
            format!("/api/users/{}", a.user),
            Some(json!({ "display_name": "pwned" })),
        ),
        (
            "PATCH",
            format!("/api/admin/users/{}/suspend", a.user),
            Some(json!({ "suspended": true })),
        ),
        (
            "POST",
            format!("/api/admin/users/{}/role", a.user),
            Some(json!({ "role": "viewer" })),
        ),
        ("GET", format!("/api/admin/users/{}/sessions", a.user), None),
        (
            "POST",
            format!("/api/admin/users/{}/revoke-all", a.user),
            None,
        ),
        (
            "POST",
            format!("/api/admin/users/{}/mfa/disable", a.user),
            None,
        ),
        (
            "POST",
            format!("/api/enrollment/tokens/{}/revoke", a.token),
            None,
        ),
        (
            "DELETE",
            format!("/api/enrollment/tokens/{}", a.token),
            None,
        ),
        (
            "GET",
            format!("/api/enrollment/tokens/{}/commands", a.token),
            None,
        ),
        ("DELETE", format!("/api/api-keys/{}", a.api_key), None),
    ];
    for (kind, id) in &a.groups {
        attempts.push(("GET", format!("/api/{kind}/{id}"), None));
        attempts.push((
            "PATCH",
            format!("/api/{kind}/{id}"),
            Some(json!({ "name": "pwned" })),
        ));
        attempts.push(("DELETE", format!("/api/{kind}/{id}"), None));
    }
    // B's agent cannot be moved into A's folder or tagged with A's tag either.
    attempts.push((
        "POST",
        format!("/api/agents/{}/move", b.agent),
        Some(json!({ "folder_id": a.groups[2].1 })),
    ));
    attempts.push((
        "POST",
        format!("/api/agents/{}/tags", b.agent),
        Some(json!({ "tag_id": a.groups[3].1 })),
    ));
    for (method, path, body) in attempts {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let reply = admin_b.send(m, &path, body).await?;
        assert!(
            matches!(reply.status.as_u16(), 404 | 400),
            "[{backend}] {method} {path} from B answered {} {}",
            reply.status,
            reply.body
        );
    }
    // A's things are intact.
    let agent = admin_a
        .get(&format!("/api/agents/{agent}"))
        .await?
        .expect(200)?;
    assert_eq!(agent["status"], "offline");
    assert!(agent["tags"].as_array().is_some_and(|t| t.is_empty()));
    assert!(agent["folder_id"].is_null());
    for (kind, id) in &a.groups {
        let g = admin_a
            .get(&format!("/api/{kind}/{id}"))
            .await?
            .expect(200)?;
        assert!(g["name"].as_str().is_some_and(|n| n.starts_with("alpha")));
    }
    let user = admin_a
        .get(&format!("/api/users/{}", a.user))
        .await?
        .expect(200)?;
    assert_eq!(user["status"], "active");
    assert_eq!(user["role"], "technician");
    let tokens = admin_a.get("/api/enrollment/tokens").await?.expect(200)?;
    assert_eq!(tokens[0]["revoked"], false);

    // Acting in another organisation by header is refused; the audit log stays separate.
    admin_b.in_org(org_a).get("/api/agents").await?.error(403)?;
    let audit_b = admin_b.get("/api/audit-logs").await?.expect(200)?;
    let records = audit_b.as_array().cloned().unwrap_or_default();
    assert!(!records.is_empty());
    assert!(
        records
            .iter()
            .all(|r| r["org_id"] == json!(org_b.to_string())),
        "[{backend}] B's audit view holds only B's records"
    );
    let events = admin_b.get("/api/admin/login-events").await?.expect(200)?;
    assert!(
        events
            .as_array()
            .is_some_and(|e| e.iter().all(|x| x["email"] != "admin@alpha.test"))
    );

    // A super admin can act in either organisation by naming it.
    let root_org = store.default_org(now_ms()).await?.id;
    let root = logged_in(&server, root_org, "root@test", "super_admin").await?;
    let in_a = ids_in(&root.in_org(org_a).get("/api/agents").await?.expect(200)?);
    assert_eq!(in_a, vec![a.agent.to_string()]);
    let in_b = ids_in(&root.in_org(org_b).get("/api/agents").await?.expect(200)?);
    assert_eq!(in_b, vec![b.agent.to_string()]);
    Ok(())
}

#[tokio::test]
async fn mssp_technicians_act_in_customer_orgs_only_while_assigned() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let store = &server.node().store;
    let provider = create_org(&server, "Provider").await?;
    let root_org = store.default_org(now_ms()).await?.id;
    let root = logged_in(&server, root_org, "root@mssp.test", "super_admin").await?;
    let customer = root
        .post(
            "/api/orgs",
            json!({ "name": "Customer", "parent_org_id": provider }),
        )
        .await?
        .expect(200)?;
    let customer = id_of(&customer)?;
    let other = root
        .post("/api/orgs", json!({ "name": "Someone else" }))
        .await?
        .expect(200)?;
    let other = id_of(&other)?;

    let provider_admin = logged_in(&server, provider, "admin@provider.test", "org_admin").await?;
    let tech = logged_in(&server, provider, "tech@provider.test", "technician").await?;
    let me = tech.get("/api/auth/me").await?.expect(200)?;
    let tech_id = Uuid::parse_str(me["user_id"].as_str().unwrap_or_default())?;

    // Not assigned yet: no access.
    tech.in_org(customer).get("/api/agents").await?.error(403)?;
    // The provider's admin assigns the technician to its customer...
    provider_admin
        .post(
            &format!("/api/orgs/{customer}/assignments"),
            json!({ "user_id": tech_id, "role": "technician" }),
        )
        .await?
        .expect(200)?;
    // ...but not to an organisation that is not its customer, nor above its own role.
    provider_admin
        .post(
            &format!("/api/orgs/{other}/assignments"),
            json!({ "user_id": tech_id, "role": "technician" }),
        )
        .await?
        .error(404)?;
    provider_admin
        .post(
            &format!("/api/orgs/{customer}/assignments"),
            json!({ "user_id": tech_id, "role": "super_admin" }),
        )
        .await?
        .error(403)?;

    // Now the technician works in the customer org with the assigned role.
    tech.in_org(customer)
        .get("/api/agents")
        .await?
        .expect(200)?;
    let me = tech
        .in_org(customer)
        .get("/api/auth/me")
        .await?
        .expect(200)?;
    assert_eq!(me["org_id"], json!(customer.to_string()));
    assert_eq!(me["role"], "technician");
    let t = tech
        .in_org(customer)
        .post(
            "/api/enrollment/tokens",
            json!({ "label": "customer laptops" }),
        )
        .await?
        .expect(200)?;
    assert_eq!(t["token"]["org_id"], json!(customer.to_string()));
    // Technicians cannot manage users there, and have nothing in the unrelated org.
    tech.in_org(customer).get("/api/users").await?.error(403)?;
    tech.in_org(other).get("/api/agents").await?.error(403)?;
    let orgs = tech.get("/api/orgs").await?.expect(200)?;
    let names: Vec<&str> = orgs
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["Customer", "Provider"]);

    // Unassigned: access ends on the next request.
    provider_admin
        .delete(&format!("/api/orgs/{customer}/assignments/{tech_id}"))
        .await?
        .expect(200)?;
    tech.in_org(customer).get("/api/agents").await?.error(403)?;
    Ok(())
}
