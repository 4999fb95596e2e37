//! The secret operations: create, change (metadata, or a new value = a new version), delete,
//! read, list, versions, the dashboard counts and the expiring list. Lists and reads never
//! carry a value; every change commits with its audit record and its access log row.

use reap3r_store::{
    NewSecret, NewSecretAccess, NewSecretVersion, SecretFilter, SecretMetaUpdate, SecretRow,
    SecretVersionRow, Uuid, VaultCounts,
};
use serde_json::json;

use super::access::{self, effective, not_granted, viewer};
use super::data_key::DataKey;
use super::model::{
    DEFAULT_EXPIRING_DAYS, DEFAULT_SECRET_PAGE, MAX_EXPIRING_DAYS, SecretKind, SecretValue,
    SecretView, check_name, check_notes, check_tags, check_value, secret_target,
};
use super::rotation::{RotationPolicy, policy_details};
use super::strength;
use crate::access::Origin;
use crate::access::{Caller, Permission};
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

const DAY_MS: i64 = 86_400_000;

/// A new secret, its first value and its metadata.
#[derive(Debug)]
pub struct CreateSecret {
    pub name: String,
    pub kind: SecretKind,
    pub value: SecretValue,
    pub folder_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub expires_at: Option<i64>,
    pub rotation: Option<RotationPolicy>,
    pub origin: Origin,
}

impl CreateSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<SecretView> {
        caller.require(Permission::SecretWrite)?;
        let name = check_name(&self.name)?;
        check_value(self.kind, &self.value)?;
        let tags = check_tags(self.tags)?;
        let notes = check_notes(self.notes)?;
        if let Some(p) = &self.rotation {
            p.check(self.kind)?;
        }
        let now = domain.now_ms();
        let id = Uuid::now_v7();
        let dek = DataKey::generate()?;
        let strength = strength::score(self.kind, &self.value);
        let mut tx = domain.begin().await?;
        if let Some(folder) = self.folder_id {
            check_folder(domain, caller.org_id, folder).await?;
        }
        let (dek_sealed, kek_id) = dek
            .seal(&domain.vault, &mut tx, caller.org_id, id, now)
            .await?;
        let value_mac = dek.value_mac(self.value.as_bytes());
        let first = NewSecretVersion {
            ciphertext: dek.seal_value(caller.org_id, id, 1, self.value.as_bytes())?,
            value_mac: value_mac.clone(),
            size: len_i64(&self.value),
            strength,
            created_by: caller.actor(),
        };
        let new = NewSecret {
            id,
            org_id: caller.org_id,
            name,
            kind: self.kind.as_str().to_owned(),
            folder_id: self.folder_id,
            tags,
            notes,
            expires_at: self.expires_at,
            dek_sealed,
            kek_id,
            rotation: self.rotation.as_ref().map(RotationPolicy::to_row),
            next_rotation_at: self.rotation.as_ref().map(|p| p.next_after(now)),
            owner_id: caller.user_id,
            created_by: caller.actor(),
        };
        let row = tx
            .create_secret(&new, &first, strength, now)
            .await
            .map_err(|e| DomainError::from_store(e, "secret"))?;
        audit::record(
            &mut tx,
            caller,
            "secret.create",
            Some(secret_target(id)),
            json!({
                "name": row.name,
                "kind": row.kind,
                "version": 1,
                "value_mac": value_mac,
                "rotation": policy_details(self.rotation.as_ref()),
            }),
            now,
        )
        .await?;
        tx.log_secret_access(
            &[NewSecretAccess {
                version: Some(1),
                ..access::entry(caller.actor(), &row, "create", &self.origin)
            }],
            now,
        )
        .await?;
        domain.commit(tx).await?;
        let (access, manage) = effective(caller, &row, Default::default());
        Ok(SecretView {
            row,
            access,
            manage,
        })
    }
}

async fn check_folder(domain: &Domain, org_id: Uuid, folder: Uuid) -> DomainResult<()> {
    let found = domain
        .store
        .group(reap3r_store::GroupKind::Folder, org_id, folder)
        .await?;
    if found.is_none() {
        return Err(DomainError::invalid(
            "folder_id: no such folder in this organisation",
        ));
    }
    Ok(())
}

fn len_i64(value: &str) -> i64 {
    i64::try_from(value.len()).unwrap_or(i64::MAX)
}

