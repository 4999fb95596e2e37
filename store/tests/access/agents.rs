//! Agent queries: tags and placement within the agent's organisation, filtered keyset pages
//! over a varied fleet, and counts by status and OS.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_are_tagged_and_placed_within_their_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let group = |k: GroupKind, org_id: Uuid, name: &str| {
            let s = store.clone();
            let name = name.to_owned();
            async move {
                create_group(
                    &s,
                    k,
                    org_id,
                    &NewGroup {
                        name,
                        description: None,
                        parent_id: None,
                    },
                    T0,
                )
                .await
            }
        };
        let web = group(GroupKind::Tag, org.id, "web").await?;
        let db_tag = group(GroupKind::Tag, org.id, "db").await?;
        let their_tag = group(GroupKind::Tag, other.id, "web").await?;
        let folder = group(GroupKind::Folder, org.id, "servers").await?;
        let site = group(GroupKind::Site, org.id, "paris").await?;
        let company = group(GroupKind::Company, org.id, "acme corp").await?;
        let their_folder = group(GroupKind::Folder, other.id, "servers").await?;
        let agent = enrolled(&store, org.id, "web-1", T0).await?;
        let theirs = enrolled(&store, other.id, "their-1", T0).await?;

        tag_agent(&store, org.id, agent.id, web.id).await?;
        tag_agent(&store, org.id, agent.id, web.id).await?;
        tag_agent(&store, org.id, agent.id, db_tag.id).await?;
        let names = |tags: Vec<reap3r_store::Group>| -> Vec<String> {
            tags.into_iter().map(|t| t.name).collect()
        };
        check(
            b,
            "tags by name",
            names(store.agent_tags(org.id, agent.id).await?),
            vec!["db".to_owned(), "web".into()],
        );
        check(
            b,
            "tags of another org's agent are not shown",
            store.agent_tags(org.id, theirs.id).await?,
            vec![],
        );
        for (case, agent_id, tag_id) in [
            ("other org's tag", agent.id, their_tag.id),
            ("other org's agent", theirs.id, web.id),
            ("missing tag", agent.id, Uuid::new_v4()),
        ] {
            check(
                b,
                case,
                kind(tag_agent(&store, org.id, agent_id, tag_id).await),
                "not_found",
            );
            check(
                b,
                case,
                kind(untag_agent(&store, org.id, agent_id, tag_id).await),
                "not_found",
            );
        }
        untag_agent(&store, org.id, agent.id, db_tag.id).await?;
        untag_agent(&store, org.id, agent.id, db_tag.id).await?;
        check(
            b,
            "untagged",
            names(store.agent_tags(org.id, agent.id).await?),
            vec!["web".to_owned()],
        );
        delete_group(&store, GroupKind::Tag, org.id, web.id).await?;
        check(
            b,
            "deleting the tag unlinks it",
            store.agent_tags(org.id, agent.id).await?,
            vec![],
        );

        let placed = move_agent(
            &store,
            org.id,
            agent.id,
            &AgentPlacement {
                folder_id: Some(Some(folder.id)),
                site_id: Some(Some(site.id)),
                company_id: Some(Some(company.id)),
            },
        )
        .await?;
        check(
            b,
            "placed",
            (placed.folder_id, placed.site_id, placed.company_id),
            (Some(folder.id), Some(site.id), Some(company.id)),
        );
        let partly = move_agent(
            &store,
            org.id,
            agent.id,
            &AgentPlacement {
                site_id: Some(None),
                ..AgentPlacement::default()
            },
        )
        .await?;
        check(
            b,
            "only the site cleared",
            (partly.folder_id, partly.site_id, partly.company_id),
            (Some(folder.id), None, Some(company.id)),
        );
        check(
            b,
            "other org's folder",
            invalid_message(
                move_agent(
                    &store,
                    org.id,
                    agent.id,
                    &AgentPlacement {
                        folder_id: Some(Some(their_folder.id)),
                        ..AgentPlacement::default()
                    },
                )
                .await,
            ),
            "folder not found".to_owned(),
        );
        check(
            b,
            "a folder id is not a site",
            invalid_message(
                move_agent(
                    &store,
                    org.id,
                    agent.id,
                    &AgentPlacement {
                        site_id: Some(Some(folder.id)),
                        ..AgentPlacement::default()
                    },
                )
                .await,
            ),
            "site not found".to_owned(),
        );
        check(
            b,
            "other org's agent",
            kind(
                move_agent(
                    &store,
                    org.id,
                    theirs.id,
                    &AgentPlacement {
                        folder_id: Some(Some(folder.id)),
                        ..AgentPlacement::default()
                    },
                )
                .await,
            ),
            "not_found",
        );
        check(
            b,
            "refusals changed nothing",
            store
                .agent(agent.id)
                .await?
                .map(|a| (a.folder_id, a.site_id)),
            Some((Some(folder.id), None)),
        );
        delete_group(&store, GroupKind::Company, org.id, company.id).await?;
        check(
            b,
            "company deleted, agent unfiled",
            store.agent(agent.id).await?.and_then(|a| a.company_id),
            None,
        );
        store.close().await;
    }
    Ok(())
}

