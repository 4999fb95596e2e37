//! Enrolment tokens: create (the secret is returned once, with the commands that enrol an agent
//! with this server's pinned identity), list, revoke and delete.

use reap3r_store::{EnrolmentToken, NewEnrolmentToken, Uuid};
use serde_json::json;

use super::hash_enrolment_token;
use crate::Domain;
use crate::access::{Caller, Role};
use crate::audit;
use crate::error::{DomainError, DomainResult, optional_text};

/// Shortest token lifetime, in seconds.
pub const MIN_TOKEN_LIFETIME_S: i64 = 60;
/// Longest token lifetime, in seconds: one year.
pub const MAX_TOKEN_LIFETIME_S: i64 = 365 * 24 * 3600;
/// Lifetime of a token created without one, in seconds: one day.
pub const DEFAULT_TOKEN_LIFETIME_S: i64 = 24 * 3600;
/// Most agents one token may enrol.
pub const MAX_TOKEN_USES: i64 = 1_000_000;
/// Longest token label, in characters.
pub const MAX_TOKEN_LABEL_CHARS: usize = 200;
/// Placeholder for the secret in commands shown after creation (the secret is not stored).
pub const TOKEN_PLACEHOLDER: &str = "$REAP3R_ENROLL_TOKEN";
/// Prefix of every token secret, so one is recognisable in a shell history or a log.
const SECRET_PREFIX: &str = "r3t_";

/// What an agent needs to enrol with this server; shown with enrolment tokens.
#[derive(Debug, Clone, Default)]
pub struct EnrolmentInfo {
    /// `host:port` agents dial.
    pub server_addr: String,
    /// SHA-256 of the server certificate, hex.
    pub cert_fingerprint: String,
    /// Ed25519 server key, hex.
    pub server_key: String,
}

/// The commands that enrol an agent with a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolCommands {
    /// `host:port` agents dial.
    pub server: String,
    /// SHA-256 of the server certificate the agent pins.
    pub fingerprint: String,
    /// Ed25519 server key the agent pins.
    pub server_key: String,
    /// Linux/macOS shell command.
    pub unix: String,
    /// Windows PowerShell command.
    pub windows: String,
}

impl EnrolCommands {
    pub fn new(info: &EnrolmentInfo, secret: &str) -> Self {
        let args = format!(
            "enroll --server {} --token {secret} --fingerprint {} --server-key {}",
            info.server_addr, info.cert_fingerprint, info.server_key
        );
        Self {
            server: info.server_addr.clone(),
            fingerprint: info.cert_fingerprint.clone(),
            server_key: info.server_key.clone(),
            unix: format!("reap3r-agent {args} --data-dir /var/lib/reap3r-agent"),
            windows: format!(
                "& 'C:\\Program Files\\Reap3r\\reap3r-agent.exe' {args} --data-dir 'C:\\ProgramData\\Reap3r'"
            ),
        }
    }
}

/// How an enrolment token is named in the audit log.
pub fn token_target(id: Uuid) -> String {
    format!("enrollment_token:{id}")
}

/// Creates a token in the caller's organisation.
#[derive(Debug, Clone, Default)]
pub struct CreateEnrolmentToken {
    pub label: Option<String>,
    /// Lifetime in seconds, [`MIN_TOKEN_LIFETIME_S`] to [`MAX_TOKEN_LIFETIME_S`]; default
    /// [`DEFAULT_TOKEN_LIFETIME_S`].
    pub lifetime_s: Option<i64>,
    /// How many agents may enrol with it, 1 to [`MAX_TOKEN_USES`]; unlimited when absent.
    pub max_uses: Option<i64>,
    /// Agents enrolled with it wait for an operator's approval.
    pub require_approval: bool,
}

/// A new token, its secret (shown only now) and the commands that enrol an agent with it.
#[derive(Debug, Clone)]
pub struct CreatedEnrolmentToken {
    pub token: EnrolmentToken,
    pub secret: String,
    pub commands: EnrolCommands,
}

