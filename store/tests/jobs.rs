//! Repository tests for jobs (schema 0003): creation, the guarded target transitions, exactly-once
//! outcomes, finishing and cancelling, listing and paging, target resolution and stats. Like
//! `repository.rs`, every test runs against every backend available here (SQLite always,
//! PostgreSQL when `REAP3R_TEST_POSTGRES_URL` is set).

use std::fmt::Debug;
use std::time::Instant;

use anyhow::{Result, anyhow};
use reap3r_store::testing::TestDatabase;
use reap3r_store::{
    Agent, AgentApproval, AgentHello, AgentPlacement, Backend, GroupKind, Job, JobFilter, JobStats,
    JobStatus, JobTarget, JobTargetGrant, JobTargetSelector, NewAgent, NewEnrollmentToken,
    NewGroup, NewJob, NewJobTarget, Store, StoreError, TargetCounts, TargetOutcome, TargetState,
    TargetTransition, Uuid,
};
use serde_json::json;

mod support;
use support::*;

/// Picks the jobs a filter should return.
type Pick = Box<dyn Fn(&Job) -> bool>;
/// What `resolve_job_targets` returns.
type Resolved = Vec<(Uuid, Vec<String>, String)>;

/// A fixed "now"; the store never reads the clock, so tests pick their own times.
const T0: i64 = 1_700_000_000_000;

/// Compares one case's outcome, naming backend and case when it differs.
fn check<T: PartialEq + Debug>(backend: Backend, case: &str, got: T, want: T) {
    assert_eq!(got, want, "[{backend}] {case}");
}

/// The error's kind as a short word, for table-driven cases.
fn kind<T: Debug>(result: Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound) => "not_found",
        Err(StoreError::Conflict(_)) => "conflict",
        Err(StoreError::Invalid(_)) => "invalid",
        Err(e) => {
            eprintln!("unexpected error {e:?}");
            "unexpected"
        }
    }
}

fn invalid_message<T: Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Invalid(m)) => m,
        other => format!("expected Invalid, got {other:?}"),
    }
}

async fn stores() -> Result<Vec<(TestDatabase, Store)>> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await? {
        let store = db.open().await?;
        assert_eq!(store.backend(), db.backend());
        out.push((db, store));
    }
    Ok(out)
}

fn hash_of(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Enrols an agent, pending when `approval` is required, and reports its capabilities.
async fn agent(store: &Store, org: Uuid, hostname: &str, require_approval: bool) -> Result<Agent> {
    let secret = format!("secret-{hostname}-{}", Uuid::new_v4());
    create_enrollment_token(
        store,
        &NewEnrollmentToken {
            org_id: org,
            token_hash: hash_of(&secret),
            label: None,
            expires_at: None,
            max_uses: None,
            require_approval,
            created_by: None,
        },
        T0,
    )
    .await?;
    let new = NewAgent {
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    };
    let enrolled = enroll_agent(store, &hash_of(&secret), &new, T0).await?;
    store
        .mark_agent_online(
            enrolled.id,
            "node-a",
            &AgentHello {
                hostname: hostname.into(),
                agent_version: "0.1.0".into(),
                capabilities: caps(hostname),
                inventory: json!({}),
            },
            T0 + 1,
        )
        .await?;
    Ok(enrolled)
}

fn caps(hostname: &str) -> Vec<String> {
    vec!["job:run_script".into(), format!("host:{hostname}")]
}

fn new_job(org_id: Uuid, job_type: &str, created_by: &str) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        org_id,
        job_type: job_type.into(),
        payload: json!({ "script": "echo hi", "nested": { "a": [1, 2] } }),
        spec_hex: "00ff".repeat(8),
        targets: json!({ "all": null }),
        created_by: created_by.into(),
        timeout_s: 60,
        expires_at: Some(T0 + 3_600_000),
        batch_size: None,
    }
}

fn targets_for(agents: &[Uuid]) -> Vec<NewJobTarget> {
    agents
        .iter()
        .map(|a| NewJobTarget {
            agent_id: *a,
            grant_hex: format!("{:0>64}", a.simple()),
            signature_hex: "ab".repeat(64),
        })
        .collect()
}

