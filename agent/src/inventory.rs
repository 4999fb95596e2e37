//! Host facts from sysinfo: the hello summary and the figures in heartbeats and metrics.
//! sysinfo 0.40 reports failures as `Result`; a fact we cannot read is reported as zero/empty.

use sysinfo::{Disks, Networks, System};

use reap3r_wire::{Heartbeat, InventorySummary, MetricsSample};

pub fn hostname() -> String {
    System::host_name().unwrap_or_else(|_| "unknown".into())
}

fn disk_totals() -> (u64, u64) {
    Disks::new_with_refreshed_list()
        .map(|d| {
            d.iter().fold((0, 0), |(t, a), d| {
                (t + d.total_space(), a + d.available_space())
            })
        })
        .unwrap_or_default()
}

pub fn summary() -> InventorySummary {
    let sys = System::new().ok().map(|mut s| {
        s.refresh_memory();
        s.refresh_cpu_all();
        s
    });
    InventorySummary {
        os_name: System::name().unwrap_or_default(),
        os_version: System::os_version().unwrap_or_default(),
        kernel_version: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpu_model: sys
            .as_ref()
            .and_then(|s| s.cpus().first().map(|c| c.brand().to_string()))
            .unwrap_or_default(),
        cpu_cores: sys
            .as_ref()
            .map(|s| s.cpus().len() as u32)
            .unwrap_or_default(),
        memory_total_bytes: sys.as_ref().map(|s| s.total_memory()).unwrap_or_default(),
        disk_total_bytes: disk_totals().0,
        boot_time_s: System::boot_time().unwrap_or_default(),
    }
}

/// Keeps one `System` so CPU usage is measured between samples.
pub struct Sampler {
    sys: Option<System>,
}

impl Sampler {
    pub fn new() -> Self {
        Self {
            sys: System::new().ok(),
        }
    }

    fn refresh(&mut self) -> (u16, u64, u64) {
        let Some(sys) = self.sys.as_mut() else {
            return (0, 0, 0);
        };
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        (
            (sys.global_cpu_usage() * 100.0) as u16,
            sys.used_memory(),
            sys.total_memory(),
        )
    }

    pub fn heartbeat(&mut self) -> Heartbeat {
        let (cpu, used, _) = self.refresh();
        Heartbeat {
            uptime_s: System::uptime().unwrap_or_default(),
            cpu_centipercent: cpu,
            memory_used_bytes: used,
        }
    }

    pub fn metrics(&mut self, now_ms: u64) -> MetricsSample {
        let (cpu, used, total) = self.refresh();
        let (disk_total, disk_available) = disk_totals();
        let (rx, tx) = Networks::new_with_refreshed_list()
            .map(|n| {
                n.values().fold((0, 0), |(r, t), n| {
                    (r + n.total_received(), t + n.total_transmitted())
                })
            })
            .unwrap_or_default();
        MetricsSample {
            taken_at_ms: now_ms,
            cpu_centipercent: cpu,
            memory_used_bytes: used,
            memory_total_bytes: total,
            disk_used_bytes: disk_total.saturating_sub(disk_available),
            disk_total_bytes: disk_total,
            net_rx_bytes: rx,
            net_tx_bytes: tx,
            load1_centi: System::load_average()
                .map(|l| (l.one * 100.0) as u32)
                .unwrap_or_default(),
        }
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}
