//! Who may do what with one secret, and the access log. A secret's owner may do everything;
//! org admins manage every secret of their org (read its metadata, write, share, delete) but
//! see or use a value only through a grant, like everyone else — granting oneself is possible
//! and lands in the access log and the audit chain. Role permissions (`secret:*`) come first:
//! a grant cannot give what the caller's role or API key scopes lack.

use reap3r_store::{GrantFlags, NewSecretAccess, SecretRow, Viewer};

use crate::Domain;
use crate::access::{Caller, Origin, Role};
use crate::error::{DomainError, DomainResult};

/// Whether the caller administers the org's secrets (org admins, super admins, the CLI).
pub fn administers(caller: &Caller) -> bool {
    matches!(caller.role, Role::SuperAdmin | Role::OrgAdmin)
}

/// The viewer lists are filtered for.
pub fn viewer(caller: &Caller) -> Viewer {
    Viewer {
        user_id: caller.user_id,
        role: caller.role.as_str().to_owned(),
        reads_all: administers(caller),
    }
}

/// What the caller may do with `secret`, given the grants that name them or their role.
pub fn effective(caller: &Caller, secret: &SecretRow, granted: GrantFlags) -> (GrantFlags, bool) {
    let owner = caller.user_id.is_some() && caller.user_id == secret.owner_id;
    if owner {
        let all = GrantFlags {
            read: true,
            reveal: true,
            use_in_jobs: true,
            write: true,
        };
        return (all, true);
    }
    if administers(caller) {
        let manage = GrantFlags {
            read: true,
            write: true,
            ..GrantFlags::default()
        };
        return (granted.union(manage), true);
    }
    (granted, false)
}

/// Loads the secret and what the caller may do with it; a secret the caller may not read is
/// "not found", so its existence does not leak.
pub async fn load(
    domain: &Domain,
    caller: &Caller,
    id: reap3r_store::Uuid,
) -> DomainResult<(SecretRow, GrantFlags, bool)> {
    let secret = domain
        .store
        .secret(caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound("secret"))?;
    let grants = domain
        .store
        .grants_for(caller.org_id, &[id], caller.user_id, caller.role.as_str())
        .await?;
    let (flags, manage) = effective(
        caller,
        &secret,
        grants.get(&id).copied().unwrap_or_default(),
    );
    if !flags.read {
        return Err(DomainError::NotFound("secret"));
    }
    Ok((secret, flags, manage))
}

/// A 403 for a secret the caller may read but not act on this way.
pub fn not_granted(what: &str) -> DomainError {
    DomainError::forbidden(format!("this secret is not shared with you to {what}"))
}

/// How the access log names where a request came from.
fn describe(origin: &Origin) -> Option<String> {
    let text = format!(
        "{} {}",
        origin.source_ip,
        origin.user_agent.as_deref().unwrap_or("")
    );
    let text = text.trim();
    (text != "unknown").then(|| text.chars().take(300).collect())
}

/// One access log row: `actor` did `action` to `secret`, from `origin`. Callers add the
/// version and the reason where there is one (`NewSecretAccess { version, ..entry(…) }`).
pub(super) fn entry(
    actor: String,
    secret: &SecretRow,
    action: &str,
    origin: &Origin,
) -> NewSecretAccess {
    NewSecretAccess {
        org_id: secret.org_id,
        secret_id: secret.id,
        version: None,
        actor,
        action: action.to_owned(),
        origin: describe(origin),
        reason: None,
    }
}

/// Records a read (which changes nothing else) in its own transaction.
pub(super) async fn record_read(domain: &Domain, row: NewSecretAccess) -> DomainResult<()> {
    let mut tx = domain.begin().await?;
    tx.log_secret_access(&[row], domain.now_ms()).await?;
    domain.commit(tx).await
}
