//! Enrolment tokens: scoped to their organisation.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_tokens_are_scoped() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let t = create_enrolment_token(&store, &token(org.id, "scoped"), T0).await?;
        check(
            b,
            "in org",
            store.enrolment_token(org.id, t.id).await?,
            Some(t.clone()),
        );
        check(
            b,
            "other org",
            store.enrolment_token(other.id, t.id).await?,
            None,
        );
        let agent =
            enrol_agent(&store, &hash_of("scoped"), &new_agent("tok-1", "linux"), T0).await?;
        check(b, "enrolled with token", agent.token_id, Some(t.id));
        check(
            b,
            "delete from other org",
            kind(delete_enrolment_token(&store, other.id, t.id).await),
            "not_found",
        );
        delete_enrolment_token(&store, org.id, t.id).await?;
        check(b, "gone", store.enrolment_token(org.id, t.id).await?, None);
        let kept = store
            .agent(agent.id)
            .await?
            .ok_or_else(|| anyhow!("agent lost"))?;
        check(b, "agent keeps, token cleared", kept.token_id, None);
        check(
            b,
            "delete twice",
            kind(delete_enrolment_token(&store, org.id, t.id).await),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}
