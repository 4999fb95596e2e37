//! Groups of every kind (sites, companies, folders, tags), and folders nesting without
//! cycles.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_of_every_kind() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        for k in [
            GroupKind::Site,
            GroupKind::Company,
            GroupKind::Folder,
            GroupKind::Tag,
        ] {
            let case = |what: &str| format!("{k}: {what}");
            let named = |name: &str| NewGroup {
                name: name.into(),
                description: None,
                parent_id: None,
            };
            let beta = create_group(
                &store,
                k,
                org.id,
                &NewGroup {
                    description: Some("second".into()),
                    ..named(" beta ")
                },
                T0,
            )
            .await?;
            check(b, &case("kind"), beta.kind, k);
            check(b, &case("trimmed"), beta.name.as_str(), "beta");
            check(
                b,
                &case("description"),
                beta.description.as_deref(),
                Some("second"),
            );
            check(b, &case("org"), beta.org_id, org.id);
            check(b, &case("no parent"), beta.parent_id, None);
            check(b, &case("created"), beta.created_at, T0);
            check(b, &case("not updated"), beta.updated_at, None);
            let alpha = create_group(&store, k, org.id, &named("alpha"), T0).await?;
            // The same name is fine in another organisation, and for another kind.
            let theirs = create_group(&store, k, other.id, &named("alpha"), T0).await?;
            for (what, new, want) in [
                ("duplicate", named("alpha"), "conflict"),
                ("empty", named("  "), "invalid"),
                ("too long", named(&"n".repeat(201)), "invalid"),
                ("longest", named(&"n".repeat(200)), "ok"),
            ] {
                check(
                    b,
                    &case(what),
                    kind(create_group(&store, k, org.id, &new, T0).await),
                    want,
                );
            }
            let names: Vec<String> = store
                .list_groups(k, org.id)
                .await?
                .into_iter()
                .map(|g| g.name)
                .collect();
            check(
                b,
                &case("list by name"),
                names,
                vec!["alpha".to_owned(), "beta".into(), "n".repeat(200)],
            );
            check(
                b,
                &case("get"),
                store.group(k, org.id, alpha.id).await?,
                Some(alpha.clone()),
            );
            check(
                b,
                &case("get other org's"),
                store.group(k, org.id, theirs.id).await?,
                None,
            );
            let renamed = update_group(
                &store,
                k,
                org.id,
                alpha.id,
                &GroupUpdate {
                    name: Some("gamma".into()),
                    description: Some(Some("third".into())),
                    parent_id: None,
                },
                T0 + 5,
            )
            .await?;
            check(b, &case("renamed"), renamed.name.as_str(), "gamma");
            check(
                b,
                &case("described"),
                renamed.description.as_deref(),
                Some("third"),
            );
            check(b, &case("updated"), renamed.updated_at, Some(T0 + 5));
            let cleared = update_group(
                &store,
                k,
                org.id,
                alpha.id,
                &GroupUpdate {
                    description: Some(None),
                    ..GroupUpdate::default()
                },
                T0 + 6,
            )
            .await?;
            check(b, &case("description cleared"), cleared.description, None);
            check(b, &case("name kept"), cleared.name.as_str(), "gamma");
            for (what, org_id, id, update, want) in [
                (
                    "rename onto existing",
                    org.id,
                    alpha.id,
                    GroupUpdate {
                        name: Some("beta".into()),
                        ..GroupUpdate::default()
                    },
                    "conflict",
                ),
                (
                    "update other org's",
                    org.id,
                    theirs.id,
                    GroupUpdate {
                        name: Some("mine".into()),
                        ..GroupUpdate::default()
                    },
                    "not_found",
                ),
                (
                    "empty rename",
                    org.id,
                    alpha.id,
                    GroupUpdate {
                        name: Some(" ".into()),
                        ..GroupUpdate::default()
                    },
                    "invalid",
                ),
            ] {
                check(
                    b,
                    &case(what),
                    kind(update_group(&store, k, org_id, id, &update, T0).await),
                    want,
                );
            }
            if k != GroupKind::Folder {
                check(
                    b,
                    &case("parent refused"),
                    kind(
                        create_group(
                            &store,
                            k,
                            org.id,
                            &NewGroup {
                                parent_id: Some(beta.id),
                                ..named("child")
                            },
                            T0,
                        )
                        .await,
                    ),
                    "invalid",
                );
                check(
                    b,
                    &case("parent refused on update"),
                    kind(
                        update_group(
                            &store,
                            k,
                            org.id,
                            alpha.id,
                            &GroupUpdate {
                                parent_id: Some(Some(beta.id)),
                                ..GroupUpdate::default()
                            },
                            T0,
                        )
                        .await,
                    ),
                    "invalid",
                );
            }
            check(
                b,
                &case("delete other org's"),
                kind(delete_group(&store, k, org.id, theirs.id).await),
                "not_found",
            );
            delete_group(&store, k, org.id, alpha.id).await?;
            check(
                b,
                &case("deleted"),
                store.group(k, org.id, alpha.id).await?,
                None,
            );
            check(
                b,
                &case("delete twice"),
                kind(delete_group(&store, k, org.id, alpha.id).await),
                "not_found",
            );
            check(
                b,
                &case("theirs survives"),
                store.group(k, other.id, theirs.id).await?.map(|g| g.id),
                Some(theirs.id),
            );
        }
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn folders_nest_without_cycles() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let folder = |name: &str, parent: Option<Uuid>| NewGroup {
            name: name.into(),
            description: None,
            parent_id: parent,
        };
        let f = GroupKind::Folder;
        let a = create_group(&store, f, org.id, &folder("a", None), T0).await?;
        let bf = create_group(&store, f, org.id, &folder("b", Some(a.id)), T0).await?;
        let c = create_group(&store, f, org.id, &folder("c", Some(bf.id)), T0).await?;
        let d = create_group(&store, f, org.id, &folder("d", None), T0).await?;
        let theirs = create_group(&store, f, other.id, &folder("t", None), T0).await?;
        check(b, "nested", c.parent_id, Some(bf.id));
        check(
            b,
            "parent in other org",
            invalid_message(
                create_group(&store, f, org.id, &folder("x", Some(theirs.id)), T0).await,
            ),
            "parent folder not found".to_owned(),
        );
        check(
            b,
            "parent missing",
            invalid_message(
                create_group(&store, f, org.id, &folder("x", Some(Uuid::new_v4())), T0).await,
            ),
            "parent folder not found".to_owned(),
        );
        let reparent = |id: Uuid, parent: Option<Uuid>| {
            let s = store.clone();
            async move {
                update_group(
                    &s,
                    f,
                    org.id,
                    id,
                    &GroupUpdate {
                        parent_id: Some(parent),
                        ..GroupUpdate::default()
                    },
                    T0 + 1,
                )
                .await
            }
        };
        for (case, id, parent) in [
            ("own parent", a.id, a.id),
            ("under its child", a.id, bf.id),
            ("under its grandchild", a.id, c.id),
            ("b under c", bf.id, c.id),
        ] {
            check(
                b,
                case,
                invalid_message(reparent(id, Some(parent)).await),
                "folder cycle".to_owned(),
            );
        }
        check(
            b,
            "into other org's folder",
            invalid_message(reparent(d.id, Some(theirs.id)).await),
            "parent folder not found".to_owned(),
        );
        check(
            b,
            "other org's folder cannot be moved",
            kind(reparent(theirs.id, Some(d.id)).await),
            "not_found",
        );
        let moved = reparent(a.id, Some(d.id)).await?;
        check(b, "legal move", moved.parent_id, Some(d.id));
        let c_moved = reparent(c.id, Some(a.id)).await?;
        check(b, "sibling move", c_moved.parent_id, Some(a.id));
        let top = reparent(bf.id, None).await?;
        check(b, "to the top", top.parent_id, None);

        // A folder with sub-folders cannot go; its agents are unfiled when it does.
        check(
            b,
            "has sub-folders",
            kind(delete_group(&store, f, org.id, a.id).await),
            "conflict",
        );
        let agent = enrolled(&store, org.id, "filed", T0).await?;
        move_agent(
            &store,
            org.id,
            agent.id,
            &AgentPlacement {
                folder_id: Some(Some(c.id)),
                ..AgentPlacement::default()
            },
        )
        .await?;
        delete_group(&store, f, org.id, c.id).await?;
        check(
            b,
            "agent unfiled",
            store.agent(agent.id).await?.and_then(|a| a.folder_id),
            None,
        );
        delete_group(&store, f, org.id, a.id).await?;
        store.close().await;
    }
    Ok(())
}
