//! MSSP organisations: parents and children, and users' assignments to them.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mssp_orgs_and_assignments() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let provider = create_org(&store, "provider", T0).await?;
        let customer = create_org_under(&store, " customer ", Some(provider.id), T0 + 1).await?;
        check(b, "name trimmed", customer.name.as_str(), "customer");
        check(b, "parent", customer.parent_org_id, Some(provider.id));
        check(b, "plain org has no parent", provider.parent_org_id, None);
        check(
            b,
            "unknown parent",
            kind(create_org_under(&store, "x", Some(Uuid::new_v4()), T0).await),
            "invalid",
        );
        check(
            b,
            "duplicate name",
            kind(create_org_under(&store, "customer", None, T0).await),
            "conflict",
        );
        check(
            b,
            "org by id",
            store.org(customer.id).await?,
            Some(customer.clone()),
        );
        check(b, "org missing", store.org(Uuid::new_v4()).await?, None);
        check(
            b,
            "find keeps parent",
            store.find_org("customer").await?,
            Some(customer.clone()),
        );
        let zeta = create_org(&store, "Zeta", T0).await?;
        check(
            b,
            "list by name",
            store.list_orgs().await?,
            vec![zeta.clone(), customer.clone(), provider.clone()],
        );

        let staff = user(&store, &provider, "staff@provider.example").await?;
        let a = assign_user_to_org(&store, staff.id, customer.id, "operator", T0 + 10).await?;
        check(b, "assignment role", a.role.as_str(), "operator");
        check(b, "assignment created", a.created_at, T0 + 10);
        let again = assign_user_to_org(&store, staff.id, customer.id, "admin", T0 + 20).await?;
        check(b, "upsert role", again.role.as_str(), "admin");
        check(b, "upsert keeps created_at", again.created_at, T0 + 10);
        check(
            b,
            "role",
            store.user_org_role(staff.id, customer.id).await?,
            Some("admin".into()),
        );
        check(
            b,
            "no role elsewhere",
            store.user_org_role(staff.id, zeta.id).await?,
            None,
        );
        let z = assign_user_to_org(&store, staff.id, zeta.id, "viewer", T0 + 30).await?;
        check(
            b,
            "user's assignments",
            store.list_user_assignments(staff.id).await?,
            vec![again.clone(), z.clone()],
        );
        check(
            b,
            "org's assignments",
            store.list_org_assignments(customer.id).await?,
            vec![again.clone()],
        );
        check(
            b,
            "unknown user",
            kind(assign_user_to_org(&store, Uuid::new_v4(), customer.id, "viewer", T0).await),
            "invalid",
        );
        check(
            b,
            "unknown org",
            kind(assign_user_to_org(&store, staff.id, Uuid::new_v4(), "viewer", T0).await),
            "invalid",
        );
        check(
            b,
            "empty role",
            kind(assign_user_to_org(&store, staff.id, zeta.id, " ", T0).await),
            "invalid",
        );
        unassign_user_from_org(&store, staff.id, zeta.id).await?;
        check(
            b,
            "unassign twice",
            kind(unassign_user_from_org(&store, staff.id, zeta.id).await),
            "not_found",
        );
        check(
            b,
            "after unassign",
            store.list_user_assignments(staff.id).await?,
            vec![again],
        );
        // Deleting a user takes their assignments and sessions with them.
        store
            .create_auth_session(&session(&staff, 1, T0 + 1_000_000), T0)
            .await?;
        store
            .raw_execute(&format!("DELETE FROM users WHERE id = '{}'", staff.id))
            .await?;
        check(
            b,
            "assignments cascade",
            store.list_org_assignments(customer.id).await?,
            vec![],
        );
        check(
            b,
            "sessions cascade",
            store.list_user_sessions(staff.id).await?,
            vec![],
        );
        store.close().await;
    }
    Ok(())
}
