//! The enrolment, group, org and audit operations on a real store (SQLite always, PostgreSQL
//! when `REAP3R_TEST_POSTGRES_URL` is set): validation, tenancy, and the change and its audit
//! record committing together.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use reap3r_actors::access::Caller;
use reap3r_actors::audit::{ListAudit, verify_chain};
use reap3r_actors::enrolment::{
    CreateEnrolmentToken, DeleteAgent, EnrolAgent, EnrolmentInfo, ListEnrolmentTokens,
    MAX_TOKEN_LIFETIME_S, MAX_TOKEN_USES, MIN_TOKEN_LIFETIME_S, RevokeAgent, RevokeEnrolmentToken,
    SetAgentApproval,
};
use reap3r_actors::groups::{CreateGroup, DeleteGroup, MAX_GROUP_NAME_CHARS, MoveAgent, TagAgent};
use reap3r_actors::orgs::{CreateOrg, get_org};
use reap3r_actors::{Domain, DomainError, EventBus, FleetEvent, ManualClock};
use reap3r_store::{
    AgentApproval, AgentPlacement, AgentStatus, GroupKind, NewAgent, StoreError, TokenRefusal, Uuid,
};
use reap3r_testkit::TestDatabase;

const T0: u64 = 1_700_000_000_000;

async fn domains() -> Vec<(TestDatabase, Domain)> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let domain = Domain::new(
            store,
            Arc::new(ManualClock::new(T0)),
            EventBus::new(64),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        out.push((db, domain));
    }
    out
}

fn new_agent(hostname: &str) -> NewAgent {
    NewAgent {
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    }
}

