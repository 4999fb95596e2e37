//! Operator accounts in the caller's organisation: creating one (with its display name, in one
//! write), changing email or display name, suspending (which ends every session) and
//! reactivating, role changes (never to a role above the caller's), password changes and
//! resetting a lost MFA device. Nobody acts on holders of a role above their own.

use reap3r_store::{NewUser, Tx, User, UserUpdate, Uuid};
use serde_json::json;

use super::caller::Caller;
use super::login::invalid_credentials;
use super::password::{hash_off_thread, verify_off_thread};
use super::roles::Role;
use crate::audit;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult, optional_text, required_text};

/// Longest email, in characters (the API schema says the same number).
pub const MAX_EMAIL_CHARS: usize = 320;
/// Longest display name, in characters (the API schema says the same number).
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;

pub fn user_target(id: Uuid) -> String {
    format!("user:{id}")
}

/// A plausible email: trimmed, lower-cased, one `@` with text either side, no spaces, at most
/// [`MAX_EMAIL_CHARS`].
pub fn valid_email(email: &str) -> DomainResult<String> {
    let email = required_text("email", email, MAX_EMAIL_CHARS)?.to_lowercase();
    let ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(email)
    } else {
        Err(DomainError::invalid("email is not a valid address"))
    }
}

/// Nobody hands out, or acts on holders of, a role above their own.
pub fn check_grant(caller: &Caller, role: Role) -> DomainResult<()> {
    if caller.role.may_grant(role) {
        Ok(())
    } else {
        Err(DomainError::forbidden(format!(
            "a {} cannot manage a {}",
            caller.role, role
        )))
    }
}

/// The user `id` of the caller's organisation, if the caller may manage them.
pub(crate) async fn target_user(tx: &mut Tx, caller: &Caller, id: Uuid) -> DomainResult<User> {
    let user = tx
        .user_in_org(caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound("user"))?;
    if let Ok(role) = user.role.parse::<Role>() {
        check_grant(caller, role)?;
    }
    Ok(user)
}

/// Creating a user in the caller's organisation.
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub email: String,
    pub password: String,
    pub role: Role,
    pub display_name: Option<String>,
}

impl CreateUser {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<User> {
        check_grant(caller, self.role)?;
        let email = valid_email(&self.email)?;
        let display_name = optional_text(
            "display_name",
            self.display_name.as_deref(),
            MAX_DISPLAY_NAME_CHARS,
        )?;
        let password_hash = hash_off_thread(self.password).await?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let user = tx
            .create_user(
                &NewUser {
                    org_id: caller.org_id,
                    email,
                    password_hash,
                    role: self.role.as_str().into(),
                    display_name,
                },
                now,
            )
            .await?;
        audit::record(
            &mut tx,
            caller,
            "user.create",
            Some(user_target(user.id)),
            json!({ "email": user.email, "role": user.role }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(user)
    }
}

/// Changing a user's email or display name (an empty display name clears it).
#[derive(Debug, Clone)]
pub struct UpdateUser {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

impl UpdateUser {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<User> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        target_user(&mut tx, caller, self.user_id).await?;
        let update = UserUpdate {
            email: self.email.as_deref().map(valid_email).transpose()?,
            display_name: self
                .display_name
                .as_deref()
                .map(|d| optional_text("display_name", Some(d), MAX_DISPLAY_NAME_CHARS))
                .transpose()?,
            ..UserUpdate::default()
        };
        let user = tx
            .update_user(caller.org_id, self.user_id, &update, now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            "user.update",
            Some(user_target(user.id)),
            json!({ "email": user.email, "display_name": user.display_name }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(user)
    }
}

/// Suspending a user (every session ends at once) or reactivating them.
#[derive(Debug, Clone)]
pub struct SetSuspended {
    pub user_id: Uuid,
    pub suspended: bool,
}

impl SetSuspended {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<User> {
        if caller.user_id == Some(self.user_id) {
            return Err(DomainError::conflict("you cannot suspend yourself"));
        }
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        target_user(&mut tx, caller, self.user_id).await?;
        let status = if self.suspended {
            "suspended"
        } else {
            "active"
        };
        let update = UserUpdate {
            status: Some(status.into()),
            ..UserUpdate::default()
        };
        let user = tx
            .update_user(caller.org_id, self.user_id, &update, now)
            .await?;
        let action = if self.suspended {
            tx.revoke_user_sessions(self.user_id, "suspended", now)
                .await?;
            "user.suspend"
        } else {
            "user.reactivate"
        };
        audit::record(
            &mut tx,
            caller,
            action,
            Some(user_target(self.user_id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(user)
    }
}

/// Changing a user's role: never one's own, never to or from a role above the caller's.
#[derive(Debug, Clone)]
pub struct ChangeRole {
    pub user_id: Uuid,
    pub role: Role,
}

impl ChangeRole {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<User> {
        if caller.user_id == Some(self.user_id) {
            return Err(DomainError::conflict("you cannot change your own role"));
        }
        check_grant(caller, self.role)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let before = target_user(&mut tx, caller, self.user_id).await?;
        let update = UserUpdate {
            role: Some(self.role.as_str().into()),
            ..UserUpdate::default()
        };
        let user = tx
            .update_user(caller.org_id, self.user_id, &update, now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            "user.role_change",
            Some(user_target(self.user_id)),
            json!({ "from": before.role, "to": user.role }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(user)
    }
}

/// Changing one's own password, proving the current one. Other sessions end; the caller's own
/// stays.
#[derive(Debug, Clone)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

impl ChangePassword {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let user_id = caller.account()?;
        let user = domain
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(DomainError::NotFound("user"))?;
        if !verify_off_thread(self.current_password, user.password_hash).await {
            return Err(invalid_credentials());
        }
        let hash = hash_off_thread(self.new_password).await?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.set_user_password(user_id, &hash, now).await?;
        let revoked = tx
            .revoke_user_sessions_except(user_id, caller.session_id(), "password_changed", now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            "user.password_change",
            Some(user_target(user_id)),
            json!({ "revoked_sessions": revoked }),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// Resetting a user's MFA (lost phone): they log in with the password alone and set it up again.
#[derive(Debug, Clone)]
pub struct ResetMfa {
    pub user_id: Uuid,
}

impl ResetMfa {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        target_user(&mut tx, caller, self.user_id).await?;
        tx.set_user_mfa(self.user_id, None, false, now).await?;
        audit::record(
            &mut tx,
            caller,
            "user.mfa_reset",
            Some(user_target(self.user_id)),
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
    use crate::access::Credential;

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(valid_email(" Ops@Example.COM ").unwrap(), "ops@example.com");
        for bad in ["", "no-at", "@x", "x@", "a@b@c", "a b@c"] {
            assert!(valid_email(bad).is_err(), "{bad}");
        }
        assert!(valid_email(&format!("{}@x", "a".repeat(MAX_EMAIL_CHARS))).is_err());
    }

    #[test]
    fn grants_never_exceed_the_callers_role() {
        let mut caller = Caller::cli(Uuid::nil());
        caller.role = Role::OrgAdmin;
        caller.credential = Credential::Session {
            session_id: Uuid::nil(),
        };
        assert!(check_grant(&caller, Role::Technician).is_ok());
        assert!(check_grant(&caller, Role::OrgAdmin).is_ok());
        assert!(matches!(
            check_grant(&caller, Role::SuperAdmin),
            Err(DomainError::Forbidden { .. })
        ));
    }
}
