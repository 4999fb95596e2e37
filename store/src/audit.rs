//! The audit log: append-only, each record chained to the previous one by a BLAKE3 hash, so a
//! changed, removed or inserted row is detected by [`Store::verify_audit_chain`].

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{
    Conditions, get_i64, get_json, get_opt_str, get_opt_uuid, get_str, to_json_text, uuid_text,
};
use crate::error::{Result, StoreError};
use crate::{Backend, Store, Tx};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Advisory-lock key that serialises appends across nodes on PostgreSQL ("R3AUDIT!").
const AUDIT_LOCK_KEY: i64 = 0x5233_4155_4449_5421;

/// Rows read per query while verifying, so memory stays flat however long the log is.
const VERIFY_PAGE: i64 = 1_000;

/// Most records [`Store::list_audit`] returns in one call.
pub const MAX_AUDIT_PAGE: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub org_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub ts: i64,
    pub org_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Which records [`Store::list_audit_filtered`] returns: exact matches on actor, action and
/// target; `since` and `until` are inclusive bounds on `ts`; `before_seq` (a page cursor) is
/// exclusive. `limit` is clamped to 1..=[`MAX_AUDIT_PAGE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// Outcome of [`Store::verify_audit_chain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Records read (the whole log, even past a break).
    pub checked: u64,
    /// The first seq whose link is broken: wrong prev_hash, wrong hash, or not exactly one more
    /// than the record before it (a gap or a missing first record).
    pub first_broken: Option<i64>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// The fields that get hashed, exactly as stored (org id as hyphenated text, details as the
/// stored JSON text) so verification never depends on re-serialising anything.
struct Link<'a> {
    seq: i64,
    ts: i64,
    org_id: Option<&'a str>,
    actor: &'a str,
    action: &'a str,
    target: Option<&'a str>,
    details: &'a str,
}

impl Link<'_> {
    /// blake3(prev_hash || "\n" || encoding), where the encoding is a version tag, then seq and
    /// ts as 8-byte big-endian, then each text field as an 8-byte big-endian length and its
    /// bytes, optional fields preceded by a 0/1 presence byte. Every field is delimited, so no
    /// two different records encode alike.
    fn hash(&self, prev_hash: &str) -> String {
        fn text(h: &mut blake3::Hasher, s: &str) {
            h.update(&(s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        fn opt_text(h: &mut blake3::Hasher, s: Option<&str>) {
            match s {
                None => {
                    h.update(&[0]);
                }
                Some(s) => {
                    h.update(&[1]);
                    text(h, s);
                }
            }
        }
        let mut h = blake3::Hasher::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        text(&mut h, "reap3r-audit-v1");
        h.update(&self.seq.to_be_bytes());
        h.update(&self.ts.to_be_bytes());
        opt_text(&mut h, self.org_id);
        text(&mut h, self.actor);
        text(&mut h, self.action);
        opt_text(&mut h, self.target);
        text(&mut h, self.details);
        h.finalize().to_hex().to_string()
    }
}

fn record_from_row(row: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: get_i64(row, "seq")?,
        ts: get_i64(row, "ts")?,
        org_id: get_opt_uuid(row, "org_id")?,
        actor: get_str(row, "actor")?,
        action: get_str(row, "action")?,
        target: get_opt_str(row, "target")?,
        details: get_json(row, "details")?,
        prev_hash: get_str(row, "prev_hash")?,
        hash: get_str(row, "hash")?,
    })
}

impl Tx {
    /// Appends a record at the end of the chain, inside this transaction: it commits with the
    /// change it records or not at all. Appends are serialised across processes and nodes
    /// because seq and prev_hash come from the last record (two concurrent appends would
    /// otherwise fork the chain): on SQLite by the write lock the transaction took at BEGIN, on
    /// PostgreSQL by an advisory lock held until commit. The lock is taken at the first append,
    /// after the change's own writes, and nothing but the append follows it, so transactions
    /// cannot deadlock over it.
    pub async fn append_audit(
        &mut self,
        entry: &NewAuditEntry,
        now_ms: i64,
    ) -> Result<AuditRecord> {
        if entry.actor.is_empty() || entry.action.is_empty() {
            return Err(StoreError::Invalid(
                "audit actor and action must not be empty".into(),
            ));
        }
        let details = to_json_text(&entry.details, "audit details")?;
        let org_id = entry.org_id.map(uuid_text);

        if self.backend() == Backend::Postgres && !self.audit_locked {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK_KEY)
                .execute(&mut *self.conn())
                .await?;
            self.audit_locked = true;
        }
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.conn())
            .await?;
        let (seq, prev_hash) = match last {
            Some(row) => (get_i64(&row, "seq")? + 1, get_str(&row, "hash")?),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = Link {
            seq,
            ts: now_ms,
            org_id: org_id.as_deref(),
            actor: &entry.actor,
            action: &entry.action,
            target: entry.target.as_deref(),
            details: &details,
        }
        .hash(&prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, ts, org_id, actor, action, target, details, prev_hash, \
             hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(now_ms)
        .bind(org_id)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(entry.target.clone())
        .bind(details)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *self.conn())
        .await?;
        let record = AuditRecord {
            seq,
            ts: now_ms,
            org_id: entry.org_id,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            details: entry.details.clone(),
            prev_hash,
            hash,
        };
        self.audited.push(record.clone());
        Ok(record)
    }
}

