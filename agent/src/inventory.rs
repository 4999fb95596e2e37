//! Host facts from sysinfo: the hello summary and the figures in heartbeats and metrics samples
//! (CPU, load, memory, swap, mounts, interfaces, processes, uptime).
//! sysinfo 0.40 reports failures as `Result`; a fact we cannot read is reported as zero/empty.

use sysinfo::{Disks, Networks, ProcessRefreshKind, ProcessesToUpdate, System};

use reap3r_wire::{
    Capped, Heartbeat, InterfaceCounters, InventorySummary, Ipv4Net, MetricsSample, MountUsage,
    Name, NetInterface,
};

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
        interfaces: Capped::truncated(net_interfaces()),
    }
}

/// Interfaces with a MAC address and their IPv4 networks, by name (loopback and other
/// interfaces without a MAC cannot be woken and are left out).
fn net_interfaces() -> Vec<NetInterface> {
    let mut out: Vec<NetInterface> = Networks::new_with_refreshed_list()
        .map(|n| {
            n.iter()
                .filter(|(_, data)| !data.mac_address().is_unspecified())
                .map(|(name, data)| NetInterface {
                    name: Name::truncated(&name.to_string_lossy()),
                    mac: data.mac_address().0,
                    ipv4: Capped::truncated(
                        data.ip_networks()
                            .iter()
                            .filter_map(|net| match net.addr {
                                std::net::IpAddr::V4(v4) => Some(Ipv4Net {
                                    addr: v4.octets(),
                                    prefix: net.prefix,
                                }),
                                std::net::IpAddr::V6(_) => None,
                            })
                            .collect(),
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    out
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

    /// One metrics sample. Mounts largest first and interfaces by name, each list cut at its
    /// wire cap; a figure sysinfo cannot read is zero.
    pub fn metrics(&mut self, now_ms: u64) -> MetricsSample {
        let (cpu, used, total) = self.refresh();
        let (swap_used, swap_total, process_count) = match self.sys.as_mut() {
            Some(sys) => {
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::All,
                    true,
                    ProcessRefreshKind::nothing(),
                );
                (sys.used_swap(), sys.total_swap(), sys.processes().len())
            }
            None => (0, 0, 0),
        };
        let mut mounts: Vec<MountUsage> = Disks::new_with_refreshed_list()
            .map(|d| {
                d.iter()
                    .map(|d| MountUsage {
                        mount: Name::truncated(&d.mount_point().to_string_lossy()),
                        used_bytes: d.total_space().saturating_sub(d.available_space()),
                        total_bytes: d.total_space(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.total_bytes));
        let mut interfaces: Vec<InterfaceCounters> = Networks::new_with_refreshed_list()
            .map(|n| {
                n.iter()
                    .map(|(name, n)| InterfaceCounters {
                        name: Name::truncated(&name.to_string_lossy()),
                        rx_bytes: n.total_received(),
                        tx_bytes: n.total_transmitted(),
                        rx_errors: n.total_errors_on_received(),
                        tx_errors: n.total_errors_on_transmitted(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        interfaces.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        let load = System::load_average().ok();
        let centi = |v: f64| (v * 100.0) as u32;
        MetricsSample {
            taken_at_ms: now_ms,
            cpu_centipercent: cpu,
            load1_centi: load.as_ref().map(|l| centi(l.one)).unwrap_or_default(),
            load5_centi: load.as_ref().map(|l| centi(l.five)).unwrap_or_default(),
            load15_centi: load.as_ref().map(|l| centi(l.fifteen)).unwrap_or_default(),
            memory_used_bytes: used,
            memory_total_bytes: total,
            swap_used_bytes: swap_used,
            swap_total_bytes: swap_total,
            mounts: Capped::truncated(mounts),
            interfaces: Capped::truncated(interfaces),
            process_count: u32::try_from(process_count).unwrap_or(u32::MAX),
            uptime_s: System::uptime().unwrap_or_default(),
        }
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}
