//! Revealing a value: `secret:reveal`, the secret shared with the caller to reveal, a reason,
//! and — for a user with MFA — a step-up in the last five minutes (`POST /api/auth/step-up`);
//! otherwise 403 `step_up_required`. API keys reveal only when their scopes include
//! `secret:reveal` (they have no second factor to step up with). Every reveal is in the access
//! log and the audit chain with the version's keyed hash, never the value.

use reap3r_store::Uuid;
use serde_json::json;

use super::access::{self, not_granted};
use super::data_key::DataKey;
use super::model::{STEP_UP_WINDOW_MS, SecretValue, check_reason, secret_target};
use crate::access::Origin;
use crate::access::{Caller, Permission};
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// A revealed value and the version it is.
#[derive(Debug)]
pub struct Revealed {
    pub secret_id: Uuid,
    pub version: i64,
    pub value: SecretValue,
}

#[derive(Debug)]
pub struct RevealSecret {
    pub id: Uuid,
    /// `None`: the current version.
    pub version: Option<i64>,
    pub reason: String,
    pub origin: Origin,
}

/// The 403 a reveal without a fresh step-up gets.
pub fn step_up_required() -> DomainError {
    DomainError::Forbidden {
        code: "step_up_required",
        message: format!(
            "revealing a secret needs an MFA code verified in the last {} minutes: \
             POST /api/auth/step-up first",
            STEP_UP_WINDOW_MS / 60_000
        ),
    }
}

impl RevealSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Revealed> {
        caller.require(Permission::SecretReveal)?;
        let reason = check_reason(&self.reason)?;
        let (secret, flags, _) = access::load(domain, caller, self.id).await?;
        if !flags.reveal {
            return Err(not_granted("reveal it"));
        }
        let now = domain.now_ms();
        if !crate::access::has_fresh_step_up(domain, caller, now).await? {
            return Err(step_up_required());
        }
        let version_no = self.version.unwrap_or(secret.current_version);
        let version = domain
            .store
            .secret_version(caller.org_id, self.id, version_no)
            .await?
            .ok_or(DomainError::NotFound("secret version"))?;
        let dek = DataKey::open(&domain.vault, &secret)?;
        let bytes = dek.open_value(&version)?;
        let value = SecretValue::new(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| DomainError::unavailable("a secret value is not text"))?,
        );
        let mut tx = domain.begin().await?;
        audit::record(
            &mut tx,
            caller,
            "secret.reveal",
            Some(secret_target(self.id)),
            json!({ "version": version_no, "value_mac": version.value_mac, "reason": reason }),
            now,
        )
        .await?;
        tx.log_secret_access(
            &[reap3r_store::NewSecretAccess {
                version: Some(version_no),
                reason: Some(reason.clone()),
                ..access::entry(caller.actor(), &secret, "reveal", &self.origin)
            }],
            now,
        )
        .await?;
        // The value is handed out only once its record is durable.
        domain.commit(tx).await?;
        Ok(Revealed {
            secret_id: self.id,
            version: version_no,
            value,
        })
    }
}
