//! An agent's lifecycle (approval, the connection lease, revocation, deletion) and batched
//! `last_seen` times.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_lifecycle() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let agent = enrolled(&store, org.id, "web-1", true).await?;
        let status = |a: Option<Agent>| a.map(|a| a.status());
        check(b, "enrolled pending", agent.status(), AgentStatus::Pending);
        check(
            b,
            "pending is not allowed",
            store.agents_no_longer_allowed(&[agent.id]).await?,
            vec![agent.id],
        );

        let approved = set_agent_approval(&store, agent.id, AgentApproval::Approved).await?;
        check(b, "approved", approved.status(), AgentStatus::Offline);
        check(
            b,
            "approved is allowed",
            store.agents_no_longer_allowed(&[agent.id]).await?,
            vec![],
        );

        let hello = AgentHello {
            hostname: "web-1.example.com".into(),
            agent_version: "0.2.0".into(),
            capabilities: vec!["shell".into(), "files".into()],
            inventory: json!({ "cpu": { "cores": 8 }, "disks": [1, 2] }),
            sealing_key: Some([9; 32]),
        };
        store
            .mark_agent_online(agent.id, "node-a", &hello, T0 + 10)
            .await?;
        let online = store
            .agent(agent.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("gone"))?;
        check(b, "online", online.status(), AgentStatus::Online);
        check(b, "node", online.node_id.as_deref(), Some("node-a"));
        check(b, "hostname", online.hostname.as_str(), "web-1.example.com");
        check(b, "version", online.agent_version.as_str(), "0.2.0");
        check(
            b,
            "capabilities",
            online.capabilities.clone(),
            hello.capabilities.clone(),
        );
        check(
            b,
            "inventory",
            online.inventory.clone(),
            hello.inventory.clone(),
        );
        check(b, "last seen", online.last_seen, Some(T0 + 10));

        // The agent reconnected through node-b; node-a's late disconnect must not win.
        store
            .mark_agent_online(agent.id, "node-b", &hello, T0 + 20)
            .await?;
        store
            .mark_agent_offline(agent.id, "node-a", T0 + 21)
            .await?;
        let still = store.agent(agent.id).await?;
        check(
            b,
            "stale offline ignored",
            status(still.clone()),
            Some(AgentStatus::Online),
        );
        check(
            b,
            "lease kept",
            still.and_then(|a| a.node_id),
            Some("node-b".into()),
        );
        store
            .mark_agent_offline(agent.id, "node-b", T0 + 30)
            .await?;
        let off = store.agent(agent.id).await?;
        check(
            b,
            "offline",
            status(off.clone()),
            Some(AgentStatus::Offline),
        );
        check(
            b,
            "offline stamp",
            off.as_ref().and_then(|a| a.last_seen),
            Some(T0 + 30),
        );
        check(b, "lease released", off.and_then(|a| a.node_id), None);

        // A node restarting releases every lease it held, and only those.
        let other = enrolled(&store, org.id, "db-1", false).await?;
        let third = enrolled(&store, org.id, "app-1", false).await?;
        store
            .mark_agent_online(agent.id, "node-a", &hello, T0 + 40)
            .await?;
        let renamed = |hostname: &str| AgentHello {
            hostname: hostname.into(),
            ..hello.clone()
        };
        store
            .mark_agent_online(other.id, "node-a", &renamed("db-1"), T0 + 40)
            .await?;
        store
            .mark_agent_online(third.id, "node-b", &renamed("app-1"), T0 + 40)
            .await?;
        check(
            b,
            "released",
            store.mark_node_agents_offline("node-a", T0 + 50).await?,
            2,
        );
        check(
            b,
            "nothing left",
            store.mark_node_agents_offline("node-a", T0 + 51).await?,
            0,
        );
        check(
            b,
            "a offline",
            status(store.agent(agent.id).await?),
            Some(AgentStatus::Offline),
        );
        check(
            b,
            "b offline",
            status(store.agent(other.id).await?),
            Some(AgentStatus::Offline),
        );
        check(
            b,
            "c untouched",
            status(store.agent(third.id).await?),
            Some(AgentStatus::Online),
        );

        // Status precedence: revoked > rejected > pending > connection.
        let rejected = set_agent_approval(&store, other.id, AgentApproval::Rejected).await?;
        check(b, "rejected", rejected.status(), AgentStatus::Rejected);
        let revoked = revoke_agent(&store, third.id).await?;
        check(
            b,
            "revoked while online",
            revoked.status(),
            AgentStatus::Revoked,
        );
        check(b, "revoked flag", revoked.revoked, true);
        let pending = enrolled(&store, org.id, "kiosk-1", true).await?;
        let gone = Uuid::new_v4();
        check(
            b,
            "no longer allowed",
            store
                .agents_no_longer_allowed(&[
                    agent.id, other.id, third.id, pending.id, gone, third.id,
                ])
                .await?,
            vec![other.id, third.id, pending.id, gone],
        );
        check(
            b,
            "empty input",
            store.agents_no_longer_allowed(&[]).await?,
            vec![],
        );

        let names: Vec<String> = store
            .list_agents(Some(org.id))
            .await?
            .into_iter()
            .map(|a| a.hostname)
            .collect();
        check(
            b,
            "ordered by hostname",
            names,
            vec![
                "app-1".to_owned(),
                "db-1".into(),
                "kiosk-1".into(),
                "web-1.example.com".into(),
            ],
        );
        check(
            b,
            "other org empty",
            store.list_agents(Some(Uuid::new_v4())).await?,
            vec![],
        );

        let missing = Uuid::new_v4();
        for (case, result) in [
            (
                "approve missing",
                set_agent_approval(&store, missing, AgentApproval::Approved)
                    .await
                    .err(),
            ),
            ("revoke missing", revoke_agent(&store, missing).await.err()),
            (
                "hello from missing",
                store
                    .mark_agent_online(missing, "node-a", &hello, T0)
                    .await
                    .err(),
            ),
        ] {
            check(
                b,
                case,
                result.map(|e| e.to_string()),
                Some(StoreError::NotFound.to_string()),
            );
        }
        check(b, "agent missing", store.agent(missing).await?, None);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_seen_is_batched() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        create_enrolment_token(&store, &token(org.id, "fleet"), T0).await?;
        let mut ids = Vec::new();
        for i in 0..1000 {
            let a = enrol_agent(
                &store,
                &hash_of("fleet"),
                &new_agent(&format!("host-{i:04}")),
                T0,
            )
            .await?;
            ids.push(a.id);
        }
        let mut seen: Vec<(Uuid, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, T0 + i as i64))
            .collect();
        // A duplicate keeps the newest time; an unknown id is ignored.
        seen.push((ids[0], T0 + 5_000));
        seen.push((Uuid::new_v4(), T0));
        let started = std::time::Instant::now();
        store.touch_last_seen(&seen).await?;
        eprintln!(
            "[{b}] touch_last_seen of {} rows took {:?}",
            seen.len(),
            started.elapsed()
        );

        let agents = store.list_agents(Some(org.id)).await?;
        check(b, "count", agents.len(), 1000);
        for a in &agents {
            let i = ids.iter().position(|id| *id == a.id).unwrap_or(usize::MAX);
            let want = if i == 0 { T0 + 5_000 } else { T0 + i as i64 };
            check(b, &a.hostname, a.last_seen, Some(want));
        }
        // Older stamps never move last_seen backwards.
        store.touch_last_seen(&[(ids[1], T0 - 1)]).await?;
        check(
            b,
            "monotonic",
            store.agent(ids[1]).await?.and_then(|a| a.last_seen),
            Some(T0 + 1),
        );
        store.touch_last_seen(&[]).await?;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealing_keys_follow_each_hello_and_stay_in_their_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let other_org = create_org(&store, "other", T0).await?;
        create_enrolment_token(&store, &token(org.id, "fleet"), T0).await?;
        // More agents than one query takes, so the batching is exercised.
        let mut ids = Vec::new();
        for i in 0..450 {
            let a = enrol_agent(
                &store,
                &hash_of("fleet"),
                &new_agent(&format!("host-{i:04}")),
                T0,
            )
            .await?;
            ids.push(a.id);
        }
        let stranger = enrolled(&store, other_org.id, "elsewhere", false).await?;
        let hello = |key: Option<[u8; 32]>| AgentHello {
            hostname: "h".into(),
            agent_version: "0.1.0".into(),
            capabilities: vec![],
            inventory: json!({}),
            sealing_key: key,
        };
        let key_of = |i: usize| *blake3::hash(&i.to_le_bytes()).as_bytes();
        for (i, id) in ids.iter().enumerate() {
            // Every tenth agent announces no key.
            let key = (i % 10 != 0).then(|| key_of(i));
            store
                .mark_agent_online(*id, "node-a", &hello(key), T0 + 1)
                .await?;
        }
        store
            .mark_agent_online(stranger.id, "node-a", &hello(Some([1; 32])), T0 + 1)
            .await?;

        let mut asked = ids.clone();
        asked.push(stranger.id);
        asked.push(Uuid::new_v4());
        asked.push(ids[1]);
        let keys = store.sealing_keys(org.id, &asked).await?;
        check(b, "one key per agent that has one", keys.len(), 450 - 45);
        for (i, id) in ids.iter().enumerate() {
            let want = (i % 10 != 0).then(|| key_of(i));
            check(b, &format!("key {i}"), keys.get(id).copied(), want);
        }
        check(b, "other org's agent absent", keys.get(&stranger.id), None);

        // A later hello replaces the key, or clears it.
        store
            .mark_agent_online(ids[1], "node-a", &hello(Some([7; 32])), T0 + 2)
            .await?;
        store
            .mark_agent_online(ids[2], "node-a", &hello(None), T0 + 2)
            .await?;
        let keys = store.sealing_keys(org.id, &ids[..3]).await?;
        check(
            b,
            "replaced and cleared",
            keys,
            [(ids[1], [7; 32])].into_iter().collect(),
        );
        check(
            b,
            "empty input",
            store.sealing_keys(org.id, &[]).await?.len(),
            0,
        );
        store.close().await;
    }
    Ok(())
}
