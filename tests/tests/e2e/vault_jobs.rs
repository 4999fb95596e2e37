//! Vault secrets with real agents: a value sealed to an agent reaches only its script's
//! environment and is masked in its output; a vault secret named in a job gets there through
//! the API (`POST /api/jobs` and `POST /api/vault/{id}/use`); a dispatch sealed to one agent does not open on another; and the master key
//! rotates under a serving `reap3r serve` process (the CLI beside it) while jobs and reveals
//! run, after which neither backend's files or dump nor the server's debug log holds a value.

use std::path::Path;

use anyhow::{Context, Result};
use reap3r_actors::access::Caller;
use reap3r_actors::jobs::{CreateJob, JobSecrets, JobTargetChoice};
use reap3r_store::{Backend, Uuid};
use reap3r_wire::{JobType, SealedEnv, rand_core, seal_value};
use serde_json::{Value, json};

use crate::api_harness::{Api, default_org, logged_in};
use crate::harness::{backends, database, eventually};
use crate::jobs::{WAIT, create, result, rig, script_job, wait_job};
use crate::server_process::{Heartbeats, ServerProcess};

/// A script that succeeds only when `$DB_PASS` is `value`, and prints it (masked by the
/// agent). The value is split in two quoted halves so the job's payload does not hold it.
fn checking_script(value: &str) -> String {
    let (head, tail) = value.split_at(8);
    format!("test \"$DB_PASS\" = '{head}''{tail}' && echo \"pw=$DB_PASS\"")
}

/// `value` sealed to `agent`'s key for `job`, as the vault would do it.
fn sealed_for(key: &[u8; 32], job: Uuid, agent: Uuid, value: &str) -> Result<Vec<u8>> {
    let entry = seal_value(
        key,
        job.as_bytes(),
        agent.as_bytes(),
        "DB_PASS",
        value.as_bytes(),
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )?;
    Ok(SealedEnv {
        entries: vec![entry],
    }
    .to_bytes()?)
}

/// A `run_script` job checking `$DB_PASS`, created through the operation with `sealed` (agent
/// to its sealed env) as the vault would pass it.
async fn create_sealed(
    rig: &crate::jobs::Rig,
    job_id: Uuid,
    targets: Vec<Uuid>,
    value: &str,
    sealed: Vec<(Uuid, Vec<u8>)>,
) -> Result<Uuid> {
    let node = rig.fleet.server.node();
    let org = default_org(&rig.fleet.server).await?.id;
    let engine = node.api.jobs.as_ref().context("job engine")?;
    let job = CreateJob {
        job_type: JobType::RunScript,
        targets: JobTargetChoice {
            agent_ids: Some(targets),
            ..Default::default()
        },
        payload: Some(json!({ "interpreter": "sh", "script": checking_script(value) })),
        timeout_s: 30,
        expires_at: None,
        batch_size: None,
        confirm: None,
        secrets: Some(JobSecrets {
            job_id,
            names: vec!["DB_PASS".into()],
            sealed: sealed.into_iter().collect(),
            uses: Vec::new(),
        }),
    }
    .run(&node.api.domain, engine, &Caller::cli(org))
    .await?;
    assert_eq!(job.id, job_id);
    wait_job(&rig.api, job.id, "the job to complete", |j| {
        j["status"] == "completed"
    })
    .await?;
    Ok(job.id)
}

/// The agents' sealing keys as their hellos stored them.
async fn sealing_key(rig: &crate::jobs::Rig, agent: Uuid) -> Result<[u8; 32]> {
    let node = rig.fleet.server.node();
    let org = default_org(&rig.fleet.server).await?.id;
    eventually("the agent's sealing key", WAIT, || async {
        Ok(node
            .store
            .sealing_keys(org, &[agent])
            .await?
            .get(&agent)
            .copied())
    })
    .await
}

/// Neither the job's result, its view nor the audit chain holds `value`.
async fn in_no_record(api: &Api, job: Uuid, agent: Uuid, value: &str) -> Result<()> {
    let r = result(api, job, agent).await?;
    let job_view = api.get(&format!("/api/jobs/{job}")).await?.expect(200)?;
    let audit = api.get("/api/audit-logs").await?.expect(200)?;
    for shown in [r.to_string(), job_view.to_string(), audit.to_string()] {
        assert!(!shown.contains(value), "{shown}");
    }
    Ok(())
}

