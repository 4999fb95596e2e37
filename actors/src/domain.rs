//! What every operation needs: the store, the clock and the event bus. Cheap to clone; the API
//! holds one, the CLI makes one over the same database without a running node.

use std::sync::Arc;

use reap3r_store::{Store, Tx};

use crate::error::DomainResult;
use crate::vault::{Keyring, Vault};
use crate::{Clock, EventBus, FleetEvent};

#[derive(Clone)]
pub struct Domain {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub events: EventBus,
    /// The master keys: what seals and opens every stored secret.
    pub vault: Vault,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Domain {
    pub fn new(store: Store, clock: Arc<dyn Clock>, events: EventBus, keys: Keyring) -> Self {
        Self {
            store,
            clock,
            events,
            vault: Vault::new(keys),
        }
    }

    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Starts the transaction an operation writes its change and audit record through.
    pub async fn begin(&self) -> DomainResult<Tx> {
        Ok(self.store.begin().await?)
    }

    /// Commits `tx`, then publishes its audit records (only durable records are announced).
    pub async fn commit(&self, tx: Tx) -> DomainResult<()> {
        for record in tx.commit().await? {
            self.events.publish(FleetEvent::Audit {
                org_id: record.org_id,
                seq: record.seq,
                actor: record.actor,
                action: record.action,
                target: record.target,
                ts: record.ts,
            });
        }
        Ok(())
    }
}
