//! Operators' changes to an agent: approval, revocation, deletion.

use uuid::Uuid;

use super::{Agent, AgentApproval, agent_from_row, agent_in_org};
use crate::Tx;
use crate::db::uuid_text;
use crate::error::{Result, StoreError};

/// Operators' changes to an agent: approval, revocation, deletion. Each is scoped to the
/// organisation; another organisation's agent is `NotFound`.
impl Tx {
    /// The agent, if it belongs to `org_id`, read inside this transaction.
    pub async fn agent_in_org(&mut self, org_id: Uuid, id: Uuid) -> Result<Option<Agent>> {
        agent_in_org(&mut *self.conn(), org_id, id).await
    }

    /// Approves, rejects or sends back to pending an agent of `org_id`.
    pub async fn set_agent_approval(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        approval: AgentApproval,
    ) -> Result<Agent> {
        let row = sqlx::query(concat!(
            "UPDATE agents SET approval = $3 WHERE id = $1 AND org_id = $2 RETURNING ",
            agent_cols!()
        ))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .bind(approval.as_str())
        .fetch_optional(&mut *self.conn())
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    /// Revokes an agent of `org_id` for good. The live connection, if any, is dropped by
    /// whoever holds it (see
    /// [`Store::agents_no_longer_allowed`](crate::Store::agents_no_longer_allowed)).
    pub async fn revoke_agent(&mut self, org_id: Uuid, id: Uuid) -> Result<Agent> {
        let row = sqlx::query(concat!(
            "UPDATE agents SET revoked = 1 WHERE id = $1 AND org_id = $2 RETURNING ",
            agent_cols!()
        ))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .fetch_optional(&mut *self.conn())
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    /// Deletes an agent of `org_id` (its tags go with it). A live connection is dropped by
    /// whoever holds it (see
    /// [`Store::agents_no_longer_allowed`](crate::Store::agents_no_longer_allowed), which
    /// reports deleted agents).
    pub async fn delete_agent(&mut self, org_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM agents WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
