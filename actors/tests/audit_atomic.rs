//! Atomic audit: an operation's change and its audit record commit in one transaction. With the
//! audit insert made to fail (a trigger that raises), each operation fails, and its change is
//! rolled back; with the trigger gone, the same operation succeeds and leaves its record. On
//! SQLite and, when configured, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reap3r_actors::access::{Caller, CreateUser, Role};
use reap3r_actors::enrolment::{CreateEnrolmentToken, EnrolmentInfo};
use reap3r_actors::groups::CreateGroup;
use reap3r_actors::orgs::CreateOrg;
use reap3r_actors::{Domain, EventBus, ManualClock};
use reap3r_store::{AuditFilter, Backend, GroupKind, Store, Uuid};
use reap3r_testkit::TestDatabase;

const FAIL_AUDIT_SQLITE: &str = "CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log \
     BEGIN SELECT RAISE(ABORT, 'audit disabled by test'); END;";
const FAIL_AUDIT_POSTGRES: &str = "CREATE FUNCTION audit_fails() RETURNS trigger AS $$ \
     BEGIN RAISE EXCEPTION 'audit disabled by test'; END $$ LANGUAGE plpgsql; \
     CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log \
     FOR EACH ROW EXECUTE FUNCTION audit_fails();";

async fn audit_fails(db: &TestDatabase, on: bool) {
    let sql = match (db.backend(), on) {
        (Backend::Sqlite, true) => FAIL_AUDIT_SQLITE,
        (Backend::Sqlite, false) => "DROP TRIGGER audit_fails",
        (Backend::Postgres, true) => FAIL_AUDIT_POSTGRES,
        (Backend::Postgres, false) => "DROP TRIGGER audit_fails ON audit_log",
    };
    db.execute(sql).await.unwrap();
}

/// What the operations below change, counted.
async fn footprint(store: &Store, org: Uuid) -> (usize, usize, usize, usize, usize) {
    let audit = store
        .list_audit_filtered(
            None,
            &AuditFilter {
                limit: 10_000,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    (
        store.list_users(org).await.unwrap().len(),
        store.list_enrolment_tokens(Some(org)).await.unwrap().len(),
        store.list_groups(GroupKind::Site, org).await.unwrap().len(),
        store.list_orgs().await.unwrap().len(),
        audit.len(),
    )
}

/// Runs the four operations; returns which failed.
async fn operations(domain: &Domain, caller: &Caller, n: u32) -> Vec<String> {
    let mut failed = Vec::new();
    let user = CreateUser {
        email: format!("ops{n}@example.com"),
        password: "a long enough password".into(),
        role: Role::Technician,
        display_name: Some("Ops".into()),
    }
    .run(domain, caller)
    .await;
    if user.is_err() {
        failed.push("user.create".to_owned());
    }
    let info = EnrolmentInfo {
        server_addr: "127.0.0.1:4433".into(),
        cert_fingerprint: "ab".repeat(32),
        server_key: "cd".repeat(32),
    };
    let token = CreateEnrolmentToken {
        label: Some("t".into()),
        lifetime_s: None,
        max_uses: Some(1),
        require_approval: false,
    }
    .run(domain, caller, &info)
    .await;
    if token.is_err() {
        failed.push("enrollment_token.create".to_owned());
    }
    let site = CreateGroup {
        kind: GroupKind::Site,
        name: format!("site {n}"),
        description: None,
        parent_id: None,
    }
    .run(domain, caller)
    .await;
    if site.is_err() {
        failed.push("site.create".to_owned());
    }
    let org = CreateOrg {
        name: format!("customer {n}"),
        parent_org_id: None,
    }
    .run(domain, caller)
    .await;
    if org.is_err() {
        failed.push("org.create".to_owned());
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_audit_write_rolls_the_change_back() {
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let org = store.default_org(0).await.unwrap();
        let domain = Domain::new(
            store.clone(),
            Arc::new(ManualClock::new(1_000_000)),
            EventBus::default(),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        let caller = Caller::cli(org.id);
        let before = footprint(&store, org.id).await;

        audit_fails(&db, true).await;
        let failed = operations(&domain, &caller, 1).await;
        assert_eq!(
            failed,
            [
                "user.create",
                "enrollment_token.create",
                "site.create",
                "org.create"
            ],
            "{:?}: every operation fails when its audit record cannot be written",
            db.backend()
        );
        assert_eq!(
            footprint(&store, org.id).await,
            before,
            "{:?}: nothing changed",
            db.backend()
        );

        audit_fails(&db, false).await;
        assert!(operations(&domain, &caller, 2).await.is_empty());
        let (users, tokens, sites, orgs, audit) = footprint(&store, org.id).await;
        assert_eq!(
            (users, tokens, sites, orgs, audit),
            (
                before.0 + 1,
                before.1 + 1,
                before.2 + 1,
                before.3 + 1,
                before.4 + 4
            ),
            "{:?}: each change committed with its record",
            db.backend()
        );
        assert!(store.verify_audit_chain().await.unwrap().is_intact());
        store.close().await;
    }
}
