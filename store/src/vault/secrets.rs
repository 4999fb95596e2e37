//! `vault_secrets` and `vault_secret_versions`: a secret's metadata, its sealed data key, and
//! every value it has had, sealed under that key. Lists are filtered by what the viewer may see
//! in SQL, so a page never holds a secret the caller is not granted.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{
    Conditions, get_i64, get_json, get_opt_i64, get_opt_str, get_opt_uuid, get_str, get_uuid,
    like_substring, to_json_text, uuid_text,
};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// Largest page of a secret list.
pub const MAX_SECRET_PAGE: i64 = 200;

/// A rotation policy: a new generated password every `days` days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicyRow {
    pub days: i64,
    pub length: i64,
    /// JSON array of character classes.
    pub classes: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub kind: String,
    pub folder_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub expires_at: Option<i64>,
    pub current_version: i64,
    /// The data key, sealed by master key `kek_id` (AAD: org, secret).
    pub dek_sealed: String,
    pub kek_id: String,
    pub strength: Option<i64>,
    pub rotation: Option<RotationPolicyRow>,
    pub next_rotation_at: Option<i64>,
    pub last_rotated_at: Option<i64>,
    pub owner_id: Option<Uuid>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new secret; the id is chosen by the domain, since the sealed data key's AAD names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecret {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub kind: String,
    pub folder_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub expires_at: Option<i64>,
    pub dek_sealed: String,
    pub kek_id: String,
    pub rotation: Option<RotationPolicyRow>,
    pub next_rotation_at: Option<i64>,
    pub owner_id: Option<Uuid>,
    pub created_by: String,
}

/// A value to add as the next version.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSecretVersion {
    pub ciphertext: String,
    pub value_mac: String,
    pub size: i64,
    pub strength: Option<i64>,
    pub created_by: String,
}

impl std::fmt::Debug for NewSecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecretVersion")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersionRow {
    pub secret_id: Uuid,
    pub version: i64,
    pub org_id: Uuid,
    pub ciphertext: String,
    pub value_mac: String,
    pub size: i64,
    pub strength: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
}

/// The whole new metadata of a secret (the domain merges a patch first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetaUpdate {
    pub name: String,
    pub folder_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub expires_at: Option<i64>,
    pub rotation: Option<RotationPolicyRow>,
    pub next_rotation_at: Option<i64>,
}

/// Who looks: lists and counts show only what this viewer may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: Option<Uuid>,
    pub role: String,
    /// Org admins read every secret's metadata (they manage grants); values still need a grant.
    pub reads_all: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFilter {
    pub kind: Option<String>,
    pub folder_id: Option<Uuid>,
    pub tag: Option<String>,
    /// Substring of the name.
    pub text: Option<String>,
    /// Only those expiring before this time.
    pub expires_before: Option<i64>,
    /// Names after this one (the page before's last).
    pub after_name: Option<String>,
    pub limit: i64,
}

/// Dashboard figures of the secrets a viewer may read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaultCounts {
    pub total: i64,
    pub expiring_soon: i64,
    pub expired: i64,
    /// Passwords whose current value scores below 3 of 4.
    pub weak: i64,
    pub rotation_due: i64,
}

const COLS: &str = "id, org_id, name, kind, folder_id, tags, notes, expires_at, current_version, \
                    dek_sealed, kek_id, strength, rotation_days, rotation_length, \
                    rotation_classes, next_rotation_at, last_rotated_at, owner_id, created_by, \
                    created_at, updated_at";
const VERSION_COLS: &str =
    "secret_id, version, org_id, ciphertext, value_mac, size, strength, created_by, created_at";
const DUPLICATE: &str = "a secret with this name already exists";
const MISSING: &str = "organisation or folder not found";

