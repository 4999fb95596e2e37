//! The end of a transfer: its outcome, the file a pull brought (the organisation now holds it)
//! and the audit entry, in one transaction; and the end of the transfers a node left unfinished
//! when it stopped.

use reap3r_store::{FileBlob, FileDirectionRow, FileTransfer, TransferEnd};
use serde_json::json;
use tracing::info;

use super::FileHub;
use super::ops::transfer_target;
use super::transfer::Outcome;
use crate::error::DomainResult;
use crate::{FleetEvent, audit};

/// Ends the transfers this node left unfinished (see [`FileHub::recover`]).
pub(super) async fn end_orphans(hub: &FileHub) -> DomainResult<usize> {
    let domain = &hub.inner.domain;
    let now = domain.now_ms();
    let mut tx = domain.begin().await?;
    let open = tx.open_transfers_of_node(&hub.inner.node_id).await?;
    for transfer in &open {
        let end = Outcome::Failed("the server stopped during the transfer".into());
        end_in(
            hub,
            &mut tx,
            transfer,
            &end,
            transfer.bytes_done as u64,
            transfer.attempts as u32,
            now,
        )
        .await?;
    }
    domain.commit(tx).await?;
    for transfer in &open {
        hub.inner.blobs.remove_partial(transfer.id).await;
    }
    Ok(open.len())
}

pub(super) async fn record_end(
    hub: &FileHub,
    transfer: &FileTransfer,
    end: &Outcome,
    bytes_done: u64,
    attempts: u32,
) -> DomainResult<()> {
    let domain = &hub.inner.domain;
    let now = domain.now_ms();
    let mut tx = domain.begin().await?;
    end_in(hub, &mut tx, transfer, end, bytes_done, attempts, now).await?;
    domain.commit(tx).await?;
    if matches!(end, Outcome::Failed(_) | Outcome::Cut(_)) {
        hub.inner.blobs.remove_partial(transfer.id).await;
    }
    Ok(())
}

/// The end's writes, in the caller's transaction: the transfer's outcome, the file a pull
/// brought, and the audit entry (`file.complete` or `file.failed`).
async fn end_in(
    hub: &FileHub,
    tx: &mut reap3r_store::Tx,
    transfer: &FileTransfer,
    end: &Outcome,
    bytes_done: u64,
    attempts: u32,
    now: i64,
) -> DomainResult<()> {
    let (row_end, action) = match end {
        Outcome::Complete { blake3, size } => (
            TransferEnd::Complete {
                blake3: hex::encode(blake3),
                size: *size as i64,
            },
            "file.complete",
        ),
        Outcome::Failed(why) | Outcome::Cut(why) => {
            (TransferEnd::Failed { error: why.clone() }, "file.failed")
        }
    };
    let bytes_done = match end {
        Outcome::Complete { size, .. } => *size,
        _ => bytes_done,
    };
    let Some(ended) = tx
        .end_file_transfer(transfer.id, &row_end, bytes_done as i64, now)
        .await?
    else {
        return Ok(());
    };
    if let (FileDirectionRow::Pull, TransferEnd::Complete { blake3, size }) =
        (ended.direction, &row_end)
    {
        let name = ended.path.rsplit('/').next().map(str::to_owned);
        tx.put_file_blob(&FileBlob {
            org_id: ended.org_id,
            blake3: blake3.clone(),
            size: *size,
            name,
            created_by: ended.operator.clone(),
            created_at: now,
        })
        .await?;
    }
    audit::record_as(
        tx,
        Some(ended.org_id),
        &ended.operator,
        action,
        Some(transfer_target(ended.id)),
        json!({
            "agent_id": ended.agent_id,
            "direction": ended.direction.as_str(),
            "path": ended.path,
            "blake3": ended.blake3,
            "size": ended.size,
            "bytes": bytes_done,
            "attempts": attempts,
            "error": ended.error,
        }),
        now,
    )
    .await?;
    hub.inner.domain.events.publish(FleetEvent::FileTransfer {
        transfer_id: ended.id,
        org_id: ended.org_id,
        agent_id: ended.agent_id,
        direction: ended.direction.as_str(),
        status: ended.status.as_str(),
        bytes_done,
        size: ended.size.map(|s| s as u64),
        attempts,
        error: ended.error.clone(),
    });
    info!(transfer = %ended.id, status = ended.status.as_str(), bytes = bytes_done, attempts, "file transfer ended");
    Ok(())
}
