//! End-to-end tests: real servers, real agent processes, real QUIC sockets, real databases.

mod harness;

mod cli;
mod crash_recovery;
mod docs;
mod pinning;
mod presence;
mod refusals;
mod releases;
mod server_process;
mod shutdown;
mod supervision;

mod api_harness;

mod alerting_flow;
mod alerting_routing;
mod alerting_rules;
mod api_audit;
mod api_auth;
mod api_health;
mod api_input;
mod api_rate_limits;
mod api_rbac;
mod api_tenancy;
mod api_tls;
mod api_vault;
mod api_ws;
mod clients;
mod files;
mod jobs;
mod metrics;
mod notification_channels;
mod notifications;
mod shell;
mod swagger;
mod vault_jobs;
mod wake;
