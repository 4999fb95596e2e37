//! Filtered audit listing.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_filters() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let mut all = Vec::new();
        for i in 0..30i64 {
            let org_id = match i % 3 {
                0 => Some(org.id),
                1 => Some(other.id),
                _ => None,
            };
            let entry = NewAuditEntry {
                org_id,
                actor: format!("user{}@example.com", i % 2),
                action: [
                    "agent.approve",
                    "token.create",
                    "user.login",
                    "org.create",
                    "x",
                ][(i % 5) as usize]
                    .into(),
                target: (i % 4 == 0).then(|| format!("agent:{}", i % 8)),
                details: json!({ "i": i }),
            };
            all.push(store.append_audit(&entry, T0 + i).await?);
        }
        let list = |org_id: Option<Uuid>, f: AuditFilter| {
            let s = store.clone();
            async move {
                Ok::<_, anyhow::Error>(
                    s.list_audit_filtered(org_id, &f)
                        .await?
                        .into_iter()
                        .map(|r| r.seq)
                        .collect::<Vec<_>>(),
                )
            }
        };
        let want = |pred: &dyn Fn(&reap3r_store::AuditRecord) -> bool| -> Vec<i64> {
            all.iter()
                .rev()
                .filter(|r| pred(r))
                .map(|r| r.seq)
                .collect()
        };
        let base = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        check(
            b,
            "everything, newest first",
            list(None, base.clone()).await?,
            want(&|_| true),
        );
        check(
            b,
            "one org",
            list(Some(org.id), base.clone()).await?,
            want(&|r| r.org_id == Some(org.id)),
        );
        check(
            b,
            "actor",
            list(
                None,
                AuditFilter {
                    actor: Some("user1@example.com".into()),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| r.actor == "user1@example.com"),
        );
        check(
            b,
            "action in org",
            list(
                Some(org.id),
                AuditFilter {
                    action: Some("agent.approve".into()),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| r.org_id == Some(org.id) && r.action == "agent.approve"),
        );
        check(
            b,
            "target exact",
            list(
                None,
                AuditFilter {
                    target: Some("agent:0".into()),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| r.target.as_deref() == Some("agent:0")),
        );
        check(
            b,
            "actor prefix is no match",
            list(
                None,
                AuditFilter {
                    actor: Some("user1".into()),
                    ..base.clone()
                },
            )
            .await?,
            vec![],
        );
        check(
            b,
            "since..until inclusive",
            list(
                None,
                AuditFilter {
                    since: Some(T0 + 10),
                    until: Some(T0 + 12),
                    ..base.clone()
                },
            )
            .await?,
            want(&|r| (T0 + 10..=T0 + 12).contains(&r.ts)),
        );
        // Paging with before_seq.
        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let page = list(
                None,
                AuditFilter {
                    before_seq: before,
                    limit: 7,
                    ..base.clone()
                },
            )
            .await?;
            let Some(last) = page.last() else { break };
            before = Some(*last);
            pages.extend(page);
        }
        check(b, "paged", pages, want(&|_| true));
        check(
            b,
            "zero limit clamps to one",
            list(
                None,
                AuditFilter {
                    limit: 0,
                    ..base.clone()
                },
            )
            .await?
            .len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}