fn random_agents(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

/// Creates a job of `n` random targets at `at`; returns it and its agents, sorted.
async fn job_with(store: &Store, org: Uuid, n: usize, at: i64) -> Result<(Job, Vec<Uuid>)> {
    let mut agents = random_agents(n);
    agents.sort();
    let job = store
        .create_job(
            &new_job(org, "run_script", "alice@example.com"),
            &targets_for(&agents),
            at,
        )
        .await?;
    Ok((job, agents))
}

fn step(job: &Job, agent_id: Uuid, to: TargetState, at_ms: i64) -> TargetTransition {
    TargetTransition::new(job.id, agent_id, to, at_ms)
}

fn outcome(job: &Job, agent_id: Uuid, state: TargetState, at: i64) -> TargetOutcome {
    TargetOutcome {
        job_id: job.id,
        agent_id,
        state,
        exit_code: Some(if state == TargetState::Succeeded {
            0
        } else {
            1
        }),
        stdout: format!("out {agent_id}\n"),
        stderr: "warn\n".into(),
        stdout_truncated: true,
        stderr_truncated: false,
        data: Some(r#"{"k":1}"#.into()),
        error: (state != TargetState::Succeeded).then(|| "boom".to_owned()),
        dispatched_at: None,
        acked_at: None,
        started_at: Some(at - 10),
        finished_at: at,
    }
}

async fn target(store: &Store, job: &Job, agent_id: Uuid) -> Result<JobTarget> {
    store
        .job_target(job.org_id, job.id, agent_id)
        .await?
        .ok_or_else(|| anyhow!("target {agent_id} missing"))
}

fn counts(pairs: &[(TargetState, i64)]) -> TargetCounts {
    let mut c = TargetCounts::default();
    for &(state, n) in pairs {
        for _ in 0..n {
            c.add(state);
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_job_stores_the_job_and_its_targets() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let mut agents = random_agents(1_000);
        let mut new = new_job(acme.id, "run_script", "alice@example.com");
        new.batch_size = Some(50);
        let job = store.create_job(&new, &targets_for(&agents), T0).await?;
        let want = Job {
            id: new.id,
            org_id: acme.id,
            job_type: "run_script".into(),
            payload: new.payload.clone(),
            spec_hex: new.spec_hex.clone(),
            targets: new.targets.clone(),
            created_by: "alice@example.com".into(),
            created_at: T0,
            timeout_s: 60,
            expires_at: Some(T0 + 3_600_000),
            batch_size: Some(50),
            status: JobStatus::Active,
            cancel_requested_at: None,
            finished_at: None,
            total_targets: 1_000,
        };
        check(b, "returned job", &job, &want);
        check(
            b,
            "read back",
            store.job(Some(acme.id), job.id).await?,
            Some(want.clone()),
        );
        check(
            b,
            "any org",
            store.job(None, job.id).await?,
            Some(want.clone()),
        );
        check(
            b,
            "other org",
            store.job(Some(other.id), job.id).await?,
            None,
        );
        check(b, "unknown", store.job(None, Uuid::new_v4()).await?, None);
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(TargetState::Queued, 1_000)]),
        );
        check(
            b,
            "counts total",
            store.job_target_counts(job.id).await?.total(),
            1_000,
        );
        check(
            b,
            "no counts for an unknown job",
            store.job_target_counts(Uuid::new_v4()).await?,
            TargetCounts::default(),
        );
        agents.sort();
        let states = store.job_target_states(job.id).await?;
        check(
            b,
            "target states, by agent",
            states.clone(),
            agents
                .iter()
                .map(|a| (*a, TargetState::Queued, None))
                .collect::<Vec<_>>(),
        );
        check(
            b,
            "targets with their grants, by agent",
            store.job_target_grants(job.id).await?,
            agents
                .iter()
                .map(|a| JobTargetGrant {
                    agent_id: *a,
                    state: TargetState::Queued,
                    dispatched_at: None,
                    grant_hex: format!("{:0>64}", a.simple()),
                    signature_hex: "ab".repeat(64),
                })
                .collect::<Vec<_>>(),
        );
        let first = target(&store, &job, agents[0]).await?;
        check(
            b,
            "one target",
            first,
            JobTarget {
                job_id: job.id,
                agent_id: agents[0],
                org_id: acme.id,
                state: TargetState::Queued,
                grant_hex: format!("{:0>64}", agents[0].simple()),
                signature_hex: "ab".repeat(64),
                queued_at: T0,
                dispatched_at: None,
                acked_at: None,
                started_at: None,
                finished_at: None,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                data: None,
                error: None,
                updated_at: T0,
            },
        );
        check(
            b,
            "target of another org",
            store.job_target(other.id, job.id, agents[0]).await?,
            None,
        );
        check(b, "active", store.active_jobs().await?, vec![want.clone()]);

        // Refusals.
        check(
            b,
            "duplicate job id",
            kind(
                store
                    .create_job(&new, &targets_for(&random_agents(1)), T0)
                    .await,
            ),
            "conflict",
        );
        let one = random_agents(1);
        check(
            b,
            "agent twice",
            kind(
                store
                    .create_job(
                        &new_job(acme.id, "run_script", "a"),
                        &targets_for(&[one[0], one[0]]),
                        T0,
                    )
                    .await,
            ),
            "invalid",
        );
        check(
            b,
            "no targets",
            kind(
                store
                    .create_job(&new_job(acme.id, "run_script", "a"), &[], T0)
                    .await,
            ),
            "invalid",
        );
        let mut zero = new_job(acme.id, "run_script", "a");
        zero.timeout_s = 0;
        check(
            b,
            "zero timeout",
            kind(store.create_job(&zero, &targets_for(&one), T0).await),
            "invalid",
        );
        check(
            b,
            "unknown org",
            kind(
                store
                    .create_job(
                        &new_job(Uuid::new_v4(), "run_script", "a"),
                        &targets_for(&one),
                        T0,
                    )
                    .await,
            ),
            "invalid",
        );
        check(
            b,
            "refusals wrote nothing",
            store.active_jobs().await?.len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_targets_are_created_quickly() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "big", T0).await?;
        let started = Instant::now();
        let (job, _) = job_with(&store, org.id, 10_000, T0).await?;
        let elapsed = started.elapsed();
        eprintln!("[{b}] created a job with 10,000 targets in {elapsed:?}");
        check(b, "total", job.total_targets, 10_000);
        check(
            b,
            "all queued",
            store.job_target_counts(job.id).await?,
            counts(&[(TargetState::Queued, 10_000)]),
        );
        // Generous for an unoptimised build on a busy machine; typical is well under a second.
        assert!(elapsed.as_secs() < 20, "[{b}] took {elapsed:?}");
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transitions_only_move_forward() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 6, T0).await?;
        use TargetState::*;

        check(
            b,
            "queued -> dispatched",
            store
                .transition_targets(&[step(&job, a[0], Dispatched, T0 + 10)])
                .await?,
            vec![true],
        );
        check(
            b,
            "dispatched again, acked, dispatched (backwards), running, acked (backwards)",
            store
                .transition_targets(&[
                    step(&job, a[0], Dispatched, T0 + 11),
                    step(&job, a[0], Acked, T0 + 12),
                    step(&job, a[0], Dispatched, T0 + 13),
                    step(&job, a[0], Running, T0 + 14),
                    step(&job, a[0], Acked, T0 + 15),
                ])
                .await?,
            vec![false, true, false, true, false],
        );
        let t = target(&store, &job, a[0]).await?;
        check(
            b,
            "stamps of a full walk",
            (
                t.state,
                t.dispatched_at,
                t.acked_at,
                t.started_at,
                t.updated_at,
            ),
            (
                Running,
                Some(T0 + 10),
                Some(T0 + 12),
                Some(T0 + 14),
                T0 + 14,
            ),
        );

        // Skipping steps fills dispatched_at, so the timeout still applies.
        check(
            b,
            "queued -> acked, queued -> running",
            store
                .transition_targets(&[
                    step(&job, a[1], Acked, T0 + 20),
                    step(&job, a[2], Running, T0 + 21),
                ])
                .await?,
            vec![true, true],
        );
        let t1 = target(&store, &job, a[1]).await?;
        check(
            b,
            "acked from queued",
            (t1.state, t1.dispatched_at, t1.acked_at, t1.started_at),
            (Acked, Some(T0 + 20), Some(T0 + 20), None),
        );
        let t2 = target(&store, &job, a[2]).await?;
        check(
            b,
            "running from queued",
            (t2.state, t2.dispatched_at, t2.acked_at, t2.started_at),
            (Running, Some(T0 + 21), None, Some(T0 + 21)),
        );

        // Terminal targets never move again.
        check(
            b,
            "finish a[3]",
            store
                .record_outcomes(&[outcome(&job, a[3], Succeeded, T0 + 30)], T0 + 30)
                .await?,
            vec![true],
        );
        let before = target(&store, &job, a[3]).await?;
        check(
            b,
            "out of terminal",
            store
                .transition_targets(&[
                    step(&job, a[3], Dispatched, T0 + 31),
                    step(&job, a[3], Acked, T0 + 31),
                    step(&job, a[3], Running, T0 + 31),
                ])
                .await?,
            vec![false, false, false],
        );
        check(
            b,
            "terminal unchanged",
            target(&store, &job, a[3]).await?,
            before,
        );

        check(
            b,
            "duplicates in one batch: the first applies",
            store
                .transition_targets(&[
                    step(&job, a[4], Dispatched, T0 + 40),
                    step(&job, a[4], Dispatched, T0 + 41),
                ])
                .await?,
            vec![true, false],
        );
        check(
            b,
            "dispatched_at of the first",
            target(&store, &job, a[4]).await?.dispatched_at,
            Some(T0 + 40),
        );
        check(
            b,
            "unknown target",
            store
                .transition_targets(&[step(&job, Uuid::new_v4(), Dispatched, T0 + 50)])
                .await?,
            vec![false],
        );
        check(
            b,
            "empty batch",
            store.transition_targets(&[]).await?,
            vec![],
        );

        // Terminal or queued destinations are refused, and nothing in the batch is written.
        for to in [Queued, Succeeded, Failed, TimedOut, Cancelled, Expired] {
            check(
                b,
                &format!("refuse {to}"),
                kind(
                    store
                        .transition_targets(&[
                            step(&job, a[5], Dispatched, T0 + 60),
                            step(&job, a[5], to, T0 + 60),
                        ])
                        .await,
                ),
                "invalid",
            );
        }
        check(
            b,
            "refused batch wrote nothing",
            target(&store, &job, a[5]).await?.state,
            Queued,
        );

        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[
                (Queued, 1),
                (Dispatched, 1),
                (Acked, 1),
                (Running, 2),
                (Succeeded, 1),
            ]),
        );
        check(
            b,
            "states for the actor",
            store
                .job_target_states(job.id)
                .await?
                .into_iter()
                .map(|(_, s, d)| (s, d))
                .collect::<Vec<_>>(),
            vec![
                (Running, Some(T0 + 10)),
                (Acked, Some(T0 + 20)),
                (Running, Some(T0 + 21)),
                (Succeeded, None),
                (Dispatched, Some(T0 + 40)),
                (Queued, None),
            ],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_recorded_exactly_once() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 4, T0).await?;
        use TargetState::*;
        store
            .transition_targets(&[
                step(&job, a[0], Dispatched, T0 + 1),
                step(&job, a[0], Running, T0 + 2),
            ])
            .await?;

        let first = outcome(&job, a[0], Succeeded, T0 + 100);
        check(
            b,
            "first outcome",
            store
                .record_outcomes(std::slice::from_ref(&first), T0 + 101)
                .await?,
            vec![true],
        );
        let stored = target(&store, &job, a[0]).await?;
        check(
            b,
            "stored result",
            (
                stored.state,
                stored.exit_code,
                stored.stdout.clone(),
                stored.stderr.clone(),
                stored.stdout_truncated,
                stored.stderr_truncated,
                stored.data.clone(),
                stored.error.clone(),
                stored.dispatched_at,
                stored.started_at,
                stored.finished_at,
                stored.updated_at,
            ),
            (
                Succeeded,
                Some(0),
                first.stdout.clone(),
                "warn\n".to_owned(),
                true,
                false,
                Some(r#"{"k":1}"#.to_owned()),
                None,
                Some(T0 + 1),
                // started_at from JobStarted wins over the outcome's.
                Some(T0 + 2),
                Some(T0 + 100),
                T0 + 101,
            ),
        );
        check(
            b,
            "the same outcome again",
            store
                .record_outcomes(std::slice::from_ref(&first), T0 + 200)
                .await?,
            vec![false],
        );
        check(
            b,
            "a different outcome",
            store
                .record_outcomes(&[outcome(&job, a[0], Failed, T0 + 300)], T0 + 300)
                .await?,
            vec![false],
        );
        check(
            b,
            "nothing changed",
            target(&store, &job, a[0]).await?,
            stored,
        );

        // Straight from queued: started_at comes from the outcome; NUL cannot break PostgreSQL.
        let mut odd = outcome(&job, a[1], Failed, T0 + 400);
        odd.stdout = "a\0b".into();
        odd.error = Some("refused\0".into());
        odd.exit_code = None;
        check(
            b,
            "server-side duplicate in one batch, unknown target",
            store
                .record_outcomes(
                    &[
                        odd.clone(),
                        outcome(&job, a[1], Expired, T0 + 401),
                        outcome(&job, Uuid::new_v4(), Failed, T0 + 400),
                    ],
                    T0 + 402,
                )
                .await?,
            vec![true, false, false],
        );
        let t1 = target(&store, &job, a[1]).await?;
        check(
            b,
            "nul replaced, started_at from the outcome",
            (t1.state, t1.stdout, t1.error, t1.exit_code, t1.started_at),
            (
                Failed,
                "a\u{FFFD}b".to_owned(),
                Some("refused\u{FFFD}".to_owned()),
                None,
                Some(T0 + 390),
            ),
        );

        for state in [Queued, Dispatched, Acked, Running] {
            check(
                b,
                &format!("refuse {state}"),
                kind(
                    store
                        .record_outcomes(
                            &[
                                outcome(&job, a[2], Succeeded, T0 + 500),
                                outcome(&job, a[2], state, T0 + 500),
                            ],
                            T0 + 500,
                        )
                        .await,
                ),
                "invalid",
            );
        }
        check(
            b,
            "refused batch wrote nothing",
            target(&store, &job, a[2]).await?.state,
            Queued,
        );
        check(
            b,
            "empty batch",
            store.record_outcomes(&[], T0).await?,
            vec![],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outcomes_apply_once() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 40, T0).await?;

        // Two tasks record the same target at the same moment, for each of 20 targets.
        let mut tasks = Vec::new();
        for (i, agent) in a[..20].iter().enumerate() {
            for attempt in 0..2 {
                let store = store.clone();
                let o = outcome(&job, *agent, TargetState::Succeeded, T0 + 1_000 + attempt);
                tasks.push((
                    i,
                    tokio::spawn(async move { store.record_outcomes(&[o], T0 + 2_000).await }),
                ));
            }
        }
        let mut wins = vec![0; 20];
        for (i, task) in tasks {
            if task.await??[0] {
                wins[i] += 1;
            }
        }
        check(b, "exactly one win per target", wins, vec![1; 20]);

        // Two overlapping batches in opposite orders: no deadlock, each target applied once.
        let forward: Vec<TargetOutcome> = a[20..]
            .iter()
            .map(|x| outcome(&job, *x, TargetState::Failed, T0 + 3_000))
            .collect();
        let backward: Vec<TargetOutcome> = forward.iter().rev().cloned().collect();
        let (s1, s2) = (store.clone(), store.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.record_outcomes(&forward, T0 + 3_001).await }),
            tokio::spawn(async move { s2.record_outcomes(&backward, T0 + 3_001).await }),
        );
        let (r1, mut r2) = (r1??, r2??);
        r2.reverse();
        let applied: Vec<u32> = r1
            .iter()
            .zip(&r2)
            .map(|(x, y)| u32::from(*x) + u32::from(*y))
            .collect();
        check(b, "overlapping batches: once each", applied, vec![1; 20]);
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(TargetState::Succeeded, 20), (TargetState::Failed, 20)]),
        );
        store.close().await;
    }
    Ok(())
}