async fn actions(domain: &Domain, caller: &Caller) -> Vec<String> {
    let mut list: Vec<String> = ListAudit::default()
        .run(domain, caller)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    list.reverse();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_enrol_agents_and_every_step_is_audited() {
    for (_db, domain) in domains().await {
        let org = domain.store.default_org(0).await.unwrap();
        let cli = Caller::cli(org.id);
        let info = EnrolmentInfo {
            server_addr: "cp:4433".into(),
            cert_fingerprint: "f".repeat(64),
            server_key: "k".repeat(64),
        };

        for bad in [
            CreateEnrolmentToken {
                lifetime_s: Some(MIN_TOKEN_LIFETIME_S - 1),
                ..Default::default()
            },
            CreateEnrolmentToken {
                lifetime_s: Some(MAX_TOKEN_LIFETIME_S + 1),
                ..Default::default()
            },
            CreateEnrolmentToken {
                max_uses: Some(MAX_TOKEN_USES + 1),
                ..Default::default()
            },
            CreateEnrolmentToken {
                max_uses: Some(0),
                ..Default::default()
            },
        ] {
            let err = bad.run(&domain, &cli, &info).await.unwrap_err();
            assert!(matches!(
                err,
                DomainError::Invalid {
                    code: "invalid_input",
                    ..
                }
            ));
        }

        let created = CreateEnrolmentToken {
            label: Some("  rack 4 ".into()),
            max_uses: Some(1),
            require_approval: true,
            ..Default::default()
        }
        .run(&domain, &cli, &info)
        .await
        .unwrap();
        assert_eq!(created.token.label.as_deref(), Some("rack 4"));
        assert_eq!(created.token.expires_at, Some(T0 as i64 + 24 * 3600 * 1000));
        assert!(created.commands.unix.contains(&created.secret));
        assert!(created.commands.unix.contains("--server cp:4433"));

        let mut events = domain.events.subscribe();
        let agent = EnrolAgent {
            token: created.secret.clone(),
            agent: new_agent("web-1"),
            remote: "192.0.2.7:5000".into(),
        }
        .run(&domain)
        .await
        .unwrap();
        assert_eq!(agent.status(), AgentStatus::Pending);
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        assert!(
            seen.iter()
                .any(|e| matches!(e, FleetEvent::Audit { action, .. } if action == "agent.enroll"))
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, FleetEvent::AgentEnrolled { pending: true, .. }))
        );

        // The single use is spent: a second enrolment is refused and leaves no trace.
        let err = EnrolAgent {
            token: created.secret.clone(),
            agent: new_agent("web-2"),
            remote: "192.0.2.8:5000".into(),
        }
        .run(&domain)
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            DomainError::Store(StoreError::Token(TokenRefusal::UsedUp))
        ));

        let record = ListAudit {
            action: Some("agent.enroll".into()),
            ..Default::default()
        }
        .run(&domain, &cli)
        .await
        .unwrap();
        assert_eq!(record.len(), 1);
        assert_eq!(
            record[0].actor,
            format!("enrollment_token:{}", created.token.id)
        );
        assert_eq!(record[0].details["remote"], "192.0.2.7:5000");
        assert_eq!(record[0].details["pending_approval"], true);

        let withdrawn = Mutex::new(Vec::new());
        let withdraw =
            |id: Uuid, reason: &str| withdrawn.lock().unwrap().push((id, reason.to_owned()));
        let approved = SetAgentApproval {
            id: agent.id,
            approval: AgentApproval::Approved,
        }
        .run(&domain, &cli, &withdraw)
        .await
        .unwrap();
        assert_eq!(approved.status(), AgentStatus::Offline);
        RevokeAgent { id: agent.id }
            .run(&domain, &cli, &withdraw)
            .await
            .unwrap();
        let err = SetAgentApproval {
            id: agent.id,
            approval: AgentApproval::Approved,
        }
        .run(&domain, &cli, &withdraw)
        .await
        .unwrap_err();
        assert!(matches!(err, DomainError::Conflict(_)));
        DeleteAgent { id: agent.id }
            .run(&domain, &cli, &withdraw)
            .await
            .unwrap();
        assert_eq!(
            *withdrawn.lock().unwrap(),
            vec![
                (agent.id, "revoked".to_owned()),
                (agent.id, "deleted".to_owned())
            ]
        );
        RevokeEnrolmentToken {
            id: created.token.id,
        }
        .run(&domain, &cli)
        .await
        .unwrap();

        assert_eq!(
            actions(&domain, &cli).await,
            [
                "enrollment_token.create",
                "agent.enroll",
                "agent.approve",
                "agent.revoke",
                "agent.delete",
                "enrollment_token.revoke"
            ]
        );
        assert!(verify_chain(&domain).await.unwrap().is_intact());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisation_sees_nothing() {
    for (_db, domain) in domains().await {
        let home = domain.store.default_org(0).await.unwrap();
        let cli = Caller::cli(home.id);
        let other = CreateOrg {
            name: " other ".into(),
            parent_org_id: None,
        }
        .run(&domain, &cli)
        .await
        .unwrap();
        assert_eq!(other.name, "other");
        let theirs = Caller::cli(other.id);
        assert_eq!(get_org(&domain, &cli, other.id).await.unwrap().id, other.id);

        let created = CreateEnrolmentToken::default()
            .run(&domain, &cli, &EnrolmentInfo::default())
            .await
            .unwrap();
        let agent = EnrolAgent {
            token: created.secret,
            agent: new_agent("db-1"),
            remote: "memory".into(),
        }
        .run(&domain)
        .await
        .unwrap();
        let tag = CreateGroup {
            kind: GroupKind::Tag,
            name: "prod".into(),
            description: None,
            parent_id: None,
        }
        .run(&domain, &cli)
        .await
        .unwrap();

        let noop = |_: Uuid, _: &str| {};
        let not_found = |e: DomainError| matches!(e, DomainError::NotFound(_));
        assert!(not_found(
            RevokeAgent { id: agent.id }
                .run(&domain, &theirs, &noop)
                .await
                .unwrap_err()
        ));
        assert!(not_found(
            RevokeEnrolmentToken {
                id: created.token.id
            }
            .run(&domain, &theirs)
            .await
            .unwrap_err()
        ));
        assert!(not_found(
            TagAgent {
                agent_id: agent.id,
                tag_id: tag.id
            }
            .run(&domain, &theirs)
            .await
            .unwrap_err()
        ));
        assert!(not_found(
            DeleteGroup {
                kind: GroupKind::Tag,
                id: tag.id
            }
            .run(&domain, &theirs)
            .await
            .unwrap_err()
        ));
        let moved = MoveAgent {
            agent_id: agent.id,
            placement: AgentPlacement::default(),
        }
        .run(&domain, &theirs)
        .await;
        assert!(not_found(moved.unwrap_err()));
        assert!(
            ListEnrolmentTokens::default()
                .run(&domain, &theirs)
                .await
                .unwrap()
                .is_empty()
        );
        // Only the home organisation's own operations are in its audit trail.
        assert!(actions(&domain, &theirs).await.is_empty());

        let long = "x".repeat(MAX_GROUP_NAME_CHARS + 1);
        let err = CreateGroup {
            kind: GroupKind::Site,
            name: long,
            description: None,
            parent_id: None,
        }
        .run(&domain, &cli)
        .await
        .unwrap_err();
        assert!(matches!(err, DomainError::Invalid { .. }));
    }
}
