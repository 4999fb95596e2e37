//! The audit chain: appends, listing, verification, tampering detected, concurrent appends
//! kept in one chain; admin writes scoped and committed with their audit record.

use crate::common::*;

fn entry(i: i64, org_id: Option<Uuid>) -> NewAuditEntry {
    NewAuditEntry {
        org_id,
        actor: format!("user{}@example.com", i % 3),
        action: ["agent.approve", "token.create", "user.login"][(i % 3) as usize].into(),
        target: (i % 2 == 0).then(|| format!("agent/{i}")),
        details: json!({ "i": i, "note": "a\nb \"quoted\"", "nested": { "z": 1, "a": [1, 2] } }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_chain_appends_lists_and_verifies() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        check(
            b,
            "empty log",
            store.verify_audit_chain().await?,
            ChainReport {
                checked: 0,
                first_broken: None,
            },
        );
        let mut appended = Vec::new();
        for i in 0..50 {
            let org_id = (i % 5 != 0).then_some(org.id);
            appended.push(store.append_audit(&entry(i, org_id), T0 + i).await?);
        }
        check(b, "first seq", appended[0].seq, 1);
        check(b, "genesis", appended[0].prev_hash.clone(), "0".repeat(64));
        for pair in appended.windows(2) {
            check(b, "linked", pair[1].prev_hash.clone(), pair[0].hash.clone());
            check(b, "consecutive", pair[1].seq, pair[0].seq + 1);
        }
        check(
            b,
            "verify",
            store.verify_audit_chain().await?,
            ChainReport {
                checked: 50,
                first_broken: None,
            },
        );

        let newest = store.list_audit(None, 10).await?;
        let want: Vec<_> = appended.iter().rev().take(10).cloned().collect();
        check(b, "newest first, round-trips", newest, want);
        let scoped = store.list_audit(Some(org.id), 1000).await?;
        check(b, "org filter", scoped.len(), 40);
        assert!(
            scoped.iter().all(|r| r.org_id == Some(org.id)),
            "[{b}] org filter"
        );
        check(b, "zero limit", store.list_audit(None, 0).await?, vec![]);
        assert!(
            matches!(
                store
                    .append_audit(
                        &NewAuditEntry {
                            actor: String::new(),
                            ..entry(0, None)
                        },
                        T0
                    )
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "[{b}] empty actor"
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_tampering_is_detected() -> Result<()> {
    let cases = [
        (
            "action edited",
            "UPDATE audit_log SET action = 'nothing.happened' WHERE seq = 17",
            Some(17),
        ),
        (
            "details edited",
            "UPDATE audit_log SET details = '{\"i\":5}' WHERE seq = 5",
            Some(5),
        ),
        (
            "ts edited",
            "UPDATE audit_log SET ts = ts + 1 WHERE seq = 50",
            Some(50),
        ),
        (
            "org cleared",
            "UPDATE audit_log SET org_id = NULL WHERE seq = 2",
            Some(2),
        ),
        (
            "row deleted",
            "DELETE FROM audit_log WHERE seq = 30",
            Some(31),
        ),
        (
            "first row deleted",
            "DELETE FROM audit_log WHERE seq = 1",
            Some(2),
        ),
        (
            "hash rewritten",
            "UPDATE audit_log SET hash = prev_hash WHERE seq = 40",
            Some(40),
        ),
        (
            "untouched",
            "UPDATE audit_log SET seq = seq WHERE seq = 0",
            None,
        ),
    ];
    for (case, sql, want) in cases {
        for (db, store) in stores().await? {
            let b = db.backend();
            let org = store.default_org(T0).await?;
            for i in 0..50 {
                store.append_audit(&entry(i, Some(org.id)), T0 + i).await?;
            }
            store.raw_execute(sql).await?;
            let report = store.verify_audit_chain().await?;
            check(b, case, report.first_broken, want);
            store.close().await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_audit_appends_keep_one_chain() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        // A second pool stands in for a second process or node: only the database lock, not the
        // in-process mutex, keeps the two from forking the chain.
        let second = db.open().await?;
        let tasks: Vec<_> = (0..10)
            .map(|t| {
                let s = if t % 2 == 0 {
                    store.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..20 {
                        seqs.push(s.append_audit(&entry(t * 100 + i, None), T0 + i).await?.seq);
                    }
                    Ok::<_, StoreError>(seqs)
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        all.sort_unstable();
        check(b, "every seq once", all, (1..=200).collect::<Vec<i64>>());
        check(
            b,
            "chain intact",
            store.verify_audit_chain().await?,
            ChainReport {
                checked: 200,
                first_broken: None,
            },
        );
        second.close().await;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_writes_are_scoped_and_commit_with_their_audit_record() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let agent = enrolled(&store, org.id, "scoped", true).await?;

        // Another organisation's agent is not found, and nothing changes.
        let mut tx = store.begin().await?;
        check(
            b,
            "foreign agent in tx",
            tx.agent_in_org(other.id, agent.id).await?,
            None,
        );
        for (case, result) in [
            (
                "approve foreign",
                tx.set_agent_approval(other.id, agent.id, AgentApproval::Approved)
                    .await
                    .err(),
            ),
            (
                "revoke foreign",
                tx.revoke_agent(other.id, agent.id).await.err(),
            ),
            (
                "delete foreign",
                tx.delete_agent(other.id, agent.id).await.err(),
            ),
        ] {
            assert!(matches!(result, Some(StoreError::NotFound)), "[{b}] {case}");
        }
        tx.commit().await?;
        check(
            b,
            "untouched",
            store.agent(agent.id).await?.map(|a| a.status()),
            Some(AgentStatus::Pending),
        );

        // A change and its audit record go together: rolled back, neither is there.
        let mut tx = store.begin().await?;
        tx.set_agent_approval(org.id, agent.id, AgentApproval::Approved)
            .await?;
        tx.append_audit(&entry(0, Some(org.id)), T0).await?;
        tx.rollback().await?;
        check(
            b,
            "rolled back approval",
            store.agent(agent.id).await?.map(|a| a.approval),
            Some(AgentApproval::Pending),
        );
        check(
            b,
            "rolled back audit",
            store.list_audit(None, 10).await?.len(),
            0,
        );

        // Committed, both are.
        let mut tx = store.begin().await?;
        let approved = tx
            .set_agent_approval(org.id, agent.id, AgentApproval::Approved)
            .await?;
        tx.append_audit(&entry(0, Some(org.id)), T0).await?;
        let records = tx.commit().await?;
        check(b, "approved", approved.approval, AgentApproval::Approved);
        check(b, "records handed back", records.len(), 1);
        check(
            b,
            "audit stored",
            store.list_audit(None, 10).await?.len(),
            1,
        );

        // An enrolment rolled back leaves the token's use unspent and no agent behind.
        let secret = "rollback-secret";
        let mut t = token(org.id, secret);
        t.max_uses = Some(1);
        let t = create_enrolment_token(&store, &t, T0).await?;
        let mut tx = store.begin().await?;
        let ghost = tx
            .enrol_agent(&hash_of(secret), &new_agent("ghost"), T0)
            .await?;
        drop(tx);
        check(b, "no ghost agent", store.agent(ghost.id).await?, None);
        let uses = store.enrolment_token(org.id, t.id).await?.map(|t| t.uses);
        check(b, "use not spent", uses, Some(0));
    }
    Ok(())
}