fn from_row(row: &AnyRow) -> Result<SecretRow> {
    let rotation = match (
        get_opt_i64(row, "rotation_days")?,
        get_opt_i64(row, "rotation_length")?,
        get_opt_str(row, "rotation_classes")?,
    ) {
        (Some(days), Some(length), Some(classes)) => Some(RotationPolicyRow {
            days,
            length,
            classes,
        }),
        _ => None,
    };
    Ok(SecretRow {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        name: get_str(row, "name")?,
        kind: get_str(row, "kind")?,
        folder_id: get_opt_uuid(row, "folder_id")?,
        tags: get_json(row, "tags")?,
        notes: get_opt_str(row, "notes")?,
        expires_at: get_opt_i64(row, "expires_at")?,
        current_version: get_i64(row, "current_version")?,
        dek_sealed: get_str(row, "dek_sealed")?,
        kek_id: get_str(row, "kek_id")?,
        strength: get_opt_i64(row, "strength")?,
        rotation,
        next_rotation_at: get_opt_i64(row, "next_rotation_at")?,
        last_rotated_at: get_opt_i64(row, "last_rotated_at")?,
        owner_id: get_opt_uuid(row, "owner_id")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_i64(row, "updated_at")?,
    })
}

fn version_from_row(row: &AnyRow) -> Result<SecretVersionRow> {
    Ok(SecretVersionRow {
        secret_id: get_uuid(row, "secret_id")?,
        version: get_i64(row, "version")?,
        org_id: get_uuid(row, "org_id")?,
        ciphertext: get_str(row, "ciphertext")?,
        value_mac: get_str(row, "value_mac")?,
        size: get_i64(row, "size")?,
        strength: get_opt_i64(row, "strength")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
    })
}

/// Adds "the viewer may read this secret" to `c`.
fn visible_to(c: &mut Conditions, viewer: &Viewer) {
    if viewer.reads_all {
        return;
    }
    let role = c.text(viewer.role.clone());
    match viewer.user_id {
        Some(user) => {
            let user = c.text(uuid_text(user));
            c.and(format!(
                "(owner_id = {user} OR EXISTS (SELECT 1 FROM vault_grants g \
                 WHERE g.secret_id = vault_secrets.id AND g.can_read = 1 AND \
                 ((g.subject_kind = 'user' AND g.subject = {user}) OR \
                  (g.subject_kind = 'role' AND g.subject = {role}))))"
            ));
        }
        None => c.and(format!(
            "EXISTS (SELECT 1 FROM vault_grants g WHERE g.secret_id = vault_secrets.id \
             AND g.can_read = 1 AND g.subject_kind = 'role' AND g.subject = {role})"
        )),
    }
}

fn rotation_parts(r: Option<&RotationPolicyRow>) -> (Option<i64>, Option<i64>, Option<String>) {
    match r {
        Some(r) => (Some(r.days), Some(r.length), Some(r.classes.clone())),
        None => (None, None, None),
    }
}