impl CreateEnrolmentToken {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        info: &EnrolmentInfo,
    ) -> DomainResult<CreatedEnrolmentToken> {
        let lifetime = self.lifetime_s.unwrap_or(DEFAULT_TOKEN_LIFETIME_S);
        if !(MIN_TOKEN_LIFETIME_S..=MAX_TOKEN_LIFETIME_S).contains(&lifetime) {
            return Err(DomainError::invalid(format!(
                "expires_in_s must be between {MIN_TOKEN_LIFETIME_S} and {MAX_TOKEN_LIFETIME_S}"
            )));
        }
        if self
            .max_uses
            .is_some_and(|m| !(1..=MAX_TOKEN_USES).contains(&m))
        {
            return Err(DomainError::invalid(format!(
                "max_uses must be between 1 and {MAX_TOKEN_USES}"
            )));
        }
        let label = optional_text("label", self.label.as_deref(), MAX_TOKEN_LABEL_CHARS)?;
        let secret = new_secret()?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let token = tx
            .create_enrolment_token(
                &NewEnrolmentToken {
                    org_id: caller.org_id,
                    token_hash: hash_enrolment_token(&secret),
                    label,
                    expires_at: Some(now + lifetime * 1000),
                    max_uses: self.max_uses,
                    require_approval: self.require_approval,
                    created_by: Some(caller.actor()),
                },
                now,
            )
            .await?;
        audit::record(
            &mut tx,
            caller,
            "enrollment_token.create",
            Some(token_target(token.id)),
            json!({
                "max_uses": token.max_uses,
                "expires_at": token.expires_at,
                "require_approval": token.require_approval,
            }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(CreatedEnrolmentToken {
            commands: EnrolCommands::new(info, &secret),
            secret,
            token,
        })
    }
}

/// A fresh 256-bit secret.
fn new_secret() -> DomainResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|_| DomainError::unavailable("the system random source failed"))?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// The tokens of the caller's organisation (never their secrets), oldest first; with
/// `all_orgs`, every organisation's (super admins only).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListEnrolmentTokens {
    pub all_orgs: bool,
}

impl ListEnrolmentTokens {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<EnrolmentToken>> {
        let org = if self.all_orgs {
            if caller.role != Role::SuperAdmin {
                return Err(DomainError::forbidden(
                    "only super admins read every organisation",
                ));
            }
            None
        } else {
            Some(caller.org_id)
        };
        Ok(domain.store.list_enrolment_tokens(org).await?)
    }
}

/// The enrol commands for a token of the caller's organisation, with [`TOKEN_PLACEHOLDER`]
/// where the secret goes (it is shown only at creation).
pub async fn enrolment_commands(
    domain: &Domain,
    caller: &Caller,
    id: Uuid,
    info: &EnrolmentInfo,
) -> DomainResult<EnrolCommands> {
    domain
        .store
        .enrolment_token(caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound("enrolment token"))?;
    Ok(EnrolCommands::new(info, TOKEN_PLACEHOLDER))
}

/// Revokes a token: no more agents enrol with it; enrolled ones are unaffected.
#[derive(Debug, Clone, Copy)]
pub struct RevokeEnrolmentToken {
    pub id: Uuid,
}

impl RevokeEnrolmentToken {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<EnrolmentToken> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let token = tx
            .revoke_enrolment_token(caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, "enrolment token"))?;
        audit::record(
            &mut tx,
            caller,
            "enrollment_token.revoke",
            Some(token_target(token.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(token)
    }
}

/// Deletes a token; agents enrolled with it stay enrolled.
#[derive(Debug, Clone, Copy)]
pub struct DeleteEnrolmentToken {
    pub id: Uuid,
}

impl DeleteEnrolmentToken {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_enrolment_token(caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, "enrolment token"))?;
        audit::record(
            &mut tx,
            caller,
            "enrollment_token.delete",
            Some(token_target(self.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_the_pins_and_the_secret() {
        let info = EnrolmentInfo {
            server_addr: "cp.example:4433".into(),
            cert_fingerprint: "ab".repeat(32),
            server_key: "cd".repeat(32),
        };
        let c = EnrolCommands::new(&info, TOKEN_PLACEHOLDER);
        assert!(
            c.unix
                .starts_with("reap3r-agent enroll --server cp.example:4433 --token $REAP3R")
        );
        assert!(c.unix.contains(&info.cert_fingerprint) && c.windows.contains(&info.server_key));
    }

    #[test]
    fn secrets_are_prefixed_and_distinct() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(a, b);
    }
}
