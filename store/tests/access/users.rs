//! Operator accounts: scoped to their organisation, updatable; MFA state and single-use TOTP
//! steps.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_scoped_and_updatable() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let carol = user(&store, &acme, "carol@example.com").await?;
        let alice = user(&store, &acme, "Alice@example.com").await?;
        let mallory = user(&store, &other, "mallory@example.com").await?;
        check(b, "new user defaults", alice.mfa_enabled, false);
        check(
            b,
            "by id",
            store.user_by_id(alice.id).await?,
            Some(alice.clone()),
        );
        check(
            b,
            "by id missing",
            store.user_by_id(Uuid::new_v4()).await?,
            None,
        );
        check(
            b,
            "in org",
            store.user_in_org(acme.id, alice.id).await?,
            Some(alice.clone()),
        );
        check(
            b,
            "other org's user",
            store.user_in_org(acme.id, mallory.id).await?,
            None,
        );
        check(
            b,
            "list by email, own org only",
            store.list_users(acme.id).await?,
            vec![alice.clone(), carol.clone()],
        );

        let updated = store
            .update_user(
                acme.id,
                alice.id,
                &UserUpdate {
                    email: Some(" ALICE2@Example.com ".into()),
                    display_name: Some(Some("Alice A.".into())),
                    role: Some("admin".into()),
                    status: Some("suspended".into()),
                },
                T0 + 1,
            )
            .await?;
        check(b, "email", updated.email.as_str(), "alice2@example.com");
        check(
            b,
            "display",
            updated.display_name.as_deref(),
            Some("Alice A."),
        );
        check(b, "role", updated.role.as_str(), "admin");
        check(b, "status", updated.status.as_str(), "suspended");
        check(b, "updated_at", updated.updated_at, Some(T0 + 1));
        check(b, "created_at kept", updated.created_at, alice.created_at);
        let cleared = store
            .update_user(
                acme.id,
                alice.id,
                &UserUpdate {
                    display_name: Some(None),
                    ..UserUpdate::default()
                },
                T0 + 2,
            )
            .await?;
        check(b, "display cleared", cleared.display_name.clone(), None);
        check(b, "rest kept", cleared.role.as_str(), "admin");
        let untouched = store
            .update_user(acme.id, alice.id, &UserUpdate::default(), T0 + 3)
            .await?;
        check(
            b,
            "empty update",
            untouched.email.as_str(),
            "alice2@example.com",
        );

        let cases: [(&str, Uuid, Uuid, UserUpdate, &str); 5] = [
            (
                "email taken",
                acme.id,
                alice.id,
                UserUpdate {
                    email: Some("Carol@example.com".into()),
                    ..UserUpdate::default()
                },
                "conflict",
            ),
            (
                "other org",
                acme.id,
                mallory.id,
                UserUpdate {
                    role: Some("admin".into()),
                    ..UserUpdate::default()
                },
                "not_found",
            ),
            (
                "missing",
                acme.id,
                Uuid::new_v4(),
                UserUpdate::default(),
                "not_found",
            ),
            (
                "empty email",
                acme.id,
                alice.id,
                UserUpdate {
                    email: Some("  ".into()),
                    ..UserUpdate::default()
                },
                "invalid",
            ),
            (
                "empty role",
                acme.id,
                alice.id,
                UserUpdate {
                    role: Some("".into()),
                    ..UserUpdate::default()
                },
                "invalid",
            ),
        ];
        for (case, org, id, update, want) in cases {
            check(
                b,
                case,
                kind(store.update_user(org, id, &update, T0).await),
                want,
            );
        }
        check(
            b,
            "mallory unchanged",
            store.user_by_id(mallory.id).await?,
            Some(mallory.clone()),
        );

        store
            .set_user_password(carol.id, "$argon2id$new", T0 + 5)
            .await?;
        let carol2 = store
            .user_by_id(carol.id)
            .await?
            .ok_or_else(|| anyhow!("gone"))?;
        check(
            b,
            "password",
            carol2.password_hash.as_str(),
            "$argon2id$new",
        );
        check(b, "password stamp", carol2.updated_at, Some(T0 + 5));
        check(
            b,
            "password missing user",
            kind(store.set_user_password(Uuid::new_v4(), "x", T0).await),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mfa_state_and_single_use_totp_steps() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "mfa@example.com").await?;
        let get = |store: Store, id: Uuid| async move {
            store.user_by_id(id).await?.ok_or_else(|| anyhow!("gone"))
        };

        store
            .set_user_mfa(u.id, Some("JBSWY3DPEHPK3PXP"), false, T0 + 1)
            .await?;
        let pending = get(store.clone(), u.id).await?;
        check(
            b,
            "setup secret",
            pending.mfa_secret.as_deref(),
            Some("JBSWY3DPEHPK3PXP"),
        );
        check(b, "setup not enabled", pending.mfa_enabled, false);
        check(b, "setup stamp", pending.updated_at, Some(T0 + 1));
        let text = format!("{pending:?}");
        assert!(!text.contains("JBSWY3DPEHPK3PXP"), "[{b}] {text}");
        assert!(!text.contains("$argon2id"), "[{b}] {text}");

        // One step is accepted once; older steps never.
        check(
            b,
            "first use",
            store.accept_totp_step(u.id, 100).await?,
            true,
        );
        check(b, "replay", store.accept_totp_step(u.id, 100).await?, false);
        check(
            b,
            "older step",
            store.accept_totp_step(u.id, 99).await?,
            false,
        );
        check(
            b,
            "next step",
            store.accept_totp_step(u.id, 101).await?,
            true,
        );
        check(
            b,
            "unknown user",
            store.accept_totp_step(Uuid::new_v4(), 1).await?,
            false,
        );

        store
            .set_user_mfa(u.id, Some("JBSWY3DPEHPK3PXP"), true, T0 + 2)
            .await?;
        let on = get(store.clone(), u.id).await?;
        check(b, "enabled", on.mfa_enabled, true);
        check(b, "step kept on enable", on.mfa_last_step, Some(101));

        // Concurrent logins presenting the same code: exactly one wins.
        let second = db.open().await?;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = if i % 2 == 0 {
                    store.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move { s.accept_totp_step(u.id, 200).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await?? {
                wins += 1;
            }
        }
        check(b, "one concurrent winner", wins, 1);
        second.close().await;

        store.set_user_mfa(u.id, None, false, T0 + 3).await?;
        let off = get(store.clone(), u.id).await?;
        check(b, "disabled", off.mfa_enabled, false);
        check(b, "secret cleared", off.mfa_secret.clone(), None);
        check(b, "step cleared", off.mfa_last_step, None);
        check(
            b,
            "step usable again",
            store.accept_totp_step(u.id, 5).await?,
            true,
        );

        check(
            b,
            "enable without secret",
            kind(store.set_user_mfa(u.id, None, true, T0).await),
            "invalid",
        );
        check(
            b,
            "missing user",
            kind(
                store
                    .set_user_mfa(Uuid::new_v4(), Some("A"), false, T0)
                    .await,
            ),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}
