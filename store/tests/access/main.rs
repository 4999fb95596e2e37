//! Repository tests for the access layer (schema 0002): accounts and MFA, MSSP organisations,
//! sessions and refresh rotation, MFA challenges, login events, API keys, groups, agent queries
//! and filtered audit listing. Like `repository/`, every test runs against every backend
//! available here (SQLite always, PostgreSQL when `REAP3R_TEST_POSTGRES_URL` is set).
//!
//! One module per store module under test; `common` holds what they share beyond `support`.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod api_keys;
mod audit;
mod common;
mod groups;
mod login_events;
mod migrate;
mod orgs;
mod sessions;
mod tokens;
mod users;
