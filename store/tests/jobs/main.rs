//! Repository tests for jobs (schema 0003): creation, the guarded target transitions, exactly-once
//! outcomes, finishing and cancelling, listing and paging, target resolution and stats. Like
//! `repository/`, every test runs against every backend available here (SQLite always,
//! PostgreSQL when `REAP3R_TEST_POSTGRES_URL` is set).

#[path = "../support/mod.rs"]
mod support;

mod common;
mod create;
mod lifecycle;
mod listing;
mod outcomes;
mod resolve;
mod steps;
