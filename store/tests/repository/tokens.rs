//! Enrolment tokens and enrolment: what a token applies to the agent, every refusal, and
//! `max_uses` under concurrent enrolment.

use crate::common::*;

fn refusal<T: Debug>(result: Result<T, StoreError>) -> Option<TokenRefusal> {
    match result {
        Err(StoreError::Token(r)) => Some(r),
        other => {
            assert!(other.is_ok(), "expected a token refusal, got {other:?}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_tokens() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let a = create_org(&store, "a", T0).await?;
        let other = create_org(&store, "b", T0).await?;
        let mut first = token(a.id, "one");
        first.expires_at = Some(T0 + 3_600_000);
        first.max_uses = Some(3);
        first.require_approval = true;
        let t1 = create_enrolment_token(&store, &first, T0).await?;
        check(b, "org", t1.org_id, a.id);
        check(b, "label", t1.label.as_deref(), Some("label one"));
        check(b, "expires", t1.expires_at, Some(T0 + 3_600_000));
        check(b, "max uses", t1.max_uses, Some(3));
        check(b, "uses", t1.uses, 0);
        check(b, "revoked", t1.revoked, false);
        check(b, "approval", t1.require_approval, true);
        check(
            b,
            "created_by",
            t1.created_by.as_deref(),
            Some("admin@example.com"),
        );
        let mut bare = token(a.id, "two");
        bare.label = None;
        bare.created_by = None;
        let t2 = create_enrolment_token(&store, &bare, T0 + 1).await?;
        check(b, "no label", t2.label.clone(), None);
        let t3 = create_enrolment_token(&store, &token(other.id, "three"), T0 + 2).await?;

        check(
            b,
            "list all, oldest first",
            store.list_enrolment_tokens(None).await?,
            vec![t1.clone(), t2.clone(), t3.clone()],
        );
        check(
            b,
            "list one org",
            store.list_enrolment_tokens(Some(a.id)).await?,
            vec![t1.clone(), t2.clone()],
        );

        revoke_enrolment_token(&store, a.id, t2.id).await?;
        let again = revoke_enrolment_token(&store, a.id, t2.id).await?;
        check(b, "revoke is idempotent", again.revoked, true);
        let revoked: Vec<bool> = store
            .list_enrolment_tokens(Some(a.id))
            .await?
            .iter()
            .map(|t| t.revoked)
            .collect();
        check(b, "revoked flag", revoked, vec![false, true]);
        assert!(
            matches!(
                revoke_enrolment_token(&store, a.id, Uuid::new_v4()).await,
                Err(StoreError::NotFound)
            ),
            "[{b}] revoke missing"
        );
        assert!(
            matches!(
                revoke_enrolment_token(&store, other.id, t1.id).await,
                Err(StoreError::NotFound)
            ),
            "[{b}] revoke another organisation's token"
        );

        let cases: [(&str, NewEnrolmentToken, &str); 4] = [
            ("duplicate hash", token(a.id, "one"), "conflict"),
            (
                "bad hash",
                NewEnrolmentToken {
                    token_hash: "xyz".into(),
                    ..token(a.id, "x")
                },
                "invalid",
            ),
            (
                "zero max uses",
                NewEnrolmentToken {
                    max_uses: Some(0),
                    ..token(a.id, "y")
                },
                "invalid",
            ),
            ("unknown org", token(Uuid::new_v4(), "z"), "invalid"),
        ];
        for (case, new, want) in cases {
            let got = match create_enrolment_token(&store, &new, T0).await {
                Err(StoreError::Conflict(_)) => "conflict",
                Err(StoreError::Invalid(_)) => "invalid",
                other => panic!("[{b}] {case}: {other:?}"),
            };
            check(b, case, got, want);
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_applies_the_token() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        for (secret, require_approval, want) in [
            ("open", false, AgentApproval::Approved),
            ("gated", true, AgentApproval::Pending),
        ] {
            let mut t = token(org.id, secret);
            t.require_approval = require_approval;
            let tok = create_enrolment_token(&store, &t, T0).await?;
            // Callers may hand in upper-case hex.
            let agent = enrol_agent(
                &store,
                &hash_of(secret).to_uppercase(),
                &new_agent(secret),
                T0 + 5,
            )
            .await?;
            check(b, secret, agent.approval, want);
            check(b, "org from token", agent.org_id, org.id);
            check(b, "token id", agent.token_id, Some(tok.id));
            check(b, "not connected", agent.connected, false);
            check(b, "not revoked", agent.revoked, false);
            check(b, "enrolled_at", agent.enrolled_at, T0 + 5);
            check(b, "never seen", agent.last_seen, None);
            check(b, "no node", agent.node_id.clone(), None);
            check(
                b,
                "public key",
                agent.public_key,
                new_agent(secret).public_key,
            );
            check(
                b,
                "stored as returned",
                store.agent(agent.id).await?,
                Some(agent.clone()),
            );
            let uses = store.list_enrolment_tokens(Some(org.id)).await?;
            check(
                b,
                "use counted",
                uses.iter().find(|t| t.id == tok.id).map(|t| t.uses),
                Some(1),
            );
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolment_refusals() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;

        let mut expired = token(org.id, "expired");
        expired.expires_at = Some(T0);
        create_enrolment_token(&store, &expired, T0 - 10).await?;

        let mut once = token(org.id, "once");
        once.max_uses = Some(1);
        create_enrolment_token(&store, &once, T0).await?;
        enrol_agent(&store, &hash_of("once"), &new_agent("first"), T0).await?;

        let revoked = create_enrolment_token(&store, &token(org.id, "revoked"), T0).await?;
        revoke_enrolment_token(&store, org.id, revoked.id).await?;

        // Revocation is reported even when the token has also expired.
        let mut both = token(org.id, "both");
        both.expires_at = Some(T0 - 1);
        let both = create_enrolment_token(&store, &both, T0 - 10).await?;
        revoke_enrolment_token(&store, org.id, both.id).await?;

        let mut later = token(org.id, "later");
        later.expires_at = Some(T0 + 1);
        create_enrolment_token(&store, &later, T0).await?;

        let cases = [
            (
                "unknown",
                hash_of("never-issued"),
                Some(TokenRefusal::Unknown),
            ),
            (
                "malformed",
                "not-hex".to_owned(),
                Some(TokenRefusal::Unknown),
            ),
            (
                "expired at now",
                hash_of("expired"),
                Some(TokenRefusal::Expired),
            ),
            ("used up", hash_of("once"), Some(TokenRefusal::UsedUp)),
            ("revoked", hash_of("revoked"), Some(TokenRefusal::Revoked)),
            (
                "revoked and expired",
                hash_of("both"),
                Some(TokenRefusal::Revoked),
            ),
            ("expires after now", hash_of("later"), None),
        ];
        for (case, hash, want) in cases {
            let got = refusal(enrol_agent(&store, &hash, &new_agent(case), T0).await);
            check(b, case, got, want);
        }
        check(
            b,
            "display",
            StoreError::Token(TokenRefusal::Expired).to_string(),
            "enrolment token has expired".to_owned(),
        );
        // Refused enrolments created nothing: first + "expires after now" only.
        check(b, "agents created", store.list_agents(None).await?.len(), 2);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_uses_holds_under_concurrent_enrolment() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let mut t = token(org.id, "twice");
        t.max_uses = Some(2);
        let tok = create_enrolment_token(&store, &t, T0).await?;
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    enrol_agent(&s, &hash_of("twice"), &new_agent(&format!("h{i}")), T0).await
                })
            })
            .collect();
        let mut ok = 0;
        let mut used_up = 0;
        for task in tasks {
            match task.await? {
                Ok(_) => ok += 1,
                Err(StoreError::Token(TokenRefusal::UsedUp)) => used_up += 1,
                Err(e) => panic!("[{b}] unexpected {e:?}"),
            }
        }
        check(b, "succeeded", ok, 2);
        check(b, "used up", used_up, 3);
        let stored = store.list_enrolment_tokens(None).await?;
        check(
            b,
            "uses",
            stored.iter().find(|x| x.id == tok.id).map(|x| x.uses),
            Some(2),
        );
        check(b, "agents", store.list_agents(Some(org.id)).await?.len(), 2);
        store.close().await;
    }
    Ok(())
}