/// A small deterministic pseudo-random sequence (no rand dependency), for mixed batches.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// A target as the tests expect it after a batch: state and the step stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    state: TargetState,
    dispatched_at: Option<i64>,
    acked_at: Option<i64>,
    started_at: Option<i64>,
    updated_at: i64,
}

impl Row {
    fn of(t: &JobTarget) -> Row {
        Row {
            state: t.state,
            dispatched_at: t.dispatched_at,
            acked_at: t.acked_at,
            started_at: t.started_at,
            updated_at: t.updated_at,
        }
    }
}

fn step_rank(s: TargetState) -> u8 {
    use TargetState::*;
    match s {
        Queued => 0,
        Dispatched => 1,
        Acked => 2,
        Running => 3,
        _ => 4,
    }
}

/// What `transition_targets` documents, one row after the other: whether `t` applies to `row`
/// (`None`: unknown target), and the row afterwards.
fn model_step(row: &mut Option<Row>, t: &TargetTransition) -> bool {
    let Some(r) = row else {
        return false;
    };
    if step_rank(t.to) <= step_rank(r.state) {
        return false;
    }
    match t.to {
        TargetState::Dispatched => r.dispatched_at = Some(t.at_ms),
        TargetState::Acked => {
            r.acked_at = Some(t.at_ms);
            r.dispatched_at = r.dispatched_at.or(t.dispatched_at).or(Some(t.at_ms));
        }
        _ => {
            r.started_at = Some(t.at_ms);
            r.dispatched_at = r.dispatched_at.or(t.dispatched_at).or(Some(t.at_ms));
            r.acked_at = r.acked_at.or(t.acked_at);
        }
    }
    r.state = t.to;
    r.updated_at = t.at_ms;
    true
}

