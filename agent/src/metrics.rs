//! Host metrics for heartbeats (cpu %, memory, disk, load, bots running) through `sysinfo`,
//! refreshing only what a heartbeat needs: no process table walk, so a heartbeat costs a few
//! reads of `/proc` and stays cheap at any interval.

use std::path::{Path, PathBuf};

use botmox_contract::agents::AgentMetrics;
use sysinfo::{Disks, System};

pub struct Metrics {
    system: System,
    disks: Disks,
    /// The disk that holds this path is the one reported (where the agent and its bots live).
    disk_of: PathBuf,
}

impl Metrics {
    pub fn new(disk_of: &Path) -> Self {
        let mut system = System::new();
        // CPU usage is a difference between two refreshes: take the first one now.
        system.refresh_cpu_usage();
        Self { system, disks: Disks::new_with_refreshed_list(), disk_of: disk_of.to_path_buf() }
    }

    /// Current metrics; `bots_running` comes from the caller, who knows the bots.
    pub fn sample(&mut self, bots_running: u32) -> AgentMetrics {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(false);
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|d| self.disk_of.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let (disk_total, disk_free) = disk.map_or((0, 0), |d| (d.total_space(), d.available_space()));
        let cpu = self.system.global_cpu_usage();
        AgentMetrics {
            cpu_percent: if cpu.is_finite() { cpu.clamp(0.0, 100.0) } else { 0.0 },
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes: disk_total.saturating_sub(disk_free),
            disk_total_bytes: disk_total,
            load1: System::load_average().one as f32,
            bots_running,
        }
    }
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
