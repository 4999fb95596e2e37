//! Bringing every sealed column under the primary master key: plaintext from before the vault
//! is sealed, values sealed by an older key are re-sealed. Run at every start (which also ends a
//! rotation a crash interrupted) and by `reap3r vault rotate-master-key`, which first makes a
//! new key the primary. Each row is replaced only if it is still what was read, so a node
//! writing meanwhile wins and its value is seen by the next pass.

use reap3r_store::{SealedColumn, SealedRow, Store};
use serde_json::json;

use super::columns::{Vault, column_aad};
use super::keys::{MasterKey, SEALED_PREFIX, is_sealed};
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// Rows re-sealed per transaction.
const RESEAL_BATCH: i64 = 200;
/// Passes over a column that change nothing before the reseal gives up (rows a concurrent
/// writer keeps changing; each pass reads them again).
const MAX_IDLE_PASSES: u32 = 3;

/// What a reseal did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Plaintext values (from before the vault) now sealed.
    pub sealed_plaintext: u64,
    /// Values moved from an older master key to the primary.
    pub resealed: u64,
}

/// Seals and re-seals every sealed column under the database's primary key. Audited (by the
/// system) when it changed anything.
pub async fn reseal_all(domain: &Domain, actor: &str) -> DomainResult<ResealReport> {
    let mut report = ResealReport::default();
    let primary = {
        let mut tx = domain.begin().await?;
        let key = domain.vault.sealing_key(&mut tx, domain.now_ms()).await?;
        domain.commit(tx).await?;
        key
    };
    for column in SealedColumn::ALL {
        reseal_column(domain, &primary, *column, &mut report).await?;
    }
    if report != ResealReport::default() {
        let mut tx = domain.begin().await?;
        audit::record_as(
            &mut tx,
            None,
            actor,
            "vault.reseal",
            Some(format!("master_key:{}", primary.id())),
            json!({
                "sealed_plaintext": report.sealed_plaintext,
                "resealed": report.resealed,
            }),
            domain.now_ms(),
        )
        .await?;
        domain.commit(tx).await?;
    }
    Ok(report)
}

async fn reseal_column(
    domain: &Domain,
    primary: &MasterKey,
    column: SealedColumn,
    report: &mut ResealReport,
) -> DomainResult<()> {
    let prefix = format!("{SEALED_PREFIX}{}:", primary.id());
    let mut idle = 0;
    loop {
        let rows = pending(&domain.store, column, &prefix).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = domain.begin().await?;
        let mut changed = 0u64;
        for row in &rows {
            let (value, was_plain) = reseal_row(&domain.vault, primary, column, row)?;
            if tx
                .replace_sealed(column, row.id, &row.value, &value, primary.id())
                .await?
            {
                changed += 1;
                if was_plain {
                    report.sealed_plaintext += 1;
                } else {
                    report.resealed += 1;
                }
            }
        }
        domain.commit(tx).await?;
        if changed == 0 {
            idle += 1;
            if idle >= MAX_IDLE_PASSES {
                return Err(DomainError::Conflict(format!(
                    "{} keeps changing while it is re-sealed; run the rotation again",
                    column.as_str()
                )));
            }
        }
    }
}

async fn pending(
    store: &Store,
    column: SealedColumn,
    prefix: &str,
) -> DomainResult<Vec<SealedRow>> {
    Ok(store
        .sealed_rows_not_under(column, prefix, RESEAL_BATCH)
        .await?)
}

/// The row's value sealed under `primary`, and whether it was plaintext before.
fn reseal_row(
    vault: &Vault,
    primary: &MasterKey,
    column: SealedColumn,
    row: &SealedRow,
) -> DomainResult<(String, bool)> {
    let aad = column_aad(column, row.org_id, row.id);
    if is_sealed(&row.value) {
        let plain = vault.keys().open(&aad, &row.value)?;
        Ok((primary.seal(&aad, &plain)?, false))
    } else {
        Ok((primary.seal(&aad, row.value.as_bytes())?, true))
    }
}
