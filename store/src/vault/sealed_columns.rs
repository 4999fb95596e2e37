//! The columns that hold values sealed by the master key, as one list, so that sealing old
//! plaintext rows and re-sealing after a master key rotation walk every one of them: a column
//! left out would keep plaintext, or keep a key alive that was meant to be retired.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_opt_str, get_str, get_uuid, uuid_text};
use crate::error::Result;
use crate::{Store, Tx};

/// A column sealed by the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedColumn {
    /// `users.mfa_secret`: a TOTP secret.
    UserMfaSecret,
    /// `alert_integrations.secrets`: a channel's SMTP password, HMAC secret or hook URL.
    IntegrationSecrets,
    /// `vault_secrets.dek_sealed`: a secret's data key.
    SecretDataKey,
}

impl SealedColumn {
    pub const ALL: &'static [SealedColumn] = &[
        SealedColumn::UserMfaSecret,
        SealedColumn::IntegrationSecrets,
        SealedColumn::SecretDataKey,
    ];

    /// Table, its org column (or a constant), value column.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::UserMfaSecret => ("users", "CAST(NULL AS TEXT)", "mfa_secret"),
            Self::IntegrationSecrets => ("alert_integrations", "org_id", "secrets"),
            Self::SecretDataKey => ("vault_secrets", "org_id", "dek_sealed"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserMfaSecret => "users.mfa_secret",
            Self::IntegrationSecrets => "alert_integrations.secrets",
            Self::SecretDataKey => "vault_secrets.dek_sealed",
        }
    }
}

/// One row's sealed (or, from before the vault, plain) value.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub id: Uuid,
    pub org_id: Option<Uuid>,
    pub value: String,
}

impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn from_row(row: &AnyRow) -> Result<SealedRow> {
    let org_id = get_opt_str(row, "org_id")?
        .map(|s| crate::db::parse_uuid(&s, "org_id"))
        .transpose()?;
    Ok(SealedRow {
        id: get_uuid(row, "id")?,
        org_id,
        value: get_str(row, "value")?,
    })
}

impl Store {
    /// Up to `limit` rows of `column` whose value does not start with `prefix` (the sealed form
    /// under the primary key): values sealed by another key, and plaintext from before the vault.
    pub async fn sealed_rows_not_under(
        &self,
        column: SealedColumn,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<SealedRow>> {
        let (table, org, col) = column.parts();
        let sql = format!(
            "SELECT id, {org} AS org_id, {col} AS value FROM {table} \
             WHERE {col} IS NOT NULL AND {col} NOT LIKE $1 ESCAPE '\\' ORDER BY id LIMIT $2"
        );
        // The prefix is matched literally: LIKE's wildcards in it are escaped.
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pattern)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}

impl Tx {
    /// Replaces a row's sealed value if it still is `old` (a concurrent write wins; the next
    /// pass sees its value). `kek_id` is also written where the table keeps it. Whether it did.
    pub async fn replace_sealed(
        &mut self,
        column: SealedColumn,
        id: Uuid,
        old: &str,
        new: &str,
        kek_id: &str,
    ) -> Result<bool> {
        let (table, _, col) = column.parts();
        let set_kek = if column == SealedColumn::SecretDataKey {
            ", kek_id = $4"
        } else {
            ""
        };
        let sql = format!("UPDATE {table} SET {col} = $3{set_kek} WHERE id = $1 AND {col} = $2");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(old)
            .bind(new);
        if column == SealedColumn::SecretDataKey {
            query = query.bind(kek_id);
        }
        Ok(query.execute(self.conn()).await?.rows_affected() == 1)
    }
}