/// What the vault will do, done by hand: the agent's sealing key as its hello stored it, a value
/// sealed to it for a new job id, the job created through the operation with that sealed env.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_secret_reaches_only_the_scripts_environment_and_is_masked() -> Result<()> {
    const VALUE: &str = "expected-s3cret";
    for backend in backends().await? {
        let rig = rig(1, backend).await?;
        let id = rig.fleet.agents[0].id;
        let key = sealing_key(&rig, id).await?;
        let job_id = Uuid::now_v7();
        let sealed = sealed_for(&key, job_id, id, VALUE)?;
        let job = create_sealed(&rig, job_id, vec![id], VALUE, vec![(id, sealed)]).await?;
        let r = result(&rig.api, job, id).await?;
        assert_eq!(r["state"], "succeeded", "[{backend}] {r}");
        assert_eq!(
            r["exit_code"], 0,
            "[{backend}] the script saw the value: {r}"
        );
        assert_eq!(
            r["stdout"], "pw=***\n",
            "[{backend}] masked in the stored output"
        );
        in_no_record(&rig.api, job, id, VALUE).await?;
    }
    Ok(())
}

/// One job, two agents, and the env sealed to the first given to both (as a copy of the first's
/// dispatch would): the server signs the second's grant over those bytes, so only the sealing
/// stands between the copy and the value. The first runs; the second cannot open the value and
/// refuses the job without running the script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_sealed_to_one_agent_does_not_open_on_another() -> Result<()> {
    const VALUE: &str = "only-for-agent-a-91";
    for backend in backends().await? {
        let rig = rig(2, backend).await?;
        let (a, b) = (rig.fleet.agents[0].id, rig.fleet.agents[1].id);
        let key_a = sealing_key(&rig, a).await?;
        sealing_key(&rig, b).await?;
        let job_id = Uuid::now_v7();
        let for_a = sealed_for(&key_a, job_id, a, VALUE)?;
        let job = create_sealed(
            &rig,
            job_id,
            vec![a, b],
            VALUE,
            vec![(a, for_a.clone()), (b, for_a)],
        )
        .await?;
        let ran = result(&rig.api, job, a).await?;
        assert_eq!(ran["state"], "succeeded", "[{backend}] {ran}");
        assert_eq!(ran["stdout"], "pw=***\n", "[{backend}] {ran}");
        let refused = result(&rig.api, job, b).await?;
        assert_eq!(refused["state"], "failed", "[{backend}] {refused}");
        let why = refused["error"].as_str().unwrap_or_default();
        assert!(
            why.contains("refused by agent")
                && why.contains("does not open with this agent's sealing key"),
            "[{backend}] {refused}"
        );
        assert!(
            refused["exit_code"].is_null() && refused["stdout"].as_str().unwrap_or("").is_empty(),
            "[{backend}] no script ran on the other agent: {refused}"
        );
        in_no_record(&rig.api, job, b, VALUE).await?;
    }
    Ok(())
}

