//! The job operations on a real store (SQLite, and PostgreSQL when configured) with a running
//! job supervisor: a job and its `job.create` record commit together or not at all, likewise a
//! cancel and its `job.cancel`, and the request's checks come before anything is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reap3r_actors::access::{Caller, Credential, Role};
use reap3r_actors::enrolment::hash_enrolment_token;
use reap3r_actors::jobs::{
    CancelJob, CreateJob, JobEngine, JobTargetChoice, MAX_JOB_TARGETS, MAX_JOB_TIMEOUT_S,
};
use reap3r_actors::*;
use reap3r_store::{AgentHello, JobFilter, NewAgent, NewEnrolmentToken, Store, StoreError, Uuid};
use reap3r_testkit::TestDatabase;
use reap3r_wire::{JobType, SigningKey};
use serde_json::json;

struct Rig {
    _db: TestDatabase,
    store: Store,
    domain: Domain,
    engine: JobEngine,
    org_id: Uuid,
    agent_id: Uuid,
}

impl Rig {
    async fn new(db: TestDatabase) -> Rig {
        let store = db.open().await.unwrap();
        let org = store.default_org(0).await.unwrap();
        let token = NewEnrolmentToken {
            org_id: org.id,
            token_hash: hash_enrolment_token("t"),
            label: None,
            expires_at: None,
            max_uses: None,
            require_approval: false,
            created_by: None,
        };
        let mut tx = store.begin().await.unwrap();
        tx.create_enrolment_token(&token, 0).await.unwrap();
        let new = NewAgent {
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "0".into(),
            public_key: SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes(),
        };
        let agent = tx
            .enrol_agent(&hash_enrolment_token("t"), &new, 0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let hello = AgentHello {
            hostname: "h".into(),
            agent_version: "0".into(),
            capabilities: vec![
                JobType::RunScript.capability().into(),
                "interpreter:sh".into(),
            ],
            inventory: json!({}),
        };
        store
            .mark_agent_online(agent.id, "test-node", &hello, 1)
            .await
            .unwrap();
        let clock = ManualClock::new(1_000_000);
        let stats = Arc::new(FleetStats::default());
        let ctx = FleetContext {
            store: store.clone(),
            server_key: Arc::new(SigningKey::from_bytes(&[1; 32])),
            clock: Arc::new(clock.clone()),
            settings: Arc::new(FleetSettings::for_test()),
            stats: stats.clone(),
            events: EventBus::default(),
            jobs: Default::default(),
            verifier: SignatureVerifier::start(1, stats).unwrap(),
            metrics: Default::default(),
            keys: reap3r_actors::vault::Keyring::ephemeral(),
        };
        JobSupervisor::start(
            ctx.clone(),
            Arc::new(LocalRouter::new(SessionRegistry::default())),
        )
        .await
        .unwrap();
        Rig {
            _db: db,
            domain: ctx.domain(),
            engine: JobEngine::new(ctx),
            store,
            org_id: org.id,
            agent_id: agent.id,
        }
    }

    fn caller(&self, role: Role) -> Caller {
        Caller {
            user_id: Some(Uuid::new_v4()),
            email: "op@example.com".into(),
            home_org: self.org_id,
            org_id: self.org_id,
            role,
            credential: Credential::Session {
                session_id: Uuid::new_v4(),
            },
        }
    }

    fn script_job(&self) -> CreateJob {
        CreateJob {
            job_type: JobType::RunScript,
            targets: JobTargetChoice {
                agent_ids: Some(vec![self.agent_id]),
                ..Default::default()
            },
            payload: Some(json!({ "interpreter": "sh", "script": "echo hi" })),
            timeout_s: 60,
            expires_at: None,
            batch_size: None,
            confirm: None,
        }
    }

    async fn jobs(&self) -> usize {
        self.store
            .list_jobs(self.org_id, &JobFilter::default(), 100)
            .await
            .unwrap()
            .len()
    }

    async fn audited(&self, action: &str) -> Vec<reap3r_store::AuditRecord> {
        self.store
            .list_audit(Some(self.org_id), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.action == action)
            .collect()
    }
}

async fn rigs() -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        out.push(Rig::new(db).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_and_its_audit_record_commit_together() {
    for rig in rigs().await {
        let admin = rig.caller(Role::OrgAdmin);
        let job = rig
            .script_job()
            .run(&rig.domain, &rig.engine, &admin)
            .await
            .unwrap();
        assert_eq!(job.total_targets, 1);
        let records = rig.audited("job.create").await;
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(
            record.target.as_deref(),
            Some(format!("job:{}", job.id).as_str())
        );
        assert_eq!(record.details["type"], "run_script");
        assert_eq!(
            record.details["payload"]["script_blake3"],
            blake3::hash(b"echo hi").to_hex().to_string()
        );
        assert!(record.details["payload"].get("script").is_none());

        let cancelled = CancelJob { job_id: job.id }
            .run(&rig.domain, &rig.engine, &admin)
            .await
            .unwrap();
        assert!(cancelled.job.cancel_requested_at.is_some());
        assert_eq!(rig.audited("job.cancel").await.len(), 1);

        // Without an audit log nothing can be recorded, so nothing changes.
        let pending = rig
            .script_job()
            .run(&rig.domain, &rig.engine, &admin)
            .await
            .unwrap();
        rig.store.raw_execute("DROP TABLE audit_log").await.unwrap();
        let before = rig.jobs().await;
        let err = rig
            .script_job()
            .run(&rig.domain, &rig.engine, &admin)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DomainError::Store(StoreError::Database(_))),
            "{err:?}"
        );
        assert_eq!(rig.jobs().await, before, "a job without its audit record");
        assert!(
            CancelJob { job_id: pending.id }
                .run(&rig.domain, &rig.engine, &admin)
                .await
                .is_err()
        );
        let pending = rig.store.job(None, pending.id).await.unwrap().unwrap();
        assert_eq!(
            pending.cancel_requested_at, None,
            "a cancel without its record"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_checked_before_anything_is_written() {
    for rig in rigs().await {
        let admin = rig.caller(Role::OrgAdmin);
        let technician = rig.caller(Role::Technician);
        fn code<T: std::fmt::Debug>(r: Result<T, DomainError>) -> &'static str {
            match r {
                Err(DomainError::Invalid { code, .. }) => code,
                Err(DomainError::Forbidden { code, .. }) => code,
                Err(DomainError::NotFound(_)) => "not_found",
                Err(DomainError::Conflict(_)) => "conflict",
                other => panic!("unexpected {other:?}"),
            }
        }
        let reboot = |confirm| CreateJob {
            job_type: JobType::Reboot,
            payload: None,
            confirm,
            ..rig.script_job()
        };
        assert_eq!(
            code(
                reboot(Some(true))
                    .run(&rig.domain, &rig.engine, &technician)
                    .await
            ),
            "forbidden"
        );
        assert_eq!(
            code(reboot(None).run(&rig.domain, &rig.engine, &admin).await),
            "confirmation_required"
        );
        let mut long = rig.script_job();
        long.timeout_s = MAX_JOB_TIMEOUT_S + 1;
        assert_eq!(
            code(long.run(&rig.domain, &rig.engine, &admin).await),
            "invalid_input"
        );
        let mut wide = rig.script_job();
        wide.batch_size = Some(MAX_JOB_TARGETS as u32 + 1);
        assert_eq!(
            code(wide.run(&rig.domain, &rig.engine, &admin).await),
            "invalid_input"
        );
        let mut two = rig.script_job();
        two.targets.all = Some(true);
        assert_eq!(
            code(two.run(&rig.domain, &rig.engine, &admin).await),
            "invalid_input"
        );
        let mut none = rig.script_job();
        none.targets.agent_ids = Some(Vec::new());
        assert_eq!(
            code(none.run(&rig.domain, &rig.engine, &admin).await),
            "invalid_input"
        );
        // The agent does not report process_list.
        let list = CreateJob {
            job_type: JobType::ProcessList,
            payload: None,
            ..rig.script_job()
        };
        assert_eq!(
            code(list.run(&rig.domain, &rig.engine, &admin).await),
            "unsupported_by_agent"
        );
        assert_eq!(
            code(
                CancelJob {
                    job_id: Uuid::new_v4()
                }
                .run(&rig.domain, &rig.engine, &admin)
                .await
            ),
            "not_found"
        );
        assert_eq!(rig.jobs().await, 0);
        assert!(rig.audited("job.create").await.is_empty());
    }
}