impl Tx {
    /// Creates a secret with its first version (1).
    pub async fn create_secret(
        &mut self,
        new: &NewSecret,
        first: &NewSecretVersion,
        strength: Option<i64>,
        now_ms: i64,
    ) -> Result<SecretRow> {
        let (days, length, classes) = rotation_parts(new.rotation.as_ref());
        let sql = format!(
            "INSERT INTO vault_secrets ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $16, $16) RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(new.id))
            .bind(uuid_text(new.org_id))
            .bind(&new.name)
            .bind(&new.kind)
            .bind(new.folder_id.map(uuid_text))
            .bind(to_json_text(&new.tags, "tags")?)
            .bind(new.notes.clone())
            .bind(new.expires_at)
            .bind(&new.dek_sealed)
            .bind(&new.kek_id)
            .bind(strength)
            .bind(days)
            .bind(length)
            .bind(classes)
            .bind(new.next_rotation_at)
            .bind(now_ms)
            .bind(new.owner_id.map(uuid_text))
            .bind(&new.created_by)
            .fetch_one(self.conn())
            .await
            .map_err(|e| map_constraint(e, DUPLICATE, MISSING))?;
        let secret = from_row(&row)?;
        self.insert_version(&secret, 1, first, now_ms).await?;
        Ok(secret)
    }

    async fn insert_version(
        &mut self,
        secret: &SecretRow,
        version: i64,
        v: &NewSecretVersion,
        now_ms: i64,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO vault_secret_versions ({VERSION_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(secret.id))
            .bind(version)
            .bind(uuid_text(secret.org_id))
            .bind(&v.ciphertext)
            .bind(&v.value_mac)
            .bind(v.size)
            .bind(v.strength)
            .bind(&v.created_by)
            .bind(now_ms)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// The secret, read inside the transaction (for a write that depends on it).
    pub async fn secret(&mut self, org_id: Uuid, id: Uuid) -> Result<Option<SecretRow>> {
        let sql = format!("SELECT {COLS} FROM vault_secrets WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.conn())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Adds the next version, if the current one is still `expected` (else `Conflict`: someone
    /// wrote in between). `rotated` moves the rotation clock: last rotated now, next at
    /// `next_rotation_at`.
    pub async fn add_secret_version(
        &mut self,
        secret: &SecretRow,
        v: &NewSecretVersion,
        next_rotation_at: Option<i64>,
        now_ms: i64,
    ) -> Result<SecretRow> {
        let next = secret.current_version + 1;
        let sql = format!(
            "UPDATE vault_secrets SET current_version = $3, strength = $4, \
             last_rotated_at = $5, next_rotation_at = $6, updated_at = $5 \
             WHERE id = $1 AND current_version = $2 RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(secret.id))
            .bind(secret.current_version)
            .bind(next)
            .bind(v.strength)
            .bind(now_ms)
            .bind(next_rotation_at)
            .fetch_optional(self.conn())
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(
                "the secret changed meanwhile; read it again".into(),
            ));
        };
        let updated = from_row(&row)?;
        self.insert_version(&updated, next, v, now_ms).await?;
        Ok(updated)
    }

    pub async fn update_secret_meta(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        update: &SecretMetaUpdate,
        now_ms: i64,
    ) -> Result<SecretRow> {
        let (days, length, classes) = rotation_parts(update.rotation.as_ref());
        let sql = format!(
            "UPDATE vault_secrets SET name = $3, folder_id = $4, tags = $5, notes = $6, \
             expires_at = $7, rotation_days = $8, rotation_length = $9, rotation_classes = $10, \
             next_rotation_at = $11, updated_at = $12 WHERE id = $1 AND org_id = $2 \
             RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(&update.name)
            .bind(update.folder_id.map(uuid_text))
            .bind(to_json_text(&update.tags, "tags")?)
            .bind(update.notes.clone())
            .bind(update.expires_at)
            .bind(days)
            .bind(length)
            .bind(classes)
            .bind(update.next_rotation_at)
            .bind(now_ms)
            .fetch_optional(self.conn())
            .await
            .map_err(|e| map_constraint(e, DUPLICATE, MISSING))?;
        row.as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// Deletes a secret, its versions and its grants (its access log stays).
    pub async fn delete_secret(&mut self, org_id: Uuid, id: Uuid) -> Result<()> {
        // Explicit rather than ON DELETE CASCADE, which SQLite applies only with foreign keys on.
        for sql in [
            "DELETE FROM vault_secret_versions WHERE secret_id = $1 AND org_id = $2",
            "DELETE FROM vault_grants WHERE secret_id = $1 AND org_id = $2",
        ] {
            sqlx::query(sql)
                .bind(uuid_text(id))
                .bind(uuid_text(org_id))
                .execute(self.conn())
                .await?;
        }
        let done = sqlx::query("DELETE FROM vault_secrets WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

impl Store {
    pub async fn secret(&self, org_id: Uuid, id: Uuid) -> Result<Option<SecretRow>> {
        let sql = format!("SELECT {COLS} FROM vault_secrets WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A page of the secrets `viewer` may read, by name.
    pub async fn list_secrets(
        &self,
        org_id: Uuid,
        viewer: &Viewer,
        filter: &SecretFilter,
    ) -> Result<Vec<SecretRow>> {
        let mut c = Conditions::default();
        let org = c.text(uuid_text(org_id));
        c.and(format!("org_id = {org}"));
        visible_to(&mut c, viewer);
        if let Some(kind) = &filter.kind {
            let p = c.text(kind.clone());
            c.and(format!("kind = {p}"));
        }
        if let Some(folder) = filter.folder_id {
            let p = c.text(uuid_text(folder));
            c.and(format!("folder_id = {p}"));
        }
        if let Some(tag) = &filter.tag {
            // Tags are a JSON array of strings; a quoted match is exact.
            let p = c.text(like_substring(&to_json_text(tag, "tag")?));
            c.and(format!("tags LIKE {p} ESCAPE '\\'"));
        }
        if let Some(text) = &filter.text {
            let p = c.text(like_substring(&text.to_lowercase()));
            c.and(format!("lower(name) LIKE {p} ESCAPE '\\'"));
        }
        if let Some(before) = filter.expires_before {
            let p = c.int(before);
            c.and(format!("expires_at IS NOT NULL AND expires_at < {p}"));
        }
        if let Some(after) = &filter.after_name {
            let p = c.text(after.clone());
            c.and(format!("name > {p}"));
        }
        let limit = c.int(filter.limit.clamp(1, MAX_SECRET_PAGE));
        let order = if filter.expires_before.is_some() {
            "expires_at, name"
        } else {
            "name"
        };
        let sql = format!(
            "SELECT {COLS} FROM vault_secrets{} ORDER BY {order} LIMIT {limit}",
            c.where_sql()
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Counts for the dashboard over what `viewer` may read.
    pub async fn vault_counts(
        &self,
        org_id: Uuid,
        viewer: &Viewer,
        now_ms: i64,
        soon_ms: i64,
    ) -> Result<VaultCounts> {
        let mut c = Conditions::default();
        let org = c.text(uuid_text(org_id));
        c.and(format!("org_id = {org}"));
        visible_to(&mut c, viewer);
        let now = c.int(now_ms);
        let soon = c.int(soon_ms);
        let sql = format!(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN expires_at >= {now} AND expires_at < {soon} THEN 1 ELSE 0 END), 0) AS expiring, \
             COALESCE(SUM(CASE WHEN expires_at < {now} THEN 1 ELSE 0 END), 0) AS expired, \
             COALESCE(SUM(CASE WHEN kind = 'password' AND strength < 3 THEN 1 ELSE 0 END), 0) AS weak, \
             COALESCE(SUM(CASE WHEN next_rotation_at <= {now} THEN 1 ELSE 0 END), 0) AS due \
             FROM vault_secrets{}",
            c.where_sql()
        );
        let row = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_one(&self.pool)
            .await?;
        let get =
            |col: &str| -> Result<i64> { row.try_get::<i64, _>(col).map_err(StoreError::Database) };
        Ok(VaultCounts {
            total: get("total")?,
            expiring_soon: get("expiring")?,
            expired: get("expired")?,
            weak: get("weak")?,
            rotation_due: get("due")?,
        })
    }

    /// Secrets (of every org) whose rotation is due at `now_ms`, soonest first.
    pub async fn secrets_due_for_rotation(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<SecretRow>> {
        let sql = format!(
            "SELECT {COLS} FROM vault_secrets WHERE next_rotation_at IS NOT NULL \
             AND next_rotation_at <= $1 ORDER BY next_rotation_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// One version of a secret.
    pub async fn secret_version(
        &self,
        org_id: Uuid,
        id: Uuid,
        version: i64,
    ) -> Result<Option<SecretVersionRow>> {
        let sql = format!(
            "SELECT {VERSION_COLS} FROM vault_secret_versions \
             WHERE secret_id = $1 AND org_id = $2 AND version = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Every version of a secret, newest first.
    pub async fn secret_versions(&self, org_id: Uuid, id: Uuid) -> Result<Vec<SecretVersionRow>> {
        let sql = format!(
            "SELECT {VERSION_COLS} FROM vault_secret_versions \
             WHERE secret_id = $1 AND org_id = $2 ORDER BY version DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(version_from_row).collect()
    }
}
