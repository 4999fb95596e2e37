//! Clients generated from the served spec, used for real. openapi-python-client builds a Python
//! client from `/api/openapi.json` without a single warning, and a script using it logs in, sees
//! the online agent, creates a user, is refused a role above its own and runs a script on a real
//! agent process. openapi-typescript's types from the same spec compile under `tsc --strict` in a
//! typed caller that also proves the enums are enums.
//!
//! Tools come from `REAP3R_TEST_OPENAPI_PYTHON_CLIENT`, `REAP3R_TEST_OPENAPI_TYPESCRIPT` and `REAP3R_TEST_TSC`,
//! else from `PATH`; the Python that runs the generated client (it needs httpx and attrs, which
//! the generator itself depends on) from `REAP3R_TEST_CLIENTGEN_PYTHON`, else the one next to the
//! generator, else `python3` on `PATH`. `.ci/run` installs them outside the repository and sets
//! `REAP3R_REQUIRE_CLIENTGEN=1`, which turns a missing tool into a failure; elsewhere each test
//! prints `skipped: <tool> not installed` and passes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reap3r_store::{Backend, Uuid};
use serde_json::Value;

use crate::api_harness::{Api, PASSWORD, default_org, seed_user};
use crate::harness::{TestFleet, TestServer};

const REQUIRE_ENV: &str = "REAP3R_REQUIRE_CLIENTGEN";
/// Generators and compilers start cold (Python imports, tsc's type checker): generous, bounded.
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// A tool from its variable or `PATH`; `Ok(None)` (after saying so) when it is missing and not
/// required.
fn find_tool(var: &str, name: &str) -> Result<Option<PathBuf>> {
    let found = lookup(var, name, None);
    if found.is_none() {
        missing(name, var)?;
    }
    Ok(found)
}

/// `var` when set (and a file), else `name` in `first` (when given), else `name` on `PATH`.
fn lookup(var: &str, name: &str, first: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    first
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn missing(tool: &str, var: &str) -> Result<()> {
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v.trim() == "1") {
        bail!(
            "{REQUIRE_ENV}=1 but {tool} is not installed: set {var} or put it on PATH \
             (.ci/run installs it)"
        );
    }
    eprintln!("skipped: {tool} not installed (set {var} or put it on PATH)");
    Ok(())
}

/// `PATH` with `dir` first, so a tool finds its siblings (the generator runs `ruff` as a hook).
fn path_with(dir: &Path) -> Result<OsString> {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest));
    Ok(std::env::join_paths(dirs)?)
}

