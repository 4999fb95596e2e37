//! Login events: counted for lockouts and listed with filters.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_events_count_and_list() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let u = user(&store, &org, "victim@example.com").await?;
        let ev = |email: &str, ip: &str, success: bool, org_id: Option<Uuid>| NewLoginEvent {
            org_id,
            user_id: org_id.filter(|o| *o == org.id).map(|_| u.id),
            email: email.into(),
            source_ip: ip.into(),
            success,
            outcome: if success { "ok" } else { "bad_password" }.into(),
            detail: None,
        };
        // Failures for the victim from two addresses, spread over time.
        let mut recorded = Vec::new();
        for i in 0..6 {
            let ip = if i % 2 == 0 {
                "198.51.100.1"
            } else {
                "198.51.100.2"
            };
            recorded.push(
                store
                    .record_login_event(
                        &ev(" Victim@Example.com", ip, false, Some(org.id)),
                        T0 + i * 1_000,
                    )
                    .await?,
            );
        }
        let ok = store
            .record_login_event(
                &ev("victim@example.com", "198.51.100.1", true, Some(org.id)),
                T0 + 10_000,
            )
            .await?;
        // An unknown email from the first address, and another org's user.
        store
            .record_login_event(
                &ev("ghost@example.com", "198.51.100.1", false, None),
                T0 + 1,
            )
            .await?;
        store
            .record_login_event(
                &ev("victim@example.com", "203.0.113.9", false, Some(other.id)),
                T0 + 2,
            )
            .await?;
        check(
            b,
            "email lower-cased",
            recorded[0].email.as_str(),
            "victim@example.com",
        );
        check(b, "ts", recorded[1].ts, T0 + 1_000);
        check(b, "success flag", ok.success, true);

        check(
            b,
            "email failures, whole window",
            store
                .count_login_failures_for_email("VICTIM@example.com", T0)
                .await?,
            7,
        );
        check(
            b,
            "email failures since",
            store
                .count_login_failures_for_email("victim@example.com", T0 + 3_000)
                .await?,
            3,
        );
        check(
            b,
            "ip failures",
            store
                .count_login_failures_for_ip("198.51.100.1", T0)
                .await?,
            4,
        );
        check(
            b,
            "ip failures since",
            store
                .count_login_failures_for_ip("198.51.100.2", T0 + 2_000)
                .await?,
            2,
        );
        check(
            b,
            "no failures",
            store.count_login_failures_for_ip("192.0.2.99", T0).await?,
            0,
        );

        let all = store
            .list_login_events(
                org.id,
                &LoginEventFilter {
                    limit: 100,
                    ..LoginEventFilter::default()
                },
            )
            .await?;
        check(b, "org only", all.len(), 7);
        check(b, "newest first", all[0].clone(), ok.clone());
        assert!(
            all.windows(2).all(|w| w[0].ts >= w[1].ts),
            "[{b}] ordered by ts desc"
        );
        let filtered = |f: LoginEventFilter| {
            let s = store.clone();
            async move { Ok::<_, anyhow::Error>(s.list_login_events(org.id, &f).await?.len()) }
        };
        let base = LoginEventFilter {
            limit: 100,
            ..LoginEventFilter::default()
        };
        for (case, filter, want) in [
            (
                "successes",
                LoginEventFilter {
                    success: Some(true),
                    ..base.clone()
                },
                1,
            ),
            (
                "failures",
                LoginEventFilter {
                    success: Some(false),
                    ..base.clone()
                },
                6,
            ),
            (
                "by user",
                LoginEventFilter {
                    user_id: Some(u.id),
                    ..base.clone()
                },
                7,
            ),
            (
                "by other user",
                LoginEventFilter {
                    user_id: Some(Uuid::new_v4()),
                    ..base.clone()
                },
                0,
            ),
            (
                "by email, any case",
                LoginEventFilter {
                    email: Some("VICTIM@EXAMPLE.COM".into()),
                    ..base.clone()
                },
                7,
            ),
            (
                "since..until inclusive",
                LoginEventFilter {
                    since: Some(T0 + 1_000),
                    until: Some(T0 + 3_000),
                    ..base.clone()
                },
                3,
            ),
            (
                "before_ts exclusive",
                LoginEventFilter {
                    before_ts: Some(T0 + 2_000),
                    ..base.clone()
                },
                2,
            ),
            (
                "limit",
                LoginEventFilter {
                    limit: 3,
                    ..base.clone()
                },
                3,
            ),
            (
                "zero limit clamps to one",
                LoginEventFilter {
                    limit: 0,
                    ..base.clone()
                },
                1,
            ),
        ] {
            check(b, case, filtered(filter).await?, want);
        }
        check(
            b,
            "other org sees only its own",
            store.list_login_events(other.id, &base).await?.len(),
            1,
        );

        let long = store
            .record_login_event(
                &NewLoginEvent {
                    email: "e".repeat(1_000),
                    detail: Some("d".repeat(1_000)),
                    ..ev("x", "192.0.2.1", false, None)
                },
                T0,
            )
            .await?;
        check(b, "email capped", long.email.chars().count(), 320);
        check(
            b,
            "detail capped",
            long.detail.map(|d| d.chars().count()),
            Some(500),
        );
        store.close().await;
    }
    Ok(())
}