/// Builds a varied fleet of 25 agents in `org` (plus one in `other`), three per enrolment
/// millisecond so the id tie-break matters.
async fn fleet(store: &Store, org: Uuid, other: Uuid) -> Result<Vec<Agent>> {
    let secret = format!("fleet-{}", Uuid::new_v4());
    create_enrolment_token(store, &token(org, &secret), T0).await?;
    let hello = |hostname: &str| AgentHello {
        hostname: hostname.into(),
        agent_version: "0.1.0".into(),
        capabilities: vec![],
        inventory: json!({}),
        sealing_key: None,
    };
    for i in 0..25i64 {
        let os = ["linux", "Windows", "macOS", "LINUX"][(i % 4) as usize];
        let hostname = match i {
            3 => "100%_load\\box".to_owned(),
            4 => "100x-load-box".to_owned(),
            _ => format!("Host-{i:02}"),
        };
        let a = enrol_agent(
            store,
            &hash_of(&secret),
            &new_agent(&hostname, os),
            T0 + i / 3,
        )
        .await?;
        match i % 5 {
            0 => {
                store
                    .mark_agent_online(a.id, "node-a", &hello(&hostname), T0 + 100)
                    .await?;
            }
            1 => {}
            2 => {
                set_agent_approval(store, a.id, AgentApproval::Pending).await?;
            }
            3 => {
                set_agent_approval(store, a.id, AgentApproval::Rejected).await?;
            }
            _ => {
                // Revoked outranks approval and connection.
                store
                    .mark_agent_online(a.id, "node-a", &hello(&hostname), T0 + 100)
                    .await?;
                set_agent_approval(store, a.id, AgentApproval::Rejected).await?;
                revoke_agent(store, a.id).await?;
            }
        }
    }
    enrolled(store, other, "Host-other", T0).await?;
    Ok(store.list_agents(Some(org)).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_pages_filters_and_stats() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let agents = fleet(&store, org.id, other.id).await?;
        check(b, "fleet", agents.len(), 25);

        // Pages of 10: 10, 10, 5, then nothing; every agent exactly once, in order.
        let mut seen = Vec::new();
        let mut cursor: Option<AgentCursor> = None;
        let mut sizes = Vec::new();
        loop {
            let page = store
                .list_agents_page(org.id, &AgentFilter::default(), cursor.as_ref(), 10)
                .await?;
            sizes.push(page.len());
            let Some(last) = page.last() else { break };
            cursor = Some(AgentCursor::from(last));
            seen.extend(page.iter().map(|a| (a.enrolled_at, a.id)));
        }
        check(b, "page sizes", sizes, vec![10, 10, 5, 0]);
        let unique: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
        check(b, "no duplicates", unique.len(), 25);
        check(
            b,
            "no misses",
            unique,
            agents.iter().map(|a| a.id).collect::<HashSet<_>>(),
        );
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "[{b}] ordered by enrolled_at"
        );

        let count = |filter: AgentFilter| {
            let s = store.clone();
            async move {
                let page = s.list_agents_page(org.id, &filter, None, 1000).await?;
                Ok::<_, anyhow::Error>(page.into_iter().map(|a| a.id).collect::<HashSet<_>>())
            }
        };
        for status in [
            AgentStatus::Online,
            AgentStatus::Offline,
            AgentStatus::Pending,
            AgentStatus::Rejected,
            AgentStatus::Revoked,
        ] {
            let want: HashSet<Uuid> = agents
                .iter()
                .filter(|a| a.status() == status)
                .map(|a| a.id)
                .collect();
            check(b, &format!("{status} count"), want.len(), 5);
            check(
                b,
                &format!("status {status}"),
                count(AgentFilter {
                    status: Some(status),
                    ..AgentFilter::default()
                })
                .await?,
                want,
            );
        }
        let linux: HashSet<Uuid> = agents
            .iter()
            .filter(|a| a.os.eq_ignore_ascii_case("linux"))
            .map(|a| a.id)
            .collect();
        check(b, "linux agents", linux.len(), 13);
        check(
            b,
            "os ignores case",
            count(AgentFilter {
                os: Some("Linux".into()),
                ..AgentFilter::default()
            })
            .await?,
            linux,
        );
        let by_host = |s: &str| -> HashSet<Uuid> {
            agents
                .iter()
                .filter(|a| a.hostname.to_lowercase().contains(&s.to_lowercase()))
                .map(|a| a.id)
                .collect()
        };
        for (case, search, want) in [
            ("case-insensitive substring", "host-1", 10),
            ("percent is literal", "100%", 1),
            ("underscore is literal", "%_l", 1),
            ("backslash is literal", "\\box", 1),
            ("no match", "zzz", 0),
        ] {
            let got = count(AgentFilter {
                search: Some(search.into()),
                ..AgentFilter::default()
            })
            .await?;
            check(b, case, got.len(), want);
            check(b, case, got, by_host(search));
        }

        // Group filters, combined with the others.
        let mk = |k: GroupKind, name: &str| {
            let s = store.clone();
            let name = name.to_owned();
            async move {
                create_group(
                    &s,
                    k,
                    org.id,
                    &NewGroup {
                        name,
                        description: None,
                        parent_id: None,
                    },
                    T0,
                )
                .await
            }
        };
        let tag = mk(GroupKind::Tag, "prod").await?;
        let folder = mk(GroupKind::Folder, "f").await?;
        let site = mk(GroupKind::Site, "s").await?;
        let company = mk(GroupKind::Company, "c").await?;
        let picked: Vec<&Agent> = agents.iter().step_by(3).collect();
        for a in &picked {
            tag_agent(&store, org.id, a.id, tag.id).await?;
            move_agent(
                &store,
                org.id,
                a.id,
                &AgentPlacement {
                    folder_id: Some(Some(folder.id)),
                    site_id: Some(Some(site.id)),
                    company_id: Some(Some(company.id)),
                },
            )
            .await?;
        }
        let picked_ids: HashSet<Uuid> = picked.iter().map(|a| a.id).collect();
        for (case, filter) in [
            (
                "tag",
                AgentFilter {
                    tag_id: Some(tag.id),
                    ..AgentFilter::default()
                },
            ),
            (
                "folder",
                AgentFilter {
                    folder_id: Some(folder.id),
                    ..AgentFilter::default()
                },
            ),
            (
                "site",
                AgentFilter {
                    site_id: Some(site.id),
                    ..AgentFilter::default()
                },
            ),
            (
                "company",
                AgentFilter {
                    company_id: Some(company.id),
                    ..AgentFilter::default()
                },
            ),
        ] {
            check(b, case, count(filter).await?, picked_ids.clone());
        }
        let online_tagged: HashSet<Uuid> = picked
            .iter()
            .filter(|a| a.status() == AgentStatus::Online)
            .map(|a| a.id)
            .collect();
        check(
            b,
            "tag and status",
            count(AgentFilter {
                tag_id: Some(tag.id),
                status: Some(AgentStatus::Online),
                ..AgentFilter::default()
            })
            .await?,
            online_tagged,
        );
        check(
            b,
            "unknown tag",
            count(AgentFilter {
                tag_id: Some(Uuid::new_v4()),
                ..AgentFilter::default()
            })
            .await?,
            HashSet::new(),
        );
        check(
            b,
            "limit clamps to 1",
            store
                .list_agents_page(org.id, &AgentFilter::default(), None, 0)
                .await?
                .len(),
            1,
        );
        check(
            b,
            "other org's page",
            store
                .list_agents_page(other.id, &AgentFilter::default(), None, 100)
                .await?
                .len(),
            1,
        );

        let stats = store.agent_stats(org.id).await?;
        check(
            b,
            "stats",
            stats,
            AgentStats {
                total: 25,
                online: 5,
                offline: 5,
                pending: 5,
                rejected: 5,
                revoked: 5,
                by_os: vec![
                    ("linux".into(), 13),
                    ("macos".into(), 6),
                    ("windows".into(), 6),
                ],
            },
        );
        check(
            b,
            "empty org stats",
            store.agent_stats(Uuid::new_v4()).await?,
            AgentStats::default(),
        );

        // agent_in_org and delete_agent respect the organisation.
        let victim = agents[0].id;
        check(
            b,
            "in org",
            store.agent_in_org(org.id, victim).await?.map(|a| a.id),
            Some(victim),
        );
        check(
            b,
            "not in other",
            store.agent_in_org(other.id, victim).await?,
            None,
        );
        check(
            b,
            "delete from other org",
            kind(delete_agent(&store, other.id, victim).await),
            "not_found",
        );
        delete_agent(&store, org.id, victim).await?;
        check(b, "deleted", store.agent(victim).await?, None);
        check(
            b,
            "delete twice",
            kind(delete_agent(&store, org.id, victim).await),
            "not_found",
        );
        check(
            b,
            "deleted agent reported",
            store.agents_no_longer_allowed(&[victim]).await?,
            vec![victim],
        );
        store.close().await;
    }
    Ok(())
}
