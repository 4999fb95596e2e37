//! Repository tests for the access layer (schema 0002): accounts and MFA, MSSP organisations,
//! sessions and refresh rotation, MFA challenges, login events, API keys, groups, agent queries
//! and filtered audit listing. Like `repository.rs`, every test runs against every backend
//! available here (SQLite always, PostgreSQL when `REAP3R_TEST_POSTGRES_URL` is set).

use std::collections::HashSet;
use std::fmt::Debug;

use anyhow::{Result, anyhow};
use reap3r_store::{
    Agent, AgentApproval, AgentCursor, AgentFilter, AgentHello, AgentPlacement, AgentStats,
    AgentStatus, AuditFilter, Backend, ChallengeCheck, GroupKind, GroupUpdate, LoginEventFilter,
    NewAgent, NewApiKey, NewAuditEntry, NewAuthSession, NewEnrolmentToken, NewGroup, NewLoginEvent,
    NewUser, Org, RefreshOutcome, Store, StoreError, User, UserUpdate, Uuid,
};
use reap3r_store::{ApiKey, AuthSession};
use reap3r_testkit::TestDatabase;
use serde_json::json;
use sqlx::Connection;

mod support;
use support::*;

const T0: i64 = 1_700_000_000_000;

/// The access mutations are [`reap3r_store::Tx`] methods (an operation commits them with its
/// audit record). These tests exercise each one in a transaction of its own, committed when the
/// change took effect, through the same names the methods have.
trait InTx {
    async fn create_user(&self, new: &NewUser, now: i64) -> Result<User, StoreError>;
    async fn update_user(
        &self,
        org: Uuid,
        id: Uuid,
        update: &UserUpdate,
        now: i64,
    ) -> Result<User, StoreError>;
    async fn set_user_password(&self, id: Uuid, hash: &str, now: i64) -> Result<(), StoreError>;
    async fn set_user_mfa(
        &self,
        id: Uuid,
        secret: Option<&str>,
        enabled: bool,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn accept_totp_step(&self, user: Uuid, step: i64) -> Result<bool, StoreError>;
    async fn create_auth_session(
        &self,
        new: &NewAuthSession,
        now: i64,
    ) -> Result<AuthSession, StoreError>;
    async fn rotate_refresh_token(
        &self,
        old: &str,
        access: &str,
        access_expires_at: i64,
        refresh: &str,
        refresh_expires_at: i64,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError>;
    async fn revoke_auth_session(
        &self,
        id: Uuid,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn revoke_user_sessions(
        &self,
        user: Uuid,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError>;
    async fn consume_mfa_challenge(&self, hash: &str, now: i64) -> Result<bool, StoreError>;
    async fn create_api_key(&self, new: &NewApiKey, now: i64) -> Result<ApiKey, StoreError>;
    async fn delete_api_key(&self, org: Uuid, id: Uuid) -> Result<(), StoreError>;
}

/// Runs one Tx method and commits what it did.
macro_rules! in_tx {
    ($store:expr, $method:ident($($arg:expr),* $(,)?)) => {{
        let mut tx = $store.begin().await?;
        let out = tx.$method($($arg),*).await?;
        tx.commit().await?;
        Ok(out)
    }};
}

impl InTx for Store {
    async fn create_user(&self, new: &NewUser, now: i64) -> Result<User, StoreError> {
        in_tx!(self, create_user(new, now))
    }
    async fn update_user(
        &self,
        org: Uuid,
        id: Uuid,
        update: &UserUpdate,
        now: i64,
    ) -> Result<User, StoreError> {
        in_tx!(self, update_user(org, id, update, now))
    }
    async fn set_user_password(&self, id: Uuid, hash: &str, now: i64) -> Result<(), StoreError> {
        in_tx!(self, set_user_password(id, hash, now))
    }
    async fn set_user_mfa(
        &self,
        id: Uuid,
        secret: Option<&str>,
        enabled: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        in_tx!(self, set_user_mfa(id, secret, enabled, now))
    }
    async fn accept_totp_step(&self, user: Uuid, step: i64) -> Result<bool, StoreError> {
        in_tx!(self, accept_totp_step(user, step))
    }
    async fn create_auth_session(
        &self,
        new: &NewAuthSession,
        now: i64,
    ) -> Result<AuthSession, StoreError> {
        in_tx!(self, create_auth_session(new, now))
    }
    async fn rotate_refresh_token(
        &self,
        old: &str,
        access: &str,
        access_expires_at: i64,
        refresh: &str,
        refresh_expires_at: i64,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let out = tx
            .rotate_refresh_token(
                old,
                access,
                access_expires_at,
                refresh,
                refresh_expires_at,
                now,
            )
            .await?;
        // Like the refresh operation: only a rotation or a reuse's revocation is committed.
        if matches!(
            out,
            RefreshOutcome::Rotated(_) | RefreshOutcome::Reused { .. }
        ) {
            tx.commit().await?;
        }
        Ok(out)
    }
    async fn revoke_auth_session(
        &self,
        id: Uuid,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        in_tx!(self, revoke_auth_session(id, reason, now))
    }
    async fn revoke_user_sessions(
        &self,
        user: Uuid,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        in_tx!(self, revoke_user_sessions(user, reason, now))
    }
    async fn consume_mfa_challenge(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        in_tx!(self, consume_mfa_challenge(hash, now))
    }
    async fn create_api_key(&self, new: &NewApiKey, now: i64) -> Result<ApiKey, StoreError> {
        in_tx!(self, create_api_key(new, now))
    }
    async fn delete_api_key(&self, org: Uuid, id: Uuid) -> Result<(), StoreError> {
        in_tx!(self, delete_api_key(org, id))
    }
}

fn check<T: PartialEq + Debug>(backend: Backend, case: &str, got: T, want: T) {
    assert_eq!(got, want, "[{backend}] {case}");
}

/// The error's kind as a short word, for table-driven cases.
fn kind<T: Debug>(result: Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound) => "not_found",
        Err(StoreError::Conflict(_)) => "conflict",
        Err(StoreError::Invalid(_)) => "invalid",
        Err(e) => {
            eprintln!("unexpected error {e:?}");
            "unexpected"
        }
    }
}

fn invalid_message<T: Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Invalid(m)) => m,
        other => format!("expected Invalid, got {other:?}"),
    }
}

async fn stores() -> Result<Vec<(TestDatabase, Store)>> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await? {
        let store = db.open().await?;
        out.push((db, store));
    }
    Ok(out)
}