/// The whole path through the API: a vault secret named in a `run_script` job reaches the
/// real agent's script environment, is masked in the stored output, and is nowhere in the job's
/// records; a caller the secret is not shared with cannot use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_secret_named_in_a_job_reaches_the_script_and_nothing_else() -> Result<()> {
    const VALUE: &str = "vault-job-s3cret-77";
    for backend in backends().await? {
        let rig = rig(1, backend).await?;
        let id = rig.fleet.agents[0].id;
        let org = default_org(&rig.fleet.server).await?.id;
        sealing_key(&rig, id).await?;
        let secret_id = new_secret(&rig.api, "backup-db", VALUE).await?;
        let body = job_using(id, &secret_id, VALUE);

        // Not shared with this technician: refused, nothing created.
        let tech = logged_in(&rig.fleet.server, org, "tech@example.com", "technician").await?;
        tech.post("/api/jobs", body.clone()).await?.error(404)?;
        // Sealed, then refused by the job's own checks: no use is recorded.
        let mut refused = body.clone();
        refused["payload"]["interpreter"] = json!("cobol");
        rig.api.post("/api/jobs", refused).await?.error(400)?;

        let job = create(&rig.api, body).await?;
        wait_job(&rig.api, job, "the job to complete", |j| {
            j["status"] == "completed"
        })
        .await?;
        let r = result(&rig.api, job, id).await?;
        assert_eq!(
            r["exit_code"], 0,
            "[{backend}] the script saw the value: {r}"
        );
        assert_eq!(r["stdout"], "pw=***\n", "[{backend}] masked");
        in_no_record(&rig.api, job, id, VALUE).await?;
        let audit = rig.api.get("/api/audit-logs").await?.expect(200)?;
        assert!(audit.to_string().contains("secret.use"));
        let log = rig
            .api
            .get(&format!("/api/vault/{secret_id}/access-logs"))
            .await?
            .expect(200)?;
        assert!(
            log.as_array()
                .is_some_and(|a| a.iter().any(|e| e["action"] == "use")),
            "{log}"
        );

        // The shortcut from the secret's page: the same job, one secret.
        let use_path = format!("/api/vault/{secret_id}/use");
        let use_body = json!({
            "env": "DB_PASS",
            "targets": { "agent_ids": [id] },
            "script": checking_script(VALUE),
            "timeout_s": 30,
        });
        tech.post(&use_path, use_body.clone()).await?.error(404)?;
        let viewer = logged_in(&rig.fleet.server, org, "viewer@example.com", "viewer").await?;
        viewer.post(&use_path, use_body.clone()).await?.error(403)?;
        let used = rig.api.post(&use_path, use_body).await?.expect(200)?;
        assert_eq!(used["type"], "run_script", "{used}");
        let job = crate::api_harness::id_of(&used)?;
        wait_job(&rig.api, job, "the job to complete", |j| {
            j["status"] == "completed"
        })
        .await?;
        let r = result(&rig.api, job, id).await?;
        assert_eq!(r["exit_code"], 0, "[{backend}] {r}");
        assert_eq!(r["stdout"], "pw=***\n", "[{backend}] masked");
        in_no_record(&rig.api, job, id, VALUE).await?;
        let log = rig
            .api
            .get(&format!("/api/vault/{secret_id}/access-logs"))
            .await?
            .expect(200)?;
        let uses = log
            .as_array()
            .map(|a| a.iter().filter(|e| e["action"] == "use").count());
        assert_eq!(uses, Some(2), "[{backend}] {log}");
        let audit = rig
            .api
            .get("/api/audit-logs?action=secret.use")
            .await?
            .expect(200)?;
        assert_eq!(
            audit.as_array().map(Vec::len),
            Some(2),
            "[{backend}] one secret.use per job: {audit}"
        );
    }
    Ok(())
}

/// A new password secret; its id.
async fn new_secret(api: &Api, name: &str, value: &str) -> Result<String> {
    let secret = api
        .post(
            "/api/vault",
            json!({ "name": name, "kind": "password", "value": value }),
        )
        .await?
        .expect(200)?;
    Ok(secret["id"].as_str().unwrap_or_default().to_owned())
}

/// A job body running [`checking_script`] on `agent` with the secret as `$DB_PASS`.
fn job_using(agent: Uuid, secret_id: &str, value: &str) -> Value {
    let mut body = script_job(&[agent], &checking_script(value), 30);
    body["secrets"] = json!([{ "env": "DB_PASS", "secret_id": secret_id }]);
    body
}

/// One job using the secret on `agent`, checked to have seen `value` (and masked it).
async fn job_sees(api: &Api, agent: Uuid, secret_id: &str, value: &str) -> Result<()> {
    let job = create(api, job_using(agent, secret_id, value)).await?;
    wait_job(api, job, "a job using the secret", |j| {
        j["status"] == "completed"
    })
    .await?;
    let r = result(api, job, agent).await?;
    anyhow::ensure!(
        r["exit_code"] == 0 && r["stdout"] == "pw=***\n",
        "job {job} did not see the value: {r}"
    );
    Ok(())
}

