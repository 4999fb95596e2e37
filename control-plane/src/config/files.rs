//! File transfer settings: the size cap, transfers per agent, a rate limit for links a transfer
//! must not fill, and how long a cut transfer waits for its agent.

use reap3r_actors::files::FileSettings;

use super::shell::Ranged;

pub(super) const FILE_MAX_MB: Ranged = ("file_max_mb", 1024, 1..=65_536);
/// At most 8: what an agent runs at once.
pub(super) const FILE_MAX_PER_AGENT: Ranged = ("file_max_per_agent", 4, 1..=8);
/// KiB per second; 0: no limit.
/// KiB per second; 0: no limit. At least 16 KiB/s: a receiver reports progress every MiB.
pub(super) const FILE_RATE_LIMIT: Ranged = ("file_rate_limit_kib_s", 0, 0..=10_000_000);
pub(super) const FILE_RESUME_TIMEOUT: Ranged = ("file_resume_timeout_s", 600, 10..=86_400);

/// The file transfer keys of the config file.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct FilesFile {
    file_max_mb: Option<u32>,
    file_max_per_agent: Option<u32>,
    file_rate_limit_kib_s: Option<u32>,
    file_resume_timeout_s: Option<u32>,
}

/// The settings as read through `ranged` (which reports bad values).
pub(super) fn file_settings(
    ranged: &mut dyn FnMut(Ranged, Option<u32>) -> u32,
    file: &FilesFile,
) -> FileSettings {
    FileSettings {
        max_file_bytes: u64::from(ranged(FILE_MAX_MB, file.file_max_mb)) * 1024 * 1024,
        max_per_agent: ranged(FILE_MAX_PER_AGENT, file.file_max_per_agent),
        rate_limit_bytes_per_s: u64::from(ranged(FILE_RATE_LIMIT, file.file_rate_limit_kib_s))
            * 1024,
        resume_timeout_s: ranged(FILE_RESUME_TIMEOUT, file.file_resume_timeout_s),
    }
}
