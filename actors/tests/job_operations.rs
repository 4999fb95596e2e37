//! The job operations on a real store (SQLite, and PostgreSQL when configured) with a running
//! job supervisor: a job and its `job.create` record commit together or not at all, likewise a
//! cancel and its `job.cancel`, and the request's checks come before anything is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reap3r_actors::access::{Caller, Credential, Role};
use reap3r_actors::enrolment::hash_enrolment_token;
use reap3r_actors::jobs::machine::{Effect, Input, JobMachine};
use reap3r_actors::jobs::{
    CancelJob, CreateJob, JobEngine, JobSecrets, JobTargetChoice, MAX_JOB_TARGETS,
    MAX_JOB_TIMEOUT_S, MAX_SCRIPT_ARG_BYTES, MAX_SCRIPT_ARGS, MAX_SCRIPT_BYTES,
};
use reap3r_actors::*;
use reap3r_store::{AgentHello, JobFilter, NewAgent, NewEnrolmentToken, Store, StoreError, Uuid};
use reap3r_testkit::TestDatabase;
use reap3r_wire::{
    DispatchRefusal, JobGrant, JobPayload, JobType, MAX_SEALED_SECRETS, SealedEnv, SealingSecret,
    SigningKey, open_value, rand_core, seal_value,
};
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
            sealing_key: None,
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
            secrets: None,
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

/// The agent's X25519 key in the sealed-secret tests.
fn agent_sealing_key() -> SealingSecret {
    SealingSecret::from_bytes(&[0x42; 32]).unwrap()
}

/// `names` sealed to the rig's agent for `job_id` (each value is `<name>-value`).
fn sealed_for(rig: &Rig, job_id: Uuid, names: &[&str]) -> Vec<u8> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let public = agent_sealing_key().public();
    SealedEnv {
        entries: names
            .iter()
            .map(|n| {
                let value = format!("{n}-value");
                seal_value(
                    &public,
                    job_id.as_bytes(),
                    rig.agent_id.as_bytes(),
                    n,
                    value.as_bytes(),
                    &mut rng,
                )
                .unwrap()
            })
            .collect(),
    }
    .to_bytes()
    .unwrap()
}

