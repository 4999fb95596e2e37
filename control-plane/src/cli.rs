//! `reap3r` subcommands. Admin commands open the same store as `serve`, so they work while the
//! server runs (SQLite WAL or PostgreSQL).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use reap3r_actors::access::{Caller, CreateUser, Role};
use reap3r_actors::enrolment::{
    CreateEnrolmentToken, EnrolmentInfo, ListEnrolmentTokens, MAX_TOKEN_LIFETIME_S,
    MIN_TOKEN_LIFETIME_S, RevokeAgent, RevokeEnrolmentToken, SetAgentApproval,
};
use reap3r_actors::files::BlobStore;
use reap3r_actors::updates::{AddRelease, ListReleases, MAX_RELEASE_BYTES};
use reap3r_actors::vault::{Keyring, RotateMasterKey, unlock};
use reap3r_actors::{Clock, Domain, EventBus, SystemClock};
use reap3r_store::{Agent, AgentApproval, Store, Uuid};
use serde::Serialize;

use crate::config::Config;
use crate::identity::ServerIdentity;
use crate::node::open_store;

#[derive(Debug, Parser)]
#[command(
    name = "reap3r",
    version,
    about = "Reap3r control plane: enrol, watch and command fleets of agents"
)]
pub struct Cli {
    /// TOML configuration file; REAP3R_* environment variables override it.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane until SIGINT/SIGTERM.
    #[command(after_help = "\
The HTTP API (REAP3R_HTTP_ADDR) speaks plain HTTP unless REAP3R_API_TLS says otherwise:
  REAP3R_API_TLS=off      plain HTTP (default)
  REAP3R_API_TLS=self     HTTPS with the node's own certificate (clients pin its SHA-256)
  REAP3R_API_TLS=files    HTTPS with REAP3R_API_TLS_CERT (PEM chain) and REAP3R_API_TLS_KEY (PEM key)
Rate limits per API key, login session, and client address without a credential:
  REAP3R_API_RATE_PER_S   requests a second sustained (default 50; fractions allowed; 0 = off)
  REAP3R_API_RATE_BURST   requests at once (default 200)
Every setting is also a snake_case key of the --config file. Invalid settings exit with 64
before anything binds.")]
    Serve,
    /// Run a self-contained demo: server, admin user and 3 local agents over real QUIC.
    Demo {
        #[arg(long, default_value_t = 3)]
        agents: usize,
    },
    /// Manage enrolment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage operator accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect and approve agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The vault's master key.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Agent releases: builds agents update to, with manifests signed by the release key.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Print the OpenAPI document of the HTTP API (or write it to a file).
    Openapi {
        /// Write here instead of standard output (e.g. docs/openapi.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print the agent enrol command.
    Create(TokenCreate),
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token so it enrols no more agents.
    Revoke { id: Uuid },
}

#[derive(Debug, Args)]
pub struct TokenCreate {
    /// Organisation name or id (default: the "default" organisation).
    #[arg(long)]
    pub org: Option<String>,
    /// Lifetime such as 30m, 1h, 7d.
    #[arg(long, default_value = "24h")]
    pub expires: String,
    #[arg(long)]
    pub max_uses: Option<u32>,
    /// Agents enrolled with this token wait for an operator's approval.
    #[arg(long)]
    pub require_approval: bool,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Store an agent build as a release and sign its manifest (version, platform, size,
    /// BLAKE3) with the release key. The key is made at first use; agents pin its public half
    /// (`release.pub` in the data dir) at their next connection.
    Add {
        /// The agent binary.
        #[arg(long)]
        file: PathBuf,
        /// MAJOR.MINOR.PATCH, the version the build reports.
        #[arg(long)]
        version: String,
        /// <os>-<arch> as agents report it, e.g. linux-x86_64.
        #[arg(long)]
        platform: String,
        /// The release key (32 bytes, 0600; default `release.key` in the data dir). Keep it
        /// off the server: only its public half must be there.
        #[arg(long)]
        release_key: Option<PathBuf>,
    },
    /// List releases.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Show the master keys the database knows and which one is primary.
    Status,
    /// Make a new master key the primary and re-seal every stored secret under it, while the
    /// server serves. With a key file the new key is generated and written first in the file;
    /// with a key command, put the new key first in its output before running this.
    RotateMasterKey {
        /// Remove the retired keys from the key file afterwards (keep a copy of the old file
        /// with the backups taken before the rotation).
        #[arg(long)]
        drop_retired: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    Approve {
        id: Uuid,
    },
    Reject {
        id: Uuid,
    },
    Revoke {
        id: Uuid,
    },
}

pub const ROLES: &[&str] = &["super_admin", "org_admin", "technician", "viewer"];

fn now_ms() -> i64 {
    SystemClock.now_ms() as i64
}

/// Parses lifetimes like `90s`, `30m`, `1h`, `7d`.
pub fn parse_lifetime(text: &str) -> Result<Duration> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("'{text}' is not a lifetime like 30m, 1h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("'{text}': unit must be s, m, h or d"),
    };
    if !(MIN_TOKEN_LIFETIME_S..=MAX_TOKEN_LIFETIME_S)
        .contains(&i64::try_from(secs).unwrap_or(i64::MAX))
    {
        bail!("'{text}': lifetime must be between 1 minute and 365 days");
    }
    Ok(Duration::from_secs(secs))
}

async fn resolve_org(store: &Store, org: Option<&str>) -> Result<reap3r_store::Org> {
    match org {
        None => Ok(store.default_org(now_ms()).await?),
        Some(name) => store
            .find_org(name)
            .await?
            .ok_or_else(|| anyhow!("no organisation named or with id '{name}'")),
    }
}

/// The admin CLI acting in `org_id`, named in the audit log by the operating-system user who
/// ran it (`cli:<user>`).
fn cli_caller(org_id: Uuid) -> Caller {
    Caller::cli(org_id).run_by(&std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// A freshly created enrolment token, as printed by `token create --json`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CreatedToken {
    pub id: Uuid,
    pub token: String,
    pub org_id: Uuid,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub require_approval: bool,
    pub server: String,
    pub fingerprint: String,
    pub server_key: String,
    pub command: String,
}

/// The domain over the CLI's store: operations run here without a running node.
fn domain(store: &Store, keys: &Keyring) -> Domain {
    Domain::new(
        store.clone(),
        Arc::new(SystemClock),
        EventBus::new(16),
        keys.clone(),
    )
}

/// Creates a token through the enrolment operation; shared by the CLI, the demo and tests.
pub async fn create_token(
    store: &Store,
    identity: &ServerIdentity,
    server: &str,
    args: &TokenCreate,
) -> Result<CreatedToken> {
    let org = resolve_org(store, args.org.as_deref()).await?;
    let lifetime = parse_lifetime(&args.expires)?;
    let info = EnrolmentInfo {
        server_addr: server.to_owned(),
        cert_fingerprint: identity.fingerprint(),
        server_key: identity.public_key_hex(),
    };
    let created = CreateEnrolmentToken {
        label: args.label.clone(),
        lifetime_s: Some(i64::try_from(lifetime.as_secs())?),
        max_uses: args.max_uses.map(i64::from),
        require_approval: args.require_approval,
    }
    // Issuing a token seals nothing, so no master key is needed here.
    .run(&domain(store, &Keyring::none()), &cli_caller(org.id), &info)
    .await?;
    Ok(CreatedToken {
        id: created.token.id,
        token: created.secret,
        org_id: org.id,
        expires_at: created.token.expires_at,
        max_uses: created.token.max_uses,
        require_approval: created.token.require_approval,
        server: created.commands.server,
        fingerprint: created.commands.fingerprint,
        server_key: created.commands.server_key,
        command: created.commands.unix,
    })
}

/// An agent as `agent list --json` prints it.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct AgentRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub hostname: String,
    pub status: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub last_seen: Option<i64>,
}

impl From<&Agent> for AgentRow {
    fn from(a: &Agent) -> Self {
        Self {
            id: a.id,
            org_id: a.org_id,
            hostname: a.hostname.clone(),
            status: a.status().as_str().to_string(),
            os: a.os.clone(),
            arch: a.arch.clone(),
            agent_version: a.agent_version.clone(),
            capabilities: a.capabilities.clone(),
            last_seen: a.last_seen,
        }
    }
}

/// Runs an admin subcommand and returns what it prints.
pub async fn run_admin(config: &Config, command: Command) -> Result<String> {
    let store = open_store(config).await?;
    let keys = unlock(&store, config.key_source(), SystemClock.now_ms() as i64).await?;
    let out = admin(&store, &keys, config, command).await;
    store.close().await;
    out
}

async fn admin(store: &Store, keys: &Keyring, config: &Config, command: Command) -> Result<String> {
    match command {
        Command::Token(TokenCommand::Create(args)) => {
            let identity = ServerIdentity::load_or_create(&config.data_dir)?;
            let t = create_token(store, &identity, &config.public_addr, &args).await?;
            if args.json {
                return Ok(serde_json::to_string_pretty(&t)?);
            }
            Ok(format!(
                "Enrolment token (shown once): {}\n  id: {}\n  expires: {}\n  max uses: {}\n  approval required: {}\n\nEnrol an agent with:\n  {}\n",
                t.token,
                t.id,
                t.expires_at.map(fmt_utc).unwrap_or_else(|| "never".into()),
                t.max_uses
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "unlimited".into()),
                if t.require_approval { "yes" } else { "no" },
                t.command
            ))
        }
        Command::Token(TokenCommand::List { json }) => {
            let org = resolve_org(store, None).await?;
            let tokens = ListEnrolmentTokens { all_orgs: true }
                .run(&domain(store, keys), &cli_caller(org.id))
                .await?;
            if json {
                return Ok(serde_json::to_string_pretty(&tokens)?);
            }
            let mut out = format!(
                "{:<36}  {:<6}  {:<8}  {:<7}  {}\n",
                "ID", "USES", "MAX", "REVOKED", "EXPIRES"
            );
            for t in tokens {
                out += &format!(
                    "{:<36}  {:<6}  {:<8}  {:<7}  {}\n",
                    t.id,
                    t.uses,
                    t.max_uses
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    t.revoked,
                    t.expires_at.map(fmt_utc).unwrap_or_else(|| "never".into())
                );
            }
            Ok(out)
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let token = store
                .list_enrolment_tokens(None)
                .await?
                .into_iter()
                .find(|t| t.id == id)
                .ok_or_else(|| anyhow!("token {id}: not found"))?;
            RevokeEnrolmentToken { id }
                .run(&domain(store, keys), &cli_caller(token.org_id))
                .await
                .with_context(|| format!("token {id}"))?;
            Ok(format!("token {id} revoked\n"))
        }
        Command::User(UserCommand::Create {
            email, role, org, ..
        }) => {
            let role: Role = role
                .parse()
                .map_err(|_| anyhow!("unknown role '{role}'; roles are {}", ROLES.join(", ")))?;
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            let org = resolve_org(store, org.as_deref()).await?;
            let domain = domain(store, keys);
            let user = CreateUser {
                email,
                password,
                role,
                display_name: None,
            }
            .run(&domain, &cli_caller(org.id))
            .await?;
            Ok(format!(
                "user {} created ({}, role {})\n",
                user.id, user.email, user.role
            ))
        }
        Command::Agent(AgentCommand::List { json }) => {
            let agents = store.list_agents(None).await?;
            let rows: Vec<AgentRow> = agents.iter().map(AgentRow::from).collect();
            if json {
                return Ok(serde_json::to_string_pretty(&rows)?);
            }
            let mut out = format!(
                "{:<36}  {:<24}  {:<8}  {:<12}  {}\n",
                "ID", "HOSTNAME", "STATUS", "OS", "LAST SEEN"
            );
            for r in rows {
                out += &format!(
                    "{:<36}  {:<24}  {:<8}  {:<12}  {}\n",
                    r.id,
                    r.hostname,
                    r.status,
                    r.os,
                    r.last_seen.map(fmt_utc).unwrap_or_else(|| "never".into())
                );
            }
            Ok(out)
        }
        Command::Agent(AgentCommand::Approve { id }) => {
            set_agent_access(store, keys, id, Access::Approve).await
        }
        Command::Agent(AgentCommand::Reject { id }) => {
            set_agent_access(store, keys, id, Access::Reject).await
        }
        Command::Agent(AgentCommand::Revoke { id }) => {
            set_agent_access(store, keys, id, Access::Revoke).await
        }
        Command::Release(command) => release(store, keys, config, command).await,
        Command::Vault(VaultCommand::Status) => {
            let mut out = format!("{:<18}  {:<8}  {}\n", "MASTER KEY", "STATE", "SINCE");
            for row in store.vault_master_keys().await? {
                let state = match (row.is_primary, row.retired_at) {
                    (true, _) => "primary",
                    (false, None) => "active",
                    (false, Some(_)) => "retired",
                };
                out.push_str(&format!(
                    "{:<18}  {:<8}  {}\n",
                    row.id,
                    state,
                    fmt_utc(row.retired_at.unwrap_or(row.created_at))
                ));
            }
            Ok(out)
        }
        Command::Vault(VaultCommand::RotateMasterKey { drop_retired }) => {
            let who = std::env::var("USER").unwrap_or_default();
            let actor = if who.is_empty() {
                "cli".to_owned()
            } else {
                format!("cli:{who}")
            };
            let done = RotateMasterKey { drop_retired }
                .run(&domain(store, keys), &actor)
                .await?;
            Ok(format!(
                "master key rotated: {} -> {}\n  re-sealed {} values (and sealed {} stored in plain text)\n  retired: {}\n",
                done.from.as_deref().unwrap_or("(none)"),
                done.to,
                done.report.resealed,
                done.report.sealed_plaintext,
                if done.retired.is_empty() {
                    "none".to_owned()
                } else {
                    done.retired.join(", ")
                },
            ))
        }
        Command::Serve | Command::Demo { .. } | Command::Openapi { .. } => {
            bail!("not an admin command")
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Access {
    Approve,
    Reject,
    Revoke,
}

async fn set_agent_access(
    store: &Store,
    keys: &Keyring,
    id: Uuid,
    access: Access,
) -> Result<String> {
    let found = store
        .agent(id)
        .await?
        .ok_or_else(|| anyhow!("agent {id}: not found"))?;
    let (domain, caller) = (domain(store, keys), cli_caller(found.org_id));
    // The CLI holds no live sessions: the node holding one drops it at its next revocation check.
    let withdraw = |_: Uuid, _: &str| {};
    let (agent, verb) = match access {
        Access::Approve => (
            SetAgentApproval {
                id,
                approval: AgentApproval::Approved,
            }
            .run(&domain, &caller, &withdraw)
            .await,
            "approved",
        ),
        Access::Reject => (
            SetAgentApproval {
                id,
                approval: AgentApproval::Rejected,
            }
            .run(&domain, &caller, &withdraw)
            .await,
            "rejected",
        ),
        Access::Revoke => (
            RevokeAgent { id }.run(&domain, &caller, &withdraw).await,
            "revoked",
        ),
    };
    let agent = agent.with_context(|| format!("agent {id}"))?;
    Ok(format!("agent {id} ({}) {verb}\n", agent.hostname))
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp.
pub fn fmt_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_and_refuse() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("7d", 604_800),
            ("2", 7200),
        ] {
            assert_eq!(
                parse_lifetime(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for bad in ["", "h", "0h", "5y", "-1h", "400d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(fmt_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_utc(1_795_305_600_000), "2026-11-22T00:00:00Z");
        assert_eq!(fmt_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}

/// A release as `release list --json` prints it.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ReleaseRow {
    pub version: String,
    pub platform: String,
    pub size: i64,
    pub blake3: String,
    pub created_by: String,
    pub created_at: i64,
}

async fn release(
    store: &Store,
    keys: &Keyring,
    config: &Config,
    command: ReleaseCommand,
) -> Result<String> {
    let org = resolve_org(store, None).await?;
    let domain = domain(store, keys);
    match command {
        ReleaseCommand::Add {
            file,
            version,
            platform,
            release_key,
        } => {
            let key_path = release_key
                .unwrap_or_else(|| config.data_dir.join(crate::identity::RELEASE_KEY_FILE));
            let key = crate::identity::release_signing_key(&key_path, &config.data_dir)?;
            let size = std::fs::metadata(&file)
                .with_context(|| format!("{}", file.display()))?
                .len();
            if size > MAX_RELEASE_BYTES {
                bail!(
                    "{}: {size} bytes, over the {MAX_RELEASE_BYTES}-byte cap",
                    file.display()
                );
            }
            let build = std::fs::read(&file).with_context(|| format!("{}", file.display()))?;
            let blobs = BlobStore::open(&config.data_dir.join("files"))
                .context("the server's file store")?;
            let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(build))]);
            let release = AddRelease { version, platform }
                .run(&domain, &blobs, &key, &cli_caller(org.id), body)
                .await?;
            Ok(format!(
                "release {} for {} added: {} bytes, BLAKE3 {}\nrelease key (agents pin it): {}\n",
                release.version,
                release.platform,
                release.size,
                release.blake3,
                hex::encode(key.verifying_key().to_bytes())
            ))
        }
        ReleaseCommand::List { json } => {
            let rows: Vec<ReleaseRow> = ListReleases
                .run(&domain, &cli_caller(org.id))
                .await?
                .into_iter()
                .map(|r| ReleaseRow {
                    version: r.version,
                    platform: r.platform,
                    size: r.size,
                    blake3: r.blake3,
                    created_by: r.created_by,
                    created_at: r.created_at,
                })
                .collect();
            if json {
                return Ok(serde_json::to_string_pretty(&rows)?);
            }
            let mut out = format!(
                "{:<12}  {:<16}  {:>12}  {}\n",
                "VERSION", "PLATFORM", "BYTES", "BLAKE3"
            );
            for r in rows {
                out += &format!(
                    "{:<12}  {:<16}  {:>12}  {}\n",
                    r.version, r.platform, r.size, r.blake3
                );
            }
            Ok(out)
        }
    }
}
