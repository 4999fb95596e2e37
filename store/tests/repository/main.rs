//! Repository tests: every store operation, against every backend available here (SQLite always,
//! PostgreSQL when `REAP3R_TEST_POSTGRES_URL` is set).
//!
//! One module per store module under test; `common` holds what they share beyond `support`.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod audit;
mod common;
mod migrate;
mod orgs;
mod tokens;
mod users;