/// Writes `value` as the secret's next version (a change, a rotation), with its audit record
/// and access log row. `actor` is the caller's, or the system's for rotations by policy.
pub(super) async fn write_version(
    domain: &Domain,
    actor: &str,
    secret: &SecretRow,
    value: &SecretValue,
    action: &str,
    origin: &Origin,
) -> DomainResult<SecretRow> {
    let kind: SecretKind = secret.kind.parse()?;
    check_value(kind, value)?;
    let now = domain.now_ms();
    let dek = DataKey::open(&domain.vault, secret)?;
    let version = secret.current_version + 1;
    let strength = strength::score(kind, value);
    let value_mac = dek.value_mac(value.as_bytes());
    let v = NewSecretVersion {
        ciphertext: dek.seal_value(secret.org_id, secret.id, version, value.as_bytes())?,
        value_mac: value_mac.clone(),
        size: len_i64(value),
        strength,
        created_by: actor.to_owned(),
    };
    let next_rotation = match &secret.rotation {
        Some(row) => Some(RotationPolicy::from_row(row)?.next_after(now)),
        None => None,
    };
    let mut tx = domain.begin().await?;
    let row = tx
        .add_secret_version(secret, &v, next_rotation, now)
        .await
        .map_err(|e| DomainError::from_store(e, "secret"))?;
    audit::record_as(
        &mut tx,
        Some(secret.org_id),
        actor,
        &format!("secret.{action}"),
        Some(secret_target(secret.id)),
        json!({ "version": version, "value_mac": value_mac }),
        now,
    )
    .await?;
    let logged = NewSecretAccess {
        version: Some(version),
        ..access::entry(actor.to_owned(), secret, action, origin)
    };
    tx.log_secret_access(&[logged], now).await?;
    domain.commit(tx).await?;
    Ok(row)
}

/// A change to a secret: `Some` fields replace (an empty string clears notes; `Some(None)`
/// clears a folder, an expiry or a policy); a value makes a new version.
#[derive(Debug, Default)]
pub struct UpdateSecret {
    pub id: Uuid,
    pub name: Option<String>,
    pub folder_id: Option<Option<Uuid>>,
    pub tags: Option<Vec<String>>,
    pub notes: Option<String>,
    pub expires_at: Option<Option<i64>>,
    pub rotation: Option<Option<RotationPolicy>>,
    pub value: Option<SecretValue>,
    pub origin: Origin,
}

impl UpdateSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<SecretView> {
        caller.require(Permission::SecretWrite)?;
        let (secret, flags, manage) = access::load(domain, caller, self.id).await?;
        if !flags.write {
            return Err(not_granted("change it"));
        }
        let kind: SecretKind = secret.kind.parse()?;
        let meta_changed = self.name.is_some()
            || self.folder_id.is_some()
            || self.tags.is_some()
            || self.notes.is_some()
            || self.expires_at.is_some()
            || self.rotation.is_some();
        let mut current = secret.clone();
        if meta_changed {
            let now = domain.now_ms();
            let rotation = match self.rotation {
                Some(Some(p)) => {
                    p.check(kind)?;
                    Some(p)
                }
                Some(None) => None,
                None => match &secret.rotation {
                    Some(row) => Some(RotationPolicy::from_row(row)?),
                    None => None,
                },
            };
            let base = secret.last_rotated_at.unwrap_or(secret.created_at);
            let update = SecretMetaUpdate {
                name: match &self.name {
                    Some(n) => check_name(n)?,
                    None => secret.name.clone(),
                },
                folder_id: self.folder_id.unwrap_or(secret.folder_id),
                tags: match self.tags {
                    Some(t) => check_tags(t)?,
                    None => secret.tags.clone(),
                },
                notes: match self.notes {
                    Some(n) => check_notes(Some(n))?,
                    None => secret.notes.clone(),
                },
                expires_at: self.expires_at.unwrap_or(secret.expires_at),
                rotation: rotation.as_ref().map(RotationPolicy::to_row),
                next_rotation_at: rotation.as_ref().map(|p| p.next_after(base)),
            };
            if let Some(Some(folder)) = self.folder_id {
                check_folder(domain, caller.org_id, folder).await?;
            }
            let mut tx = domain.begin().await?;
            current = tx
                .update_secret_meta(caller.org_id, self.id, &update, now)
                .await
                .map_err(|e| DomainError::from_store(e, "secret"))?;
            audit::record(
                &mut tx,
                caller,
                "secret.update",
                Some(secret_target(self.id)),
                json!({
                    "name": update.name,
                    "folder_id": update.folder_id,
                    "tags": update.tags,
                    "expires_at": update.expires_at,
                    "rotation": policy_details(rotation.as_ref()),
                }),
                now,
            )
            .await?;
            tx.log_secret_access(
                &[access::entry(
                    caller.actor(),
                    &current,
                    "update",
                    &self.origin,
                )],
                now,
            )
            .await?;
            domain.commit(tx).await?;
        }
        if let Some(value) = self.value {
            current = write_version(
                domain,
                &caller.actor(),
                &current,
                &value,
                "version",
                &self.origin,
            )
            .await?;
        }
        Ok(SecretView {
            row: current,
            access: flags,
            manage,
        })
    }
}

/// Deletes a secret with its versions and grants (its access log stays): its owner or an
/// org admin, with `secret:delete`.
#[derive(Debug)]
pub struct DeleteSecret {
    pub id: Uuid,
    pub origin: Origin,
}