/// Runs a command to completion within [`TOOL_TIMEOUT`]; stdout and stderr together.
async fn run(cmd: &mut tokio::process::Command, what: &str) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .kill_on_drop(true);
    let out = tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {TOOL_TIMEOUT:?}"))?
        .with_context(|| format!("starting {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// The spec exactly as the server serves it, written to `dir`.
async fn served_spec(server: &TestServer, dir: &Path) -> Result<(PathBuf, Value)> {
    let spec = Api::new(server)
        .get("/api/openapi.json")
        .await?
        .expect(200)?;
    assert_no_wrapped_refs(&spec);
    let path = dir.join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok((path, spec))
}

/// The shape client generators trip over: poem-openapi wraps a documented `$ref` field in
/// `allOf: [{$ref}, {description}]`. Such fields must carry no doc comment (see `RoleName`).
fn assert_no_wrapped_refs(spec: &Value) {
    let mut wrapped = Vec::new();
    for (name, schema) in spec["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        for (field, prop) in schema["properties"].as_object().into_iter().flatten() {
            if prop.get("allOf").is_some() {
                wrapped.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(
        wrapped.is_empty(),
        "properties wrapped in allOf (drop the field's doc comment, describe it on the object): {wrapped:?}"
    );
}

/// Runs without any tool, so the rule holds where the generators are not installed too.
#[test]
fn no_property_wraps_a_ref_in_all_of() -> Result<()> {
    assert_no_wrapped_refs(&serde_json::from_str(&reap3r_api::openapi_json())?);
    Ok(())
}

fn operation_count(spec: &Value) -> usize {
    spec["paths"]
        .as_object()
        .map(|paths| {
            paths
                .values()
                .filter_map(Value::as_object)
                .map(|item| item.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Python files in `api/` of a generated client: one per operation.
fn generated_operations(package: &Path) -> Result<usize> {
    let mut n = 0;
    for tag in std::fs::read_dir(package.join("api"))? {
        let tag = tag?.path();
        if !tag.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&tag)? {
            let file = file?.path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".py") && name != "__init__.py" {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Drives the fleet through the generated client only. Prints one `key=value` line per step;
/// the test asserts on them.
const PYTHON_SCRIPT: &str = r#"
import sys
import time
from uuid import UUID

from reap3r_client import AuthenticatedClient, Client
from reap3r_client.api.agents import list_agents
from reap3r_client.api.auth import login
from reap3r_client.api.jobs import create_job, get_job, get_job_result
from reap3r_client.api.users import create_user
from reap3r_client.models import (
    AgentPage, CreateJobRequest, CreateUserRequest, ErrorBody, JobResultView, JobTargets,
    JobType, JobView, LoginRequest, LoginResponse, RoleName, StatusFilter, TargetStateView,
    UserView,
)

base, email, password, agent_id, marker = sys.argv[1:]
agent = UUID(agent_id)


def expect(value, cls):
    if not isinstance(value, cls):
        raise SystemExit(f"expected {cls.__name__}, got {value!r}")
    return value


anon = Client(base_url=base, raise_on_unexpected_status=True)
tokens = expect(login.sync(client=anon, body=LoginRequest(email=email, password=password)), LoginResponse)
print(f"login mfa_required={tokens.mfa_required} token_type={tokens.token_type}")
api = AuthenticatedClient(base_url=base, token=tokens.access_token, raise_on_unexpected_status=True)

page = expect(list_agents.sync(client=api, status=StatusFilter.ONLINE), AgentPage)
for a in page.items:
    print(f"agent id={a.id} status={a.status}")

user = expect(create_user.sync(client=api, body=CreateUserRequest(
    email="tech@example.com", password="a long enough password", role=RoleName.TECHNICIAN,
)), UserView)
print(f"user email={user.email} role={user.role} status={user.status}")
refused = expect(create_user.sync(client=api, body=CreateUserRequest(
    email="boss@example.com", password="a long enough password", role=RoleName.SUPER_ADMIN,
)), ErrorBody)
print(f"refused code={refused.code}")

job = expect(create_job.sync(client=api, body=CreateJobRequest(
    type_=JobType.RUN_SCRIPT,
    targets=JobTargets(agent_ids=[agent]),
    timeout_s=30,
    payload={"interpreter": "sh", "script": 'echo "from python $1"', "args": [marker]},
)), JobView)
print(f"job type={job.type_} total_targets={job.total_targets}")

finished = {TargetStateView.SUCCEEDED, TargetStateView.FAILED, TargetStateView.TIMED_OUT,
            TargetStateView.CANCELLED, TargetStateView.EXPIRED}
deadline = time.monotonic() + 30
while True:
    result = expect(get_job_result.sync(job.id, agent, client=api), JobResultView)
    if result.state in finished:
        break
    if time.monotonic() > deadline:
        raise SystemExit(f"job target still {result.state} after 30 s")
    time.sleep(0.05)
print(f"result state={result.state} exit_code={result.exit_code} stdout={result.stdout.strip()}")
done = expect(get_job.sync(job.id, client=api), JobView)
print(f"job status={done.status} succeeded={done.counts.succeeded}")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_python_client_logs_in_lists_agents_creates_a_user_and_runs_a_job() -> Result<()>
{
    let Some(generator) = find_tool("REAP3R_TEST_OPENAPI_PYTHON_CLIENT", "openapi-python-client")?
    else {
        return Ok(());
    };
    // Resolve a pipx-style symlink to the generator's own environment, where `ruff` and a
    // Python with httpx and attrs live.
    let tool_dir = std::fs::canonicalize(&generator)?
        .parent()
        .map(Path::to_path_buf)
        .context("generator path has no directory")?;
    let Some(python) = lookup(
        "REAP3R_TEST_CLIENTGEN_PYTHON",
        "python3",
        Some(tool_dir.as_path()),
    ) else {
        missing("python3", "REAP3R_TEST_CLIENTGEN_PYTHON")?;
        return Ok(());
    };
    if run(
        tokio::process::Command::new(&python).args(["-c", "import httpx, attrs"]),
        "python import check",
    )
    .await
    .is_err()
    {
        missing(
            "python3 with httpx and attrs",
            "REAP3R_TEST_CLIENTGEN_PYTHON",
        )?;
        return Ok(());
    }

    let fleet = TestFleet::builder().agents(1).spawn().await?;
    let agent = fleet.agents[0].id;
    let org = default_org(&fleet.server).await?;
    seed_user(&fleet.server, org.id, "ops@example.com", "org_admin").await?;
    let work = tempfile::tempdir()?;
    let (spec_path, spec) = served_spec(&fleet.server, work.path()).await?;

    let package = work.path().join("reap3r_client");
    let output = run(
        tokio::process::Command::new(&generator)
            .arg("generate")
            .arg("--path")
            .arg(&spec_path)
            .args(["--meta", "none", "--fail-on-warning", "--output-path"])
            .arg(&package)
            .env("PATH", path_with(&tool_dir)?),
        "openapi-python-client",
    )
    .await?;
    // Not one warning, skipped endpoint, dropped schema or skipped post-hook: only the banner.
    let noise: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Generating "))
        .collect();
    assert!(
        noise.is_empty(),
        "openapi-python-client said more than `Generating`:\n{output}"
    );
    let operations = operation_count(&spec);
    assert!(operations >= 70, "spec has only {operations} operations");
    assert_eq!(
        generated_operations(&package)?,
        operations,
        "the client lacks operations:\n{output}"
    );

    let script = work.path().join("drive.py");
    std::fs::write(&script, PYTHON_SCRIPT)?;
    let marker = Uuid::new_v4().simple().to_string();
    let base = format!("http://{}", fleet.server.node().http_addr);
    let printed = run(
        tokio::process::Command::new(&python)
            .arg(&script)
            .args([
                base.as_str(),
                "ops@example.com",
                PASSWORD,
                &agent.to_string(),
                &marker,
            ])
            .env("PYTHONPATH", work.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "the generated Python client",
    )
    .await?;
    let lines: Vec<&str> = printed.lines().collect();
    for expected in [
        "login mfa_required=False token_type=Bearer".to_owned(),
        format!("agent id={agent} status=online"),
        "user email=tech@example.com role=technician status=active".to_owned(),
        "refused code=forbidden".to_owned(),
        "job type=run_script total_targets=1".to_owned(),
        format!("result state=succeeded exit_code=0 stdout=from python {marker}"),
        "job status=completed succeeded=1".to_owned(),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "missing `{expected}` in the script's output:\n{printed}"
        );
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("agent ")).count(),
        1,
        "exactly the one online agent:\n{printed}"
    );

    // What the client did is what the server holds.
    let store = &fleet.server.node().store;
    let users = store.list_users(org.id).await?;
    let tech = users
        .iter()
        .find(|u| u.email == "tech@example.com")
        .context("the user the client created")?;
    assert_eq!(tech.role, "technician");
    assert!(!users.iter().any(|u| u.email == "boss@example.com"));
    Ok(())
}

/// A strictly typed caller of the generated types: request bodies, answers and error bodies by
/// path and status, and enums that refuse values outside them (an unused `@ts-expect-error` is
/// itself an error, so each one proves a type is tight).
const TYPESCRIPT_CHECK: &str = r#"
import type { components, paths } from "./schema";

type Json = "application/json; charset=utf-8";
type Schemas = components["schemas"];
type LoginBody = paths["/api/auth/login"]["post"]["requestBody"]["content"][Json];
type LoginOk = paths["/api/auth/login"]["post"]["responses"][200]["content"][Json];
type AgentList = paths["/api/agents"]["get"]["responses"][200]["content"][Json];
type NewUser = paths["/api/users"]["post"]["requestBody"]["content"][Json];
type UserOk = paths["/api/users"]["post"]["responses"][200]["content"][Json];
type Refused = paths["/api/users"]["post"]["responses"][403]["content"][Json];
type Assign = paths["/api/orgs/{id}/assignments"]["post"]["requestBody"]["content"][Json];
type NewJob = paths["/api/jobs"]["post"]["requestBody"]["content"][Json];
type JobOk = paths["/api/jobs"]["post"]["responses"][200]["content"][Json];
type ResultOk = paths["/api/jobs/{id}/results/{agent_id}"]["get"]["responses"][200]["content"][Json];

export const role: Schemas["RoleName"] = "technician";
export const newUser: NewUser = { email: "tech@example.com", password: "a long enough password", role };
// @ts-expect-error a role outside the enum
export const badRole: NewUser = { email: "x@example.com", password: "a long enough password", role: "root" };
// @ts-expect-error the role is required
export const noRole: NewUser = { email: "x@example.com", password: "a long enough password" };
export const assign: Assign = { user_id: "00000000-0000-0000-0000-000000000000", role: "viewer" };
// @ts-expect-error a job type outside the enum
export const badJob: NewJob = { type: "format_disk", targets: { all: true }, timeout_s: 30 };

async function call<T>(base: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== null) headers["authorization"] = `Bearer ${token}`;
  const init: RequestInit = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
  const response = await fetch(base + path, init);
  if (!response.ok) {
    const error = (await response.json()) as Refused;
    throw new Error(`${response.status} ${error.code}: ${error.message}`);
  }
  return (await response.json()) as T;
}

export async function runEverywhere(base: string, login: LoginBody, script: string): Promise<string[]> {
  const tokens = await call<LoginOk>(base, "/api/auth/login", null, login);
  if (tokens.mfa_required || tokens.access_token === undefined) throw new Error("MFA required");
  const token: string = tokens.access_token;
  const agents = await call<AgentList>(base, "/api/agents?status=online", token);
  const user = await call<UserOk>(base, "/api/users", token, newUser);
  const job: NewJob = {
    type: "run_script",
    targets: { agent_ids: agents.items.map((a) => a.id) },
    timeout_s: 30,
    payload: { interpreter: "sh", script },
  };
  const created = await call<JobOk>(base, "/api/jobs", token, job);
  const total: number = created.counts?.total ?? created.total_targets;
  const outputs: string[] = [user.email, String(total)];
  for (const agent of agents.items) {
    const result = await call<ResultOk>(base, `/api/jobs/${created.id}/results/${agent.id}`, token);
    const state: Schemas["TargetStateView"] = result.state;
    const exit: number | undefined = result.exit_code;
    outputs.push(`${agent.hostname} ${state} ${exit ?? "-"} ${result.stdout}`);
  }
  return outputs;
}
"#;

#[tokio::test]
async fn generated_typescript_types_compile_under_tsc_strict() -> Result<()> {
    let Some(generator) = find_tool("REAP3R_TEST_OPENAPI_TYPESCRIPT", "openapi-typescript")? else {
        return Ok(());
    };
    let Some(tsc) = find_tool("REAP3R_TEST_TSC", "tsc")? else {
        return Ok(());
    };
    let server = TestServer::start(Backend::Sqlite).await?;
    let work = tempfile::tempdir()?;
    let (spec_path, _) = served_spec(&server, work.path()).await?;
    let schema = work.path().join("schema.d.ts");
    let output = run(
        tokio::process::Command::new(&generator)
            .arg(&spec_path)
            .arg("--output")
            .arg(&schema),
        "openapi-typescript",
    )
    .await?;
    assert!(
        !output.to_lowercase().contains("warn") && !output.to_lowercase().contains("error"),
        "openapi-typescript complained:\n{output}"
    );
    let types = std::fs::read_to_string(&schema)
        .with_context(|| format!("openapi-typescript wrote no types:\n{output}"))?;
    assert!(
        types.contains("\"/api/users\": {") && types.contains("RoleName: \"super_admin\""),
        "unexpected types:\n{output}"
    );
    // An `allOf` of a `$ref` and a bare description comes out as `T & unknown`.
    assert!(
        !types.contains("& unknown"),
        "a property is an intersection with unknown (allOf wrapping)"
    );
    let check = work.path().join("check.ts");
    std::fs::write(&check, TYPESCRIPT_CHECK)?;
    run(
        tokio::process::Command::new(&tsc)
            .args([
                "--strict",
                "--noEmit",
                "--target",
                "es2022",
                "--module",
                "es2022",
                "--moduleResolution",
                "bundler",
                "--lib",
                "es2022,dom",
            ])
            .arg(&check)
            .current_dir(work.path()),
        "tsc --strict",
    )
    .await?;
    Ok(())
}
