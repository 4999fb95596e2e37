//! Resolving a target selector to the eligible agents of the organisation.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selectors_resolve_to_eligible_agents_of_the_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let org = acme.id;
        let folder = |name: &str, parent: Option<Uuid>| NewGroup {
            name: name.into(),
            description: None,
            parent_id: parent,
        };
        let root = create_group(&store, GroupKind::Folder, org, &folder("root", None), T0).await?;
        let child = create_group(
            &store,
            GroupKind::Folder,
            org,
            &folder("child", Some(root.id)),
            T0,
        )
        .await?;
        let grandchild = create_group(
            &store,
            GroupKind::Folder,
            org,
            &folder("grandchild", Some(child.id)),
            T0,
        )
        .await?;
        let sibling =
            create_group(&store, GroupKind::Folder, org, &folder("sibling", None), T0).await?;
        let t1 = create_group(&store, GroupKind::Tag, org, &folder("t1", None), T0).await?;
        let t2 = create_group(&store, GroupKind::Tag, org, &folder("t2", None), T0).await?;
        let unused = create_group(&store, GroupKind::Tag, org, &folder("unused", None), T0).await?;
        let foreign_folder = create_group(
            &store,
            GroupKind::Folder,
            other.id,
            &folder("root", None),
            T0,
        )
        .await?;
        let foreign_tag =
            create_group(&store, GroupKind::Tag, other.id, &folder("t1", None), T0).await?;

        let in_root = agent(&store, org, "in-root", false).await?;
        let in_child = agent(&store, org, "in-child", false).await?;
        let in_grandchild = agent(&store, org, "in-grandchild", false).await?;
        let in_sibling = agent(&store, org, "in-sibling", false).await?;
        let pending = agent(&store, org, "pending", true).await?;
        let revoked = agent(&store, org, "revoked", false).await?;
        let rejected = agent(&store, org, "rejected", true).await?;
        let unfiled = agent(&store, org, "unfiled", false).await?;
        let foreign = agent(&store, other.id, "foreign", false).await?;
        revoke_agent(&store, revoked.id).await?;
        set_agent_approval(&store, rejected.id, AgentApproval::Rejected).await?;
        for (a, f) in [
            (&in_root, root.id),
            (&in_child, child.id),
            (&in_grandchild, grandchild.id),
            (&in_sibling, sibling.id),
            (&pending, child.id),
            (&revoked, grandchild.id),
            (&rejected, root.id),
        ] {
            move_agent(
                &store,
                org,
                a.id,
                &AgentPlacement {
                    folder_id: Some(Some(f)),
                    ..AgentPlacement::default()
                },
            )
            .await?;
        }
        move_agent(
            &store,
            other.id,
            foreign.id,
            &AgentPlacement {
                folder_id: Some(Some(foreign_folder.id)),
                ..AgentPlacement::default()
            },
        )
        .await?;
        for (a, t) in [
            (&in_root, t1.id),
            (&in_root, t2.id),
            (&unfiled, t1.id),
            (&in_sibling, t2.id),
            (&pending, t1.id),
            (&revoked, t1.id),
            (&rejected, t2.id),
        ] {
            tag_agent(&store, org, a.id, t).await?;
        }
        tag_agent(&store, other.id, foreign.id, foreign_tag.id).await?;

        let expect = |agents: &[&Agent]| -> Resolved {
            let mut v: Resolved = agents
                .iter()
                .map(|a| (a.id, caps(&a.hostname), a.hostname.clone()))
                .collect();
            v.sort_by_key(|x| x.0);
            v
        };
        let cases: Vec<(&str, JobTargetSelector, Resolved)> = vec![
            (
                "all",
                JobTargetSelector::All,
                expect(&[&in_root, &in_child, &in_grandchild, &in_sibling, &unfiled]),
            ),
            (
                "root folder and everything below it",
                JobTargetSelector::Folder(root.id),
                expect(&[&in_root, &in_child, &in_grandchild]),
            ),
            (
                "child folder",
                JobTargetSelector::Folder(child.id),
                expect(&[&in_child, &in_grandchild]),
            ),
            (
                "leaf folder",
                JobTargetSelector::Folder(grandchild.id),
                expect(&[&in_grandchild]),
            ),
            (
                "one tag",
                JobTargetSelector::Tags(vec![t1.id]),
                expect(&[&in_root, &unfiled]),
            ),
            (
                "two tags, deduplicated",
                JobTargetSelector::Tags(vec![t1.id, t2.id, t1.id]),
                expect(&[&in_root, &unfiled, &in_sibling]),
            ),
            (
                "unused tag",
                JobTargetSelector::Tags(vec![unused.id]),
                vec![],
            ),
            ("no tags", JobTargetSelector::Tags(vec![]), vec![]),
            (
                "agents, deduplicated",
                JobTargetSelector::Agents(vec![unfiled.id, in_child.id, unfiled.id]),
                expect(&[&unfiled, &in_child]),
            ),
            ("no agents", JobTargetSelector::Agents(vec![]), vec![]),
        ];
        for (case, selector, want) in cases {
            check(
                b,
                case,
                store.resolve_job_targets(org, &selector).await?,
                want,
            );
        }

        for (case, selector, names) in [
            (
                "pending agent",
                JobTargetSelector::Agents(vec![in_root.id, pending.id]),
                vec![pending.id],
            ),
            (
                "revoked agent",
                JobTargetSelector::Agents(vec![revoked.id]),
                vec![revoked.id],
            ),
            (
                "rejected agent",
                JobTargetSelector::Agents(vec![rejected.id]),
                vec![rejected.id],
            ),
            (
                "foreign agent",
                JobTargetSelector::Agents(vec![foreign.id, in_root.id]),
                vec![foreign.id],
            ),
            (
                "foreign tag",
                JobTargetSelector::Tags(vec![t1.id, foreign_tag.id]),
                vec![foreign_tag.id],
            ),
            (
                "foreign folder",
                JobTargetSelector::Folder(foreign_folder.id),
                vec![],
            ),
            (
                "unknown folder",
                JobTargetSelector::Folder(Uuid::new_v4()),
                vec![],
            ),
        ] {
            let message = invalid_message(store.resolve_job_targets(org, &selector).await);
            for id in names {
                assert!(message.contains(&id.to_string()), "[{b}] {case}: {message}");
            }
            assert!(
                !message.starts_with("expected Invalid"),
                "[{b}] {case}: {message}"
            );
            assert!(
                !message.contains(&in_root.id.to_string()),
                "[{b}] {case}: {message}"
            );
        }
        let many = random_agents(7);
        let message = invalid_message(
            store
                .resolve_job_targets(org, &JobTargetSelector::Agents(many.clone()))
                .await,
        );
        check(
            b,
            "at most five named",
            (
                many.iter()
                    .filter(|id| message.contains(&id.to_string()))
                    .count(),
                message.ends_with("and 2 more"),
            ),
            (5, true),
        );

        check(
            b,
            "the other org sees only its own",
            store
                .resolve_job_targets(other.id, &JobTargetSelector::All)
                .await?,
            expect(&[&foreign]),
        );
        let empty = create_org(&store, "empty", T0).await?;
        check(
            b,
            "an org without agents",
            store
                .resolve_job_targets(empty.id, &JobTargetSelector::All)
                .await?,
            vec![],
        );
        store.close().await;
    }
    Ok(())
}
