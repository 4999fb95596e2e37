//! `vault_master_keys`: which master keys this database was sealed with (ids and a sealed check
//! text, never a key) and which one is the primary that new seals use.

use sqlx::any::AnyRow;

use crate::db::{bool_int, get_bool, get_i64, get_opt_i64, get_str};
use crate::error::{Result, StoreError};
use crate::{Store, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeyRow {
    pub id: String,
    /// A known text sealed under this key, so a wrong key is found before anything is read.
    pub check_sealed: String,
    pub is_primary: bool,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

const COLS: &str = "id, check_sealed, is_primary, created_at, retired_at";

fn from_row(row: &AnyRow) -> Result<MasterKeyRow> {
    Ok(MasterKeyRow {
        id: get_str(row, "id")?,
        check_sealed: get_str(row, "check_sealed")?,
        is_primary: get_bool(row, "is_primary")?,
        created_at: get_i64(row, "created_at")?,
        retired_at: get_opt_i64(row, "retired_at")?,
    })
}

impl Store {
    /// Every master key the database knows, primary first, then newest first.
    pub async fn vault_master_keys(&self) -> Result<Vec<MasterKeyRow>> {
        let sql = format!(
            "SELECT {COLS} FROM vault_master_keys ORDER BY is_primary DESC, created_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}

impl Tx {
    /// The id of the primary master key, read inside the transaction that seals with it.
    pub async fn primary_master_key(&mut self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT id FROM vault_master_keys WHERE is_primary = 1")
            .fetch_optional(self.conn())
            .await?;
        row.as_ref().map(|r| get_str(r, "id")).transpose()
    }

    /// Records a master key and makes it the primary (the one before stays, not primary, until
    /// it is retired). Adding a key the database already holds only makes it primary again.
    pub async fn add_primary_master_key(
        &mut self,
        id: &str,
        check_sealed: &str,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE vault_master_keys SET is_primary = 0 WHERE is_primary = 1 AND id <> $1",
        )
        .bind(id)
        .execute(self.conn())
        .await?;
        let sql = format!(
            "INSERT INTO vault_master_keys ({COLS}) VALUES ($1, $2, $3, $4, NULL) \
             ON CONFLICT (id) DO UPDATE SET is_primary = 1, retired_at = NULL"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(check_sealed)
            .bind(bool_int(true))
            .bind(now_ms)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Marks a key that nothing is sealed under any more as retired. The primary cannot be.
    pub async fn retire_master_key(&mut self, id: &str, now_ms: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE vault_master_keys SET retired_at = $2 \
             WHERE id = $1 AND is_primary = 0 AND retired_at IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .execute(self.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
