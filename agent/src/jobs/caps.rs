//! What this agent can run: job types and script interpreters, found once at start.

use std::path::{Path, PathBuf};

use reap3r_wire::{INTERPRETERS, JobType};

/// Tools found on `PATH` when the agent started.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capabilities {
    pub interpreters: Vec<(&'static str, PathBuf)>,
    pub systemctl: Option<PathBuf>,
    pub dpkg_query: Option<PathBuf>,
    pub rpm: Option<PathBuf>,
}

impl Capabilities {
    pub(crate) fn detect() -> Self {
        Self {
            interpreters: INTERPRETERS
                .iter()
                .filter_map(|name| find_on_path(name).map(|path| (*name, path)))
                .collect(),
            systemctl: find_on_path("systemctl"),
            dpkg_query: find_on_path("dpkg-query"),
            rpm: find_on_path("rpm"),
        }
    }

    /// The job types this agent runs.
    pub(crate) fn job_types(&self) -> Vec<JobType> {
        JobType::ALL
            .iter()
            .copied()
            .filter(|t| self.runs(*t))
            .collect()
    }

    /// Whether this agent has what a job type needs (service jobs need systemd).
    fn runs(&self, job_type: JobType) -> bool {
        match job_type {
            JobType::ServiceList | JobType::ServiceAction => self.systemctl.is_some(),
            JobType::RunScript
            | JobType::ProcessList
            | JobType::ProcessKill
            | JobType::CollectInventory
            | JobType::ConfigUpdate
            | JobType::Reboot
            | JobType::Shutdown
            | JobType::WakeOnLan => true,
        }
    }

    /// `job:<type>` and `interpreter:<name>`, for the hello.
    pub(crate) fn advertised(&self) -> Vec<String> {
        self.job_types()
            .into_iter()
            .map(|t| t.capability().to_owned())
            .chain(
                self.interpreters
                    .iter()
                    .map(|(name, _)| format!("interpreter:{name}")),
            )
            .collect()
    }

    pub(crate) fn interpreter(&self, name: &str) -> Option<&Path> {
        self.interpreters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.as_path())
    }
}

/// The first executable file called `name` in the directories of `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_is_found_and_advertised() {
        let caps = Capabilities::detect();
        assert!(caps.interpreter("sh").is_some());
        let adv = caps.advertised();
        assert!(adv.contains(&"interpreter:sh".to_string()));
        for t in [
            "run_script",
            "process_list",
            "process_kill",
            "collect_inventory",
            "config_update",
            "reboot",
            "shutdown",
        ] {
            assert!(adv.contains(&format!("job:{t}")), "{t}");
        }
        assert_eq!(
            adv.contains(&"job:service_list".to_string()),
            caps.systemctl.is_some()
        );
        assert!(find_on_path("reap3r-surely-not-a-command").is_none());
    }

    #[test]
    fn service_jobs_need_systemctl() {
        let caps = Capabilities::default();
        assert_eq!(caps.job_types().len(), JobType::ALL.len() - 2);
        assert!(caps.advertised().iter().all(|c| !c.contains("service")));
    }
}