impl DeleteSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        caller.require(Permission::SecretDelete)?;
        let (secret, _, manage) = access::load(domain, caller, self.id).await?;
        if !manage {
            return Err(DomainError::forbidden(
                "only the secret's owner or an org admin may delete it",
            ));
        }
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_secret(caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, "secret"))?;
        audit::record(
            &mut tx,
            caller,
            "secret.delete",
            Some(secret_target(self.id)),
            json!({ "name": secret.name, "versions": secret.current_version }),
            now,
        )
        .await?;
        tx.log_secret_access(
            &[access::entry(
                caller.actor(),
                &secret,
                "delete",
                &self.origin,
            )],
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// One secret's metadata (logged as a `read`).
#[derive(Debug)]
pub struct GetSecret {
    pub id: Uuid,
    pub origin: Origin,
}

impl GetSecret {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<SecretView> {
        caller.require(Permission::SecretRead)?;
        let (row, access, manage) = access::load(domain, caller, self.id).await?;
        access::record_read(
            domain,
            access::entry(caller.actor(), &row, "read", &self.origin),
        )
        .await?;
        Ok(SecretView {
            row,
            access,
            manage,
        })
    }
}

/// A page of the secrets the caller may read, by name (or, with `expiring_within_days`, those
/// expiring within that many days, soonest first). Each listed secret gets a `list` row in its
/// access log, and the list one audit record naming them.
#[derive(Debug, Default)]
pub struct ListSecrets {
    pub kind: Option<SecretKind>,
    pub folder_id: Option<Uuid>,
    pub tag: Option<String>,
    pub text: Option<String>,
    pub expiring_within_days: Option<i64>,
    pub after_name: Option<String>,
    pub limit: Option<i64>,
    pub origin: Origin,
}

impl ListSecrets {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<SecretView>> {
        caller.require(Permission::SecretList)?;
        let now = domain.now_ms();
        let expires_before = match self.expiring_within_days {
            Some(d) if !(0..=MAX_EXPIRING_DAYS).contains(&d) => {
                return Err(DomainError::invalid(format!(
                    "within_days: 0 to {MAX_EXPIRING_DAYS}"
                )));
            }
            Some(d) => Some(now.saturating_add(d.saturating_mul(DAY_MS))),
            None => None,
        };
        let filter = SecretFilter {
            kind: self.kind.map(|k| k.as_str().to_owned()),
            folder_id: self.folder_id,
            tag: self.tag,
            text: self.text,
            expires_before,
            after_name: self.after_name,
            limit: self.limit.unwrap_or(DEFAULT_SECRET_PAGE),
        };
        let rows = domain
            .store
            .list_secrets(caller.org_id, &viewer(caller), &filter)
            .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let grants = domain
            .store
            .grants_for(caller.org_id, &ids, caller.user_id, caller.role.as_str())
            .await?;
        if !rows.is_empty() {
            let mut tx = domain.begin().await?;
            let entries: Vec<NewSecretAccess> = rows
                .iter()
                .map(|r| access::entry(caller.actor(), r, "list", &self.origin))
                .collect();
            tx.log_secret_access(&entries, now).await?;
            audit::record(
                &mut tx,
                caller,
                "secret.list",
                None,
                json!({ "secrets": ids }),
                now,
            )
            .await?;
            domain.commit(tx).await?;
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let granted = grants.get(&row.id).copied().unwrap_or_default();
                let (access, manage) = effective(caller, &row, granted);
                SecretView {
                    row,
                    access,
                    manage,
                }
            })
            .collect())
    }
}

/// The versions of a secret, newest first (metadata only; logged as `versions`).
#[derive(Debug)]
pub struct ListVersions {
    pub id: Uuid,
    pub origin: Origin,
}

impl ListVersions {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
    ) -> DomainResult<Vec<SecretVersionRow>> {
        caller.require(Permission::SecretRead)?;
        let (row, _, _) = access::load(domain, caller, self.id).await?;
        let versions = domain.store.secret_versions(caller.org_id, self.id).await?;
        access::record_read(
            domain,
            access::entry(caller.actor(), &row, "versions", &self.origin),
        )
        .await?;
        Ok(versions)
    }
}

/// Dashboard figures over what the caller may read: total, expiring within
/// [`DEFAULT_EXPIRING_DAYS`], expired, weak passwords, rotations due.
pub async fn vault_counts(domain: &Domain, caller: &Caller) -> DomainResult<VaultCounts> {
    caller.require(Permission::SecretList)?;
    let now = domain.now_ms();
    Ok(domain
        .store
        .vault_counts(
            caller.org_id,
            &viewer(caller),
            now,
            now.saturating_add(DEFAULT_EXPIRING_DAYS * DAY_MS),
        )
        .await?)
}