/// Every target of a job as the tests compare them, by agent.
async fn rows_of(store: &Store, job: &Job) -> Result<std::collections::BTreeMap<Uuid, Row>> {
    let mut rows = std::collections::BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_job_targets(job.org_id, job.id, None, after, 1_000)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.agent_id);
        for t in &page {
            rows.insert(t.agent_id, Row::of(t));
        }
    }
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_mixed_transition_batches_apply_row_by_row() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        // Many more targets than one multi-row statement takes (32 steps, 16 outcomes), with
        // some already finished and some already dispatched.
        let (job, a) = job_with(&store, org.id, 450, T0).await?;
        let finished: Vec<TargetOutcome> = a[..150]
            .iter()
            .map(|x| outcome(&job, *x, Succeeded, T0 + 2))
            .collect();
        check(
            b,
            "setup: finish 150",
            store.record_outcomes(&finished, T0 + 2).await?,
            vec![true; 150],
        );
        let dispatched: Vec<TargetTransition> = a[150..250]
            .iter()
            .map(|x| step(&job, *x, Dispatched, T0 + 5))
            .collect();
        check(
            b,
            "setup: dispatch 100",
            store.transition_targets(&dispatched).await?,
            vec![true; 100],
        );
        let mut model: std::collections::HashMap<Uuid, Option<Row>> = rows_of(&store, &job)
            .await?
            .into_iter()
            .map(|(agent, row)| (agent, Some(row)))
            .collect();
        let unknown = random_agents(20);

        // 1,500 rows in random order: every step kind, repeats of a target (up to several per
        // batch, forwards and backwards), carried stamps, unknown targets.
        let mut rng = Lcg(0x5eed);
        let mut batch = Vec::new();
        for n in 0..1_500i64 {
            let agent = if rng.below(25) == 0 {
                unknown[rng.below(unknown.len())]
            } else {
                a[rng.below(a.len())]
            };
            let to = [Dispatched, Acked, Running][rng.below(3)];
            let mut t = step(&job, agent, to, T0 + 100 + n);
            if to != Dispatched && rng.below(2) == 0 {
                t.dispatched_at = Some(T0 + 50 + n);
            }
            if to == Running && rng.below(2) == 0 {
                t.acked_at = Some(T0 + 60 + n);
            }
            batch.push(t);
        }
        let want: Vec<bool> = batch
            .iter()
            .map(|t| model_step(model.entry(t.agent_id).or_insert(None), t))
            .collect();
        assert!(want.iter().any(|w| *w) && want.iter().any(|w| !*w));
        let repeats = batch.len() - {
            let mut seen = std::collections::HashSet::new();
            batch.iter().filter(|t| seen.insert(t.agent_id)).count()
        };
        assert!(repeats > 500, "the batch repeats targets ({repeats})");
        check(
            b,
            "applied row by row",
            store.transition_targets(&batch).await?,
            want,
        );
        let got = rows_of(&store, &job).await?;
        for agent in &a {
            let want = model.get(agent).copied().flatten();
            check(b, &format!("target {agent}"), got.get(agent).copied(), want);
        }
        // The finished targets kept their results.
        let kept = target(&store, &job, a[0]).await?;
        check(
            b,
            "finished target untouched",
            (kept.state, kept.exit_code, kept.updated_at),
            (Succeeded, Some(0), T0 + 2),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carried_step_times_fill_only_what_is_unset() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 6, T0).await?;

        // Queued -> running standing for dispatched and acked: every stamp is written.
        let mut run = step(&job, a[0], Running, T0 + 30);
        run.dispatched_at = Some(T0 + 10);
        run.acked_at = Some(T0 + 20);
        // Already dispatched -> acked carrying a later dispatch: the first dispatch stays.
        store
            .transition_targets(&[step(&job, a[1], Dispatched, T0 + 5)])
            .await?;
        let mut ack = step(&job, a[1], Acked, T0 + 30);
        ack.dispatched_at = Some(T0 + 25);
        check(
            b,
            "carried steps",
            store.transition_targets(&[run, ack]).await?,
            vec![true, true],
        );
        check(
            b,
            "queued -> running with carried stamps",
            Row::of(&target(&store, &job, a[0]).await?),
            Row {
                state: Running,
                dispatched_at: Some(T0 + 10),
                acked_at: Some(T0 + 20),
                started_at: Some(T0 + 30),
                updated_at: T0 + 30,
            },
        );
        check(
            b,
            "dispatched -> acked keeps the first dispatch",
            Row::of(&target(&store, &job, a[1]).await?),
            Row {
                state: Acked,
                dispatched_at: Some(T0 + 5),
                acked_at: Some(T0 + 30),
                started_at: None,
                updated_at: T0 + 30,
            },
        );

        // A stamp of a step that is not before `to` is refused, and nothing is written.
        let mut bad = Vec::new();
        let mut t = step(&job, a[2], Dispatched, T0 + 40);
        t.dispatched_at = Some(T0 + 39);
        bad.push(t);
        let mut t = step(&job, a[2], Dispatched, T0 + 40);
        t.acked_at = Some(T0 + 39);
        bad.push(t);
        let mut t = step(&job, a[2], Acked, T0 + 40);
        t.acked_at = Some(T0 + 39);
        bad.push(t);
        for t in bad {
            check(
                b,
                &format!("refuse {t:?}"),
                kind(
                    store
                        .transition_targets(&[step(&job, a[2], Dispatched, T0 + 40), t])
                        .await,
                ),
                "invalid",
            );
        }
        check(
            b,
            "refused batches wrote nothing",
            target(&store, &job, a[2]).await?.state,
            Queued,
        );

        // An outcome carries the stamps of steps never written separately: queued -> result
        // gets them all; a target that has them keeps its own.
        let mut straight = outcome(&job, a[3], Succeeded, T0 + 100);
        straight.dispatched_at = Some(T0 + 70);
        straight.acked_at = Some(T0 + 80);
        straight.started_at = Some(T0 + 90);
        let mut late = outcome(&job, a[0], Succeeded, T0 + 100);
        late.dispatched_at = Some(T0 + 71);
        late.acked_at = Some(T0 + 81);
        late.started_at = Some(T0 + 91);
        check(
            b,
            "outcomes with stamps",
            store.record_outcomes(&[straight, late], T0 + 101).await?,
            vec![true, true],
        );
        check(
            b,
            "queued -> succeeded with carried stamps",
            Row::of(&target(&store, &job, a[3]).await?),
            Row {
                state: Succeeded,
                dispatched_at: Some(T0 + 70),
                acked_at: Some(T0 + 80),
                started_at: Some(T0 + 90),
                updated_at: T0 + 101,
            },
        );
        check(
            b,
            "running -> succeeded keeps its stamps",
            Row::of(&target(&store, &job, a[0]).await?),
            Row {
                state: Succeeded,
                dispatched_at: Some(T0 + 10),
                acked_at: Some(T0 + 20),
                started_at: Some(T0 + 30),
                updated_at: T0 + 101,
            },
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_mixed_outcome_batches_apply_once() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 300, T0).await?;
        // 40 finished, 80 running, the rest queued.
        let finished: Vec<TargetOutcome> = a[..40]
            .iter()
            .map(|x| outcome(&job, *x, Failed, T0 + 2))
            .collect();
        store.record_outcomes(&finished, T0 + 2).await?;
        let running: Vec<TargetTransition> = a[40..120]
            .iter()
            .map(|x| {
                let mut t = step(&job, *x, Running, T0 + 4);
                t.dispatched_at = Some(T0 + 3);
                t
            })
            .collect();
        store.transition_targets(&running).await?;
        let before = rows_of(&store, &job).await?;
        let finished_before = target(&store, &job, a[0]).await?;

        // Every target, backwards; then 30 repeats with another state; 10 unknown targets:
        // 340 rows, many statements (16 outcomes each, the last ones smaller).
        let mut batch: Vec<TargetOutcome> = a
            .iter()
            .rev()
            .enumerate()
            .map(|(n, x)| {
                let mut o = outcome(&job, *x, Succeeded, T0 + 100 + n as i64);
                o.dispatched_at = Some(T0 + 50);
                o.acked_at = Some(T0 + 60);
                o.started_at = Some(T0 + 70);
                o
            })
            .collect();
        if let Some(o) = batch.get_mut(250) {
            o.stdout = "nul \0 in a later chunk".into();
        }
        for x in a.iter().step_by(10) {
            batch.push(outcome(&job, *x, TimedOut, T0 + 500));
        }
        for x in random_agents(10) {
            batch.push(outcome(&job, x, Failed, T0 + 600));
        }
        let mut seen = std::collections::HashSet::new();
        let want: Vec<bool> = batch
            .iter()
            .map(|o| {
                seen.insert(o.agent_id)
                    && before
                        .get(&o.agent_id)
                        .is_some_and(|r| !r.state.is_terminal())
            })
            .collect();
        check(b, "rows applied", want.iter().filter(|w| **w).count(), 260);
        check(
            b,
            "first of each open target applies",
            store.record_outcomes(&batch, T0 + 1_000).await?,
            want,
        );
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(Failed, 40), (Succeeded, 260)]),
        );
        check(
            b,
            "finished target untouched",
            target(&store, &job, a[0]).await?,
            finished_before,
        );
        let after = rows_of(&store, &job).await?;
        let run = after.get(&a[50]).copied();
        check(
            b,
            "running target keeps its stamps",
            run.map(|r| {
                (
                    r.state,
                    r.dispatched_at,
                    r.acked_at,
                    r.started_at,
                    r.updated_at,
                )
            }),
            Some((
                Succeeded,
                Some(T0 + 3),
                Some(T0 + 60),
                Some(T0 + 4),
                T0 + 1_000,
            )),
        );
        let queued = after.get(&a[299]).copied();
        check(
            b,
            "queued target takes the carried stamps",
            queued.map(|r| (r.state, r.dispatched_at, r.acked_at, r.started_at)),
            Some((Succeeded, Some(T0 + 50), Some(T0 + 60), Some(T0 + 70))),
        );
        let odd = target(&store, &job, a[299 - 250]).await?;
        check(
            b,
            "nul replaced in a later statement",
            (odd.stdout, odd.exit_code, odd.finished_at),
            (
                "nul \u{FFFD} in a later chunk".to_owned(),
                Some(0),
                Some(T0 + 350),
            ),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_multi_statement_batches_apply_once() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 900, T0).await?;
        let (steps, results) = a.split_at(450);

        // Two writers, each with every target of its half (several statements), in opposite
        // orders, at once, three times over: no deadlock, every target applied exactly once.
        for round in 0..3i64 {
            let to = [Dispatched, Acked, Running][round as usize];
            let forward: Vec<TargetTransition> = steps
                .iter()
                .map(|x| step(&job, *x, to, T0 + 10 + round))
                .collect();
            let backward: Vec<TargetTransition> = forward.iter().rev().copied().collect();
            let (s1, s2) = (store.clone(), store.clone());
            let (r1, r2) = tokio::join!(
                tokio::spawn(async move { s1.transition_targets(&forward).await }),
                tokio::spawn(async move { s2.transition_targets(&backward).await }),
            );
            let (r1, mut r2) = (r1??, r2??);
            r2.reverse();
            let once: Vec<u32> = r1
                .iter()
                .zip(&r2)
                .map(|(x, y)| u32::from(*x) + u32::from(*y))
                .collect();
            check(b, &format!("steps to {to}: once each"), once, vec![1; 450]);
        }

        let forward: Vec<TargetOutcome> = results
            .iter()
            .map(|x| outcome(&job, *x, Succeeded, T0 + 100))
            .collect();
        let backward: Vec<TargetOutcome> = forward.iter().rev().cloned().collect();
        let (s1, s2) = (store.clone(), store.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.record_outcomes(&forward, T0 + 101).await }),
            tokio::spawn(async move { s2.record_outcomes(&backward, T0 + 101).await }),
        );
        let (r1, mut r2) = (r1??, r2??);
        r2.reverse();
        let once: Vec<u32> = r1
            .iter()
            .zip(&r2)
            .map(|(x, y)| u32::from(*x) + u32::from(*y))
            .collect();
        check(b, "outcomes: once each", once, vec![1; 450]);
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(Running, 450), (Succeeded, 450)]),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_finish_once_and_cancel_within_their_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let (job, _) = job_with(&store, acme.id, 3, T0).await?;
        let (done, _) = job_with(&store, acme.id, 3, T0 + 1).await?;

        // finish_job
        check(
            b,
            "finish as active is refused",
            kind(store.finish_job(done.id, JobStatus::Active, T0 + 10).await),
            "invalid",
        );
        check(
            b,
            "finish",
            store
                .finish_job(done.id, JobStatus::Completed, T0 + 10)
                .await?,
            true,
        );
        check(
            b,
            "finish again",
            store
                .finish_job(done.id, JobStatus::Cancelled, T0 + 20)
                .await?,
            false,
        );
        check(
            b,
            "unknown job",
            store
                .finish_job(Uuid::new_v4(), JobStatus::Completed, T0)
                .await?,
            false,
        );
        let finished = store
            .job(None, done.id)
            .await?
            .ok_or_else(|| anyhow!("lost"))?;
        check(
            b,
            "first finish kept",
            (finished.status, finished.finished_at),
            (JobStatus::Completed, Some(T0 + 10)),
        );
        check(
            b,
            "active jobs",
            store
                .active_jobs()
                .await?
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>(),
            vec![job.id],
        );

        // request_job_cancel
        check(
            b,
            "other org",
            store.request_job_cancel(other.id, job.id, T0 + 30).await?,
            None,
        );
        check(
            b,
            "untouched by the other org",
            store
                .job(None, job.id)
                .await?
                .and_then(|j| j.cancel_requested_at),
            None,
        );
        check(
            b,
            "unknown job",
            store
                .request_job_cancel(acme.id, Uuid::new_v4(), T0 + 30)
                .await?,
            None,
        );
        let cancelled = store
            .request_job_cancel(acme.id, job.id, T0 + 40)
            .await?
            .ok_or_else(|| anyhow!("job not returned"))?;
        check(
            b,
            "cancel requested, still active",
            (cancelled.cancel_requested_at, cancelled.status),
            (Some(T0 + 40), JobStatus::Active),
        );
        let again = store
            .request_job_cancel(acme.id, job.id, T0 + 50)
            .await?
            .ok_or_else(|| anyhow!("job not returned"))?;
        check(
            b,
            "first request kept",
            again.cancel_requested_at,
            Some(T0 + 40),
        );
        let late = store
            .request_job_cancel(acme.id, done.id, T0 + 60)
            .await?
            .ok_or_else(|| anyhow!("job not returned"))?;
        check(
            b,
            "finished job is not marked",
            (late.cancel_requested_at, late.status),
            (None, JobStatus::Completed),
        );
        check(
            b,
            "the actor finishes it",
            store
                .finish_job(job.id, JobStatus::Cancelled, T0 + 70)
                .await?,
            true,
        );
        check(b, "none active", store.active_jobs().await?, vec![]);
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_are_listed_newest_first_with_filters_and_keyset_pages() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let one = random_agents(1);
        let mut all = Vec::new();
        // (created_at offset, type, creator); three share a timestamp so the id breaks the tie.
        for (i, (dt, job_type, by)) in [
            (0, "run_script", "alice"),
            (10, "reboot", "bob"),
            (10, "run_script", "bob"),
            (10, "run_script", "alice"),
            (20, "process_list", "alice"),
            (30, "run_script", "carol"),
            (40, "reboot", "alice"),
        ]
        .into_iter()
        .enumerate()
        {
            let job = store
                .create_job(&new_job(acme.id, job_type, by), &targets_for(&one), T0 + dt)
                .await?;
            if i % 3 == 1 {
                store
                    .finish_job(job.id, JobStatus::Completed, T0 + 100)
                    .await?;
            }
            all.push(job.id);
        }
        store
            .create_job(
                &new_job(other.id, "run_script", "alice"),
                &targets_for(&one),
                T0 + 50,
            )
            .await?;

        let stored: Vec<Job> = {
            let mut v = Vec::new();
            for id in &all {
                v.push(store.job(None, *id).await?.ok_or_else(|| anyhow!("lost"))?);
            }
            v
        };
        let newest_first = |pick: &dyn Fn(&Job) -> bool| -> Vec<Uuid> {
            let mut v: Vec<&Job> = stored.iter().filter(|j| pick(j)).collect();
            v.sort_by(|x, y| y.created_at.cmp(&x.created_at).then(y.id.cmp(&x.id)));
            v.into_iter().map(|j| j.id).collect()
        };
        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();

        check(
            b,
            "all, newest first",
            ids(store.list_jobs(acme.id, &JobFilter::default(), 100).await?),
            newest_first(&|_| true),
        );
        let cases: Vec<(&str, JobFilter, Pick)> = vec![
            (
                "status completed",
                JobFilter {
                    status: Some(JobStatus::Completed),
                    ..JobFilter::default()
                },
                Box::new(|j| j.status == JobStatus::Completed),
            ),
            (
                "status active",
                JobFilter {
                    status: Some(JobStatus::Active),
                    ..JobFilter::default()
                },
                Box::new(|j| j.status == JobStatus::Active),
            ),
            (
                "type",
                JobFilter {
                    job_type: Some("run_script".into()),
                    ..JobFilter::default()
                },
                Box::new(|j| j.job_type == "run_script"),
            ),
            (
                "creator",
                JobFilter {
                    created_by: Some("alice".into()),
                    ..JobFilter::default()
                },
                Box::new(|j| j.created_by == "alice"),
            ),
            (
                "type and creator",
                JobFilter {
                    job_type: Some("reboot".into()),
                    created_by: Some("bob".into()),
                    ..JobFilter::default()
                },
                Box::new(|j| j.job_type == "reboot" && j.created_by == "bob"),
            ),
            (
                "nothing",
                JobFilter {
                    created_by: Some("nobody".into()),
                    ..JobFilter::default()
                },
                Box::new(|_| false),
            ),
        ];
        for (case, filter, pick) in &cases {
            check(
                b,
                case,
                ids(store.list_jobs(acme.id, filter, 100).await?),
                newest_first(pick.as_ref()),
            );
        }

        // Keyset pages of two, with and without a filter.
        for (case, filter, pick) in [
            (
                "pages",
                JobFilter::default(),
                Box::new(|_: &Job| true) as Pick,
            ),
            (
                "filtered pages",
                JobFilter {
                    job_type: Some("run_script".into()),
                    ..JobFilter::default()
                },
                Box::new(|j: &Job| j.job_type == "run_script"),
            ),
        ] {
            let mut filter = filter;
            let mut walked = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.list_jobs(acme.id, &filter, 2).await?;
                assert!(page.len() <= 2, "[{b}] {case}: page too long");
                let Some(last) = page.last() else { break };
                filter.before = Some((last.created_at, last.id));
                walked.extend(ids(page));
                pages += 1;
                assert!(pages < 10, "[{b}] {case}: paging does not end");
            }
            check(b, case, walked, newest_first(pick.as_ref()));
        }
        check(
            b,
            "limit clamped up to 1",
            store
                .list_jobs(acme.id, &JobFilter::default(), 0)
                .await?
                .len(),
            1,
        );
        check(
            b,
            "other org sees its own only",
            store
                .list_jobs(other.id, &JobFilter::default(), 100)
                .await?
                .len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_are_paged_by_agent_with_a_state_filter() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let (job, a) = job_with(&store, acme.id, 25, T0).await?;
        let dispatched: Vec<TargetTransition> = a
            .iter()
            .step_by(3)
            .map(|x| step(&job, *x, TargetState::Dispatched, T0 + 5))
            .collect();
        store.transition_targets(&dispatched).await?;

        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_job_targets(acme.id, job.id, None, after, 10)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.agent_id);
            walked.extend(page.into_iter().map(|t| t.agent_id));
            assert!(walked.len() <= 25, "[{b}] paging does not end");
        }
        check(b, "all targets by agent", walked, a.clone());

        let want: Vec<Uuid> = a.iter().step_by(3).copied().collect();
        let got: Vec<Uuid> = store
            .list_job_targets(acme.id, job.id, Some(TargetState::Dispatched), None, 100)
            .await?
            .into_iter()
            .map(|t| t.agent_id)
            .collect();
        check(b, "dispatched only", got, want.clone());
        let got: Vec<Uuid> = store
            .list_job_targets(
                acme.id,
                job.id,
                Some(TargetState::Dispatched),
                Some(want[2]),
                2,
            )
            .await?
            .into_iter()
            .map(|t| t.agent_id)
            .collect();
        check(
            b,
            "dispatched page after the third",
            got,
            want[3..5].to_vec(),
        );
        check(
            b,
            "queued count",
            store
                .list_job_targets(acme.id, job.id, Some(TargetState::Queued), None, 100)
                .await?
                .len(),
            25 - want.len(),
        );
        check(
            b,
            "none succeeded",
            store
                .list_job_targets(acme.id, job.id, Some(TargetState::Succeeded), None, 100)
                .await?,
            vec![],
        );
        check(
            b,
            "other org",
            store
                .list_job_targets(other.id, job.id, None, None, 100)
                .await?,
            vec![],
        );
        check(
            b,
            "limit clamped up to 1",
            store
                .list_job_targets(acme.id, job.id, None, None, -5)
                .await?
                .len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selectors_resolve_to_eligible_agents_of_the_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let org = acme.id;
        let folder = |name: &str, parent: Option<Uuid>| NewGroup {
            name: name.into(),
            description: None,
            parent_id: parent,
        };
        let root = create_group(&store, GroupKind::Folder, org, &folder("root", None), T0).await?;
        let child = create_group(
            &store,
            GroupKind::Folder,
            org,
            &folder("child", Some(root.id)),
            T0,
        )
        .await?;
        let grandchild = create_group(
            &store,
            GroupKind::Folder,
            org,
            &folder("grandchild", Some(child.id)),
            T0,
        )
        .await?;
        let sibling =
            create_group(&store, GroupKind::Folder, org, &folder("sibling", None), T0).await?;
        let t1 = create_group(&store, GroupKind::Tag, org, &folder("t1", None), T0).await?;
        let t2 = create_group(&store, GroupKind::Tag, org, &folder("t2", None), T0).await?;
        let unused = create_group(&store, GroupKind::Tag, org, &folder("unused", None), T0).await?;
        let foreign_folder = create_group(
            &store,
            GroupKind::Folder,
            other.id,
            &folder("root", None),
            T0,
        )
        .await?;
        let foreign_tag =
            create_group(&store, GroupKind::Tag, other.id, &folder("t1", None), T0).await?;

        let in_root = agent(&store, org, "in-root", false).await?;
        let in_child = agent(&store, org, "in-child", false).await?;
        let in_grandchild = agent(&store, org, "in-grandchild", false).await?;
        let in_sibling = agent(&store, org, "in-sibling", false).await?;
        let pending = agent(&store, org, "pending", true).await?;
        let revoked = agent(&store, org, "revoked", false).await?;
        let rejected = agent(&store, org, "rejected", true).await?;
        let unfiled = agent(&store, org, "unfiled", false).await?;
        let foreign = agent(&store, other.id, "foreign", false).await?;
        revoke_agent(&store, revoked.id).await?;
        set_agent_approval(&store, rejected.id, AgentApproval::Rejected).await?;
        for (a, f) in [
            (&in_root, root.id),
            (&in_child, child.id),
            (&in_grandchild, grandchild.id),
            (&in_sibling, sibling.id),
            (&pending, child.id),
            (&revoked, grandchild.id),
            (&rejected, root.id),
        ] {
            move_agent(
                &store,
                org,
                a.id,
                &AgentPlacement {
                    folder_id: Some(Some(f)),
                    ..AgentPlacement::default()
                },
            )
            .await?;
        }
        move_agent(
            &store,
            other.id,
            foreign.id,
            &AgentPlacement {
                folder_id: Some(Some(foreign_folder.id)),
                ..AgentPlacement::default()
            },
        )
        .await?;
        for (a, t) in [
            (&in_root, t1.id),
            (&in_root, t2.id),
            (&unfiled, t1.id),
            (&in_sibling, t2.id),
            (&pending, t1.id),
            (&revoked, t1.id),
            (&rejected, t2.id),
        ] {
            tag_agent(&store, org, a.id, t).await?;
        }
        tag_agent(&store, other.id, foreign.id, foreign_tag.id).await?;

        let expect = |agents: &[&Agent]| -> Resolved {
            let mut v: Resolved = agents
                .iter()
                .map(|a| (a.id, caps(&a.hostname), a.hostname.clone()))
                .collect();
            v.sort_by_key(|x| x.0);
            v
        };
        let cases: Vec<(&str, JobTargetSelector, Resolved)> = vec![
            (
                "all",
                JobTargetSelector::All,
                expect(&[&in_root, &in_child, &in_grandchild, &in_sibling, &unfiled]),
            ),
            (
                "root folder and everything below it",
                JobTargetSelector::Folder(root.id),
                expect(&[&in_root, &in_child, &in_grandchild]),
            ),
            (
                "child folder",
                JobTargetSelector::Folder(child.id),
                expect(&[&in_child, &in_grandchild]),
            ),
            (
                "leaf folder",
                JobTargetSelector::Folder(grandchild.id),
                expect(&[&in_grandchild]),
            ),
            (
                "one tag",
                JobTargetSelector::Tags(vec![t1.id]),
                expect(&[&in_root, &unfiled]),
            ),
            (
                "two tags, deduplicated",
                JobTargetSelector::Tags(vec![t1.id, t2.id, t1.id]),
                expect(&[&in_root, &unfiled, &in_sibling]),
            ),
            (
                "unused tag",
                JobTargetSelector::Tags(vec![unused.id]),
                vec![],
            ),
            ("no tags", JobTargetSelector::Tags(vec![]), vec![]),
            (
                "agents, deduplicated",
                JobTargetSelector::Agents(vec![unfiled.id, in_child.id, unfiled.id]),
                expect(&[&unfiled, &in_child]),
            ),
            ("no agents", JobTargetSelector::Agents(vec![]), vec![]),
        ];
        for (case, selector, want) in cases {
            check(
                b,
                case,
                store.resolve_job_targets(org, &selector).await?,
                want,
            );
        }

        for (case, selector, names) in [
            (
                "pending agent",
                JobTargetSelector::Agents(vec![in_root.id, pending.id]),
                vec![pending.id],
            ),
            (
                "revoked agent",
                JobTargetSelector::Agents(vec![revoked.id]),
                vec![revoked.id],
            ),
            (
                "rejected agent",
                JobTargetSelector::Agents(vec![rejected.id]),
                vec![rejected.id],
            ),
            (
                "foreign agent",
                JobTargetSelector::Agents(vec![foreign.id, in_root.id]),
                vec![foreign.id],
            ),
            (
                "foreign tag",
                JobTargetSelector::Tags(vec![t1.id, foreign_tag.id]),
                vec![foreign_tag.id],
            ),
            (
                "foreign folder",
                JobTargetSelector::Folder(foreign_folder.id),
                vec![],
            ),
            (
                "unknown folder",
                JobTargetSelector::Folder(Uuid::new_v4()),
                vec![],
            ),
        ] {
            let message = invalid_message(store.resolve_job_targets(org, &selector).await);
            for id in names {
                assert!(message.contains(&id.to_string()), "[{b}] {case}: {message}");
            }
            assert!(
                !message.starts_with("expected Invalid"),
                "[{b}] {case}: {message}"
            );
            assert!(
                !message.contains(&in_root.id.to_string()),
                "[{b}] {case}: {message}"
            );
        }
        let many = random_agents(7);
        let message = invalid_message(
            store
                .resolve_job_targets(org, &JobTargetSelector::Agents(many.clone()))
                .await,
        );
        check(
            b,
            "at most five named",
            (
                many.iter()
                    .filter(|id| message.contains(&id.to_string()))
                    .count(),
                message.ends_with("and 2 more"),
            ),
            (5, true),
        );

        check(
            b,
            "the other org sees only its own",
            store
                .resolve_job_targets(other.id, &JobTargetSelector::All)
                .await?,
            expect(&[&foreign]),
        );
        let empty = create_org(&store, "empty", T0).await?;
        check(
            b,
            "an org without agents",
            store
                .resolve_job_targets(empty.id, &JobTargetSelector::All)
                .await?,
            vec![],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_count_jobs_and_targets_of_the_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        check(
            b,
            "empty",
            store.job_stats(acme.id).await?,
            JobStats::default(),
        );
        let (j1, a1) = job_with(&store, acme.id, 5, T0).await?;
        let (j2, a2) = job_with(&store, acme.id, 3, T0 + 1).await?;
        let (j3, _) = job_with(&store, acme.id, 2, T0 + 2).await?;
        job_with(&store, other.id, 7, T0).await?;
        store
            .transition_targets(&[
                step(&j1, a1[0], TargetState::Dispatched, T0 + 5),
                step(&j1, a1[1], TargetState::Running, T0 + 5),
            ])
            .await?;
        store
            .record_outcomes(
                &[
                    outcome(&j2, a2[0], TargetState::Succeeded, T0 + 9),
                    outcome(&j2, a2[1], TargetState::TimedOut, T0 + 9),
                    outcome(&j2, a2[2], TargetState::Expired, T0 + 9),
                ],
                T0 + 10,
            )
            .await?;
        store
            .finish_job(j2.id, JobStatus::Completed, T0 + 10)
            .await?;
        store
            .finish_job(j3.id, JobStatus::Cancelled, T0 + 10)
            .await?;
        check(
            b,
            "stats",
            store.job_stats(acme.id).await?,
            JobStats {
                active: 1,
                completed: 1,
                cancelled: 1,
                targets: counts(&[
                    (TargetState::Queued, 5),
                    (TargetState::Dispatched, 1),
                    (TargetState::Running, 1),
                    (TargetState::Succeeded, 1),
                    (TargetState::TimedOut, 1),
                    (TargetState::Expired, 1),
                ]),
            },
        );
        let theirs = store.job_stats(other.id).await?;
        check(
            b,
            "other org",
            (theirs.active, theirs.targets.total()),
            (1, 7),
        );
        store.close().await;
    }
    Ok(())
}
