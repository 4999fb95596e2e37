//! End-to-end tests: real servers, real agent processes, real QUIC sockets, real databases.

mod harness;

mod cli;
mod pinning;
mod presence;
mod refusals;
mod supervision;
