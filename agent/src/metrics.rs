//! Host metrics for heartbeats (cpu %, memory, disk, load, bots running) through `sysinfo`,
//! refreshing only what a heartbeat needs: no process table walk, so a heartbeat costs a few
//! reads of `/proc` and stays cheap at any interval.

use std::path::{Path, PathBuf};

use botmox_contract::agents::AgentMetrics;
use sysinfo::{Disks, System};

pub struct Metrics {
    system: System,
    cpu: Cpu,
    disks: Disks,
    /// The disk that holds this path is the one reported (where the agent and its bots live).
    disk_of: PathBuf,
}

impl Metrics {
    pub fn new(disk_of: &Path) -> Self {
        let mut system = System::new();
        // CPU usage is a difference between two refreshes: take the first one now.
        let cpu = Cpu::new(&mut system);
        Self { system, cpu, disks: Disks::new_with_refreshed_list(), disk_of: disk_of.to_path_buf() }
    }

    /// Current metrics; `bots_running` comes from the caller, who knows the bots.
    pub fn sample(&mut self, bots_running: u32) -> AgentMetrics {
        let cpu = self.cpu.percent(&mut self.system);
        self.system.refresh_memory();
        self.disks.refresh(false);
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|d| self.disk_of.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let (disk_total, disk_free) = disk.map_or((0, 0), |d| (d.total_space(), d.available_space()));
        AgentMetrics {
            cpu_percent: if cpu.is_finite() { cpu.clamp(0.0, 100.0) } else { 0.0 },
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes: disk_total.saturating_sub(disk_free),
            disk_total_bytes: disk_total,
            load1: load1(),
            bots_running,
        }
    }
}

/// The host's CPU usage between two samples, through sysinfo.
#[cfg(not(windows))]
struct Cpu;

#[cfg(not(windows))]
impl Cpu {
    fn new(system: &mut System) -> Self {
        system.refresh_cpu_usage();
        Cpu
    }

    fn percent(&mut self, system: &mut System) -> f32 {
        system.refresh_cpu_usage();
        system.global_cpu_usage()
    }
}

/// The host's CPU usage between two samples, from `GetSystemTimes`. sysinfo reads it from PDH
/// performance counters on Windows, which load a stack of counter DLLs into an agent meant to
/// idle near zero, and which Wine lacks (`PdhEnumObjectsA` aborts the process), so the
/// Windows agent could not be tested there.
#[cfg(windows)]
struct Cpu(Option<crate::win32::SystemTimes>);

#[cfg(windows)]
impl Cpu {
    fn new(_system: &mut System) -> Self {
        Cpu(crate::win32::system_times())
    }

    fn percent(&mut self, _system: &mut System) -> f32 {
        let now = crate::win32::system_times();
        let percent = match (self.0, now) {
            (Some(before), Some(now)) => now.busy_percent_since(before),
            _ => 0.0,
        };
        self.0 = now;
        percent
    }
}

#[cfg(not(windows))]
fn load1() -> f32 {
    System::load_average().one as f32
}

/// Windows has no load average. sysinfo emulates one from a PDH performance counter on a
/// background thread; not worth a thread in an agent meant to idle near zero (and Wine has no
/// PDH, so the agent could not be tested there).
#[cfg(windows)]
fn load1() -> f32 {
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_plausible_numbers() {
        let mut metrics = Metrics::new(&std::env::temp_dir());
        let sample = metrics.sample(3);
        assert_eq!(sample.bots_running, 3);
        assert!(sample.memory_total_bytes > 0 && sample.memory_used_bytes <= sample.memory_total_bytes);
        assert!((0.0..=100.0).contains(&sample.cpu_percent));
        assert!(sample.disk_used_bytes <= sample.disk_total_bytes);
    }
}