/// Runs jobs using the secret one after another until `stop` (at least one); how many ran.
async fn jobs_until(
    api: Api,
    agent: Uuid,
    secret_id: String,
    value: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<usize> {
    let mut ran = 0;
    while !*stop.borrow() || ran == 0 {
        job_sees(&api, agent, &secret_id, &value).await?;
        ran += 1;
    }
    Ok(ran)
}

/// Reveals the secret again and again until `stop`, each checked to be `value`; how many.
async fn reveals_until(
    api: Api,
    secret_id: String,
    value: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<usize> {
    let mut done = 0;
    while !*stop.borrow() || done == 0 {
        let shown = api
            .post(
                &format!("/api/vault/{secret_id}/reveal"),
                json!({ "reason": "rotation drill" }),
            )
            .await?
            .expect(200)?;
        anyhow::ensure!(shown["value"] == value.as_str(), "reveal {done}: {shown}");
        done += 1;
    }
    Ok(done)
}

/// Every file under `dir` holding `needle`, by path.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The operator's path on a serving node with default settings: `reap3r vault rotate-master-key`
/// run twice beside `reap3r serve` (the second dropping the retired keys) while a real agent
/// runs jobs using a vault secret and an admin reveals it; every job sees the value and every
/// reveal shows it. Afterwards, with the server's debug log kept, no file under the test's
/// directory (SQLite file and WAL, key file, agent's data dir, server log) and no `pg_dump` of
/// the PostgreSQL database holds the value or the secret's new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_rotates_while_jobs_and_reveals_run_and_no_plaintext_is_left() -> Result<()>
{
    const VALUE: &str = "rotating-s3cret-4242";
    const NEXT: &str = "rotated-version-s3cret-7";
    for backend in backends().await? {
        let db = database(backend).await?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("server.log");
        let mut server = ServerProcess::new(dir.path(), Heartbeats::Defaults)?
            .with_log(&log)
            .with_env("REAP3R_LOG", "debug");
        if let Some(db) = &db {
            server = server.with_env("REAP3R_DATABASE_URL", &db.url);
        }
        let (api, agents) = server.start_with_fleet(1).await?;
        let agent = agents[0].id;
        let secret_id = new_secret(&api, "rotating-db", VALUE).await?;

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let jobs = tokio::spawn(jobs_until(
            api.clone(),
            agent,
            secret_id.clone(),
            VALUE.into(),
            stopped.clone(),
        ));
        let reveals = tokio::spawn(reveals_until(
            api.clone(),
            secret_id.clone(),
            VALUE.into(),
            stopped,
        ));
        let first = server.cli(&["vault", "rotate-master-key"], None).await?;
        let second = server
            .cli(&["vault", "rotate-master-key", "--drop-retired"], None)
            .await?;
        stop.send(true)?;
        let ran = jobs.await??;
        let shown = reveals.await??;
        assert!(
            ran >= 1 && shown >= 1,
            "[{backend}] {ran} jobs, {shown} reveals"
        );
        assert!(
            first.contains("master key rotated") && second.contains("master key rotated"),
            "[{backend}] {first}\n{second}"
        );
        let status = server.cli(&["vault", "status"], None).await?;
        // The second rotation's key is the primary.
        let newest = second
            .split("-> ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("the new key's id")?;
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(newest) && l.contains("primary")),
            "[{backend}] {status}"
        );

        // A job and a reveal after both rotations, and a new version, still work.
        job_sees(&api, agent, &secret_id, VALUE).await?;
        api.patch(&format!("/api/vault/{secret_id}"), json!({ "value": NEXT }))
            .await?
            .expect(200)?;

        server.sigterm().await?;
        drop(agents);
        if let Some(db) = &db {
            let dump = tokio::process::Command::new("pg_dump")
                .arg("--dbname")
                .arg(&db.url)
                .output()
                .await
                .context("pg_dump")?;
            anyhow::ensure!(
                dump.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
            let text = String::from_utf8_lossy(&dump.stdout);
            assert!(
                text.contains("r3v1:"),
                "[{backend}] sealed values are dumped"
            );
            for value in [VALUE, NEXT] {
                assert!(!text.contains(value), "[{backend}] the dump holds {value}");
            }
        }
        let logged = std::fs::read_to_string(&log)?;
        assert!(
            logged.contains("DEBUG"),
            "[{backend}] the server logged at debug"
        );
        for value in [VALUE, NEXT] {
            let holding = files_holding(dir.path(), value);
            assert!(holding.is_empty(), "[{backend}] {value} is in {holding:?}");
        }
        if backend == Backend::Sqlite {
            assert!(
                files_holding(dir.path(), &secret_id)
                    .iter()
                    .any(|p| p.contains("reap3r.db")),
                "the search reads the SQLite files"
            );
        }
    }
    Ok(())
}
