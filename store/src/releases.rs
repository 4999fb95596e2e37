//! Agent releases: one build per version and platform, its size and BLAKE3 (the bytes are in
//! the server's file store), and its manifest as the release key signed it.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_str, get_uuid, uuid_text};
use crate::error::{Result, map_constraint};
use crate::{Store, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRelease {
    pub id: Uuid,
    pub version: String,
    pub platform: String,
    pub size: i64,
    /// BLAKE3 of the build, lowercase hex.
    pub blake3: String,
    /// The postcard manifest, as signed.
    pub manifest: Vec<u8>,
    /// The release key's Ed25519 signature over the manifest.
    pub signature: Vec<u8>,
    pub created_by: String,
    pub created_at: i64,
}

const COLS: &str =
    "id, version, platform, size, blake3, manifest, signature, created_by, created_at";

fn from_row(row: &AnyRow) -> Result<AgentRelease> {
    Ok(AgentRelease {
        id: get_uuid(row, "id")?,
        version: get_str(row, "version")?,
        platform: get_str(row, "platform")?,
        size: get_i64(row, "size")?,
        blake3: get_str(row, "blake3")?,
        manifest: sqlx::Row::try_get(row, "manifest")?,
        signature: sqlx::Row::try_get(row, "signature")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
    })
}

impl Store {
    /// Every release, newest first.
    pub async fn list_releases(&self) -> Result<Vec<AgentRelease>> {
        let sql = format!("SELECT {COLS} FROM agent_releases ORDER BY created_at DESC, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// The release of `version` for `platform`.
    pub async fn release(&self, version: &str, platform: &str) -> Result<Option<AgentRelease>> {
        let sql = format!("SELECT {COLS} FROM agent_releases WHERE version = $1 AND platform = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(version)
            .bind(platform)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }
}

impl Tx {
    /// Records a release; a second one of the same version and platform is a conflict.
    pub async fn add_release(&mut self, release: &AgentRelease) -> Result<AgentRelease> {
        let sql = format!(
            "INSERT INTO agent_releases ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(release.id))
            .bind(&release.version)
            .bind(&release.platform)
            .bind(release.size)
            .bind(&release.blake3)
            .bind(release.manifest.clone())
            .bind(release.signature.clone())
            .bind(&release.created_by)
            .bind(release.created_at)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(
                    e,
                    "a release of this version and platform exists",
                    "release refused",
                )
            })?;
        from_row(&row)
    }
}