impl Store {
    /// Appends one audit record in a transaction of its own, for tests of the chain itself.
    /// Production code records through a [`Tx`] with the change the record describes, so this
    /// exists only with the `test-support` feature.
    #[cfg(feature = "test-support")]
    pub async fn append_audit(&self, entry: &NewAuditEntry, now_ms: i64) -> Result<AuditRecord> {
        let mut tx = self.begin().await?;
        let record = tx.append_audit(entry, now_ms).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The newest `limit` records (capped at [`MAX_AUDIT_PAGE`]), newest first; every
    /// organisation's and the global ones when `org_id` is `None`.
    pub async fn list_audit(&self, org_id: Option<Uuid>, limit: i64) -> Result<Vec<AuditRecord>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(MAX_AUDIT_PAGE);
        let rows = match org_id {
            Some(org) => {
                sqlx::query(
                    "SELECT seq, ts, org_id, actor, action, target, details, prev_hash, hash \
                     FROM audit_log WHERE org_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(uuid_text(org))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT seq, ts, org_id, actor, action, target, details, prev_hash, hash \
                     FROM audit_log ORDER BY seq DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(record_from_row).collect()
    }

    /// Records matching `filter`, newest first (seq descending); every organisation's and the
    /// global ones when `org_id` is `None`. `limit` is clamped to 1..=[`MAX_AUDIT_PAGE`].
    pub async fn list_audit_filtered(
        &self,
        org_id: Option<Uuid>,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>> {
        let mut c = Conditions::default();
        if let Some(org) = org_id {
            let p = c.text(uuid_text(org));
            c.and(format!("org_id = {p}"));
        }
        for (column, value) in [
            ("actor", &filter.actor),
            ("action", &filter.action),
            ("target", &filter.target),
        ] {
            if let Some(value) = value {
                let p = c.text(value.as_str());
                c.and(format!("{column} = {p}"));
            }
        }
        if let Some(since) = filter.since {
            let p = c.int(since);
            c.and(format!("ts >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = c.int(until);
            c.and(format!("ts <= {p}"));
        }
        if let Some(before) = filter.before_seq {
            let p = c.int(before);
            c.and(format!("seq < {p}"));
        }
        let limit = c.int(filter.limit.clamp(1, MAX_AUDIT_PAGE));
        let sql = format!(
            "SELECT seq, ts, org_id, actor, action, target, details, prev_hash, hash \
             FROM audit_log{} ORDER BY seq DESC LIMIT {limit}",
            c.where_sql()
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Walks the whole log in seq order, page by page, recomputing every link.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let mut report = ChainReport {
            checked: 0,
            first_broken: None,
        };
        let mut expected_seq = 1i64;
        let mut prev_hash = GENESIS_HASH.to_owned();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT seq, ts, org_id, actor, action, target, details, prev_hash, hash \
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(VERIFY_PAGE)
            .fetch_all(self.pool())
            .await?;
            let Some(last) = rows.last() else { break };
            after = get_i64(last, "seq")?;
            for row in &rows {
                let seq = get_i64(row, "seq")?;
                let org_id = get_opt_str(row, "org_id")?;
                let target = get_opt_str(row, "target")?;
                let stored_prev = get_str(row, "prev_hash")?;
                let stored_hash = get_str(row, "hash")?;
                let link = Link {
                    seq,
                    ts: get_i64(row, "ts")?,
                    org_id: org_id.as_deref(),
                    actor: &get_str(row, "actor")?,
                    action: &get_str(row, "action")?,
                    target: target.as_deref(),
                    details: &get_str(row, "details")?,
                };
                let intact = seq == expected_seq
                    && stored_prev == prev_hash
                    && link.hash(&stored_prev) == stored_hash;
                report.checked += 1;
                if !intact && report.first_broken.is_none() {
                    report.first_broken = Some(seq);
                }
                // Carry on from what is stored, so one bad row is reported once rather than
                // cascading (the report only names the first break anyway).
                expected_seq = seq + 1;
                prev_hash = stored_hash;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link<'a>(actor: &'a str, action: &'a str, target: Option<&'a str>) -> Link<'a> {
        Link {
            seq: 1,
            ts: 2,
            org_id: None,
            actor,
            action,
            target,
            details: "{}",
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = link("ab", "c", None).hash(GENESIS_HASH);
        let b = link("a", "bc", None).hash(GENESIS_HASH);
        assert_ne!(a, b);
        let none = link("a", "b", None).hash(GENESIS_HASH);
        let empty = link("a", "b", Some("")).hash(GENESIS_HASH);
        assert_ne!(none, empty);
        assert_eq!(a.len(), 64);
        assert_eq!(a, link("ab", "c", None).hash(GENESIS_HASH));
    }
}
