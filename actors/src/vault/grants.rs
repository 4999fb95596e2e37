//! Sharing: grants on a secret to a user of its org or to a role (read its metadata, reveal,
//! use in jobs, write). Only the secret's owner or an org admin shares and unshares; grants
//! never give more than the grantee's role permits (the role check comes first at every use).

use reap3r_store::{GrantFlags, NewSecretGrant, SecretGrant, Uuid};
use serde_json::json;

use super::access;
use super::model::{MAX_GRANTS_PER_SECRET, secret_target};
use crate::access::Origin;
use crate::access::{Caller, Permission, Role};
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// Whom a grant names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSubject {
    User(Uuid),
    Role(Role),
}

impl GrantSubject {
    fn parts(&self) -> (&'static str, String) {
        match self {
            Self::User(id) => ("user", id.to_string()),
            Self::Role(role) => ("role", role.as_str().to_owned()),
        }
    }
}

#[derive(Debug)]
pub struct ShareSecret {
    pub id: Uuid,
    pub subject: GrantSubject,
    pub flags: GrantFlags,
    pub origin: Origin,
}

fn must_manage(manage: bool) -> DomainResult<()> {
    if manage {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            "only the secret's owner or an org admin may change who it is shared with",
        ))
    }
}

impl ShareSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<SecretGrant> {
        caller.require(Permission::SecretWrite)?;
        let (secret, _, manage) = access::load(domain, caller, self.id).await?;
        must_manage(manage)?;
        let mut flags = self.flags;
        if !(flags.read || flags.reveal || flags.use_in_jobs || flags.write) {
            return Err(DomainError::invalid(
                "a grant allows at least one of read, reveal, use, write",
            ));
        }
        // Acting on a secret needs seeing it.
        flags.read = true;
        if let GrantSubject::User(user) = &self.subject
            && domain
                .store
                .user_in_org(caller.org_id, *user)
                .await?
                .is_none()
        {
            return Err(DomainError::invalid(
                "subject: no such user in this organisation",
            ));
        }
        let grants = domain.store.secret_grants(caller.org_id, self.id).await?;
        let (kind, subject) = self.subject.parts();
        let replaces = grants
            .iter()
            .any(|g| g.subject_kind == kind && g.subject == subject);
        if !replaces && grants.len() >= MAX_GRANTS_PER_SECRET {
            return Err(DomainError::invalid(format!(
                "a secret has at most {MAX_GRANTS_PER_SECRET} grants"
            )));
        }
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let grant = tx
            .put_secret_grant(
                &NewSecretGrant {
                    org_id: caller.org_id,
                    secret_id: self.id,
                    subject_kind: kind.to_owned(),
                    subject: subject.clone(),
                    flags,
                    created_by: caller.actor(),
                },
                now,
            )
            .await
            .map_err(|e| DomainError::from_store(e, "secret"))?;
        audit::record(
            &mut tx,
            caller,
            "secret.share",
            Some(secret_target(self.id)),
            json!({
                "grant_id": grant.id,
                "subject_kind": kind,
                "subject": subject,
                "read": flags.read,
                "reveal": flags.reveal,
                "use": flags.use_in_jobs,
                "write": flags.write,
            }),
            now,
        )
        .await?;
        tx.log_secret_access(
            &[access::entry(
                caller.actor(),
                &secret,
                "share",
                &self.origin,
            )],
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(grant)
    }
}

#[derive(Debug)]
pub struct UnshareSecret {
    pub grant_id: Uuid,
    pub origin: Origin,
}

impl UnshareSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        caller.require(Permission::SecretWrite)?;
        let grant = domain
            .store
            .secret_grant(caller.org_id, self.grant_id)
            .await?
            .ok_or(DomainError::NotFound("grant"))?;
        let (secret, _, manage) = access::load(domain, caller, grant.secret_id).await?;
        must_manage(manage)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_secret_grant(caller.org_id, self.grant_id)
            .await
            .map_err(|e| DomainError::from_store(e, "grant"))?;
        audit::record(
            &mut tx,
            caller,
            "secret.unshare",
            Some(secret_target(grant.secret_id)),
            json!({ "grant_id": grant.id, "subject_kind": grant.subject_kind, "subject": grant.subject }),
            now,
        )
        .await?;
        tx.log_secret_access(
            &[access::entry(
                caller.actor(),
                &secret,
                "unshare",
                &self.origin,
            )],
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// The grants on a secret (anyone who may read it sees who else may).
#[derive(Debug)]
pub struct ListGrants {
    pub id: Uuid,
}

impl ListGrants {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<SecretGrant>> {
        caller.require(Permission::SecretRead)?;
        access::load(domain, caller, self.id).await?;
        Ok(domain.store.secret_grants(caller.org_id, self.id).await?)
    }
}
