//! What the job store tests share beyond `support` (stores of every backend, `check`, the
//! Tx-form setup writes): enrolled agents, new jobs and their targets, job creation and cancel
//! in Tx form, and a model of the documented step rules.

pub(crate) use std::fmt::Debug;
pub(crate) use std::time::Instant;

pub(crate) use crate::support::*;
pub(crate) use anyhow::{Result, anyhow};
pub(crate) use reap3r_store::{
    Agent, AgentApproval, AgentHello, AgentPlacement, GroupKind, Job, JobFilter, JobStats,
    JobStatus, JobTarget, JobTargetGrant, JobTargetSelector, NewAgent, NewEnrolmentToken, NewGroup,
    NewJob, NewJobTarget, Store, StoreError, TargetCounts, TargetOutcome, TargetState,
    TargetTransition, Uuid,
};
pub(crate) use serde_json::json;

/// Picks the jobs a filter should return.
pub(crate) type Pick = Box<dyn Fn(&Job) -> bool>;
/// What `resolve_job_targets` returns.
pub(crate) type Resolved = Vec<(Uuid, Vec<String>, String)>;

/// Enrols an agent, pending when `approval` is required, and reports its capabilities.
pub(crate) async fn agent(
    store: &Store,
    org: Uuid,
    hostname: &str,
    require_approval: bool,
) -> Result<Agent> {
    let secret = format!("secret-{hostname}-{}", Uuid::new_v4());
    create_enrolment_token(
        store,
        &NewEnrolmentToken {
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
    let enrolled = enrol_agent(store, &hash_of(&secret), &new, T0).await?;
    store
        .mark_agent_online(
            enrolled.id,
            "node-a",
            &AgentHello {
                hostname: hostname.into(),
                agent_version: "0.1.0".into(),
                capabilities: caps(hostname),
                inventory: json!({}),
                sealing_key: None,
            },
            T0 + 1,
        )
        .await?;
    Ok(enrolled)
}

pub(crate) fn caps(hostname: &str) -> Vec<String> {
    vec!["job:run_script".into(), format!("host:{hostname}")]
}

pub(crate) fn new_job(org_id: Uuid, job_type: &str, created_by: &str) -> NewJob {
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

pub(crate) fn targets_for(agents: &[Uuid]) -> Vec<NewJobTarget> {
    agents
        .iter()
        .map(|a| NewJobTarget {
            agent_id: *a,
            grant_hex: format!("{:0>64}", a.simple()),
            signature_hex: "ab".repeat(64),
            sealed_hex: None,
        })
        .collect()
}

pub(crate) fn random_agents(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

/// Creates a job of `n` random targets at `at`; returns it and its agents, sorted.
pub(crate) async fn job_with(
    store: &Store,
    org: Uuid,
    n: usize,
    at: i64,
) -> Result<(Job, Vec<Uuid>)> {
    let mut agents = random_agents(n);
    agents.sort();
    let job = create_job(
        store,
        &new_job(org, "run_script", "alice@example.com"),
        &targets_for(&agents),
        at,
    )
    .await?;
    Ok((job, agents))
}

pub(crate) fn step(job: &Job, agent_id: Uuid, to: TargetState, at_ms: i64) -> TargetTransition {
    TargetTransition::new(job.id, agent_id, to, at_ms)
}

pub(crate) fn outcome(job: &Job, agent_id: Uuid, state: TargetState, at: i64) -> TargetOutcome {
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

pub(crate) async fn target(store: &Store, job: &Job, agent_id: Uuid) -> Result<JobTarget> {
    store
        .job_target(job.org_id, job.id, agent_id)
        .await?
        .ok_or_else(|| anyhow!("target {agent_id} missing"))
}

pub(crate) fn counts(pairs: &[(TargetState, i64)]) -> TargetCounts {
    let mut c = TargetCounts::default();
    for &(state, n) in pairs {
        for _ in 0..n {
            c.add(state);
        }
    }
    c
}

/// Creates a job in a transaction of its own, as the job operation does (without its audit).
pub(crate) async fn create_job(
    store: &Store,
    job: &NewJob,
    targets: &[NewJobTarget],
    now_ms: i64,
) -> Result<Job, StoreError> {
    let mut tx = store.begin().await?;
    let job = tx.create_job(job, targets, now_ms).await?;
    tx.commit().await?;
    Ok(job)
}

/// Records a cancel request in a transaction of its own.
pub(crate) async fn request_job_cancel(
    store: &Store,
    org_id: Uuid,
    job_id: Uuid,
    now_ms: i64,
) -> Result<Option<Job>, StoreError> {
    let mut tx = store.begin().await?;
    let job = tx.request_job_cancel(org_id, job_id, now_ms).await?;
    tx.commit().await?;
    Ok(job)
}

/// A target as the tests expect it after a batch: state and the step stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) state: TargetState,
    pub(crate) dispatched_at: Option<i64>,
    pub(crate) acked_at: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) updated_at: i64,
}

impl Row {
    pub(crate) fn of(t: &JobTarget) -> Row {
        Row {
            state: t.state,
            dispatched_at: t.dispatched_at,
            acked_at: t.acked_at,
            started_at: t.started_at,
            updated_at: t.updated_at,
        }
    }
}

pub(crate) fn step_rank(s: TargetState) -> u8 {
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
pub(crate) fn model_step(row: &mut Option<Row>, t: &TargetTransition) -> bool {
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
pub(crate) async fn rows_of(
    store: &Store,
    job: &Job,
) -> Result<std::collections::BTreeMap<Uuid, Row>> {
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

/// A small deterministic pseudo-random sequence (no rand dependency), for mixed batches.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}
