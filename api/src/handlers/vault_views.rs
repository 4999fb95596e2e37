//! The vault's request and answer bodies (never a value, but in a reveal's answer), and their
//! mapping to and from the domain's types.

use poem_openapi::{Enum, Object};
use reap3r_actors::access::Role;
use reap3r_actors::vault::{self, CharClass, GrantSubject, RotationPolicy, SecretKind};
use reap3r_store::{SecretAccess, SecretGrant, SecretVersionRow, Uuid};

use super::jobs::JobTargets;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SecretKindView {
    Password,
    ApiToken,
    SshKey,
    Certificate,
    Note,
    KeyValue,
}

impl From<SecretKindView> for SecretKind {
    fn from(k: SecretKindView) -> Self {
        match k {
            SecretKindView::Password => SecretKind::Password,
            SecretKindView::ApiToken => SecretKind::ApiToken,
            SecretKindView::SshKey => SecretKind::SshKey,
            SecretKindView::Certificate => SecretKind::Certificate,
            SecretKindView::Note => SecretKind::Note,
            SecretKindView::KeyValue => SecretKind::KeyValue,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum CharClassView {
    Lower,
    Upper,
    Digits,
    Symbols,
}

impl From<CharClassView> for CharClass {
    fn from(c: CharClassView) -> Self {
        match c {
            CharClassView::Lower => CharClass::Lower,
            CharClassView::Upper => CharClass::Upper,
            CharClassView::Digits => CharClass::Digits,
            CharClassView::Symbols => CharClass::Symbols,
        }
    }
}

fn class_view(c: CharClass) -> CharClassView {
    match c {
        CharClass::Lower => CharClassView::Lower,
        CharClass::Upper => CharClassView::Upper,
        CharClass::Digits => CharClassView::Digits,
        CharClass::Symbols => CharClassView::Symbols,
    }
}

/// Rotate to a generated password every `every_days` days (password secrets only).
#[derive(Debug, Clone, Object)]
pub struct RotationPolicyView {
    #[oai(validator(minimum(value = "1"), maximum(value = "3650")))]
    pub every_days: u32,
    /// Length of the generated password.
    #[oai(validator(minimum(value = "12"), maximum(value = "128")))]
    pub length: u32,
    /// Character classes drawn from, at least one of each.
    #[oai(validator(min_items = 1, max_items = 4))]
    pub classes: Vec<CharClassView>,
}

impl From<RotationPolicyView> for RotationPolicy {
    fn from(p: RotationPolicyView) -> Self {
        Self {
            every_days: p.every_days,
            length: p.length as usize,
            classes: p.classes.into_iter().map(CharClass::from).collect(),
        }
    }
}

/// What the caller may do with the secret.
#[derive(Debug, Clone, Copy, Object)]
pub struct SecretAccessView {
    pub read: bool,
    pub reveal: bool,
    /// Use in jobs (sealed to the target agents).
    #[oai(rename = "use")]
    pub use_in_jobs: bool,
    pub write: bool,
    /// Share, unshare, delete and read the access log: the owner and org admins.
    pub manage: bool,
}

/// A secret's metadata; never its value.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SecretView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub kind: String,
    pub folder_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub expires_at: Option<i64>,
    pub current_version: i64,
    /// zxcvbn score of the current value, 0 (very weak) to 4 (strong); passwords only.
    pub strength: Option<i64>,
    /// The password scores below 3.
    pub weak: bool,
    pub rotation: Option<RotationPolicyView>,
    pub next_rotation_at: Option<i64>,
    pub last_rotated_at: Option<i64>,
    pub owner_id: Option<Uuid>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub access: SecretAccessView,
}

impl From<vault::SecretView> for SecretView {
    fn from(v: vault::SecretView) -> Self {
        let r = v.row;
        let rotation = r
            .rotation
            .as_ref()
            .and_then(|row| RotationPolicy::from_row(row).ok())
            .map(|p| RotationPolicyView {
                every_days: p.every_days,
                length: u32::try_from(p.length).unwrap_or(u32::MAX),
                classes: p.classes.into_iter().map(class_view).collect(),
            });
        Self {
            id: r.id,
            org_id: r.org_id,
            name: r.name,
            weak: r.kind == "password" && r.strength.is_some_and(|s| s < vault::WEAK_BELOW),
            kind: r.kind,
            folder_id: r.folder_id,
            tags: r.tags,
            notes: r.notes,
            expires_at: r.expires_at,
            current_version: r.current_version,
            strength: r.strength,
            rotation,
            next_rotation_at: r.next_rotation_at,
            last_rotated_at: r.last_rotated_at,
            owner_id: r.owner_id,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            access: SecretAccessView {
                read: v.access.read,
                reveal: v.access.reveal,
                use_in_jobs: v.access.use_in_jobs,
                write: v.access.write,
                manage: v.manage,
            },
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateSecretRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    pub kind: SecretKindView,
    /// The value (at most 65536 bytes; a key_value secret is a JSON object of strings).
    #[oai(validator(min_length = 1, max_length = 65536))]
    pub value: String,
    pub folder_id: Option<Uuid>,
    #[oai(default, validator(max_items = 32))]
    pub tags: Vec<String>,
    #[oai(validator(max_length = 4000))]
    pub notes: Option<String>,
    /// When the credential itself expires (ms since the epoch), for the expiring list.
    pub expires_at: Option<i64>,
    pub rotation: Option<RotationPolicyView>,
}

/// A change: fields given replace; `value` adds a new version. `clear` names fields to empty
/// (`folder_id`, `expires_at`, `notes`, `rotation`).
#[derive(Debug, Object)]
pub struct UpdateSecretRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    #[oai(validator(min_length = 1, max_length = 65536))]
    pub value: Option<String>,
    pub folder_id: Option<Uuid>,
    #[oai(validator(max_items = 32))]
    pub tags: Option<Vec<String>>,
    #[oai(validator(max_length = 4000))]
    pub notes: Option<String>,
    pub expires_at: Option<i64>,
    pub rotation: Option<RotationPolicyView>,
    #[oai(default, validator(max_items = 4))]
    pub clear: Vec<ClearableField>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ClearableField {
    FolderId,
    ExpiresAt,
    Notes,
    Rotation,
}

#[derive(Debug, Object)]
pub struct RevealRequest {
    /// Why the value is needed; kept in the access log and the audit chain.
    #[oai(validator(min_length = 1, max_length = 500))]
    pub reason: String,
}

/// A script to run on agents with the secret as an environment variable.
#[derive(Debug, Object)]
pub struct UseSecretRequest {
    /// The variable's name: letters, digits and `_`, not starting with a digit.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub env: String,
    pub targets: JobTargets,
    /// `sh` (the default), `bash`, `python3` or `pwsh`.
    #[oai(validator(max_length = 16))]
    pub interpreter: Option<String>,
    /// The script (at most 64 KiB); it reads the value from the variable, never from its text.
    #[oai(validator(min_length = 1, max_length = 65536))]
    pub script: String,
    #[oai(validator(max_items = 64))]
    pub args: Option<Vec<String>>,
    /// The agent kills the script after this many seconds (1 to 86,400).
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub timeout_s: u32,
}

/// A revealed value.
#[derive(Debug, Object)]
pub struct RevealedView {
    pub secret_id: Uuid,
    pub version: i64,
    pub value: String,
}

#[derive(Debug, Object)]
pub struct RotateRequest {
    /// The new value; absent: a generated password (by the policy, or 24 characters of every
    /// class). Reveal it afterwards to see it.
    #[oai(validator(min_length = 1, max_length = 65536))]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SubjectKind {
    User,
    Role,
}

#[derive(Debug, Object)]
pub struct ShareRequest {
    pub subject_kind: SubjectKind,
    /// A user id of this organisation, or a role name (`org_admin`, `technician`, `viewer`).
    #[oai(validator(max_length = 64))]
    pub subject: String,
    #[oai(default)]
    pub read: bool,
    #[oai(default)]
    pub reveal: bool,
    #[oai(default, rename = "use")]
    pub use_in_jobs: bool,
    #[oai(default)]
    pub write: bool,
}

#[derive(Debug, Object)]
pub struct GrantView {
    pub id: Uuid,
    pub secret_id: Uuid,
    pub subject_kind: String,
    pub subject: String,
    pub read: bool,
    pub reveal: bool,
    #[oai(rename = "use")]
    pub use_in_jobs: bool,
    pub write: bool,
    pub created_by: String,
    pub created_at: i64,
}

impl From<SecretGrant> for GrantView {
    fn from(g: SecretGrant) -> Self {
        Self {
            id: g.id,
            secret_id: g.secret_id,
            subject_kind: g.subject_kind,
            subject: g.subject,
            read: g.flags.read,
            reveal: g.flags.reveal,
            use_in_jobs: g.flags.use_in_jobs,
            write: g.flags.write,
            created_by: g.created_by,
            created_at: g.created_at,
        }
    }
}

/// One version's metadata.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct VersionView {
    pub version: i64,
    /// Bytes of the value.
    pub size: i64,
    pub strength: Option<i64>,
    /// Keyed BLAKE3 of the value (the key is the secret's own): tells versions apart, reveals
    /// nothing.
    pub value_mac: String,
    pub created_by: String,
    pub created_at: i64,
}

impl From<SecretVersionRow> for VersionView {
    fn from(v: SecretVersionRow) -> Self {
        Self {
            version: v.version,
            size: v.size,
            strength: v.strength,
            value_mac: v.value_mac,
            created_by: v.created_by,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccessLogEntryView {
    pub id: Uuid,
    pub secret_id: Uuid,
    pub version: Option<i64>,
    pub actor: String,
    /// create, read, list, versions, reveal, use, version, rotate, update, share, unshare, delete.
    pub action: String,
    pub origin: Option<String>,
    pub reason: Option<String>,
    pub at: i64,
}

impl From<SecretAccess> for AccessLogEntryView {
    fn from(a: SecretAccess) -> Self {
        Self {
            id: a.id,
            secret_id: a.secret_id,
            version: a.version,
            actor: a.actor,
            action: a.action,
            origin: a.origin,
            reason: a.reason,
            at: a.at,
        }
    }
}

/// Dashboard figures over the secrets the caller may read.
#[derive(Debug, Object)]
pub struct VaultStatsView {
    pub total: i64,
    /// Expiring within 30 days.
    pub expiring_soon: i64,
    pub expired: i64,
    /// Passwords scoring below 3 of 4.
    pub weak: i64,
    pub rotation_due: i64,
}

pub(super) fn subject(kind: SubjectKind, subject: &str) -> ApiResult<GrantSubject> {
    match kind {
        SubjectKind::User => subject
            .parse::<Uuid>()
            .map(GrantSubject::User)
            .map_err(|_| ApiError::invalid("subject: a user id")),
        SubjectKind::Role => match subject.parse::<Role>() {
            Ok(Role::SuperAdmin) | Err(_) => Err(ApiError::invalid(
                "subject: a role of the organisation (org_admin, technician, viewer)",
            )),
            Ok(role) => Ok(GrantSubject::Role(role)),
        },
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::vault::{
        MAX_GENERATED_LENGTH, MAX_REASON_CHARS, MAX_ROTATION_DAYS, MAX_SECRET_NAME_CHARS,
        MAX_SECRET_NOTES_CHARS, MAX_SECRET_TAGS, MAX_SECRET_VALUE_BYTES, MIN_GENERATED_LENGTH,
    };
    use serde_json::Value;

    /// The schema's literal bounds are the vault's constants.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let schemas = &spec["components"]["schemas"];
        let create = &schemas["CreateSecretRequest"]["properties"];
        assert_eq!(create["name"]["maxLength"], MAX_SECRET_NAME_CHARS as u64);
        assert_eq!(create["value"]["maxLength"], MAX_SECRET_VALUE_BYTES as u64);
        assert_eq!(create["notes"]["maxLength"], MAX_SECRET_NOTES_CHARS as u64);
        assert_eq!(create["tags"]["maxItems"], MAX_SECRET_TAGS as u64);
        let reveal = &schemas["RevealRequest"]["properties"];
        assert_eq!(reveal["reason"]["maxLength"], MAX_REASON_CHARS as u64);
        let policy = &schemas["RotationPolicyView"]["properties"];
        assert_eq!(
            policy["every_days"]["maximum"],
            f64::from(MAX_ROTATION_DAYS)
        );
        assert_eq!(policy["length"]["minimum"], MIN_GENERATED_LENGTH as f64);
        assert_eq!(policy["length"]["maximum"], MAX_GENERATED_LENGTH as f64);
    }
}
