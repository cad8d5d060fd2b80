//! The start-up sweep of untracked bot processes (Unix). A bot's pid is written to the state
//! file right after its spawn; an agent killed in between leaves a live bot that no record
//! names — its record says `starting` without a process — and recovery would start the bot
//! again: two processes for one bot. Before recovery, [`sweep`] finds this agent's bot
//! processes by their environment (`runner::bot_processes`) and stops those of bots whose
//! record tracks no live process, the way a stop does (SIGTERM to the process group, the bot's
//! stop timeout, SIGKILL); recovery then starts the bot once, if it should run.
//!
//! **Stopped, not adopted.** The runner could adopt the pid, but nothing recorded says which
//! definition it runs, the server never heard of it, and there may be more than one (an agent
//! killed twice in the window). Stopping them all leaves one rule — the state file decides,
//! and recovery acts on it — and costs one restart of a bot that had run for an instant.
//!
//! A bot whose record tracks a live process is left entirely alone, its helpers too (even one
//! that left the bot's process group on purpose): that process is adopted by recovery.
//! Windows needs no sweep: a bot is in its kill-on-close Job Object before it runs a single
//! instruction, so it dies with the agent that started it (`runner/windows.rs`).

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    time::Duration,
};

use botmox_contract::bots::StopSpec;
use uuid::Uuid;

use crate::{
    runner::{self, BotProcess},
    state_file::StateDoc,
};

/// One process group to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    pgid: u32,
    bot_id: Uuid,
    /// The leader's start time, when the leader itself is among the strays.
    leader_ticks: Option<u64>,
    pids: Vec<u32>,
}

/// Stops every process of this agent's bots that the state file does not track (module
/// notes); returns how many process groups it stopped. Must run after the agent dir is locked
/// (no other agent of this dir runs) and before recovery starts anything.
pub async fn sweep(doc: &StateDoc, run_dir: &Path) -> usize {
    let found = runner::bot_processes(runner::agent_dir_of(run_dir));
    if found.is_empty() {
        return 0;
    }
    let tracked: HashSet<Uuid> = doc
        .bots
        .iter()
        .filter(|(_, record)| record.process.as_ref().is_some_and(|p| runner::is_alive(p.pid, p.start_ticks)))
        .map(|(id, _)| *id)
        .collect();
    let targets = plan(&found, &tracked, |pid| runner::is_alive(pid, None));
    let stops = targets.iter().map(|target| {
        let timeout = doc
            .bots
            .get(&target.bot_id)
            .map_or_else(|| StopSpec::default().timeout_seconds, |record| record.spec.stop.timeout_seconds);
        tracing::warn!(
            bot_id = %target.bot_id, pgid = target.pgid, pids = ?target.pids, stop_timeout_s = timeout,
            "stopping a bot process no record tracks (the previous agent died between starting it and writing \
             its pid down): the state file decides what runs"
        );
        let mut process = runner::stray(target.pgid, target.leader_ticks);
        async move { process.terminate(Duration::from_secs(timeout)).await }
    });
    futures::future::join_all(stops).await;
    targets.len()
}

/// Which process groups to stop: those of bot processes whose bot is not `tracked`, grouped
/// by process group. A group is stopped only if its leader is one of them or is gone (what a
/// bot left in its group); a stray inside a group some other live process leads is not ours
/// to signal as a group, and is left with a warning.
fn plan(found: &[BotProcess], tracked: &HashSet<Uuid>, leader_alive: impl Fn(u32) -> bool) -> Vec<Target> {
    let mut groups: BTreeMap<u32, Target> = BTreeMap::new();
    for process in found.iter().filter(|p| !tracked.contains(&p.bot_id)) {
        let target = groups.entry(process.pgrp).or_insert_with(|| Target {
            pgid: process.pgrp,
            bot_id: process.bot_id,
            leader_ticks: None,
            pids: Vec::new(),
        });
        target.pids.push(process.pid);
        if process.pid == process.pgrp {
            target.bot_id = process.bot_id;
            target.leader_ticks = Some(process.start_ticks);
        }
    }
    groups
        .into_values()
        .filter(|target| {
            let ours = target.leader_ticks.is_some() || !leader_alive(target.pgid);
            if !ours {
                tracing::warn!(
                    bot_id = %target.bot_id, pids = ?target.pids, pgid = target.pgid,
                    "an untracked bot process lives in a process group this agent did not start: left alone"
                );
            }
            ours
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, pgrp: u32, bot_id: Uuid) -> BotProcess {
        BotProcess { pid, pgrp, bot_id, start_ticks: u64::from(pid) * 10 }
    }

    #[test]
    fn untracked_groups_are_stopped_and_tracked_bots_left_alone() {
        let (tracked_bot, orphaned, gone_leader, foreign_group) =
            (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let found = [
            // A tracked bot and a helper that left its group: both left alone.
            process(100, 100, tracked_bot),
            process(105, 105, tracked_bot),
            // The orphan (leader of its group) and its child.
            process(200, 200, orphaned),
            process(201, 200, orphaned),
            // What a bot whose leader is gone left in its group.
            process(301, 300, gone_leader),
            // A marked process inside a group led by a live process that is not a bot.
            process(401, 400, foreign_group),
        ];
        let tracked = HashSet::from([tracked_bot]);
        let alive = |pid: u32| pid == 400;
        let targets = plan(&found, &tracked, alive);
        assert_eq!(
            targets,
            [
                Target { pgid: 200, bot_id: orphaned, leader_ticks: Some(2000), pids: vec![200, 201] },
                Target { pgid: 300, bot_id: gone_leader, leader_ticks: None, pids: vec![301] },
            ]
        );
    }

    #[test]
    fn two_orphans_of_one_bot_are_both_stopped() {
        let bot = Uuid::now_v7();
        let found = [process(10, 10, bot), process(20, 20, bot)];
        let targets = plan(&found, &HashSet::new(), |_| true);
        assert_eq!(targets.iter().map(|t| t.pgid).collect::<Vec<_>>(), [10, 20]);
    }
}