fn with_secrets(rig: &Rig, job_id: Uuid, names: &[&str], sealed: Vec<u8>) -> CreateJob {
    CreateJob {
        payload: Some(json!({
            "interpreter": "sh",
            "script": "echo \"$DB_PASS\"",
            "env": { "PLAIN": "1" },
        })),
        secrets: Some(JobSecrets {
            job_id,
            names: names.iter().map(|n| n.to_string()).collect(),
            sealed: [(rig.agent_id, sealed)].into_iter().collect(),
            uses: Vec::new(),
        }),
        ..rig.script_job()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_secrets_travel_from_creation_to_the_dispatch_under_the_signed_grant() {
    for rig in rigs().await {
        let admin = rig.caller(Role::OrgAdmin);
        // The vault's part: the targets, their keys, the values sealed for the job's id.
        let request = rig.script_job();
        assert_eq!(
            request.target_agents(&rig.domain, &admin).await.unwrap(),
            vec![rig.agent_id]
        );
        let job_id = Uuid::now_v7();
        let sealed = sealed_for(&rig, job_id, &["DB_PASS", "API_TOKEN"]);
        let job = with_secrets(&rig, job_id, &["DB_PASS", "API_TOKEN"], sealed.clone())
            .run(&rig.domain, &rig.engine, &admin)
            .await
            .unwrap();
        assert_eq!(
            job.id, job_id,
            "the job has the id its secrets were sealed for"
        );
        let record = &rig.audited("job.create").await[0];
        assert_eq!(
            record.details["secret_env"],
            json!(["DB_PASS", "API_TOKEN"])
        );
        assert!(!record.details.to_string().contains("-value"));

        // Stored with the target, and committed to by its signed grant.
        let rows = rig.store.job_target_grants(job.id).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].sealed_hex.as_deref(),
            Some(hex::encode(&sealed).as_str())
        );
        let grant: JobGrant =
            postcard::from_bytes(&hex::decode(&rows[0].grant_hex).unwrap()).unwrap();
        assert_eq!(grant.sealed_hash, Some(SealedEnv::hash_bytes(&sealed)));

        // A job actor resuming from the database dispatches it with the sealed bytes, and the
        // agent verifies and opens them.
        let stored = rig.store.job(None, job.id).await.unwrap().unwrap();
        let mut machine = JobMachine::resume(stored, rows, 1_000_000, 10_000, 1_000);
        let mut effects = machine.handle(1_000_000, Input::Start);
        effects.extend(machine.handle(1_000_001, Input::AgentOnline(rig.agent_id)));
        let dispatch = effects
            .into_iter()
            .find_map(|e| match e {
                Effect::Dispatch { dispatch, .. } => Some(dispatch),
                _ => None,
            })
            .expect("a dispatch");
        assert_eq!(dispatch.sealed, sealed);
        let server_key = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let verified = dispatch
            .verify(&server_key, rig.agent_id.as_bytes(), 1_000_001, 0)
            .unwrap();
        let JobPayload::RunScript(script) = &verified.spec.payload else {
            panic!("a script");
        };
        assert_eq!(script.secret_env, ["DB_PASS", "API_TOKEN"]);
        let env = verified.sealed.unwrap();
        let opened = open_value(
            &agent_sealing_key(),
            &verified.job_id,
            rig.agent_id.as_bytes(),
            &env.entries[0],
        )
        .unwrap();
        assert_eq!(opened.as_slice(), b"DB_PASS-value");
        // Another agent's grant check refuses it; another agent's key cannot open it.
        assert_eq!(
            dispatch.verify(&server_key, &[9; 16], 1_000_001, 0),
            Err(DispatchRefusal::WrongAgent)
        );
        let stranger = SealingSecret::from_bytes(&[0x43; 32]).unwrap();
        assert!(
            open_value(
                &stranger,
                &verified.job_id,
                rig.agent_id.as_bytes(),
                &env.entries[0]
            )
            .is_err()
        );

        // A job without secrets has neither a hash nor sealed bytes.
        let plain = rig
            .script_job()
            .run(&rig.domain, &rig.engine, &admin)
            .await
            .unwrap();
        let rows = rig.store.job_target_grants(plain.id).await.unwrap();
        assert_eq!(rows[0].sealed_hex, None);
        let grant: JobGrant =
            postcard::from_bytes(&hex::decode(&rows[0].grant_hex).unwrap()).unwrap();
        assert_eq!(grant.sealed_hash, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_checked_before_anything_is_written() {
    for rig in rigs().await {
        let admin = rig.caller(Role::OrgAdmin);
        let before = rig.jobs().await;
        let code = |r: Result<reap3r_store::Job, DomainError>| match r {
            Err(DomainError::Invalid { code, message, .. }) => format!("{code}: {message}"),
            other => panic!("unexpected {other:?}"),
        };
        let id = Uuid::now_v7();
        let good = sealed_for(&rig, id, &["DB_PASS"]);
        let run = async |job: CreateJob| job.run(&rig.domain, &rig.engine, &admin).await;

        // The sealed env lacks a name, has one too many, or is not a sealed env.
        let short = sealed_for(&rig, id, &["DB_PASS"]);
        assert!(
            code(run(with_secrets(&rig, id, &["DB_PASS", "B"], short)).await)
                .contains("B is missing")
        );
        let long = sealed_for(&rig, id, &["DB_PASS", "B"]);
        assert!(
            code(run(with_secrets(&rig, id, &["DB_PASS"], long)).await).contains("not a secret")
        );
        assert!(
            code(run(with_secrets(&rig, id, &["DB_PASS"], vec![0xff; 4])).await).contains("decode")
        );
        // Bad or clashing names, or too many.
        assert!(
            code(run(with_secrets(&rig, id, &["DB-PASS"], good.clone())).await)
                .contains("must match")
        );
        assert!(
            code(run(with_secrets(&rig, id, &["PLAIN"], good.clone())).await).contains("plain env")
        );
        assert!(
            code(
                run(with_secrets(
                    &rig,
                    id,
                    &["DB_PASS", "DB_PASS"],
                    good.clone()
                ))
                .await
            )
            .contains("twice")
        );
        let many: Vec<String> = (0..=MAX_SEALED_SECRETS).map(|i| format!("S{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(code(run(with_secrets(&rig, id, &many, good.clone())).await).contains("1 to 16"));
        // Only scripts take secrets.
        let list = CreateJob {
            job_type: JobType::ProcessList,
            payload: None,
            ..with_secrets(&rig, id, &["DB_PASS"], good.clone())
        };
        assert!(code(run(list).await).contains("only run_script"));
        // Every target needs its sealed env, and only targets may have one.
        let mut missing = with_secrets(&rig, id, &["DB_PASS"], good.clone());
        missing.secrets.as_mut().unwrap().sealed.clear();
        assert!(code(run(missing).await).starts_with("secrets_not_sealed"));
        let mut extra = with_secrets(&rig, id, &["DB_PASS"], good.clone());
        extra
            .secrets
            .as_mut()
            .unwrap()
            .sealed
            .insert(Uuid::new_v4(), good.clone());
        assert!(code(run(extra).await).contains("does not target"));
        // A dispatch must fit in one frame.
        let big = CreateJob {
            payload: Some(json!({
                "interpreter": "sh",
                "script": "x".repeat(MAX_SCRIPT_BYTES),
                "args": vec!["a".repeat(MAX_SCRIPT_ARG_BYTES); MAX_SCRIPT_ARGS],
            })),
            ..with_secrets(&rig, id, &["DB_PASS"], good.clone())
        };
        assert!(code(run(big).await).contains("do not fit in one dispatch"));
        assert_eq!(rig.jobs().await, before, "nothing written");
        assert!(rig.audited("job.create").await.is_empty());

        // And the right one goes through.
        run(with_secrets(&rig, id, &["DB_PASS"], good))
            .await
            .unwrap();
        assert_eq!(rig.jobs().await, before + 1);
    }
}
