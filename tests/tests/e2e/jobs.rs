//! Jobs end to end: the HTTP API, job actors, per-job QUIC streams, real agent processes running
//! real scripts, durable results (secrets in jobs: `vault_jobs.rs`); plus the failure cases (timeouts, cancels, offline
//! agents, killed servers and agents, forged and replayed dispatches).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use reap3r_actors::SessionMsg;
use reap3r_store::{AgentStatus, Backend, Uuid};
use reap3r_wire::{JobDispatch, JobGrant, JobSpec, SigningKey};
use serde_json::{Value, json};

use crate::api_harness::{Api, default_org, id_of, logged_in, now_ms};
use crate::harness::{TestFleet, backends, eventually};
use crate::server_process::{Heartbeats, ServerProcess};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) struct Rig {
    pub(crate) fleet: TestFleet,
    pub(crate) api: Api,
    scratch: PathBuf,
}

pub(crate) async fn rig(agents: usize, backend: Backend) -> Result<Rig> {
    let fleet = TestFleet::builder()
        .agents(agents)
        .backend(backend)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?;
    let api = logged_in(&fleet.server, org.id, "ops@example.com", "org_admin").await?;
    let scratch = fleet.server.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    Ok(Rig {
        fleet,
        api,
        scratch,
    })
}

impl Rig {
    fn ids(&self) -> Vec<Uuid> {
        self.fleet.agents.iter().map(|a| a.id).collect()
    }
}

pub(crate) fn script_job(agents: &[Uuid], script: &str, timeout_s: u32) -> Value {
    json!({
        "type": "run_script",
        "targets": { "agent_ids": agents },
        "payload": { "interpreter": "sh", "script": script },
        "timeout_s": timeout_s,
    })
}

pub(crate) async fn create(api: &Api, body: Value) -> Result<Uuid> {
    id_of(&api.post("/api/jobs", body).await?.expect(200)?)
}

/// Polls the job until `done` holds for it.
pub(crate) async fn wait_job(
    api: &Api,
    id: Uuid,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    eventually(what, WAIT, || async {
        let job = api.get(&format!("/api/jobs/{id}")).await?.expect(200)?;
        Ok(done(&job).then_some(job))
    })
    .await
}

pub(crate) async fn result(api: &Api, job: Uuid, agent: Uuid) -> Result<Value> {
    api.get(&format!("/api/jobs/{job}/results/{agent}"))
        .await?
        .expect(200)
}

async fn wait_state(api: &Api, job: Uuid, agent: Uuid, state: &str) -> Result<Value> {
    eventually(&format!("target {agent} to be {state}"), WAIT, || async {
        let r = result(api, job, agent).await?;
        Ok((r["state"] == state).then_some(r))
    })
    .await
}

pub(crate) fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

