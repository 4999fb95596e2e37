//! Repository tests: every store operation, against every backend available here (SQLite always,
//! PostgreSQL when `REAP3R_TEST_POSTGRES_URL` is set).

use std::collections::HashSet;
use std::fmt::Debug;

use anyhow::Result;
use reap3r_store::{
    Agent, AgentApproval, AgentHello, AgentStatus, Backend, ChainReport, NewAgent, NewAuditEntry,
    NewEnrolmentToken, NewUser, Store, StoreError, TokenRefusal, Uuid,
};
use reap3r_testkit::TestDatabase;
use serde_json::json;

mod support;
use support::*;

/// A fixed "now"; the store never reads the clock, so tests pick their own times.
const T0: i64 = 1_700_000_000_000;

/// Compares one case's outcome, naming backend and case when it differs.
fn check<T: PartialEq + Debug>(backend: Backend, case: &str, got: T, want: T) {
    assert_eq!(got, want, "[{backend}] {case}");
}

/// Every available backend, freshly created and migrated.
async fn stores() -> Result<Vec<(TestDatabase, Store)>> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await? {
        let store = db.open().await?;
        assert_eq!(store.backend(), db.backend());
        out.push((db, store));
    }
    Ok(out)
}

fn hash_of(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn new_agent(hostname: &str) -> NewAgent {
    NewAgent {
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    }
}

fn token(org_id: Uuid, secret: &str) -> NewEnrolmentToken {
    NewEnrolmentToken {
        org_id,
        token_hash: hash_of(secret),
        label: Some(format!("label {secret}")),
        expires_at: None,
        max_uses: None,
        require_approval: false,
        created_by: Some("admin@example.com".into()),
    }
}

/// Enrols an agent through a fresh token of the given kind.
async fn enrolled(store: &Store, org: Uuid, hostname: &str, approval: bool) -> Result<Agent> {
    let secret = format!("secret-{hostname}-{}", Uuid::new_v4());
    let mut t = token(org, &secret);
    t.require_approval = approval;
    create_enrolment_token(store, &t, T0).await?;
    Ok(enrol_agent(store, &hash_of(&secret), &new_agent(hostname), T0).await?)
}

fn refusal<T: Debug>(result: Result<T, StoreError>) -> Option<TokenRefusal> {
    match result {
        Err(StoreError::Token(r)) => Some(r),
        other => {
            assert!(other.is_ok(), "expected a token refusal, got {other:?}");
            None
        }
    }
}

fn entry(i: i64, org_id: Option<Uuid>) -> NewAuditEntry {
    NewAuditEntry {
        org_id,
        actor: format!("user{}@example.com", i % 3),
        action: ["agent.approve", "token.create", "user.login"][(i % 3) as usize].into(),
        target: (i % 2 == 0).then(|| format!("agent/{i}")),
        details: json!({ "i": i, "note": "a\nb \"quoted\"", "nested": { "z": 1, "a": [1, 2] } }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_and_safe_to_race() -> Result<()> {
    for db in TestDatabase::all().await? {
        let b = db.backend();
        // Two "processes" migrating a brand-new database at the same moment.
        let (a, c) = tokio::join!(db.open(), db.open());
        let (a, c) = (a?, c?);
        let org = create_org(&a, "acme", T0).await?;
        check(
            b,
            "visible to the other pool",
            c.find_org("acme").await?,
            Some(org.clone()),
        );
        // Reopening an up-to-date database changes nothing.
        let again = db.open().await?;
        again.ping().await?;
        check(
            b,
            "data survives reopen",
            again.find_org("acme").await?,
            Some(org),
        );
        check(
            b,
            "one row per migration",
            again
                .raw_execute("UPDATE schema_migrations SET version = version")
                .await?,
            4,
        );
        for s in [a, c, again] {
            s.close().await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_from_a_newer_build_is_refused() -> Result<()> {
    for db in TestDatabase::all().await? {
        let store = db.open().await?;
        store
            .raw_execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .await?;
        store.close().await;
        let err = db.open().await.err();
        assert!(
            matches!(err, Some(StoreError::Migration(_))),
            "[{}] {err:?}",
            db.backend()
        );
    }
    Ok(())
}

#[tokio::test]
async fn open_sqlite_file_creates_the_file_and_its_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested dir").join("reap3r.db");
    let store = Store::open_sqlite_file(&path).await?;
    assert_eq!(store.backend(), Backend::Sqlite);
    store.default_org(T0).await?;
    store.close().await;
    assert!(path.exists());
    let reopened = Store::open_sqlite_file(&path).await?;
    assert_eq!(
        reopened.find_org("default").await?.map(|o| o.name),
        Some("default".into())
    );
    reopened.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orgs() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        check(b, "name", acme.name.as_str(), "acme");
        check(b, "created_at", acme.created_at, T0);
        check(
            b,
            "by name",
            store.find_org("acme").await?,
            Some(acme.clone()),
        );
        check(
            b,
            "by id",
            store.find_org(&acme.id.to_string()).await?,
            Some(acme.clone()),
        );
        check(
            b,
            "by upper-case id",
            store.find_org(&acme.id.to_string().to_uppercase()).await?,
            Some(acme.clone()),
        );
        check(b, "missing", store.find_org("nope").await?, None);
        assert!(
            matches!(
                create_org(&store, "acme", T0).await,
                Err(StoreError::Conflict(_))
            ),
            "[{b}] duplicate name"
        );
        assert!(
            matches!(
                create_org(&store, "  ", T0).await,
                Err(StoreError::Invalid(_))
            ),
            "[{b}] empty name"
        );

        // default_org is get-or-create, also when raced.
        let racers = (0..5).map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.default_org(T0 + i).await })
        });
        let mut ids = HashSet::new();
        for r in racers {
            ids.insert(r.await??.id);
        }
        check(b, "one default org", ids.len(), 1);
        let default = store.default_org(T0 + 99).await?;
        check(
            b,
            "default is stable",
            Some(default.id),
            ids.into_iter().next(),
        );
        check(b, "default name", default.name.as_str(), "default");
        store.close().await;
    }
    Ok(())
}

/// Creates a user in a transaction of its own (the operation commits it with its audit record).
async fn create_user(
    store: &Store,
    new: &NewUser,
    now: i64,
) -> Result<reap3r_store::User, StoreError> {
    let mut tx = store.begin().await?;
    let user = tx.create_user(new, now).await?;
    tx.commit().await?;
    Ok(user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let new = NewUser {
            org_id: org.id,
            email: "Alice@Example.COM".into(),
            password_hash: "$argon2id$v=19$stub".into(),
            role: "admin".into(),
            display_name: None,
        };
        let alice = create_user(&store, &new, T0).await?;
        check(
            b,
            "email lower-cased",
            alice.email.as_str(),
            "alice@example.com",
        );
        check(b, "status default", alice.status.as_str(), "active");
        check(b, "role", alice.role.as_str(), "admin");
        check(b, "org", alice.org_id, org.id);
        check(
            b,
            "lookup ignores case",
            store.user_by_email("ALICE@example.com").await?,
            Some(alice.clone()),
        );
        check(
            b,
            "unknown email",
            store.user_by_email("bob@example.com").await?,
            None,
        );

        let cases = [
            ("same email", "alice@example.com", org.id, "conflict"),
            ("other case", "ALICE@EXAMPLE.COM", org.id, "conflict"),
            (
                "unknown org",
                "carol@example.com",
                Uuid::new_v4(),
                "invalid",
            ),
            ("empty email", " ", org.id, "invalid"),
        ];
        for (case, email, org_id, want) in cases {
            let got = match create_user(
                &store,
                &NewUser {
                    org_id,
                    email: email.into(),
                    ..new.clone()
                },
                T0,
            )
            .await
            {
                Err(StoreError::Conflict(_)) => "conflict",
                Err(StoreError::Invalid(_)) => "invalid",
                other => panic!("[{b}] {case}: {other:?}"),
            };
            check(b, case, got, want);
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_tokens() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let a = create_org(&store, "a", T0).await?;
        let other = create_org(&store, "b", T0).await?;
        let mut first = token(a.id, "one");
        first.expires_at = Some(T0 + 3_600_000);
        first.max_uses = Some(3);
        first.require_approval = true;
        let t1 = create_enrolment_token(&store, &first, T0).await?;
        check(b, "org", t1.org_id, a.id);
        check(b, "label", t1.label.as_deref(), Some("label one"));
        check(b, "expires", t1.expires_at, Some(T0 + 3_600_000));
        check(b, "max uses", t1.max_uses, Some(3));
        check(b, "uses", t1.uses, 0);
        check(b, "revoked", t1.revoked, false);
        check(b, "approval", t1.require_approval, true);
        check(
            b,
            "created_by",
            t1.created_by.as_deref(),
            Some("admin@example.com"),
        );
        let mut bare = token(a.id, "two");
        bare.label = None;
        bare.created_by = None;
        let t2 = create_enrolment_token(&store, &bare, T0 + 1).await?;
        check(b, "no label", t2.label.clone(), None);
        let t3 = create_enrolment_token(&store, &token(other.id, "three"), T0 + 2).await?;

        check(
            b,
            "list all, oldest first",
            store.list_enrolment_tokens(None).await?,
            vec![t1.clone(), t2.clone(), t3.clone()],
        );
        check(
            b,
            "list one org",
            store.list_enrolment_tokens(Some(a.id)).await?,
            vec![t1.clone(), t2.clone()],
        );

        revoke_enrolment_token(&store, a.id, t2.id).await?;
        let again = revoke_enrolment_token(&store, a.id, t2.id).await?;
        check(b, "revoke is idempotent", again.revoked, true);
        let revoked: Vec<bool> = store
            .list_enrolment_tokens(Some(a.id))
            .await?
            .iter()
            .map(|t| t.revoked)
            .collect();
        check(b, "revoked flag", revoked, vec![false, true]);
        assert!(
            matches!(
                revoke_enrolment_token(&store, a.id, Uuid::new_v4()).await,
                Err(StoreError::NotFound)
            ),
            "[{b}] revoke missing"
        );
        assert!(
            matches!(
                revoke_enrolment_token(&store, other.id, t1.id).await,
                Err(StoreError::NotFound)
            ),
            "[{b}] revoke another organisation's token"
        );

        let cases: [(&str, NewEnrolmentToken, &str); 4] = [
            ("duplicate hash", token(a.id, "one"), "conflict"),
            (
                "bad hash",
                NewEnrolmentToken {
                    token_hash: "xyz".into(),
                    ..token(a.id, "x")
                },
                "invalid",
            ),
            (
                "zero max uses",
                NewEnrolmentToken {
                    max_uses: Some(0),
                    ..token(a.id, "y")
                },
                "invalid",
            ),
            ("unknown org", token(Uuid::new_v4(), "z"), "invalid"),
        ];
        for (case, new, want) in cases {
            let got = match create_enrolment_token(&store, &new, T0).await {
                Err(StoreError::Conflict(_)) => "conflict",
                Err(StoreError::Invalid(_)) => "invalid",
                other => panic!("[{b}] {case}: {other:?}"),
            };
            check(b, case, got, want);
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_applies_the_token() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        for (secret, require_approval, want) in [
            ("open", false, AgentApproval::Approved),
            ("gated", true, AgentApproval::Pending),
        ] {
            let mut t = token(org.id, secret);
            t.require_approval = require_approval;
            let tok = create_enrolment_token(&store, &t, T0).await?;
            // Callers may hand in upper-case hex.
            let agent = enrol_agent(
                &store,
                &hash_of(secret).to_uppercase(),
                &new_agent(secret),
                T0 + 5,
            )
            .await?;
            check(b, secret, agent.approval, want);
            check(b, "org from token", agent.org_id, org.id);
            check(b, "token id", agent.token_id, Some(tok.id));
            check(b, "not connected", agent.connected, false);
            check(b, "not revoked", agent.revoked, false);
            check(b, "enrolled_at", agent.enrolled_at, T0 + 5);
            check(b, "never seen", agent.last_seen, None);
            check(b, "no node", agent.node_id.clone(), None);
            check(
                b,
                "public key",
                agent.public_key,
                new_agent(secret).public_key,
            );
            check(
                b,
                "stored as returned",
                store.agent(agent.id).await?,
                Some(agent.clone()),
            );
            let uses = store.list_enrolment_tokens(Some(org.id)).await?;
            check(
                b,
                "use counted",
                uses.iter().find(|t| t.id == tok.id).map(|t| t.uses),
                Some(1),
            );
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_refusals() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;

        let mut expired = token(org.id, "expired");
        expired.expires_at = Some(T0);
        create_enrolment_token(&store, &expired, T0 - 10).await?;

        let mut once = token(org.id, "once");
        once.max_uses = Some(1);
        create_enrolment_token(&store, &once, T0).await?;
        enrol_agent(&store, &hash_of("once"), &new_agent("first"), T0).await?;

        let revoked = create_enrolment_token(&store, &token(org.id, "revoked"), T0).await?;
        revoke_enrolment_token(&store, org.id, revoked.id).await?;

        // Revocation is reported even when the token has also expired.
        let mut both = token(org.id, "both");
        both.expires_at = Some(T0 - 1);
        let both = create_enrolment_token(&store, &both, T0 - 10).await?;
        revoke_enrolment_token(&store, org.id, both.id).await?;

        let mut later = token(org.id, "later");
        later.expires_at = Some(T0 + 1);
        create_enrolment_token(&store, &later, T0).await?;

        let cases = [
            (
                "unknown",
                hash_of("never-issued"),
                Some(TokenRefusal::Unknown),
            ),
            (
                "malformed",
                "not-hex".to_owned(),
                Some(TokenRefusal::Unknown),
            ),
            (
                "expired at now",
                hash_of("expired"),
                Some(TokenRefusal::Expired),
            ),
            ("used up", hash_of("once"), Some(TokenRefusal::UsedUp)),
            ("revoked", hash_of("revoked"), Some(TokenRefusal::Revoked)),
            (
                "revoked and expired",
                hash_of("both"),
                Some(TokenRefusal::Revoked),
            ),
            ("expires after now", hash_of("later"), None),
        ];
        for (case, hash, want) in cases {
            let got = refusal(enrol_agent(&store, &hash, &new_agent(case), T0).await);
            check(b, case, got, want);
        }
        check(
            b,
            "display",
            StoreError::Token(TokenRefusal::Expired).to_string(),
            "enrolment token has expired".to_owned(),
        );
        // Refused enrolments created nothing: first + "expires after now" only.
        check(b, "agents created", store.list_agents(None).await?.len(), 2);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_uses_holds_under_concurrent_enrolment() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let mut t = token(org.id, "twice");
        t.max_uses = Some(2);
        let tok = create_enrolment_token(&store, &t, T0).await?;
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    enrol_agent(&s, &hash_of("twice"), &new_agent(&format!("h{i}")), T0).await
                })
            })
            .collect();
        let mut ok = 0;
        let mut used_up = 0;
        for task in tasks {
            match task.await? {
                Ok(_) => ok += 1,
                Err(StoreError::Token(TokenRefusal::UsedUp)) => used_up += 1,
                Err(e) => panic!("[{b}] unexpected {e:?}"),
            }
        }
        check(b, "succeeded", ok, 2);
        check(b, "used up", used_up, 3);
        let stored = store.list_enrolment_tokens(None).await?;
        check(
            b,
            "uses",
            stored.iter().find(|x| x.id == tok.id).map(|x| x.uses),
            Some(2),
        );
        check(b, "agents", store.list_agents(Some(org.id)).await?.len(), 2);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_lifecycle() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let agent = enrolled(&store, org.id, "web-1", true).await?;
        let status = |a: Option<Agent>| a.map(|a| a.status());
        check(b, "enrolled pending", agent.status(), AgentStatus::Pending);
        check(
            b,
            "pending is not allowed",
            store.agents_no_longer_allowed(&[agent.id]).await?,
            vec![agent.id],
        );

        let approved = set_agent_approval(&store, agent.id, AgentApproval::Approved).await?;
        check(b, "approved", approved.status(), AgentStatus::Offline);
        check(
            b,
            "approved is allowed",
            store.agents_no_longer_allowed(&[agent.id]).await?,
            vec![],
        );

        let hello = AgentHello {
            hostname: "web-1.example.com".into(),
            agent_version: "0.2.0".into(),
            capabilities: vec!["shell".into(), "files".into()],
            inventory: json!({ "cpu": { "cores": 8 }, "disks": [1, 2] }),
        };
        store
            .mark_agent_online(agent.id, "node-a", &hello, T0 + 10)
            .await?;
        let online = store
            .agent(agent.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("gone"))?;
        check(b, "online", online.status(), AgentStatus::Online);
        check(b, "node", online.node_id.as_deref(), Some("node-a"));
        check(b, "hostname", online.hostname.as_str(), "web-1.example.com");
        check(b, "version", online.agent_version.as_str(), "0.2.0");
        check(
            b,
            "capabilities",
            online.capabilities.clone(),
            hello.capabilities.clone(),
        );
        check(
            b,
            "inventory",
            online.inventory.clone(),
            hello.inventory.clone(),
        );
        check(b, "last seen", online.last_seen, Some(T0 + 10));

        // The agent reconnected through node-b; node-a's late disconnect must not win.
        store
            .mark_agent_online(agent.id, "node-b", &hello, T0 + 20)
            .await?;
        store
            .mark_agent_offline(agent.id, "node-a", T0 + 21)
            .await?;
        let still = store.agent(agent.id).await?;
        check(
            b,
            "stale offline ignored",
            status(still.clone()),
            Some(AgentStatus::Online),
        );
        check(
            b,
            "lease kept",
            still.and_then(|a| a.node_id),
            Some("node-b".into()),
        );
        store
            .mark_agent_offline(agent.id, "node-b", T0 + 30)
            .await?;
        let off = store.agent(agent.id).await?;
        check(
            b,
            "offline",
            status(off.clone()),
            Some(AgentStatus::Offline),
        );
        check(
            b,
            "offline stamp",
            off.as_ref().and_then(|a| a.last_seen),
            Some(T0 + 30),
        );
        check(b, "lease released", off.and_then(|a| a.node_id), None);

        // A node restarting releases every lease it held, and only those.
        let other = enrolled(&store, org.id, "db-1", false).await?;
        let third = enrolled(&store, org.id, "app-1", false).await?;
        store
            .mark_agent_online(agent.id, "node-a", &hello, T0 + 40)
            .await?;
        let renamed = |hostname: &str| AgentHello {
            hostname: hostname.into(),
            ..hello.clone()
        };
        store
            .mark_agent_online(other.id, "node-a", &renamed("db-1"), T0 + 40)
            .await?;
        store
            .mark_agent_online(third.id, "node-b", &renamed("app-1"), T0 + 40)
            .await?;
        check(
            b,
            "released",
            store.mark_node_agents_offline("node-a", T0 + 50).await?,
            2,
        );
        check(
            b,
            "nothing left",
            store.mark_node_agents_offline("node-a", T0 + 51).await?,
            0,
        );
        check(
            b,
            "a offline",
            status(store.agent(agent.id).await?),
            Some(AgentStatus::Offline),
        );
        check(
            b,
            "b offline",
            status(store.agent(other.id).await?),
            Some(AgentStatus::Offline),
        );
        check(
            b,
            "c untouched",
            status(store.agent(third.id).await?),
            Some(AgentStatus::Online),
        );

        // Status precedence: revoked > rejected > pending > connection.
        let rejected = set_agent_approval(&store, other.id, AgentApproval::Rejected).await?;
        check(b, "rejected", rejected.status(), AgentStatus::Rejected);
        let revoked = revoke_agent(&store, third.id).await?;
        check(
            b,
            "revoked while online",
            revoked.status(),
            AgentStatus::Revoked,
        );
        check(b, "revoked flag", revoked.revoked, true);
        let pending = enrolled(&store, org.id, "kiosk-1", true).await?;
        let gone = Uuid::new_v4();
        check(
            b,
            "no longer allowed",
            store
                .agents_no_longer_allowed(&[
                    agent.id, other.id, third.id, pending.id, gone, third.id,
                ])
                .await?,
            vec![other.id, third.id, pending.id, gone],
        );
        check(
            b,
            "empty input",
            store.agents_no_longer_allowed(&[]).await?,
            vec![],
        );

        let names: Vec<String> = store
            .list_agents(Some(org.id))
            .await?
            .into_iter()
            .map(|a| a.hostname)
            .collect();
        check(
            b,
            "ordered by hostname",
            names,
            vec![
                "app-1".to_owned(),
                "db-1".into(),
                "kiosk-1".into(),
                "web-1.example.com".into(),
            ],
        );
        check(
            b,
            "other org empty",
            store.list_agents(Some(Uuid::new_v4())).await?,
            vec![],
        );

        let missing = Uuid::new_v4();
        for (case, result) in [
            (
                "approve missing",
                set_agent_approval(&store, missing, AgentApproval::Approved)
                    .await
                    .err(),
            ),
            ("revoke missing", revoke_agent(&store, missing).await.err()),
            (
                "hello from missing",
                store
                    .mark_agent_online(missing, "node-a", &hello, T0)
                    .await
                    .err(),
            ),
        ] {
            check(
                b,
                case,
                result.map(|e| e.to_string()),
                Some(StoreError::NotFound.to_string()),
            );
        }
        check(b, "agent missing", store.agent(missing).await?, None);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_seen_is_batched() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        create_enrolment_token(&store, &token(org.id, "fleet"), T0).await?;
        let mut ids = Vec::new();
        for i in 0..1000 {
            let a = enrol_agent(
                &store,
                &hash_of("fleet"),
                &new_agent(&format!("host-{i:04}")),
                T0,
            )
            .await?;
            ids.push(a.id);
        }
        let mut seen: Vec<(Uuid, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, T0 + i as i64))
            .collect();
        // A duplicate keeps the newest time; an unknown id is ignored.
        seen.push((ids[0], T0 + 5_000));
        seen.push((Uuid::new_v4(), T0));
        let started = std::time::Instant::now();
        store.touch_last_seen(&seen).await?;
        eprintln!(
            "[{b}] touch_last_seen of {} rows took {:?}",
            seen.len(),
            started.elapsed()
        );

        let agents = store.list_agents(Some(org.id)).await?;
        check(b, "count", agents.len(), 1000);
        for a in &agents {
            let i = ids.iter().position(|id| *id == a.id).unwrap_or(usize::MAX);
            let want = if i == 0 { T0 + 5_000 } else { T0 + i as i64 };
            check(b, &a.hostname, a.last_seen, Some(want));
        }
        // Older stamps never move last_seen backwards.
        store.touch_last_seen(&[(ids[1], T0 - 1)]).await?;
        check(
            b,
            "monotonic",
            store.agent(ids[1]).await?.and_then(|a| a.last_seen),
            Some(T0 + 1),
        );
        store.touch_last_seen(&[]).await?;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_chain_appends_lists_and_verifies() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        check(
            b,
            "empty log",
            store.verify_audit_chain().await?,
            ChainReport {
                checked: 0,
                first_broken: None,
            },
        );
        let mut appended = Vec::new();
        for i in 0..50 {
            let org_id = (i % 5 != 0).then_some(org.id);
            appended.push(store.append_audit(&entry(i, org_id), T0 + i).await?);
        }
        check(b, "first seq", appended[0].seq, 1);
        check(b, "genesis", appended[0].prev_hash.clone(), "0".repeat(64));
        for pair in appended.windows(2) {
            check(b, "linked", pair[1].prev_hash.clone(), pair[0].hash.clone());
            check(b, "consecutive", pair[1].seq, pair[0].seq + 1);
        }
        check(
            b,
            "verify",
            store.verify_audit_chain().await?,
            ChainReport {
                checked: 50,
                first_broken: None,
            },
        );

        let newest = store.list_audit(None, 10).await?;
        let want: Vec<_> = appended.iter().rev().take(10).cloned().collect();
        check(b, "newest first, round-trips", newest, want);
        let scoped = store.list_audit(Some(org.id), 1000).await?;
        check(b, "org filter", scoped.len(), 40);
        assert!(
            scoped.iter().all(|r| r.org_id == Some(org.id)),
            "[{b}] org filter"
        );
        check(b, "zero limit", store.list_audit(None, 0).await?, vec![]);
        assert!(
            matches!(
                store
                    .append_audit(
                        &NewAuditEntry {
                            actor: String::new(),
                            ..entry(0, None)
                        },
                        T0
                    )
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "[{b}] empty actor"
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_tampering_is_detected() -> Result<()> {
    let cases = [
        (
            "action edited",
            "UPDATE audit_log SET action = 'nothing.happened' WHERE seq = 17",
            Some(17),
        ),
        (
            "details edited",
            "UPDATE audit_log SET details = '{\"i\":5}' WHERE seq = 5",
            Some(5),
        ),
        (
            "ts edited",
            "UPDATE audit_log SET ts = ts + 1 WHERE seq = 50",
            Some(50),
        ),
        (
            "org cleared",
            "UPDATE audit_log SET org_id = NULL WHERE seq = 2",
            Some(2),
        ),
        (
            "row deleted",
            "DELETE FROM audit_log WHERE seq = 30",
            Some(31),
        ),
        (
            "first row deleted",
            "DELETE FROM audit_log WHERE seq = 1",
            Some(2),
        ),
        (
            "hash rewritten",
            "UPDATE audit_log SET hash = prev_hash WHERE seq = 40",
            Some(40),
        ),
        (
            "untouched",
            "UPDATE audit_log SET seq = seq WHERE seq = 0",
            None,
        ),
    ];
    for (case, sql, want) in cases {
        for (db, store) in stores().await? {
            let b = db.backend();
            let org = store.default_org(T0).await?;
            for i in 0..50 {
                store.append_audit(&entry(i, Some(org.id)), T0 + i).await?;
            }
            store.raw_execute(sql).await?;
            let report = store.verify_audit_chain().await?;
            check(b, case, report.first_broken, want);
            store.close().await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_audit_appends_keep_one_chain() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        // A second pool stands in for a second process or node: only the database lock, not the
        // in-process mutex, keeps the two from forking the chain.
        let second = db.open().await?;
        let tasks: Vec<_> = (0..10)
            .map(|t| {
                let s = if t % 2 == 0 {
                    store.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..20 {
                        seqs.push(s.append_audit(&entry(t * 100 + i, None), T0 + i).await?.seq);
                    }
                    Ok::<_, StoreError>(seqs)
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        all.sort_unstable();
        check(b, "every seq once", all, (1..=200).collect::<Vec<i64>>());
        check(
            b,
            "chain intact",
            store.verify_audit_chain().await?,
            ChainReport {
                checked: 200,
                first_broken: None,
            },
        );
        second.close().await;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_writes_are_scoped_and_commit_with_their_audit_record() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let agent = enrolled(&store, org.id, "scoped", true).await?;

        // Another organisation's agent is not found, and nothing changes.
        let mut tx = store.begin().await?;
        check(
            b,
            "foreign agent in tx",
            tx.agent_in_org(other.id, agent.id).await?,
            None,
        );
        for (case, result) in [
            (
                "approve foreign",
                tx.set_agent_approval(other.id, agent.id, AgentApproval::Approved)
                    .await
                    .err(),
            ),
            (
                "revoke foreign",
                tx.revoke_agent(other.id, agent.id).await.err(),
            ),
            (
                "delete foreign",
                tx.delete_agent(other.id, agent.id).await.err(),
            ),
        ] {
            assert!(matches!(result, Some(StoreError::NotFound)), "[{b}] {case}");
        }
        tx.commit().await?;
        check(
            b,
            "untouched",
            store.agent(agent.id).await?.map(|a| a.status()),
            Some(AgentStatus::Pending),
        );

        // A change and its audit record go together: rolled back, neither is there.
        let mut tx = store.begin().await?;
        tx.set_agent_approval(org.id, agent.id, AgentApproval::Approved)
            .await?;
        tx.append_audit(&entry(0, Some(org.id)), T0).await?;
        tx.rollback().await?;
        check(
            b,
            "rolled back approval",
            store.agent(agent.id).await?.map(|a| a.approval),
            Some(AgentApproval::Pending),
        );
        check(
            b,
            "rolled back audit",
            store.list_audit(None, 10).await?.len(),
            0,
        );

        // Committed, both are.
        let mut tx = store.begin().await?;
        let approved = tx
            .set_agent_approval(org.id, agent.id, AgentApproval::Approved)
            .await?;
        tx.append_audit(&entry(0, Some(org.id)), T0).await?;
        let records = tx.commit().await?;
        check(b, "approved", approved.approval, AgentApproval::Approved);
        check(b, "records handed back", records.len(), 1);
        check(
            b,
            "audit stored",
            store.list_audit(None, 10).await?.len(),
            1,
        );

        // An enrolment rolled back leaves the token's use unspent and no agent behind.
        let secret = "rollback-secret";
        let mut t = token(org.id, secret);
        t.max_uses = Some(1);
        let t = create_enrolment_token(&store, &t, T0).await?;
        let mut tx = store.begin().await?;
        let ghost = tx
            .enrol_agent(&hash_of(secret), &new_agent("ghost"), T0)
            .await?;
        drop(tx);
        check(b, "no ghost agent", store.agent(ghost.id).await?, None);
        let uses = store.enrolment_token(org.id, t.id).await?.map(|t| t.uses);
        check(b, "use not spent", uses, Some(0));
    }
    Ok(())
}
