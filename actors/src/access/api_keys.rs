//! API keys for integrations: scoped to permissions the creator holds, optionally expiring,
//! shown once and stored as a hash. A key acts as its owner, narrowed to its scopes, and only in
//! its organisation.

use reap3r_store::{ApiKey, NewApiKey, Uuid};
use serde_json::json;

use super::caller::Caller;
use super::roles::Permission;
use super::secrets::{API_KEY_PREFIX, hash_secret, new_secret};
use crate::audit;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult, required_text};

/// Longest key name, in characters (the API schema says the same number).
pub const MAX_API_KEY_NAME_CHARS: usize = 200;
/// Most scopes one key carries (the API schema says the same number).
pub const MAX_API_KEY_SCOPES: usize = 64;
/// Shortest key lifetime, in seconds (the API schema says the same number).
pub const MIN_API_KEY_LIFETIME_S: i64 = 60;
/// Longest key lifetime: two years, in seconds (the API schema says the same number).
pub const MAX_API_KEY_LIFETIME_S: i64 = 2 * 365 * 24 * 3600;
/// Characters of the key kept in the clear, so people can tell their keys apart.
const SHOWN_PREFIX_CHARS: usize = API_KEY_PREFIX.len() + 8;

pub fn api_key_target(id: Uuid) -> String {
    format!("api_key:{id}")
}

/// The scopes a caller may give a key: known permissions the caller holds, sorted, no repeats.
pub fn key_scopes(caller: &Caller, requested: &[String]) -> DomainResult<Vec<String>> {
    if requested.is_empty() {
        return Err(DomainError::invalid(
            "scopes must name at least one permission",
        ));
    }
    if requested.len() > MAX_API_KEY_SCOPES {
        return Err(DomainError::invalid(format!(
            "a key carries at most {MAX_API_KEY_SCOPES} scopes"
        )));
    }
    let mut scopes = Vec::with_capacity(requested.len());
    for s in requested {
        let p: Permission = s
            .trim()
            .parse()
            .map_err(|_| DomainError::invalid(format!("unknown permission {s:?}")))?;
        if !caller.allows(p) {
            return Err(DomainError::forbidden(format!(
                "you cannot give a key {p}, which you do not hold"
            )));
        }
        scopes.push(p.as_str().to_owned());
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// A new key and its secret, shown only now.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Creating a key that acts as the caller with the given scopes.
#[derive(Debug, Clone)]
pub struct CreateApiKey {
    pub name: String,
    /// Permission names, e.g. `agent:list`.
    pub scopes: Vec<String>,
    /// Lifetime in seconds; never expires when absent.
    pub expires_in_s: Option<i64>,
}

impl CreateApiKey {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<CreatedApiKey> {
        if caller.session_id().is_none() {
            return Err(DomainError::forbidden(
                "API keys are created from a login session",
            ));
        }
        let name = required_text("name", &self.name, MAX_API_KEY_NAME_CHARS)?;
        let scopes = key_scopes(caller, &self.scopes)?;
        let now = domain.now_ms();
        let expires_at = match self.expires_in_s {
            None => None,
            Some(s) if (MIN_API_KEY_LIFETIME_S..=MAX_API_KEY_LIFETIME_S).contains(&s) => {
                Some(now + s * 1000)
            }
            Some(_) => {
                return Err(DomainError::invalid(format!(
                    "expires_in_s must be between {MIN_API_KEY_LIFETIME_S} and \
                     {MAX_API_KEY_LIFETIME_S}"
                )));
            }
        };
        let user_id = caller.account()?;
        let secret = new_secret(API_KEY_PREFIX)?;
        let mut tx = domain.begin().await?;
        let key = tx
            .create_api_key(
                &NewApiKey {
                    org_id: caller.org_id,
                    user_id,
                    name,
                    prefix: secret.chars().take(SHOWN_PREFIX_CHARS).collect(),
                    key_hash: hash_secret(&secret),
                    scopes,
                    expires_at,
                },
                now,
            )
            .await?;
        audit::record(
            &mut tx,
            caller,
            "api_key.create",
            Some(api_key_target(key.id)),
            json!({ "name": key.name, "scopes": key.scopes, "expires_at": key.expires_at }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(CreatedApiKey { key, secret })
    }
}

/// Deleting a key of the caller's organisation; it stops working on the next request.
#[derive(Debug, Clone)]
pub struct DeleteApiKey {
    pub key_id: Uuid,
}

impl DeleteApiKey {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_api_key(caller.org_id, self.key_id)
            .await
            .map_err(|e| DomainError::from_store(e, "API key"))?;
        audit::record(
            &mut tx,
            caller,
            "api_key.delete",
            Some(api_key_target(self.key_id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}
