//! The operator-facing layer: authentication primitives now, the HTTP API on top of them later.

pub mod password;
