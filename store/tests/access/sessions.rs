//! Login sessions: refresh rotation, reuse revoking the session, one rotation under
//! concurrency; MFA challenges and their attempt counts.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_rotate_and_reuse_revokes() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "s@example.com").await?;
        let new = session(&u, 1, T0 + 86_400_000);
        let s = store.create_auth_session(&new, T0).await?;
        check(b, "user", s.user_id, u.id);
        check(b, "org", s.org_id, org.id);
        check(b, "created", s.created_at, T0);
        check(b, "last used", s.last_used_at, T0);
        check(b, "not revoked", s.revoked_at, None);
        check(b, "ip", s.source_ip.as_deref(), Some("192.0.2.1"));
        check(
            b,
            "by access hash",
            store.session_by_access_hash(&new.access_hash).await?,
            Some(s.clone()),
        );
        check(b, "by id", store.auth_session(s.id).await?, Some(s.clone()));
        check(
            b,
            "duplicate access hash",
            kind(store.create_auth_session(&new, T0).await),
            "conflict",
        );
        check(
            b,
            "unknown user",
            kind(
                store
                    .create_auth_session(
                        &NewAuthSession {
                            user_id: Uuid::new_v4(),
                            ..session(&u, 99, T0 + 1)
                        },
                        T0,
                    )
                    .await,
            ),
            "invalid",
        );

        // Touching writes only when the last write is older than the interval.
        store.touch_auth_session(s.id, T0 + 30_000, 60_000).await?;
        check(
            b,
            "touch too soon",
            store.auth_session(s.id).await?.map(|s| s.last_used_at),
            Some(T0),
        );
        store.touch_auth_session(s.id, T0 + 61_000, 60_000).await?;
        check(
            b,
            "touched",
            store.auth_session(s.id).await?.map(|s| s.last_used_at),
            Some(T0 + 61_000),
        );

        // Rotation.
        let access2 = hash_of("access-2");
        let refresh2 = hash_of("refresh-2");
        let rotated = store
            .rotate_refresh_token(
                &new.refresh_hash,
                &access2,
                T0 + 2_000_000,
                &refresh2,
                T0 + 90_000_000,
                T0 + 100_000,
            )
            .await?;
        let RefreshOutcome::Rotated(r) = rotated else {
            panic!("[{b}] expected Rotated, got {rotated:?}");
        };
        check(b, "same session", r.id, s.id);
        check(b, "new access expiry", r.access_expires_at, T0 + 2_000_000);
        check(
            b,
            "new refresh expiry",
            r.refresh_expires_at,
            T0 + 90_000_000,
        );
        check(b, "used now", r.last_used_at, T0 + 100_000);
        check(
            b,
            "old access hash gone",
            store.session_by_access_hash(&new.access_hash).await?,
            None,
        );
        check(
            b,
            "new access hash",
            store.session_by_access_hash(&access2).await?.map(|s| s.id),
            Some(s.id),
        );

        // The old refresh token again: theft. The session is revoked for good.
        let reused = store
            .rotate_refresh_token(
                &new.refresh_hash,
                &hash_of("access-3"),
                T0 + 3_000_000,
                &hash_of("refresh-3"),
                T0 + 90_000_000,
                T0 + 200_000,
            )
            .await?;
        check(
            b,
            "reuse",
            reused,
            RefreshOutcome::Reused {
                session_id: s.id,
                user_id: u.id,
            },
        );
        let revoked = store
            .auth_session(s.id)
            .await?
            .ok_or_else(|| anyhow!("gone"))?;
        check(b, "revoked at", revoked.revoked_at, Some(T0 + 200_000));
        check(
            b,
            "revoked reason",
            revoked.revoked_reason.as_deref(),
            Some("refresh_token_reuse"),
        );
        check(
            b,
            "new token of a revoked session",
            store
                .rotate_refresh_token(
                    &refresh2,
                    &hash_of("access-4"),
                    T0,
                    &hash_of("refresh-4"),
                    T0,
                    T0 + 300_000,
                )
                .await?,
            RefreshOutcome::Revoked,
        );
        check(
            b,
            "unknown token",
            store
                .rotate_refresh_token(
                    &hash_of("nope"),
                    &hash_of("access-5"),
                    T0,
                    &hash_of("refresh-5"),
                    T0,
                    T0,
                )
                .await?,
            RefreshOutcome::Unknown,
        );

        // Refresh window over.
        let short = session(&u, 2, T0 + 1_000);
        let s2 = store.create_auth_session(&short, T0 + 1).await?;
        check(
            b,
            "expired",
            store
                .rotate_refresh_token(
                    &short.refresh_hash,
                    &hash_of("access-6"),
                    T0,
                    &hash_of("refresh-6"),
                    T0,
                    T0 + 1_000,
                )
                .await?,
            RefreshOutcome::Expired,
        );
        check(
            b,
            "expired leaves session alone",
            store.auth_session(s2.id).await?.and_then(|s| s.revoked_at),
            None,
        );

        // Revocation.
        let s3 = store
            .create_auth_session(&session(&u, 3, T0 + 1_000_000), T0 + 5)
            .await?;
        check(
            b,
            "revoke",
            store.revoke_auth_session(s3.id, "logout", T0 + 6).await?,
            true,
        );
        check(
            b,
            "revoke again",
            store.revoke_auth_session(s3.id, "logout", T0 + 7).await?,
            false,
        );
        check(
            b,
            "revoke missing",
            store
                .revoke_auth_session(Uuid::new_v4(), "logout", T0)
                .await?,
            false,
        );
        let s4 = store
            .create_auth_session(&session(&u, 4, T0 + 1_000_000), T0 + 8)
            .await?;
        let listed: Vec<(Uuid, Option<String>)> = store
            .list_user_sessions(u.id)
            .await?
            .into_iter()
            .map(|s| (s.id, s.revoked_reason))
            .collect();
        check(
            b,
            "newest first, live and revoked",
            listed,
            vec![
                (s4.id, None),
                (s3.id, Some("logout".into())),
                (s2.id, None),
                (s.id, Some("refresh_token_reuse".into())),
            ],
        );
        check(
            b,
            "revoke all live",
            store
                .revoke_user_sessions(u.id, "password_change", T0 + 9)
                .await?,
            2,
        );
        check(
            b,
            "nothing left",
            store
                .revoke_user_sessions(u.id, "password_change", T0 + 9)
                .await?,
            0,
        );
        check(
            b,
            "reason kept",
            store
                .auth_session(s3.id)
                .await?
                .and_then(|s| s.revoked_reason),
            Some("logout".into()),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotation_of_one_token_rotates_once() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        // A second pool stands in for a second API node.
        let second = db.open().await?;
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "race@example.com").await?;
        for round in 0..8u32 {
            // Two racers, as two tabs refreshing at once; every other round four.
            let racers = if round % 2 == 0 { 2 } else { 4 };
            let new = session(&u, round, T0 + 86_400_000);
            let s = store.create_auth_session(&new, T0).await?;
            let tasks: Vec<_> = (0..racers)
                .map(|i| {
                    let st = if i % 2 == 0 {
                        store.clone()
                    } else {
                        second.clone()
                    };
                    let old = new.refresh_hash.clone();
                    tokio::spawn(async move {
                        st.rotate_refresh_token(
                            &old,
                            &hash_of(&format!("race-access-{round}-{i}")),
                            T0 + 1_000_000,
                            &hash_of(&format!("race-refresh-{round}-{i}")),
                            T0 + 2_000_000,
                            T0 + 10,
                        )
                        .await
                    })
                })
                .collect();
            let mut rotated = 0;
            let mut reused = 0;
            let mut revoked = 0;
            for t in tasks {
                match t.await?? {
                    RefreshOutcome::Rotated(_) => rotated += 1,
                    RefreshOutcome::Reused { session_id, .. } => {
                        check(b, "reused names the session", session_id, s.id);
                        reused += 1;
                    }
                    // A racer that arrives after the reuse revoked the session.
                    RefreshOutcome::Revoked => revoked += 1,
                    other => panic!("[{b}] unexpected {other:?}"),
                }
            }
            check(b, "exactly one rotated", rotated, 1);
            if racers == 2 {
                check(b, "the other reused", reused, 1);
            } else {
                assert!(reused >= 1, "[{b}] at least one reuse");
                check(
                    b,
                    "the rest reused or revoked",
                    reused + revoked,
                    racers - 1,
                );
            }
            check(
                b,
                "session revoked",
                store
                    .auth_session(s.id)
                    .await?
                    .and_then(|s| s.revoked_reason),
                Some("refresh_token_reuse".into()),
            );
        }
        second.close().await;
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mfa_challenges_count_attempts() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let u = user(&store, &org, "c@example.com").await?;
        let h = hash_of("challenge-1");
        store
            .create_mfa_challenge(&h, u.id, "192.0.2.7", T0 + 300_000, T0)
            .await?;
        check(
            b,
            "duplicate",
            kind(store.create_mfa_challenge(&h, u.id, "x", T0, T0).await),
            "conflict",
        );
        check(
            b,
            "unknown user",
            kind(
                store
                    .create_mfa_challenge(&hash_of("c2"), Uuid::new_v4(), "x", T0, T0)
                    .await,
            ),
            "invalid",
        );
        for n in 1..=3 {
            check(
                b,
                "open",
                store.mfa_challenge_attempt(&h, 3, T0 + n).await?,
                ChallengeCheck::Open {
                    user_id: u.id,
                    attempts: n,
                },
            );
        }
        check(
            b,
            "cap reached",
            store.mfa_challenge_attempt(&h, 3, T0 + 4).await?,
            ChallengeCheck::TooManyAttempts,
        );
        check(
            b,
            "unknown",
            store.mfa_challenge_attempt(&hash_of("nope"), 3, T0).await?,
            ChallengeCheck::Unknown,
        );

        let h2 = hash_of("challenge-2");
        store
            .create_mfa_challenge(&h2, u.id, "192.0.2.7", T0 + 300_000, T0)
            .await?;
        check(
            b,
            "consume",
            store.consume_mfa_challenge(&h2, T0 + 5).await?,
            true,
        );
        check(
            b,
            "consume once",
            store.consume_mfa_challenge(&h2, T0 + 6).await?,
            false,
        );
        check(
            b,
            "used",
            store.mfa_challenge_attempt(&h2, 3, T0 + 7).await?,
            ChallengeCheck::Used,
        );
        check(
            b,
            "consume unknown",
            store.consume_mfa_challenge(&hash_of("nope"), T0).await?,
            false,
        );

        let h3 = hash_of("challenge-3");
        store
            .create_mfa_challenge(&h3, u.id, "192.0.2.7", T0 + 100, T0)
            .await?;
        check(
            b,
            "expired",
            store.mfa_challenge_attempt(&h3, 3, T0 + 100).await?,
            ChallengeCheck::Expired,
        );

        // Concurrent guesses cannot exceed the cap.
        let h4 = hash_of("challenge-4");
        store
            .create_mfa_challenge(&h4, u.id, "192.0.2.7", T0 + 300_000, T0)
            .await?;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let s = store.clone();
                let h = h4.clone();
                tokio::spawn(async move { s.mfa_challenge_attempt(&h, 5, T0 + 1).await })
            })
            .collect();
        let mut open = HashSet::new();
        let mut refused = 0;
        for t in tasks {
            match t.await?? {
                ChallengeCheck::Open { attempts, .. } => {
                    open.insert(attempts);
                }
                ChallengeCheck::TooManyAttempts => refused += 1,
                other => panic!("[{b}] unexpected {other:?}"),
            }
        }
        check(
            b,
            "five distinct attempts",
            open,
            (1..=5).collect::<HashSet<i64>>(),
        );
        check(b, "five refused", refused, 5);

        // Deleting the user removes their challenges.
        store
            .raw_execute(&format!("DELETE FROM users WHERE id = '{}'", u.id))
            .await?;
        check(
            b,
            "cascade",
            store.mfa_challenge_attempt(&h4, 100, T0 + 2).await?,
            ChallengeCheck::Unknown,
        );
        store.close().await;
    }
    Ok(())
}
