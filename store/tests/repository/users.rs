//! Operator accounts.

use crate::common::*;

/// Creates a user in a transaction of its own (the operation commits it with its audit record).
async fn create_user(
    store: &Store,
    new: &NewUser,
    now: i64,
) -> Result<reap3r_store::User, StoreError> {
    let mut tx = store.begin().await?;
    let user = tx.create_user(new, now).await?;
    tx.commit().await?;
    Ok(user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = store.default_org(T0).await?;
        let new = NewUser {
            org_id: org.id,
            email: "Alice@Example.COM".into(),
            password_hash: "$argon2id$v=19$stub".into(),
            role: "admin".into(),
            display_name: None,
        };
        let alice = create_user(&store, &new, T0).await?;
        check(
            b,
            "email lower-cased",
            alice.email.as_str(),
            "alice@example.com",
        );
        check(b, "status default", alice.status.as_str(), "active");
        check(b, "role", alice.role.as_str(), "admin");
        check(b, "org", alice.org_id, org.id);
        check(
            b,
            "lookup ignores case",
            store.user_by_email("ALICE@example.com").await?,
            Some(alice.clone()),
        );
        check(
            b,
            "unknown email",
            store.user_by_email("bob@example.com").await?,
            None,
        );

        let cases = [
            ("same email", "alice@example.com", org.id, "conflict"),
            ("other case", "ALICE@EXAMPLE.COM", org.id, "conflict"),
            (
                "unknown org",
                "carol@example.com",
                Uuid::new_v4(),
                "invalid",
            ),
            ("empty email", " ", org.id, "invalid"),
        ];
        for (case, email, org_id, want) in cases {
            let got = match create_user(
                &store,
                &NewUser {
                    org_id,
                    email: email.into(),
                    ..new.clone()
                },
                T0,
            )
            .await
            {
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
