//! Agent self-update: releases (an agent build per version and platform, stored in the file
//! store under its BLAKE3, with a manifest signed by the release key — a key of its own, not
//! the server's, so neither a stolen server key nor a database writer can make agents run a
//! build).
//!
//! - [`releases`]: [`AddRelease`] (the CLI's `reap3r release add`), [`ListReleases`].
//! - [`rollout`]: a rollout's rules (canaries, waves, timeouts, halt), pure.
//!
//! The rollout operations and driver, and the agent's swap and watchdog, come next (issue 14).

mod releases;
mod rollout;

pub use releases::{AddRelease, ListReleases, MAX_RELEASE_BYTES, release_target};
pub use rollout::{Effect, Phase, Rollout, RolloutPlan, TargetState, canary_of_percent};
