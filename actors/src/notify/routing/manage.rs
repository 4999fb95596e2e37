//! Creating, reading, replacing and deleting notification policies, silences and maintenance
//! windows. Each operation validates its spec, writes it and its audit record in one
//! transaction; the routing driver reloads its configuration when it sees the audit event.

use reap3r_store::{RoutingKind, RoutingRecord, RoutingWrite, Uuid};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::model::{MaintenanceWindow, Policy, PolicySpec, Silence, SilenceSpec, WindowSpec};
use crate::access::Caller;
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// Audit actions of routing changes start with this; the driver reloads when it sees one.
pub const ROUTING_AUDIT_PREFIX: &str = "alerting.";

/// A stored spec with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved<T> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub spec: T,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl<T: DeserializeOwned> Saved<T> {
    pub(super) fn from_record(record: RoutingRecord) -> DomainResult<Self> {
        let spec = serde_json::from_str(&record.spec).map_err(|e| {
            DomainError::unavailable(format!(
                "stored routing spec {} is unreadable: {e}",
                record.id
            ))
        })?;
        Ok(Self {
            id: record.id,
            org_id: record.org_id,
            spec,
            created_by: record.created_by,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

impl From<Saved<PolicySpec>> for Policy {
    fn from(s: Saved<PolicySpec>) -> Self {
        Policy {
            id: s.id,
            org_id: s.org_id,
            spec: s.spec,
        }
    }
}

impl From<Saved<SilenceSpec>> for Silence {
    fn from(s: Saved<SilenceSpec>) -> Self {
        Silence {
            id: s.id,
            org_id: s.org_id,
            created_by: s.created_by,
            spec: s.spec,
        }
    }
}

impl From<Saved<WindowSpec>> for MaintenanceWindow {
    fn from(s: Saved<WindowSpec>) -> Self {
        MaintenanceWindow {
            id: s.id,
            org_id: s.org_id,
            spec: s.spec,
        }
    }
}

/// A kind of routing spec: its table, audit names and what the table indexes of it.
pub trait RoutingSpec: Serialize + DeserializeOwned + Sized {
    const KIND: RoutingKind;
    /// `policy`, `silence`, `maintenance`: audit actions are `alerting.<noun>.<verb>`.
    const NOUN: &'static str;
    fn validated(self, caller: &Caller) -> DomainResult<Self>;
    fn index(&self) -> (Option<String>, Option<(i64, i64)>);
}

impl RoutingSpec for PolicySpec {
    const KIND: RoutingKind = RoutingKind::Policy;
    const NOUN: &'static str = "policy";
    fn validated(self, _: &Caller) -> DomainResult<Self> {
        PolicySpec::validated(self)
    }
    fn index(&self) -> (Option<String>, Option<(i64, i64)>) {
        (Some(self.name.clone()), None)
    }
}

impl RoutingSpec for SilenceSpec {
    const KIND: RoutingKind = RoutingKind::Silence;
    const NOUN: &'static str = "silence";
    fn validated(self, caller: &Caller) -> DomainResult<Self> {
        SilenceSpec::validated(self, caller.org_id)
    }
    fn index(&self) -> (Option<String>, Option<(i64, i64)>) {
        (None, Some((self.starts_at_ms, self.ends_at_ms)))
    }
}

impl RoutingSpec for WindowSpec {
    const KIND: RoutingKind = RoutingKind::Maintenance;
    const NOUN: &'static str = "maintenance";
    fn validated(self, _: &Caller) -> DomainResult<Self> {
        WindowSpec::validated(self)
    }
    fn index(&self) -> (Option<String>, Option<(i64, i64)>) {
        (Some(self.name.clone()), None)
    }
}

fn target<T: RoutingSpec>(id: Uuid) -> String {
    format!("alert_{}:{id}", T::NOUN)
}

fn write_of<T: RoutingSpec>(spec: &T) -> DomainResult<RoutingWrite> {
    let (name, span) = spec.index();
    Ok(RoutingWrite {
        spec: serde_json::to_string(spec)
            .map_err(|e| DomainError::invalid(format!("spec cannot be stored: {e}")))?,
        name,
        span,
    })
}

/// The caller's organisation's specs of one kind, oldest first.
pub async fn list_routing<T: RoutingSpec>(
    domain: &Domain,
    caller: &Caller,
) -> DomainResult<Vec<Saved<T>>> {
    domain
        .store
        .list_routing(T::KIND, caller.org_id)
        .await?
        .into_iter()
        .map(Saved::from_record)
        .collect()
}

/// One spec of the caller's organisation.
pub async fn get_routing<T: RoutingSpec>(
    domain: &Domain,
    caller: &Caller,
    id: Uuid,
) -> DomainResult<Saved<T>> {
    let record = domain
        .store
        .routing(T::KIND, caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound(T::KIND.as_str()))?;
    Saved::from_record(record)
}

/// Creates a policy, silence or maintenance window in the caller's organisation.
#[derive(Debug, Clone)]
pub struct CreateRouting<T> {
    pub spec: T,
}

impl<T: RoutingSpec> CreateRouting<T> {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Saved<T>> {
        let spec = self.spec.validated(caller)?;
        let write = write_of(&spec)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let record = tx
            .create_routing(T::KIND, caller.org_id, &write, &caller.actor(), now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            &format!("{ROUTING_AUDIT_PREFIX}{}.create", T::NOUN),
            Some(target::<T>(record.id)),
            json!({ "spec": spec }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Saved::from_record(record)
    }
}

/// Replaces the spec of one of the caller's organisation's policies, silences or windows.
#[derive(Debug, Clone)]
pub struct UpdateRouting<T> {
    pub id: Uuid,
    pub spec: T,
}

impl<T: RoutingSpec> UpdateRouting<T> {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Saved<T>> {
        let spec = self.spec.validated(caller)?;
        let write = write_of(&spec)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let record = tx
            .update_routing(T::KIND, caller.org_id, self.id, &write, now)
            .await
            .map_err(|e| DomainError::from_store(e, T::KIND.as_str()))?;
        audit::record(
            &mut tx,
            caller,
            &format!("{ROUTING_AUDIT_PREFIX}{}.update", T::NOUN),
            Some(target::<T>(self.id)),
            json!({ "spec": spec }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Saved::from_record(record)
    }
}

/// Deletes one of the caller's organisation's policies, silences or windows (a deleted
/// silence or window ends at once; a deleted policy's groups are dropped).
#[derive(Debug, Clone, Copy)]
pub struct DeleteRouting<T> {
    pub id: Uuid,
    pub kind: std::marker::PhantomData<T>,
}

impl<T: RoutingSpec> DeleteRouting<T> {
    pub fn new(id: Uuid) -> Self {
        Self {
            id,
            kind: std::marker::PhantomData,
        }
    }

    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_routing(T::KIND, caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, T::KIND.as_str()))?;
        audit::record(
            &mut tx,
            caller,
            &format!("{ROUTING_AUDIT_PREFIX}{}.delete", T::NOUN),
            Some(target::<T>(self.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}