pub(crate) fn count(job: &Value, state: &str) -> i64 {
    job["counts"][state].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_on_three_agents_with_their_output_and_exit_codes() -> Result<()> {
    for backend in backends().await? {
        let rig = rig(3, backend).await?;
        let ids = rig.ids();
        let mut body = script_job(
            &ids,
            "echo \"hello $1 $GREETING\"; echo oops >&2; exit 0",
            30,
        );
        body["payload"]["args"] = json!(["world"]);
        body["payload"]["env"] = json!({ "GREETING": "again" });
        let job = create(&rig.api, body).await?;
        let done = wait_job(&rig.api, job, "job to complete", |j| {
            j["status"] == "completed"
        })
        .await?;
        assert_eq!(count(&done, "succeeded"), 3, "[{backend}] {done}");
        for agent in &ids {
            let r = result(&rig.api, job, *agent).await?;
            assert_eq!(r["state"], "succeeded", "[{backend}] {r}");
            assert_eq!(r["exit_code"], 0);
            assert_eq!(r["stdout"], "hello world again\n");
            assert_eq!(r["stderr"], "oops\n");
            assert_eq!(r["stdout_truncated"], false);
            let (started, finished) = (r["started_at"].as_i64(), r["finished_at"].as_i64());
            assert!(started.zip(finished).is_some_and(|(s, f)| s <= f), "{r}");
        }
        let page = rig
            .api
            .get(&format!("/api/jobs/{job}/results?limit=2"))
            .await?
            .expect(200)?;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
        assert!(page["next_cursor"].is_string());

        // A failing script: its exit code and partial output are kept.
        let failing = create(&rig.api, script_job(&ids[..1], "echo partial; exit 3", 30)).await?;
        let r = wait_state(&rig.api, failing, ids[0], "failed").await?;
        assert_eq!(r["exit_code"], 3);
        assert_eq!(r["stdout"], "partial\n");

        let list = rig
            .api
            .get("/api/jobs?type=run_script")
            .await?
            .expect(200)?;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
        let stats = rig.api.get("/api/jobs/stats").await?.expect(200)?;
        assert_eq!(stats["completed"], 2);
        assert_eq!(stats["targets"]["succeeded"], 3);
        assert_eq!(stats["targets"]["failed"], 1);
        let audit = rig
            .api
            .get("/api/audit-logs?action=job.create")
            .await?
            .expect(200)?;
        let n = audit.as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(n, 2, "two job.create audit records: {audit}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_requests_are_refused_with_clear_errors() -> Result<()> {
    let rig = rig(1, Backend::Sqlite).await?;
    let ids = rig.ids();
    let api = &rig.api;
    // Reboot needs an explicit confirmation, and technicians may not reboot at all.
    let reboot = json!({"type": "reboot", "targets": {"agent_ids": ids}, "timeout_s": 30});
    assert_eq!(
        api.post("/api/jobs", reboot.clone()).await?.error(400)?,
        "confirmation_required"
    );
    let org = default_org(&rig.fleet.server).await?;
    let tech = logged_in(&rig.fleet.server, org.id, "tech@example.com", "technician").await?;
    let mut confirmed = reboot.clone();
    confirmed["confirm"] = json!(true);
    assert_eq!(
        tech.post("/api/jobs", confirmed).await?.error(403)?,
        "forbidden"
    );
    let viewer = logged_in(&rig.fleet.server, org.id, "view@example.com", "viewer").await?;
    viewer
        .post("/api/jobs", script_job(&ids, "true", 5))
        .await?
        .error(403)?;
    // An interpreter the agent does not report, when this machine lacks it.
    let has_pwsh = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("pwsh").exists()));
    if !has_pwsh {
        let mut pwsh = script_job(&ids, "Write-Output hi", 5);
        pwsh["payload"]["interpreter"] = json!("pwsh");
        let reply = api.post("/api/jobs", pwsh).await?;
        assert_eq!(reply.clone().error(400)?, "unsupported_by_agent");
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("interpreter:pwsh")
        );
    }
    for (body, code) in [
        (
            json!({"type": "run_script", "targets": {}, "payload": {"interpreter": "sh", "script": "true"}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "run_script", "targets": {"all": true, "agent_ids": ids}, "payload": {"interpreter": "sh", "script": "true"}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "run_script", "targets": {"agent_ids": [Uuid::new_v4()]}, "payload": {"interpreter": "sh", "script": "true"}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "run_script", "targets": {"agent_ids": ids}, "payload": {"interpreter": "cmd", "script": "true"}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "run_script", "targets": {"agent_ids": ids}, "payload": {"interpreter": "sh", "script": ""}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "run_script", "targets": {"agent_ids": ids}, "payload": {"interpreter": "sh", "script": "true", "typo": 1}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "run_script", "targets": {"agent_ids": ids}, "payload": {"interpreter": "sh", "script": "true"}, "timeout_s": 5, "expires_at": 1}),
            "invalid_input",
        ),
        (
            json!({"type": "service_action", "targets": {"agent_ids": ids}, "payload": {"service": "a b", "action": "start"}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "process_kill", "targets": {"agent_ids": ids}, "payload": {"pid": 1}, "timeout_s": 5}),
            "invalid_input",
        ),
        (
            json!({"type": "nope", "targets": {"all": true}, "timeout_s": 5}),
            "bad_request",
        ),
    ] {
        let reply = api.post("/api/jobs", body.clone()).await?;
        assert_eq!(reply.status.as_u16(), 400, "{body} → {}", reply.body);
        assert_eq!(reply.body["code"], code, "{body} → {}", reply.body);
    }
    api.get(&format!("/api/jobs/{}", Uuid::new_v4()))
        .await?
        .error(404)?;
    api.post(&format!("/api/jobs/{}/cancel", Uuid::new_v4()), json!({}))
        .await?
        .error(404)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_tree() -> Result<()> {
    let rig = rig(1, Backend::Sqlite).await?;
    let ids = rig.ids();
    let pid_file = rig.scratch.join("grandchild.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; echo waiting; sleep 300",
        pid_file.display()
    );
    let job = create(&rig.api, script_job(&ids, &script, 2)).await?;
    let r = wait_state(&rig.api, job, ids[0], "timed_out").await?;
    assert_eq!(r["stdout"], "waiting\n", "{r}");
    let pid: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    eventually("the backgrounded grandchild to be gone", WAIT, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it: either way not running.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        Ok((stat.is_empty() || state == Some("Z")).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_running_job() -> Result<()> {
    let rig = rig(1, Backend::Sqlite).await?;
    let ids = rig.ids();
    let job = create(&rig.api, script_job(&ids, "echo started; sleep 300", 120)).await?;
    wait_state(&rig.api, job, ids[0], "running").await?;
    let cancelled = rig
        .api
        .post(&format!("/api/jobs/{job}/cancel"), json!({}))
        .await?
        .expect(200)?;
    assert!(cancelled["cancel_requested_at"].is_i64());
    let r = wait_state(&rig.api, job, ids[0], "cancelled").await?;
    let why = r["error"].as_str().unwrap_or("");
    assert!(
        !why.contains("did not confirm"),
        "the agent confirmed the cancel itself: {r}"
    );
    assert_eq!(r["stdout"], "started\n");
    wait_job(&rig.api, job, "job to be cancelled", |j| {
        j["status"] == "cancelled"
    })
    .await?;
    rig.api
        .post(&format!("/api/jobs/{job}/cancel"), json!({}))
        .await?
        .error(409)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_agents_get_their_jobs_on_return_unless_expired() -> Result<()> {
    let mut rig = rig(1, Backend::Sqlite).await?;
    let id = rig.ids()[0];
    rig.fleet.agents[0].kill().await?;
    rig.fleet
        .server
        .wait_status(id, AgentStatus::Offline, WAIT)
        .await?;
    let ran = rig.scratch.join("ran");
    let kept = create(
        &rig.api,
        script_job(&[id], &format!("echo kept >> {}", ran.display()), 30),
    )
    .await?;
    let mut expiring = script_job(&[id], &format!("echo expiring >> {}", ran.display()), 30);
    expiring["expires_at"] = json!(now_ms() + 1_500);
    let expiring = create(&rig.api, expiring).await?;
    let r = wait_state(&rig.api, expiring, id, "expired").await?;
    assert!(r["dispatched_at"].is_null());
    assert_eq!(result(&rig.api, kept, id).await?["state"], "queued");

    rig.fleet.agents[0].start()?;
    wait_state(&rig.api, kept, id, "succeeded").await?;
    assert_eq!(std::fs::read_to_string(&ran)?, "kept\n");
    assert_eq!(result(&rig.api, expiring, id).await?["state"], "expired");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_job_fails_cleanly_after_the_timeout() -> Result<()> {
    let mut rig = rig(1, Backend::Sqlite).await?;
    let id = rig.ids()[0];
    let job = create(&rig.api, script_job(&[id], "sleep 300", 3)).await?;
    wait_state(&rig.api, job, id, "running").await?;
    rig.fleet.agents[0].kill().await?;
    let r = wait_state(&rig.api, job, id, "timed_out").await?;
    assert!(
        r["error"].as_str().unwrap_or("").contains("no result"),
        "the server decided, the agent never answered: {r}"
    );
    wait_job(&rig.api, job, "job to complete", |j| {
        j["status"] == "completed"
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_refuse_forged_and_replayed_dispatches() -> Result<()> {
    let rig = rig(1, Backend::Sqlite).await?;
    let id = rig.ids()[0];
    let marker = rig.scratch.join("runs");
    let script = format!("echo run >> {}", marker.display());
    let job = create(&rig.api, script_job(&[id], &script, 30)).await?;
    wait_state(&rig.api, job, id, "succeeded").await?;
    assert_eq!(lines(&marker), 1);

    let node = rig.fleet.server.node();
    let stats = &node.ctx.stats;
    let session = node.registry.get(id).context("agent session")?;
    let stored = node.store.job(None, job).await?.context("job row")?;
    let target = node
        .store
        .job_target(stored.org_id, job, id)
        .await?
        .context("target row")?;
    let genuine = JobDispatch {
        spec: hex::decode(&stored.spec_hex)?,
        grant: hex::decode(&target.grant_hex)?,
        signature: hex::decode(&target.signature_hex)?,
        sealed: Vec::new(),
    };

    // The genuine, server-signed dispatch again: the agent's ledger knows it and runs nothing.
    session.cast(SessionMsg::DispatchJob(job, Box::new(genuine.clone())))?;
    eventually("the agent to answer duplicate", WAIT, || async {
        Ok((stats.job_duplicate_acks.load(Ordering::Relaxed) >= 1).then_some(()))
    })
    .await?;

    // A grant for a new job signed by a key that is not the server's: refused.
    let forger = SigningKey::from_bytes(&[9; 32]);
    let (grant, signature) = JobGrant {
        job_id: Uuid::new_v4().into_bytes(),
        agent_id: id.into_bytes(),
        spec_hash: JobSpec::hash_bytes(&genuine.spec),
        issued_at_ms: now_ms() as u64,
        expires_at_ms: None,
        sealed_hash: None,
    }
    .sign(&forger);
    let forged = JobDispatch {
        spec: genuine.spec.clone(),
        grant,
        signature: signature.to_vec(),
        sealed: Vec::new(),
    };
    session.cast(SessionMsg::DispatchJob(Uuid::new_v4(), Box::new(forged)))?;
    // The genuine grant with another spec (a DB writer swapping the script): refused too.
    let swapped = JobDispatch {
        spec: JobSpec::from_bytes(&genuine.spec)
            .map(|mut s| {
                s.timeout_s += 1;
                s.to_bytes()
            })
            .map_err(|e| anyhow!("{e}"))?,
        ..genuine.clone()
    };
    session.cast(SessionMsg::DispatchJob(job, Box::new(swapped)))?;
    eventually("the agent to refuse both", WAIT, || async {
        Ok((stats.job_refusals.load(Ordering::Relaxed) >= 2).then_some(()))
    })
    .await?;
    // Give a wrongly run script time to show up before checking it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines(&marker), 1, "nothing ran a second time");
    assert_eq!(result(&rig.api, job, id).await?["state"], "succeeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_output_reaches_the_websocket_before_the_job_ends() -> Result<()> {
    let rig = rig(1, Backend::Sqlite).await?;
    let id = rig.ids()[0];
    let token = rig.api.bearer.clone().context("token")?;
    let base = rig.api.base.replace("http://", "ws://");
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{base}/api/ws?access_token={token}")).await?;
    let job = create(
        &rig.api,
        script_job(&[id], "echo first; sleep 2; echo second", 30),
    )
    .await?;
    let mut seen_first = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow!("no job events in time"))?
            .context("socket closed")??;
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let event: Value = serde_json::from_str(&text)?;
        if event["job_id"] != job.to_string() {
            continue;
        }
        match event["type"].as_str() {
            Some("job_output") if event["data"].as_str().unwrap_or("").contains("first") => {
                assert_eq!(event["agent_id"], id.to_string());
                seen_first = true;
            }
            Some("job_update") if event["state"] == "completed" => {
                assert!(seen_first, "output arrived only after the job ended");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        result(&rig.api, job, id).await?["stdout"],
        "first\nsecond\n"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_job_actor_resumes_from_the_database() -> Result<()> {
    let rig = rig(2, Backend::Sqlite).await?;
    let ids = rig.ids();
    let job = create(&rig.api, script_job(&ids, "sleep 1; echo ok", 30)).await?;
    wait_state(&rig.api, job, ids[0], "running").await?;
    let node = rig.fleet.server.node();
    node.job_supervisor()
        .context("job supervisor")?
        .cast(reap3r_actors::jobs::JobSupervisorMsg::InjectFault(job))?;
    let done = wait_job(&rig.api, job, "job to complete", |j| {
        j["status"] == "completed"
    })
    .await?;
    assert_eq!(count(&done, "succeeded"), 2, "{done}");
    assert_eq!(node.ctx.stats.job_actor_crashes.load(Ordering::Relaxed), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_job_delivers_every_result_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::new(dir.path(), Heartbeats::Quick)?;
    let (api, mut agents) = server.start_with_fleet(3).await?;
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();

    let runs = dir.path().join("runs");
    let script = format!(
        "echo start; sleep 3; echo run >> {}; echo done",
        runs.display()
    );
    let job = create(&api, script_job(&ids, &script, 60)).await?;
    wait_job(&api, job, "all three running", |j| count(j, "running") == 3).await?;
    server.sigkill().await?;
    server.start().await?;

    let done = wait_job(&api, job, "job to complete after the restart", |j| {
        j["status"] == "completed"
    })
    .await?;
    assert_eq!(count(&done, "succeeded"), 3, "{done}");
    for agent in &ids {
        let r = result(&api, job, *agent).await?;
        assert_eq!(r["stdout"], "start\ndone\n", "{r}");
    }
    assert_eq!(lines(&runs), 3, "each agent ran the script exactly once");
    // Every agent's outbox is drained: no result is waiting for an ack, so nothing is resent.
    let metrics = reqwest::get(format!("http://{}/metrics", server.http))
        .await?
        .text()
        .await?;
    let stored = metric(&metrics, "reap3r_job_results_stored_total")?;
    assert!(stored <= 3, "results stored by the new process: {stored}");
    for agent in &mut agents {
        agent.kill().await?;
    }
    server.sigkill().await?;
    Ok(())
}

pub(crate) fn metric(text: &str, name: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| anyhow!("no {name} in metrics"))
}
