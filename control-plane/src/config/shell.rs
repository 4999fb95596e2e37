//! Remote shell settings: limits per agent and operator, timeouts, the recording's cap and
//! retention, whether users with MFA must step up first.

use reap3r_actors::shell::ShellSettings;

/// A setting's name (its TOML key; the variable is `REAP3R_` and the name upper-cased), its
/// default and its range.
pub(super) type Ranged = (&'static str, u32, std::ops::RangeInclusive<u32>);

pub(super) const SHELL_MAX_PER_AGENT: Ranged = ("shell_max_per_agent", 2, 1..=64);
pub(super) const SHELL_MAX_PER_OPERATOR: Ranged = ("shell_max_per_operator", 5, 1..=256);
pub(super) const SHELL_OPEN_TIMEOUT: Ranged = ("shell_open_timeout_s", 60, 10..=600);
pub(super) const SHELL_IDLE_TIMEOUT: Ranged = ("shell_idle_timeout_s", 900, 30..=86_400);
pub(super) const SHELL_MAX_DURATION: Ranged = ("shell_max_duration_s", 14_400, 60..=86_400);
pub(super) const SHELL_REATTACH_GRACE: Ranged = ("shell_reattach_grace_s", 60, 5..=600);
pub(super) const SHELL_RECORDING_CAP: Ranged = ("shell_recording_cap_mb", 64, 1..=4096);
pub(super) const SHELL_RETENTION: Ranged = ("shell_retention_d", 90, 1..=3650);

/// The shell keys of the config file.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ShellFile {
    pub(super) shell_require_step_up: Option<bool>,
    shell_max_per_agent: Option<u32>,
    shell_max_per_operator: Option<u32>,
    shell_open_timeout_s: Option<u32>,
    shell_idle_timeout_s: Option<u32>,
    shell_max_duration_s: Option<u32>,
    shell_reattach_grace_s: Option<u32>,
    shell_recording_cap_mb: Option<u32>,
    shell_retention_d: Option<u32>,
}

/// The settings as read through `ranged` (which reports bad values), with `require_step_up`.
pub(super) fn shell_settings(
    ranged: &mut dyn FnMut(Ranged, Option<u32>) -> u32,
    file: &ShellFile,
    require_step_up: bool,
) -> ShellSettings {
    ShellSettings {
        require_step_up,
        max_per_agent: ranged(SHELL_MAX_PER_AGENT, file.shell_max_per_agent),
        max_per_operator: ranged(SHELL_MAX_PER_OPERATOR, file.shell_max_per_operator),
        open_timeout_s: ranged(SHELL_OPEN_TIMEOUT, file.shell_open_timeout_s),
        idle_timeout_s: ranged(SHELL_IDLE_TIMEOUT, file.shell_idle_timeout_s),
        max_duration_s: ranged(SHELL_MAX_DURATION, file.shell_max_duration_s),
        reattach_grace_s: ranged(SHELL_REATTACH_GRACE, file.shell_reattach_grace_s),
        recording_cap_bytes: u64::from(ranged(SHELL_RECORDING_CAP, file.shell_recording_cap_mb))
            * 1024
            * 1024,
        retention_days: ranged(SHELL_RETENTION, file.shell_retention_d),
    }
}