fn hash_of(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn new_agent(hostname: &str, os: &str) -> NewAgent {
    NewAgent {
        hostname: hostname.into(),
        os: os.into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    }
}

fn token(org_id: Uuid, secret: &str) -> NewEnrolmentToken {
    NewEnrolmentToken {
        org_id,
        token_hash: hash_of(secret),
        label: None,
        expires_at: None,
        max_uses: None,
        require_approval: false,
        created_by: None,
    }
}

async fn enrolled(store: &Store, org: Uuid, hostname: &str, at: i64) -> Result<Agent> {
    let secret = format!("secret-{hostname}-{}", Uuid::new_v4());
    create_enrolment_token(store, &token(org, &secret), T0).await?;
    Ok(enrol_agent(store, &hash_of(&secret), &new_agent(hostname, "linux"), at).await?)
}

async fn user(store: &Store, org: &Org, email: &str) -> Result<User> {
    Ok(store
        .create_user(
            &NewUser {
                org_id: org.id,
                email: email.into(),
                password_hash: "$argon2id$v=19$stub".into(),
                role: "operator".into(),
                display_name: None,
            },
            T0,
        )
        .await?)
}

fn session(user: &User, n: u32, refresh_expires_at: i64) -> NewAuthSession {
    NewAuthSession {
        user_id: user.id,
        org_id: user.org_id,
        access_hash: hash_of(&format!("access-{}-{n}", user.id)),
        access_expires_at: T0 + 900_000,
        refresh_hash: hash_of(&format!("refresh-{}-{n}", user.id)),
        refresh_expires_at,
        source_ip: Some("192.0.2.1".into()),
        user_agent: Some("curl/8".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_from_0001_keeps_data() -> Result<()> {
    for db in TestDatabase::all().await? {
        let b = db.backend();
        let init = match b {
            Backend::Sqlite => include_str!("../../migrations/sqlite/0001_init.sql"),
            Backend::Postgres => include_str!("../../migrations/postgres/0001_init.sql"),
        };
        sqlx::any::install_default_drivers();
        // A database as the previous release left it: schema 0001 and some rows.
        let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
        sqlx::raw_sql(init).execute(&mut conn).await?;
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY NOT NULL, \
             applied_at BIGINT NOT NULL); \
             INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0); \
             INSERT INTO orgs (id, name, created_at) \
             VALUES ('00000000-0000-4000-8000-000000000001', 'old', 1); \
             INSERT INTO users (id, org_id, email, password_hash, role, created_at) \
             VALUES ('00000000-0000-4000-8000-000000000002', \
                     '00000000-0000-4000-8000-000000000001', 'old@example.com', 'h', 'admin', 2);",
        )
        .execute(&mut conn)
        .await?;
        conn.close().await?;

        let store = db.open().await?;
        let old = store
            .user_by_email("old@example.com")
            .await?
            .ok_or_else(|| anyhow!("user lost"))?;
        check(b, "mfa off by default", old.mfa_enabled, false);
        check(b, "no secret", old.mfa_secret.clone(), None);
        check(b, "no display name", old.display_name.clone(), None);
        check(b, "no updated_at", old.updated_at, None);
        let org = store
            .org(old.org_id)
            .await?
            .ok_or_else(|| anyhow!("org lost"))?;
        check(b, "org kept", org.name.as_str(), "old");
        check(b, "no parent", org.parent_org_id, None);
        let agent = enrolled(&store, org.id, "after-upgrade", T0).await?;
        check(b, "unfiled", agent.folder_id, None);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_scoped_and_updatable() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let carol = user(&store, &acme, "carol@example.com").await?;
        let alice = user(&store, &acme, "Alice@example.com").await?;
        let mallory = user(&store, &other, "mallory@example.com").await?;
        check(b, "new user defaults", alice.mfa_enabled, false);
        check(
            b,
            "by id",
            store.user_by_id(alice.id).await?,
            Some(alice.clone()),
        );
        check(
            b,
            "by id missing",
            store.user_by_id(Uuid::new_v4()).await?,
            None,
        );
        check(
            b,
            "in org",
            store.user_in_org(acme.id, alice.id).await?,
            Some(alice.clone()),
        );
        check(
            b,
            "other org's user",
            store.user_in_org(acme.id, mallory.id).await?,
            None,
        );
        check(
            b,
            "list by email, own org only",
            store.list_users(acme.id).await?,
            vec![alice.clone(), carol.clone()],
        );

        let updated = store
            .update_user(
                acme.id,
                alice.id,
                &UserUpdate {
                    email: Some(" ALICE2@Example.com ".into()),
                    display_name: Some(Some("Alice A.".into())),
                    role: Some("admin".into()),
                    status: Some("suspended".into()),
                },
                T0 + 1,
            )
            .await?;
        check(b, "email", updated.email.as_str(), "alice2@example.com");
        check(
            b,
            "display",
            updated.display_name.as_deref(),
            Some("Alice A."),
        );
        check(b, "role", updated.role.as_str(), "admin");
        check(b, "status", updated.status.as_str(), "suspended");
        check(b, "updated_at", updated.updated_at, Some(T0 + 1));
        check(b, "created_at kept", updated.created_at, alice.created_at);
        let cleared = store
            .update_user(
                acme.id,
                alice.id,
                &UserUpdate {
                    display_name: Some(None),
                    ..UserUpdate::default()
                },
                T0 + 2,
            )
            .await?;
        check(b, "display cleared", cleared.display_name.clone(), None);
        check(b, "rest kept", cleared.role.as_str(), "admin");
        let untouched = store
            .update_user(acme.id, alice.id, &UserUpdate::default(), T0 + 3)
            .await?;
        check(
            b,
            "empty update",
            untouched.email.as_str(),
            "alice2@example.com",
        );

        let cases: [(&str, Uuid, Uuid, UserUpdate, &str); 5] = [
            (
                "email taken",
                acme.id,
                alice.id,
                UserUpdate {
                    email: Some("Carol@example.com".into()),
                    ..UserUpdate::default()
                },
                "conflict",
            ),
            (
                "other org",
                acme.id,
                mallory.id,
                UserUpdate {
                    role: Some("admin".into()),
                    ..UserUpdate::default()
                },
                "not_found",
            ),
            (
                "missing",
                acme.id,
                Uuid::new_v4(),
                UserUpdate::default(),
                "not_found",
            ),
            (
                "empty email",
                acme.id,
                alice.id,
                UserUpdate {
                    email: Some("  ".into()),
                    ..UserUpdate::default()
                },
                "invalid",
            ),
            (
                "empty role",
                acme.id,
                alice.id,
                UserUpdate {
                    role: Some("".into()),
                    ..UserUpdate::default()
                },
                "invalid",
            ),
        ];
        for (case, org, id, update, want) in cases {
            check(
                b,
                case,
                kind(store.update_user(org, id, &update, T0).await),
                want,
            );
        }
        check(
            b,
            "mallory unchanged",
            store.user_by_id(mallory.id).await?,
            Some(mallory.clone()),
        );

        store
            .set_user_password(carol.id, "$argon2id$new", T0 + 5)
            .await?;
        let carol2 = store
            .user_by_id(carol.id)
            .await?
            .ok_or_else(|| anyhow!("gone"))?;
        check(
            b,
            "password",
            carol2.password_hash.as_str(),
            "$argon2id$new",
        );
        check(b, "password stamp", carol2.updated_at, Some(T0 + 5));
        check(
            b,
            "password missing user",
            kind(store.set_user_password(Uuid::new_v4(), "x", T0).await),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mfa_state_and_single_use_totp_steps() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "mfa@example.com").await?;
        let get = |store: Store, id: Uuid| async move {
            store.user_by_id(id).await?.ok_or_else(|| anyhow!("gone"))
        };

        store
            .set_user_mfa(u.id, Some("JBSWY3DPEHPK3PXP"), false, T0 + 1)
            .await?;
        let pending = get(store.clone(), u.id).await?;
        check(
            b,
            "setup secret",
            pending.mfa_secret.as_deref(),
            Some("JBSWY3DPEHPK3PXP"),
        );
        check(b, "setup not enabled", pending.mfa_enabled, false);
        check(b, "setup stamp", pending.updated_at, Some(T0 + 1));
        let text = format!("{pending:?}");
        assert!(!text.contains("JBSWY3DPEHPK3PXP"), "[{b}] {text}");
        assert!(!text.contains("$argon2id"), "[{b}] {text}");

        // One step is accepted once; older steps never.
        check(
            b,
            "first use",
            store.accept_totp_step(u.id, 100).await?,
            true,
        );
        check(b, "replay", store.accept_totp_step(u.id, 100).await?, false);
        check(
            b,
            "older step",
            store.accept_totp_step(u.id, 99).await?,
            false,
        );
        check(
            b,
            "next step",
            store.accept_totp_step(u.id, 101).await?,
            true,
        );
        check(
            b,
            "unknown user",
            store.accept_totp_step(Uuid::new_v4(), 1).await?,
            false,
        );

        store
            .set_user_mfa(u.id, Some("JBSWY3DPEHPK3PXP"), true, T0 + 2)
            .await?;
        let on = get(store.clone(), u.id).await?;
        check(b, "enabled", on.mfa_enabled, true);
        check(b, "step kept on enable", on.mfa_last_step, Some(101));

        // Concurrent logins presenting the same code: exactly one wins.
        let second = db.open().await?;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = if i % 2 == 0 {
                    store.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move { s.accept_totp_step(u.id, 200).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await?? {
                wins += 1;
            }
        }
        check(b, "one concurrent winner", wins, 1);
        second.close().await;

        store.set_user_mfa(u.id, None, false, T0 + 3).await?;
        let off = get(store.clone(), u.id).await?;
        check(b, "disabled", off.mfa_enabled, false);
        check(b, "secret cleared", off.mfa_secret.clone(), None);
        check(b, "step cleared", off.mfa_last_step, None);
        check(
            b,
            "step usable again",
            store.accept_totp_step(u.id, 5).await?,
            true,
        );

        check(
            b,
            "enable without secret",
            kind(store.set_user_mfa(u.id, None, true, T0).await),
            "invalid",
        );
        check(
            b,
            "missing user",
            kind(
                store
                    .set_user_mfa(Uuid::new_v4(), Some("A"), false, T0)
                    .await,
            ),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mssp_orgs_and_assignments() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let provider = create_org(&store, "provider", T0).await?;
        let customer = create_org_under(&store, " customer ", Some(provider.id), T0 + 1).await?;
        check(b, "name trimmed", customer.name.as_str(), "customer");
        check(b, "parent", customer.parent_org_id, Some(provider.id));
        check(b, "plain org has no parent", provider.parent_org_id, None);
        check(
            b,
            "unknown parent",
            kind(create_org_under(&store, "x", Some(Uuid::new_v4()), T0).await),
            "invalid",
        );
        check(
            b,
            "duplicate name",
            kind(create_org_under(&store, "customer", None, T0).await),
            "conflict",
        );
        check(
            b,
            "org by id",
            store.org(customer.id).await?,
            Some(customer.clone()),
        );
        check(b, "org missing", store.org(Uuid::new_v4()).await?, None);
        check(
            b,
            "find keeps parent",
            store.find_org("customer").await?,
            Some(customer.clone()),
        );
        let zeta = create_org(&store, "Zeta", T0).await?;
        check(
            b,
            "list by name",
            store.list_orgs().await?,
            vec![zeta.clone(), customer.clone(), provider.clone()],
        );

        let staff = user(&store, &provider, "staff@provider.example").await?;
        let a = assign_user_to_org(&store, staff.id, customer.id, "operator", T0 + 10).await?;
        check(b, "assignment role", a.role.as_str(), "operator");
        check(b, "assignment created", a.created_at, T0 + 10);
        let again = assign_user_to_org(&store, staff.id, customer.id, "admin", T0 + 20).await?;
        check(b, "upsert role", again.role.as_str(), "admin");
        check(b, "upsert keeps created_at", again.created_at, T0 + 10);
        check(
            b,
            "role",
            store.user_org_role(staff.id, customer.id).await?,
            Some("admin".into()),
        );
        check(
            b,
            "no role elsewhere",
            store.user_org_role(staff.id, zeta.id).await?,
            None,
        );
        let z = assign_user_to_org(&store, staff.id, zeta.id, "viewer", T0 + 30).await?;
        check(
            b,
            "user's assignments",
            store.list_user_assignments(staff.id).await?,
            vec![again.clone(), z.clone()],
        );
        check(
            b,
            "org's assignments",
            store.list_org_assignments(customer.id).await?,
            vec![again.clone()],
        );
        check(
            b,
            "unknown user",
            kind(assign_user_to_org(&store, Uuid::new_v4(), customer.id, "viewer", T0).await),
            "invalid",
        );
        check(
            b,
            "unknown org",
            kind(assign_user_to_org(&store, staff.id, Uuid::new_v4(), "viewer", T0).await),
            "invalid",
        );
        check(
            b,
            "empty role",
            kind(assign_user_to_org(&store, staff.id, zeta.id, " ", T0).await),
            "invalid",
        );
        unassign_user_from_org(&store, staff.id, zeta.id).await?;
        check(
            b,
            "unassign twice",
            kind(unassign_user_from_org(&store, staff.id, zeta.id).await),
            "not_found",
        );
        check(
            b,
            "after unassign",
            store.list_user_assignments(staff.id).await?,
            vec![again],
        );
        // Deleting a user takes their assignments and sessions with them.
        store
            .create_auth_session(&session(&staff, 1, T0 + 1_000_000), T0)
            .await?;
        store
            .raw_execute(&format!("DELETE FROM users WHERE id = '{}'", staff.id))
            .await?;
        check(
            b,
            "assignments cascade",
            store.list_org_assignments(customer.id).await?,
            vec![],
        );
        check(
            b,
            "sessions cascade",
            store.list_user_sessions(staff.id).await?,
            vec![],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_rotate_and_reuse_revokes() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "s@example.com").await?;
        let new = session(&u, 1, T0 + 86_400_000);
        let s = store.create_auth_session(&new, T0).await?;
        check(b, "user", s.user_id, u.id);
        check(b, "org", s.org_id, org.id);
        check(b, "created", s.created_at, T0);
        check(b, "last used", s.last_used_at, T0);
        check(b, "not revoked", s.revoked_at, None);
        check(b, "ip", s.source_ip.as_deref(), Some("192.0.2.1"));
        check(
            b,
            "by access hash",
            store.session_by_access_hash(&new.access_hash).await?,
            Some(s.clone()),
        );
        check(b, "by id", store.auth_session(s.id).await?, Some(s.clone()));
        check(
            b,
            "duplicate access hash",
            kind(store.create_auth_session(&new, T0).await),
            "conflict",
        );
        check(
            b,
            "unknown user",
            kind(
                store
                    .create_auth_session(
                        &NewAuthSession {
                            user_id: Uuid::new_v4(),
                            ..session(&u, 99, T0 + 1)
                        },
                        T0,
                    )
                    .await,
            ),
            "invalid",
        );

        // Touching writes only when the last write is older than the interval.
        store.touch_auth_session(s.id, T0 + 30_000, 60_000).await?;
        check(
            b,
            "touch too soon",
            store.auth_session(s.id).await?.map(|s| s.last_used_at),
            Some(T0),
        );
        store.touch_auth_session(s.id, T0 + 61_000, 60_000).await?;
        check(
            b,
            "touched",
            store.auth_session(s.id).await?.map(|s| s.last_used_at),
            Some(T0 + 61_000),
        );

        // Rotation.
        let access2 = hash_of("access-2");
        let refresh2 = hash_of("refresh-2");
        let rotated = store
            .rotate_refresh_token(
                &new.refresh_hash,
                &access2,
                T0 + 2_000_000,
                &refresh2,
                T0 + 90_000_000,
                T0 + 100_000,
            )
            .await?;
        let RefreshOutcome::Rotated(r) = rotated else {
            panic!("[{b}] expected Rotated, got {rotated:?}");
        };
        check(b, "same session", r.id, s.id);
        check(b, "new access expiry", r.access_expires_at, T0 + 2_000_000);
        check(
            b,
            "new refresh expiry",
            r.refresh_expires_at,
            T0 + 90_000_000,
        );
        check(b, "used now", r.last_used_at, T0 + 100_000);
        check(
            b,
            "old access hash gone",
            store.session_by_access_hash(&new.access_hash).await?,
            None,
        );
        check(
            b,
            "new access hash",
            store.session_by_access_hash(&access2).await?.map(|s| s.id),
            Some(s.id),
        );

        // The old refresh token again: theft. The session is revoked for good.
        let reused = store
            .rotate_refresh_token(
                &new.refresh_hash,
                &hash_of("access-3"),
                T0 + 3_000_000,
                &hash_of("refresh-3"),
                T0 + 90_000_000,
                T0 + 200_000,
            )
            .await?;
        check(
            b,
            "reuse",
            reused,
            RefreshOutcome::Reused {
                session_id: s.id,
                user_id: u.id,
            },
        );
        let revoked = store
            .auth_session(s.id)
            .await?
            .ok_or_else(|| anyhow!("gone"))?;
        check(b, "revoked at", revoked.revoked_at, Some(T0 + 200_000));
        check(
            b,
            "revoked reason",
            revoked.revoked_reason.as_deref(),
            Some("refresh_token_reuse"),
        );
        check(
            b,
            "new token of a revoked session",
            store
                .rotate_refresh_token(
                    &refresh2,
                    &hash_of("access-4"),
                    T0,
                    &hash_of("refresh-4"),
                    T0,
                    T0 + 300_000,
                )
                .await?,
            RefreshOutcome::Revoked,
        );
        check(
            b,
            "unknown token",
            store
                .rotate_refresh_token(
                    &hash_of("nope"),
                    &hash_of("access-5"),
                    T0,
                    &hash_of("refresh-5"),
                    T0,
                    T0,
                )
                .await?,
            RefreshOutcome::Unknown,
        );

        // Refresh window over.
        let short = session(&u, 2, T0 + 1_000);
        let s2 = store.create_auth_session(&short, T0 + 1).await?;
        check(
            b,
            "expired",
            store
                .rotate_refresh_token(
                    &short.refresh_hash,
                    &hash_of("access-6"),
                    T0,
                    &hash_of("refresh-6"),
                    T0,
                    T0 + 1_000,
                )
                .await?,
            RefreshOutcome::Expired,
        );
        check(
            b,
            "expired leaves session alone",
            store.auth_session(s2.id).await?.and_then(|s| s.revoked_at),
            None,
        );

        // Revocation.
        let s3 = store
            .create_auth_session(&session(&u, 3, T0 + 1_000_000), T0 + 5)
            .await?;
        check(
            b,
            "revoke",
            store.revoke_auth_session(s3.id, "logout", T0 + 6).await?,
            true,
        );
        check(
            b,
            "revoke again",
            store.revoke_auth_session(s3.id, "logout", T0 + 7).await?,
            false,
        );
        check(
            b,
            "revoke missing",
            store
                .revoke_auth_session(Uuid::new_v4(), "logout", T0)
                .await?,
            false,
        );
        let s4 = store
            .create_auth_session(&session(&u, 4, T0 + 1_000_000), T0 + 8)
            .await?;
        let listed: Vec<(Uuid, Option<String>)> = store
            .list_user_sessions(u.id)
            .await?
            .into_iter()
            .map(|s| (s.id, s.revoked_reason))
            .collect();
        check(
            b,
            "newest first, live and revoked",
            listed,
            vec![
                (s4.id, None),
                (s3.id, Some("logout".into())),
                (s2.id, None),
                (s.id, Some("refresh_token_reuse".into())),
            ],
        );
        check(
            b,
            "revoke all live",
            store
                .revoke_user_sessions(u.id, "password_change", T0 + 9)
                .await?,
            2,
        );
        check(
            b,
            "nothing left",
            store
                .revoke_user_sessions(u.id, "password_change", T0 + 9)
                .await?,
            0,
        );
        check(
            b,
            "reason kept",
            store
                .auth_session(s3.id)
                .await?
                .and_then(|s| s.revoked_reason),
            Some("logout".into()),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotation_of_one_token_rotates_once() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        // A second pool stands in for a second API node.
        let second = db.open().await?;
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "race@example.com").await?;
        for round in 0..8u32 {
            // Two racers, as two tabs refreshing at once; every other round four.
            let racers = if round % 2 == 0 { 2 } else { 4 };
            let new = session(&u, round, T0 + 86_400_000);
            let s = store.create_auth_session(&new, T0).await?;
            let tasks: Vec<_> = (0..racers)
                .map(|i| {
                    let st = if i % 2 == 0 {
                        store.clone()
                    } else {
                        second.clone()
                    };
                    let old = new.refresh_hash.clone();
                    tokio::spawn(async move {
                        st.rotate_refresh_token(
                            &old,
                            &hash_of(&format!("race-access-{round}-{i}")),
                            T0 + 1_000_000,
                            &hash_of(&format!("race-refresh-{round}-{i}")),
                            T0 + 2_000_000,
                            T0 + 10,
                        )
                        .await
                    })
                })
                .collect();
            let mut rotated = 0;
            let mut reused = 0;
            let mut revoked = 0;
            for t in tasks {
                match t.await?? {
                    RefreshOutcome::Rotated(_) => rotated += 1,
                    RefreshOutcome::Reused { session_id, .. } => {
                        check(b, "reused names the session", session_id, s.id);
                        reused += 1;
                    }
                    // A racer that arrives after the reuse revoked the session.
                    RefreshOutcome::Revoked => revoked += 1,
                    other => panic!("[{b}] unexpected {other:?}"),
                }
            }
            check(b, "exactly one rotated", rotated, 1);
            if racers == 2 {
                check(b, "the other reused", reused, 1);
            } else {
                assert!(reused >= 1, "[{b}] at least one reuse");
                check(
                    b,
                    "the rest reused or revoked",
                    reused + revoked,
                    racers - 1,
                );
            }
            check(
                b,
                "session revoked",
                store
                    .auth_session(s.id)
                    .await?
                    .and_then(|s| s.revoked_reason),
                Some("refresh_token_reuse".into()),
            );
        }
        second.close().await;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mfa_challenges_count_attempts() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "c@example.com").await?;
        let h = hash_of("challenge-1");
        store
            .create_mfa_challenge(&h, u.id, "192.0.2.7", T0 + 300_000, T0)
            .await?;
        check(
            b,
            "duplicate",
            kind(store.create_mfa_challenge(&h, u.id, "x", T0, T0).await),
            "conflict",
        );
        check(
            b,
            "unknown user",
            kind(
                store
                    .create_mfa_challenge(&hash_of("c2"), Uuid::new_v4(), "x", T0, T0)
                    .await,
            ),
            "invalid",
        );
        for n in 1..=3 {
            check(
                b,
                "open",
                store.mfa_challenge_attempt(&h, 3, T0 + n).await?,
                ChallengeCheck::Open {
                    user_id: u.id,
                    attempts: n,
                },
            );
        }
        check(
            b,
            "cap reached",
            store.mfa_challenge_attempt(&h, 3, T0 + 4).await?,
            ChallengeCheck::TooManyAttempts,
        );
        check(
            b,
            "unknown",
            store.mfa_challenge_attempt(&hash_of("nope"), 3, T0).await?,
            ChallengeCheck::Unknown,
        );

        let h2 = hash_of("challenge-2");
        store
            .create_mfa_challenge(&h2, u.id, "192.0.2.7", T0 + 300_000, T0)
            .await?;
        check(
            b,
            "consume",
            store.consume_mfa_challenge(&h2, T0 + 5).await?,
            true,
        );
        check(
            b,
            "consume once",
            store.consume_mfa_challenge(&h2, T0 + 6).await?,
            false,
        );
        check(
            b,
            "used",
            store.mfa_challenge_attempt(&h2, 3, T0 + 7).await?,
            ChallengeCheck::Used,
        );
        check(
            b,
            "consume unknown",
            store.consume_mfa_challenge(&hash_of("nope"), T0).await?,
            false,
        );

        let h3 = hash_of("challenge-3");
        store
            .create_mfa_challenge(&h3, u.id, "192.0.2.7", T0 + 100, T0)
            .await?;
        check(
            b,
            "expired",
            store.mfa_challenge_attempt(&h3, 3, T0 + 100).await?,
            ChallengeCheck::Expired,
        );

        // Concurrent guesses cannot exceed the cap.
        let h4 = hash_of("challenge-4");
        store
            .create_mfa_challenge(&h4, u.id, "192.0.2.7", T0 + 300_000, T0)
            .await?;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let s = store.clone();
                let h = h4.clone();
                tokio::spawn(async move { s.mfa_challenge_attempt(&h, 5, T0 + 1).await })
            })
            .collect();
        let mut open = HashSet::new();
        let mut refused = 0;
        for t in tasks {
            match t.await?? {
                ChallengeCheck::Open { attempts, .. } => {
                    open.insert(attempts);
                }
                ChallengeCheck::TooManyAttempts => refused += 1,
                other => panic!("[{b}] unexpected {other:?}"),
            }
        }
        check(
            b,
            "five distinct attempts",
            open,
            (1..=5).collect::<HashSet<i64>>(),
        );
        check(b, "five refused", refused, 5);

        // Deleting the user removes their challenges.
        store
            .raw_execute(&format!("DELETE FROM users WHERE id = '{}'", u.id))
            .await?;
        check(
            b,
            "cascade",
            store.mfa_challenge_attempt(&h4, 100, T0 + 2).await?,
            ChallengeCheck::Unknown,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_events_count_and_list() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let u = user(&store, &org, "victim@example.com").await?;
        let ev = |email: &str, ip: &str, success: bool, org_id: Option<Uuid>| NewLoginEvent {
            org_id,
            user_id: org_id.filter(|o| *o == org.id).map(|_| u.id),
            email: email.into(),
            source_ip: ip.into(),
            success,
            outcome: if success { "ok" } else { "bad_password" }.into(),
            detail: None,
        };
        // Failures for the victim from two addresses, spread over time.
        let mut recorded = Vec::new();
        for i in 0..6 {
            let ip = if i % 2 == 0 {
                "198.51.100.1"
            } else {
                "198.51.100.2"
            };
            recorded.push(
                store
                    .record_login_event(
                        &ev(" Victim@Example.com", ip, false, Some(org.id)),
                        T0 + i * 1_000,
                    )
                    .await?,
            );
        }
        let ok = store
            .record_login_event(
                &ev("victim@example.com", "198.51.100.1", true, Some(org.id)),
                T0 + 10_000,
            )
            .await?;
        // An unknown email from the first address, and another org's user.
        store
            .record_login_event(
                &ev("ghost@example.com", "198.51.100.1", false, None),
                T0 + 1,
            )
            .await?;
        store
            .record_login_event(
                &ev("victim@example.com", "203.0.113.9", false, Some(other.id)),
                T0 + 2,
            )
            .await?;
        check(
            b,
            "email lower-cased",
            recorded[0].email.as_str(),
            "victim@example.com",
        );
        check(b, "ts", recorded[1].ts, T0 + 1_000);
        check(b, "success flag", ok.success, true);

        check(
            b,
            "email failures, whole window",
            store
                .count_login_failures_for_email("VICTIM@example.com", T0)
                .await?,
            7,
        );
        check(
            b,
            "email failures since",
            store
                .count_login_failures_for_email("victim@example.com", T0 + 3_000)
                .await?,
            3,
        );
        check(
            b,
            "ip failures",
            store
                .count_login_failures_for_ip("198.51.100.1", T0)
                .await?,
            4,
        );
        check(
            b,
            "ip failures since",
            store
                .count_login_failures_for_ip("198.51.100.2", T0 + 2_000)
                .await?,
            2,
        );
        check(
            b,
            "no failures",
            store.count_login_failures_for_ip("192.0.2.99", T0).await?,
            0,
        );

        let all = store
            .list_login_events(
                org.id,
                &LoginEventFilter {
                    limit: 100,
                    ..LoginEventFilter::default()
                },
            )
            .await?;
        check(b, "org only", all.len(), 7);
        check(b, "newest first", all[0].clone(), ok.clone());
        assert!(
            all.windows(2).all(|w| w[0].ts >= w[1].ts),
            "[{b}] ordered by ts desc"
        );
        let filtered = |f: LoginEventFilter| {
            let s = store.clone();
            async move { Ok::<_, anyhow::Error>(s.list_login_events(org.id, &f).await?.len()) }
        };
        let base = LoginEventFilter {
            limit: 100,
            ..LoginEventFilter::default()
        };
        for (case, filter, want) in [
            (
                "successes",
                LoginEventFilter {
                    success: Some(true),
                    ..base.clone()
                },
                1,
            ),
            (
                "failures",
                LoginEventFilter {
                    success: Some(false),
                    ..base.clone()
                },
                6,
            ),
            (
                "by user",
                LoginEventFilter {
                    user_id: Some(u.id),
                    ..base.clone()
                },
                7,
            ),
            (
                "by other user",
                LoginEventFilter {
                    user_id: Some(Uuid::new_v4()),
                    ..base.clone()
                },
                0,
            ),
            (
                "by email, any case",
                LoginEventFilter {
                    email: Some("VICTIM@EXAMPLE.COM".into()),
                    ..base.clone()
                },
                7,
            ),
            (
                "since..until inclusive",
                LoginEventFilter {
                    since: Some(T0 + 1_000),
                    until: Some(T0 + 3_000),
                    ..base.clone()
                },
                3,
            ),
            (
                "before_ts exclusive",
                LoginEventFilter {
                    before_ts: Some(T0 + 2_000),
                    ..base.clone()
                },
                2,
            ),
            (
                "limit",
                LoginEventFilter {
                    limit: 3,
                    ..base.clone()
                },
                3,
            ),
            (
                "zero limit clamps to one",
                LoginEventFilter {
                    limit: 0,
                    ..base.clone()
                },
                1,
            ),
        ] {
            check(b, case, filtered(filter).await?, want);
        }
        check(
            b,
            "other org sees only its own",
            store.list_login_events(other.id, &base).await?.len(),
            1,
        );

        let long = store
            .record_login_event(
                &NewLoginEvent {
                    email: "e".repeat(1_000),
                    detail: Some("d".repeat(1_000)),
                    ..ev("x", "192.0.2.1", false, None)
                },
                T0,
            )
            .await?;
        check(b, "email capped", long.email.chars().count(), 320);
        check(
            b,
            "detail capped",
            long.detail.map(|d| d.chars().count()),
            Some(500),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_are_scoped() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let u = user(&store, &org, "k@example.com").await?;
        let new = |n: u32| NewApiKey {
            org_id: org.id,
            user_id: u.id,
            name: format!(" key {n} "),
            prefix: format!("r3k_{n:04}"),
            key_hash: hash_of(&format!("key-{n}")),
            scopes: vec!["agents:read".into(), "audit:read".into()],
            expires_at: Some(T0 + 1_000_000),
        };
        let k1 = store.create_api_key(&new(1), T0).await?;
        let k2 = store.create_api_key(&new(2), T0 + 1).await?;
        check(b, "name trimmed", k1.name.as_str(), "key 1");
        check(b, "scopes", k1.scopes.clone(), new(1).scopes);
        check(b, "never used", k1.last_used_at, None);
        check(
            b,
            "by hash",
            store.api_key_by_hash(&hash_of("key-1")).await?,
            Some(k1.clone()),
        );
        check(
            b,
            "by unknown hash",
            store.api_key_by_hash("nope").await?,
            None,
        );
        check(
            b,
            "newest first",
            store.list_api_keys(org.id).await?,
            vec![k2.clone(), k1.clone()],
        );
        check(b, "other org", store.list_api_keys(other.id).await?, vec![]);
        for (case, key, want) in [
            ("duplicate hash", new(1), "conflict"),
            (
                "unknown user",
                NewApiKey {
                    user_id: Uuid::new_v4(),
                    ..new(3)
                },
                "invalid",
            ),
            (
                "empty name",
                NewApiKey {
                    name: "  ".into(),
                    ..new(4)
                },
                "invalid",
            ),
        ] {
            check(b, case, kind(store.create_api_key(&key, T0).await), want);
        }

        store.touch_api_key(k1.id, T0 + 10, 60_000).await?;
        let used = |s: Store| async move {
            Ok::<_, anyhow::Error>(
                s.api_key_by_hash(&hash_of("key-1"))
                    .await?
                    .and_then(|k| k.last_used_at),
            )
        };
        check(b, "first touch", used(store.clone()).await?, Some(T0 + 10));
        store.touch_api_key(k1.id, T0 + 20, 60_000).await?;
        check(
            b,
            "touch too soon",
            used(store.clone()).await?,
            Some(T0 + 10),
        );
        store.touch_api_key(k1.id, T0 + 70_011, 60_000).await?;
        check(
            b,
            "touch later",
            used(store.clone()).await?,
            Some(T0 + 70_011),
        );

        check(
            b,
            "delete from other org",
            kind(store.delete_api_key(other.id, k1.id).await),
            "not_found",
        );
        store.delete_api_key(org.id, k1.id).await?;
        check(
            b,
            "deleted",
            store.api_key_by_hash(&hash_of("key-1")).await?,
            None,
        );
        check(
            b,
            "delete twice",
            kind(store.delete_api_key(org.id, k1.id).await),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_of_every_kind() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        for k in [
            GroupKind::Site,
            GroupKind::Company,
            GroupKind::Folder,
            GroupKind::Tag,
        ] {
            let case = |what: &str| format!("{k}: {what}");
            let named = |name: &str| NewGroup {
                name: name.into(),
                description: None,
                parent_id: None,
            };
            let beta = create_group(
                &store,
                k,
                org.id,
                &NewGroup {
                    description: Some("second".into()),
                    ..named(" beta ")
                },
                T0,
            )
            .await?;
            check(b, &case("kind"), beta.kind, k);
            check(b, &case("trimmed"), beta.name.as_str(), "beta");
            check(
                b,
                &case("description"),
                beta.description.as_deref(),
                Some("second"),
            );
            check(b, &case("org"), beta.org_id, org.id);
            check(b, &case("no parent"), beta.parent_id, None);
            check(b, &case("created"), beta.created_at, T0);
            check(b, &case("not updated"), beta.updated_at, None);
            let alpha = create_group(&store, k, org.id, &named("alpha"), T0).await?;
            // The same name is fine in another organisation, and for another kind.
            let theirs = create_group(&store, k, other.id, &named("alpha"), T0).await?;
            for (what, new, want) in [
                ("duplicate", named("alpha"), "conflict"),
                ("empty", named("  "), "invalid"),
                ("too long", named(&"n".repeat(201)), "invalid"),
                ("longest", named(&"n".repeat(200)), "ok"),
            ] {
                check(
                    b,
                    &case(what),
                    kind(create_group(&store, k, org.id, &new, T0).await),
                    want,
                );
            }
            let names: Vec<String> = store
                .list_groups(k, org.id)
                .await?
                .into_iter()
                .map(|g| g.name)
                .collect();
            check(
                b,
                &case("list by name"),
                names,
                vec!["alpha".to_owned(), "beta".into(), "n".repeat(200)],
            );
            check(
                b,
                &case("get"),
                store.group(k, org.id, alpha.id).await?,
                Some(alpha.clone()),
            );
            check(
                b,
                &case("get other org's"),
                store.group(k, org.id, theirs.id).await?,
                None,
            );
            let renamed = update_group(
                &store,
                k,
                org.id,
                alpha.id,
                &GroupUpdate {
                    name: Some("gamma".into()),
                    description: Some(Some("third".into())),
                    parent_id: None,
                },
                T0 + 5,
            )
            .await?;
            check(b, &case("renamed"), renamed.name.as_str(), "gamma");
            check(
                b,
                &case("described"),
                renamed.description.as_deref(),
                Some("third"),
            );
            check(b, &case("updated"), renamed.updated_at, Some(T0 + 5));
            let cleared = update_group(
                &store,
                k,
                org.id,
                alpha.id,
                &GroupUpdate {
                    description: Some(None),
                    ..GroupUpdate::default()
                },
                T0 + 6,
            )
            .await?;
            check(b, &case("description cleared"), cleared.description, None);
            check(b, &case("name kept"), cleared.name.as_str(), "gamma");
            for (what, org_id, id, update, want) in [
                (
                    "rename onto existing",
                    org.id,
                    alpha.id,
                    GroupUpdate {
                        name: Some("beta".into()),
                        ..GroupUpdate::default()
                    },
                    "conflict",
                ),
                (
                    "update other org's",
                    org.id,
                    theirs.id,
                    GroupUpdate {
                        name: Some("mine".into()),
                        ..GroupUpdate::default()
                    },
                    "not_found",
                ),
                (
                    "empty rename",
                    org.id,
                    alpha.id,
                    GroupUpdate {
                        name: Some(" ".into()),
                        ..GroupUpdate::default()
                    },
                    "invalid",
                ),
            ] {
                check(
                    b,
                    &case(what),
                    kind(update_group(&store, k, org_id, id, &update, T0).await),
                    want,
                );
            }
            if k != GroupKind::Folder {
                check(
                    b,
                    &case("parent refused"),
                    kind(
                        create_group(
                            &store,
                            k,
                            org.id,
                            &NewGroup {
                                parent_id: Some(beta.id),
                                ..named("child")
                            },
                            T0,
                        )
                        .await,
                    ),
                    "invalid",
                );
                check(
                    b,
                    &case("parent refused on update"),
                    kind(
                        update_group(
                            &store,
                            k,
                            org.id,
                            alpha.id,
                            &GroupUpdate {
                                parent_id: Some(Some(beta.id)),
                                ..GroupUpdate::default()
                            },
                            T0,
                        )
                        .await,
                    ),
                    "invalid",
                );
            }
            check(
                b,
                &case("delete other org's"),
                kind(delete_group(&store, k, org.id, theirs.id).await),
                "not_found",
            );
            delete_group(&store, k, org.id, alpha.id).await?;
            check(
                b,
                &case("deleted"),
                store.group(k, org.id, alpha.id).await?,
                None,
            );
            check(
                b,
                &case("delete twice"),
                kind(delete_group(&store, k, org.id, alpha.id).await),
                "not_found",
            );
            check(
                b,
                &case("theirs survives"),
                store.group(k, other.id, theirs.id).await?.map(|g| g.id),
                Some(theirs.id),
            );
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn folders_nest_without_cycles() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let folder = |name: &str, parent: Option<Uuid>| NewGroup {
            name: name.into(),
            description: None,
            parent_id: parent,
        };
        let f = GroupKind::Folder;
        let a = create_group(&store, f, org.id, &folder("a", None), T0).await?;
        let bf = create_group(&store, f, org.id, &folder("b", Some(a.id)), T0).await?;
        let c = create_group(&store, f, org.id, &folder("c", Some(bf.id)), T0).await?;
        let d = create_group(&store, f, org.id, &folder("d", None), T0).await?;
        let theirs = create_group(&store, f, other.id, &folder("t", None), T0).await?;
        check(b, "nested", c.parent_id, Some(bf.id));
        check(
            b,
            "parent in other org",
            invalid_message(
                create_group(&store, f, org.id, &folder("x", Some(theirs.id)), T0).await,
            ),
            "parent folder not found".to_owned(),
        );
        check(
            b,
            "parent missing",
            invalid_message(
                create_group(&store, f, org.id, &folder("x", Some(Uuid::new_v4())), T0).await,
            ),
            "parent folder not found".to_owned(),
        );
        let reparent = |id: Uuid, parent: Option<Uuid>| {
            let s = store.clone();
            async move {
                update_group(
                    &s,
                    f,
                    org.id,
                    id,
                    &GroupUpdate {
                        parent_id: Some(parent),
                        ..GroupUpdate::default()
                    },
                    T0 + 1,
                )
                .await
            }
        };
        for (case, id, parent) in [
            ("own parent", a.id, a.id),
            ("under its child", a.id, bf.id),
            ("under its grandchild", a.id, c.id),
            ("b under c", bf.id, c.id),
        ] {
            check(
                b,
                case,
                invalid_message(reparent(id, Some(parent)).await),
                "folder cycle".to_owned(),
            );
        }
        check(
            b,
            "into other org's folder",
            invalid_message(reparent(d.id, Some(theirs.id)).await),
            "parent folder not found".to_owned(),
        );
        check(
            b,
            "other org's folder cannot be moved",
            kind(reparent(theirs.id, Some(d.id)).await),
            "not_found",
        );
        let moved = reparent(a.id, Some(d.id)).await?;
        check(b, "legal move", moved.parent_id, Some(d.id));
        let c_moved = reparent(c.id, Some(a.id)).await?;
        check(b, "sibling move", c_moved.parent_id, Some(a.id));
        let top = reparent(bf.id, None).await?;
        check(b, "to the top", top.parent_id, None);

        // A folder with sub-folders cannot go; its agents are unfiled when it does.
        check(
            b,
            "has sub-folders",
            kind(delete_group(&store, f, org.id, a.id).await),
            "conflict",
        );
        let agent = enrolled(&store, org.id, "filed", T0).await?;
        move_agent(
            &store,
            org.id,
            agent.id,
            &AgentPlacement {
                folder_id: Some(Some(c.id)),
                ..AgentPlacement::default()
            },
        )
        .await?;
        delete_group(&store, f, org.id, c.id).await?;
        check(
            b,
            "agent unfiled",
            store.agent(agent.id).await?.and_then(|a| a.folder_id),
            None,
        );
        delete_group(&store, f, org.id, a.id).await?;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_are_tagged_and_placed_within_their_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let group = |k: GroupKind, org_id: Uuid, name: &str| {
            let s = store.clone();
            let name = name.to_owned();
            async move {
                create_group(
                    &s,
                    k,
                    org_id,
                    &NewGroup {
                        name,
                        description: None,
                        parent_id: None,
                    },
                    T0,
                )
                .await
            }
        };
        let web = group(GroupKind::Tag, org.id, "web").await?;
        let db_tag = group(GroupKind::Tag, org.id, "db").await?;
        let their_tag = group(GroupKind::Tag, other.id, "web").await?;
        let folder = group(GroupKind::Folder, org.id, "servers").await?;
        let site = group(GroupKind::Site, org.id, "paris").await?;
        let company = group(GroupKind::Company, org.id, "acme corp").await?;
        let their_folder = group(GroupKind::Folder, other.id, "servers").await?;
        let agent = enrolled(&store, org.id, "web-1", T0).await?;
        let theirs = enrolled(&store, other.id, "their-1", T0).await?;

        tag_agent(&store, org.id, agent.id, web.id).await?;
        tag_agent(&store, org.id, agent.id, web.id).await?;
        tag_agent(&store, org.id, agent.id, db_tag.id).await?;
        let names = |tags: Vec<reap3r_store::Group>| -> Vec<String> {
            tags.into_iter().map(|t| t.name).collect()
        };
        check(
            b,
            "tags by name",
            names(store.agent_tags(org.id, agent.id).await?),
            vec!["db".to_owned(), "web".into()],
        );
        check(
            b,
            "tags of another org's agent are not shown",
            store.agent_tags(org.id, theirs.id).await?,
            vec![],
        );
        for (case, agent_id, tag_id) in [
            ("other org's tag", agent.id, their_tag.id),
            ("other org's agent", theirs.id, web.id),
            ("missing tag", agent.id, Uuid::new_v4()),
        ] {
            check(
                b,
                case,
                kind(tag_agent(&store, org.id, agent_id, tag_id).await),
                "not_found",
            );
            check(
                b,
                case,
                kind(untag_agent(&store, org.id, agent_id, tag_id).await),
                "not_found",
            );
        }
        untag_agent(&store, org.id, agent.id, db_tag.id).await?;
        untag_agent(&store, org.id, agent.id, db_tag.id).await?;
        check(
            b,
            "untagged",
            names(store.agent_tags(org.id, agent.id).await?),
            vec!["web".to_owned()],
        );
        delete_group(&store, GroupKind::Tag, org.id, web.id).await?;
        check(
            b,
            "deleting the tag unlinks it",
            store.agent_tags(org.id, agent.id).await?,
            vec![],
        );

        let placed = move_agent(
            &store,
            org.id,
            agent.id,
            &AgentPlacement {
                folder_id: Some(Some(folder.id)),
                site_id: Some(Some(site.id)),
                company_id: Some(Some(company.id)),
            },
        )
        .await?;
        check(
            b,
            "placed",
            (placed.folder_id, placed.site_id, placed.company_id),
            (Some(folder.id), Some(site.id), Some(company.id)),
        );
        let partly = move_agent(
            &store,
            org.id,
            agent.id,
            &AgentPlacement {
                site_id: Some(None),
                ..AgentPlacement::default()
            },
        )
        .await?;
        check(
            b,
            "only the site cleared",
            (partly.folder_id, partly.site_id, partly.company_id),
            (Some(folder.id), None, Some(company.id)),
        );
        check(
            b,
            "other org's folder",
            invalid_message(
                move_agent(
                    &store,
                    org.id,
                    agent.id,
                    &AgentPlacement {
                        folder_id: Some(Some(their_folder.id)),
                        ..AgentPlacement::default()
                    },
                )
                .await,
            ),
            "folder not found".to_owned(),
        );
        check(
            b,
            "a folder id is not a site",
            invalid_message(
                move_agent(
                    &store,
                    org.id,
                    agent.id,
                    &AgentPlacement {
                        site_id: Some(Some(folder.id)),
                        ..AgentPlacement::default()
                    },
                )
                .await,
            ),
            "site not found".to_owned(),
        );
        check(
            b,
            "other org's agent",
            kind(
                move_agent(
                    &store,
                    org.id,
                    theirs.id,
                    &AgentPlacement {
                        folder_id: Some(Some(folder.id)),
                        ..AgentPlacement::default()
                    },
                )
                .await,
            ),
            "not_found",
        );
        check(
            b,
            "refusals changed nothing",
            store
                .agent(agent.id)
                .await?
                .map(|a| (a.folder_id, a.site_id)),
            Some((Some(folder.id), None)),
        );
        delete_group(&store, GroupKind::Company, org.id, company.id).await?;
        check(
            b,
            "company deleted, agent unfiled",
            store.agent(agent.id).await?.and_then(|a| a.company_id),
            None,
        );
        store.close().await;
    }
    Ok(())
}

/// Builds a varied fleet of 25 agents in `org` (plus one in `other`), three per enrolment
/// millisecond so the id tie-break matters.
async fn fleet(store: &Store, org: Uuid, other: Uuid) -> Result<Vec<Agent>> {
    let secret = format!("fleet-{}", Uuid::new_v4());
    create_enrolment_token(store, &token(org, &secret), T0).await?;
    let hello = |hostname: &str| AgentHello {
        hostname: hostname.into(),
        agent_version: "0.1.0".into(),
        capabilities: vec![],
        inventory: json!({}),
    };
    for i in 0..25i64 {
        let os = ["linux", "Windows", "macOS", "LINUX"][(i % 4) as usize];
        let hostname = match i {
            3 => "100%_load\\box".to_owned(),
            4 => "100x-load-box".to_owned(),
            _ => format!("Host-{i:02}"),
        };
        let a = enrol_agent(
            store,
            &hash_of(&secret),
            &new_agent(&hostname, os),
            T0 + i / 3,
        )
        .await?;
        match i % 5 {
            0 => {
                store
                    .mark_agent_online(a.id, "node-a", &hello(&hostname), T0 + 100)
                    .await?;
            }
            1 => {}
            2 => {
                set_agent_approval(store, a.id, AgentApproval::Pending).await?;
            }
            3 => {
                set_agent_approval(store, a.id, AgentApproval::Rejected).await?;
            }
            _ => {
                // Revoked outranks approval and connection.
                store
                    .mark_agent_online(a.id, "node-a", &hello(&hostname), T0 + 100)
                    .await?;
                set_agent_approval(store, a.id, AgentApproval::Rejected).await?;
                revoke_agent(store, a.id).await?;
            }
        }
    }
    enrolled(store, other, "Host-other", T0).await?;
    Ok(store.list_agents(Some(org)).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_pages_filters_and_stats() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let agents = fleet(&store, org.id, other.id).await?;
        check(b, "fleet", agents.len(), 25);

        // Pages of 10: 10, 10, 5, then nothing; every agent exactly once, in order.
        let mut seen = Vec::new();
        let mut cursor: Option<AgentCursor> = None;
        let mut sizes = Vec::new();
        loop {
            let page = store
                .list_agents_page(org.id, &AgentFilter::default(), cursor.as_ref(), 10)
                .await?;
            sizes.push(page.len());
            let Some(last) = page.last() else { break };
            cursor = Some(AgentCursor::from(last));
            seen.extend(page.iter().map(|a| (a.enrolled_at, a.id)));
        }
        check(b, "page sizes", sizes, vec![10, 10, 5, 0]);
        let unique: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
        check(b, "no duplicates", unique.len(), 25);
        check(
            b,
            "no misses",
            unique,
            agents.iter().map(|a| a.id).collect::<HashSet<_>>(),
        );
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "[{b}] ordered by enrolled_at"
        );

        let count = |filter: AgentFilter| {
            let s = store.clone();
            async move {
                let page = s.list_agents_page(org.id, &filter, None, 1000).await?;
                Ok::<_, anyhow::Error>(page.into_iter().map(|a| a.id).collect::<HashSet<_>>())
            }
        };
        for status in [
            AgentStatus::Online,
            AgentStatus::Offline,
            AgentStatus::Pending,
            AgentStatus::Rejected,
            AgentStatus::Revoked,
        ] {
            let want: HashSet<Uuid> = agents
                .iter()
                .filter(|a| a.status() == status)
                .map(|a| a.id)
                .collect();
            check(b, &format!("{status} count"), want.len(), 5);
            check(
                b,
                &format!("status {status}"),
                count(AgentFilter {
                    status: Some(status),
                    ..AgentFilter::default()
                })
                .await?,
                want,
            );
        }
        let linux: HashSet<Uuid> = agents
            .iter()
            .filter(|a| a.os.eq_ignore_ascii_case("linux"))
            .map(|a| a.id)
            .collect();
        check(b, "linux agents", linux.len(), 13);
        check(
            b,
            "os ignores case",
            count(AgentFilter {
                os: Some("Linux".into()),
                ..AgentFilter::default()
            })
            .await?,
            linux,
        );
        let by_host = |s: &str| -> HashSet<Uuid> {
            agents
                .iter()
                .filter(|a| a.hostname.to_lowercase().contains(&s.to_lowercase()))
                .map(|a| a.id)
                .collect()
        };
        for (case, search, want) in [
            ("case-insensitive substring", "host-1", 10),
            ("percent is literal", "100%", 1),
            ("underscore is literal", "%_l", 1),
            ("backslash is literal", "\\box", 1),
            ("no match", "zzz", 0),
        ] {
            let got = count(AgentFilter {
                search: Some(search.into()),
                ..AgentFilter::default()
            })
            .await?;
            check(b, case, got.len(), want);
            check(b, case, got, by_host(search));
        }

        // Group filters, combined with the others.
        let mk = |k: GroupKind, name: &str| {
            let s = store.clone();
            let name = name.to_owned();
            async move {
                create_group(
                    &s,
                    k,
                    org.id,
                    &NewGroup {
                        name,
                        description: None,
                        parent_id: None,
                    },
                    T0,
                )
                .await
            }
        };
        let tag = mk(GroupKind::Tag, "prod").await?;
        let folder = mk(GroupKind::Folder, "f").await?;
        let site = mk(GroupKind::Site, "s").await?;
        let company = mk(GroupKind::Company, "c").await?;
        let picked: Vec<&Agent> = agents.iter().step_by(3).collect();
        for a in &picked {
            tag_agent(&store, org.id, a.id, tag.id).await?;
            move_agent(
                &store,
                org.id,
                a.id,
                &AgentPlacement {
                    folder_id: Some(Some(folder.id)),
                    site_id: Some(Some(site.id)),
                    company_id: Some(Some(company.id)),
                },
            )
            .await?;
        }
        let picked_ids: HashSet<Uuid> = picked.iter().map(|a| a.id).collect();
        for (case, filter) in [
            (
                "tag",
                AgentFilter {
                    tag_id: Some(tag.id),
                    ..AgentFilter::default()
                },
            ),
            (
                "folder",
                AgentFilter {
                    folder_id: Some(folder.id),
                    ..AgentFilter::default()
                },
            ),
            (
                "site",
                AgentFilter {
                    site_id: Some(site.id),
                    ..AgentFilter::default()
                },
            ),
            (
                "company",
                AgentFilter {
                    company_id: Some(company.id),
                    ..AgentFilter::default()
                },
            ),
        ] {
            check(b, case, count(filter).await?, picked_ids.clone());
        }
        let online_tagged: HashSet<Uuid> = picked
            .iter()
            .filter(|a| a.status() == AgentStatus::Online)
            .map(|a| a.id)
            .collect();
        check(
            b,
            "tag and status",
            count(AgentFilter {
                tag_id: Some(tag.id),
                status: Some(AgentStatus::Online),
                ..AgentFilter::default()
            })
            .await?,
            online_tagged,
        );
        check(
            b,
            "unknown tag",
            count(AgentFilter {
                tag_id: Some(Uuid::new_v4()),
                ..AgentFilter::default()
            })
            .await?,
            HashSet::new(),
        );
        check(
            b,
            "limit clamps to 1",
            store
                .list_agents_page(org.id, &AgentFilter::default(), None, 0)
                .await?
                .len(),
            1,
        );
        check(
            b,
            "other org's page",
            store
                .list_agents_page(other.id, &AgentFilter::default(), None, 100)
                .await?
                .len(),
            1,
        );

        let stats = store.agent_stats(org.id).await?;
        check(
            b,
            "stats",
            stats,
            AgentStats {
                total: 25,
                online: 5,
                offline: 5,
                pending: 5,
                rejected: 5,
                revoked: 5,
                by_os: vec![
                    ("linux".into(), 13),
                    ("macos".into(), 6),
                    ("windows".into(), 6),
                ],
            },
        );
        check(
            b,
            "empty org stats",
            store.agent_stats(Uuid::new_v4()).await?,
            AgentStats::default(),
        );

        // agent_in_org and delete_agent respect the organisation.
        let victim = agents[0].id;
        check(
            b,
            "in org",
            store.agent_in_org(org.id, victim).await?.map(|a| a.id),
            Some(victim),
        );
        check(
            b,
            "not in other",
            store.agent_in_org(other.id, victim).await?,
            None,
        );
        check(
            b,
            "delete from other org",
            kind(delete_agent(&store, other.id, victim).await),
            "not_found",
        );
        delete_agent(&store, org.id, victim).await?;
        check(b, "deleted", store.agent(victim).await?, None);
        check(
            b,
            "delete twice",
            kind(delete_agent(&store, org.id, victim).await),
            "not_found",
        );
        check(
            b,
            "deleted agent reported",
            store.agents_no_longer_allowed(&[victim]).await?,
            vec![victim],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_tokens_are_scoped() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let t = create_enrolment_token(&store, &token(org.id, "scoped"), T0).await?;
        check(
            b,
            "in org",
            store.enrolment_token(org.id, t.id).await?,
            Some(t.clone()),
        );
        check(
            b,
            "other org",
            store.enrolment_token(other.id, t.id).await?,
            None,
        );
        let agent =
            enrol_agent(&store, &hash_of("scoped"), &new_agent("tok-1", "linux"), T0).await?;
        check(b, "enrolled with token", agent.token_id, Some(t.id));
        check(
            b,
            "delete from other org",
            kind(delete_enrolment_token(&store, other.id, t.id).await),
            "not_found",
        );
        delete_enrolment_token(&store, org.id, t.id).await?;
        check(b, "gone", store.enrolment_token(org.id, t.id).await?, None);
        let kept = store
            .agent(agent.id)
            .await?
            .ok_or_else(|| anyhow!("agent lost"))?;
        check(b, "agent keeps, token cleared", kept.token_id, None);
        check(
            b,
            "delete twice",
            kind(delete_enrolment_token(&store, org.id, t.id).await),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_filters() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let mut all = Vec::new();
        for i in 0..30i64 {
            let org_id = match i % 3 {
                0 => Some(org.id),
                1 => Some(other.id),
                _ => None,
            };
            let entry = NewAuditEntry {
                org_id,
                actor: format!("user{}@example.com", i % 2),
                action: [
                    "agent.approve",
                    "token.create",
                    "user.login",
                    "org.create",
                    "x",
                ][(i % 5) as usize]
                    .into(),
                target: (i % 4 == 0).then(|| format!("agent:{}", i % 8)),
                details: json!({ "i": i }),
            };
            all.push(store.append_audit(&entry, T0 + i).await?);
        }
        let list = |org_id: Option<Uuid>, f: AuditFilter| {
            let s = store.clone();
            async move {
                Ok::<_, anyhow::Error>(
                    s.list_audit_filtered(org_id, &f)
                        .await?
                        .into_iter()
                        .map(|r| r.seq)
                        .collect::<Vec<_>>(),
                )
            }
        };
        let want = |pred: &dyn Fn(&reap3r_store::AuditRecord) -> bool| -> Vec<i64> {
            all.iter()
                .rev()
                .filter(|r| pred(r))
                .map(|r| r.seq)
                .collect()
        };
        let base = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        check(
            b,
            "everything, newest first",
            list(None, base.clone()).await?,
            want(&|_| true),
        );
        check(
            b,
            "one org",
            list(Some(org.id), base.clone()).await?,
            want(&|r| r.org_id == Some(org.id)),
        );
        check(
            b,
            "actor",
            list(
                None,
                AuditFilter {
                    actor: Some("user1@example.com".into()),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| r.actor == "user1@example.com"),
        );
        check(
            b,
            "action in org",
            list(
                Some(org.id),
                AuditFilter {
                    action: Some("agent.approve".into()),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| r.org_id == Some(org.id) && r.action == "agent.approve"),
        );
        check(
            b,
            "target exact",
            list(
                None,
                AuditFilter {
                    target: Some("agent:0".into()),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| r.target.as_deref() == Some("agent:0")),
        );
        check(
            b,
            "actor prefix is no match",
            list(
                None,
                AuditFilter {
                    actor: Some("user1".into()),
                    ..base.clone()
                },
            )
            .await?,
            vec![],
        );
        check(
            b,
            "since..until inclusive",
            list(
                None,
                AuditFilter {
                    since: Some(T0 + 10),
                    until: Some(T0 + 12),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| (T0 + 10..=T0 + 12).contains(&r.ts)),
        );
        // Paging with before_seq.
        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let page = list(
                None,
                AuditFilter {
                    before_seq: before,
                    limit: 7,
                    ..base.clone()
                },
            )
            .await?;
            let Some(last) = page.last() else { break };
            before = Some(*last);
            pages.extend(page);
        }
        check(b, "paged", pages, want(&|_| true));
        check(
            b,
            "zero limit clamps to one",
            list(
                None,
                AuditFilter {
                    limit: 0,
                    ..base.clone()
                },
            )
            .await?
            .len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}
