//! The shell operations: open one (the grant, the session record and its audit entry in one
//! transaction, then the relay), attach the operator's socket to it, list sessions, read a
//! recording.

use reap3r_store::{NewShellSession, ShellSession, Uuid};
use reap3r_wire::{MAX_OPERATOR_LEN, SHELL_CAPABILITY, ShellGrant, ShellResize};
use serde_json::json;

use super::ShellHub;
use super::relay::{self, ShellAttachment};
use crate::access::{Caller, Credential, Permission, has_fresh_step_up};
use crate::audit;
use crate::error::{DomainError, DomainResult};

/// The audit target of a shell session.
pub fn shell_target(id: Uuid) -> String {
    format!("shell:{id}")
}

/// The credential a session is bound to: only the same one attaches.
fn credential_of(caller: &Caller) -> String {
    match &caller.credential {
        Credential::Session { session_id } => format!("session:{session_id}"),
        Credential::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
        Credential::Cli => "cli".into(),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The 403 an open without a fresh step-up gets.
pub fn step_up_required() -> DomainError {
    DomainError::Forbidden {
        code: "step_up_required",
        message: "opening a shell needs an MFA code verified in the last 5 minutes: POST \
                  /api/auth/step-up first"
            .into(),
    }
}

/// Opens a shell on an online agent of the caller's organisation.
#[derive(Debug, Clone)]
pub struct OpenShell {
    pub agent_id: Uuid,
    pub cols: u16,
    pub rows: u16,
}

impl OpenShell {
    pub async fn run(self, hub: &ShellHub, caller: &Caller) -> DomainResult<ShellSession> {
        caller.require(Permission::ShellOpen)?;
        let size = ShellResize {
            cols: self.cols,
            rows: self.rows,
        };
        if !size.is_valid() {
            return Err(DomainError::invalid(ShellResize::OUT_OF_RANGE));
        }
        let domain = &hub.inner.domain;
        let settings = &hub.inner.settings;
        let now = domain.now_ms();
        if settings.require_step_up && !has_fresh_step_up(domain, caller, now).await? {
            return Err(step_up_required());
        }
        let agent = crate::router::reachable_agent(
            domain,
            hub.inner.router.as_ref(),
            caller.org_id,
            self.agent_id,
            SHELL_CAPABILITY,
            "the agent does not run remote shells (not reported in its hello; an agent started \
             with --shell off does not)",
        )
        .await?;
        let id = Uuid::new_v4();
        let operator = truncate(caller.actor(), MAX_OPERATOR_LEN);
        let expires_at = now + i64::from(settings.open_timeout_s) * 1000;
        let mut tx = domain.begin().await?;
        // A session older than its longest life cannot still run (a node that died with it
        // and never came back): it does not hold a place.
        let longest = i64::from(settings.open_timeout_s) + i64::from(settings.max_duration_s);
        let (per_agent, per_user) = tx
            .open_shell_counts(agent.id, caller.user_id, now - longest * 1000)
            .await?;
        if per_agent >= i64::from(settings.max_per_agent) {
            return Err(DomainError::conflict(format!(
                "the agent already has {per_agent} open shells (at most {})",
                settings.max_per_agent
            )));
        }
        if caller.user_id.is_some() && per_user >= i64::from(settings.max_per_operator) {
            return Err(DomainError::conflict(format!(
                "you already have {per_user} open shells (at most {})",
                settings.max_per_operator
            )));
        }
        let session = tx
            .create_shell_session(
                &NewShellSession {
                    id,
                    org_id: caller.org_id,
                    agent_id: agent.id,
                    user_id: caller.user_id,
                    operator: operator.clone(),
                    opened_by: credential_of(caller),
                    node_id: hub.inner.node_id.clone(),
                    cols: self.cols,
                    rows: self.rows,
                    expires_at,
                },
                now,
            )
            .await?;
        audit::record(
            &mut tx,
            caller,
            "shell.open",
            Some(shell_target(id)),
            json!({
                "agent_id": agent.id,
                "hostname": agent.hostname,
                "cols": self.cols,
                "rows": self.rows,
            }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        let grant = ShellGrant {
            session_id: id.into_bytes(),
            agent_id: agent.id.into_bytes(),
            operator,
            issued_at_ms: now as u64,
            expires_at_ms: expires_at as u64,
            max_duration_s: settings.max_duration_s,
            idle_timeout_s: settings.idle_timeout_s,
            reattach_grace_s: settings.reattach_grace_s,
            cols: self.cols,
            rows: self.rows,
        };
        let (grant, signature) = grant.sign(&hub.inner.server_key);
        relay::start(hub, session.clone(), &agent.hostname, grant, signature);
        Ok(session)
    }
}

/// Attaches the operator's socket to a session they opened (a new attach takes over from an
/// older one; a session whose socket dropped waits the reattach grace for one).
#[derive(Debug, Clone)]
pub struct AttachShell {
    pub session_id: Uuid,
}

impl AttachShell {
    pub async fn run(self, hub: &ShellHub, caller: &Caller) -> DomainResult<ShellAttachment> {
        caller.require(Permission::ShellOpen)?;
        let session = hub
            .inner
            .domain
            .store
            .shell_session(caller.org_id, self.session_id)
            .await?
            .ok_or(DomainError::NotFound("shell session"))?;
        if session.opened_by != credential_of(caller) {
            return Err(DomainError::forbidden(
                "only the login session (or API key) that opened a shell can attach to it",
            ));
        }
        relay::attach(hub, session).await
    }
}

/// Sessions of the caller's organisation (of one agent, if given), newest first.
#[derive(Debug, Clone, Default)]
pub struct ListShellSessions {
    pub agent_id: Option<Uuid>,
    pub limit: Option<i64>,
}

impl ListShellSessions {
    pub async fn run(self, hub: &ShellHub, caller: &Caller) -> DomainResult<Vec<ShellSession>> {
        caller.require(Permission::ShellView)?;
        Ok(hub
            .inner
            .domain
            .store
            .list_shell_sessions(caller.org_id, self.agent_id, self.limit.unwrap_or(100))
            .await?)
    }
}

/// One session of the caller's organisation (`shell:view`).
#[derive(Debug, Clone)]
pub struct GetShellSession {
    pub session_id: Uuid,
}

impl GetShellSession {
    pub async fn run(self, hub: &ShellHub, caller: &Caller) -> DomainResult<ShellSession> {
        caller.require(Permission::ShellView)?;
        hub.inner
            .domain
            .store
            .shell_session(caller.org_id, self.session_id)
            .await?
            .ok_or(DomainError::NotFound("shell session"))
    }
}

/// A session's recording, as one gzip file of asciicast v2.
#[derive(Debug)]
pub struct ShellRecordingFile {
    pub session: ShellSession,
    pub gzip: Vec<u8>,
}

/// Reads a recording (`shell:view`); each download is audited.
#[derive(Debug, Clone)]
pub struct ReadShellRecording {
    pub session_id: Uuid,
}

impl ReadShellRecording {
    pub async fn run(self, hub: &ShellHub, caller: &Caller) -> DomainResult<ShellRecordingFile> {
        caller.require(Permission::ShellView)?;
        let domain = &hub.inner.domain;
        let session = domain
            .store
            .shell_session(caller.org_id, self.session_id)
            .await?
            .ok_or(DomainError::NotFound("shell session"))?;
        let chunks = domain.store.shell_recording(session.id).await?;
        if chunks.is_empty() {
            return Err(DomainError::NotFound("shell recording"));
        }
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        audit::record(
            &mut tx,
            caller,
            "shell.recording_read",
            Some(shell_target(session.id)),
            json!({ "agent_id": session.agent_id }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(ShellRecordingFile {
            session,
            gzip: chunks.concat(),
        })
    }
}
