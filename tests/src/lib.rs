//! End-to-end tests live in `tests/e2e`; this crate also builds the server and agent as test binaries.
