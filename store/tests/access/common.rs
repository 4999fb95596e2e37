//! What the access tests share beyond `support`: the access mutations in Tx form ([`InTx`]),
//! enrolment tokens and enrolled agents, users and login sessions.

pub(crate) use std::collections::HashSet;

pub(crate) use crate::support::*;
pub(crate) use anyhow::{Result, anyhow};
pub(crate) use reap3r_store::{
    Agent, AgentApproval, AgentCursor, AgentFilter, AgentHello, AgentPlacement, AgentStats,
    AgentStatus, AuditFilter, Backend, ChallengeCheck, GroupKind, GroupUpdate, LoginEventFilter,
    NewAgent, NewApiKey, NewAuditEntry, NewAuthSession, NewEnrolmentToken, NewGroup, NewLoginEvent,
    NewUser, Org, RefreshOutcome, Store, StoreError, User, UserUpdate, Uuid,
};
pub(crate) use reap3r_store::{ApiKey, AuthSession};
pub(crate) use reap3r_testkit::TestDatabase;
pub(crate) use serde_json::json;

/// The access mutations are [`reap3r_store::Tx`] methods (an operation commits them with its
/// audit record). These tests exercise each one in a transaction of its own, committed when the
/// change took effect, through the same names the methods have.
pub(crate) trait InTx {
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

pub(crate) fn new_agent(hostname: &str, os: &str) -> NewAgent {
    NewAgent {
        hostname: hostname.into(),
        os: os.into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    }
}

pub(crate) fn token(org_id: Uuid, secret: &str) -> NewEnrolmentToken {
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

pub(crate) async fn enrolled(store: &Store, org: Uuid, hostname: &str, at: i64) -> Result<Agent> {
    let secret = format!("secret-{hostname}-{}", Uuid::new_v4());
    create_enrolment_token(store, &token(org, &secret), T0).await?;
    Ok(enrol_agent(store, &hash_of(&secret), &new_agent(hostname, "linux"), at).await?)
}

pub(crate) async fn user(store: &Store, org: &Org, email: &str) -> Result<User> {
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

pub(crate) fn session(user: &User, n: u32, refresh_expires_at: i64) -> NewAuthSession {
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
