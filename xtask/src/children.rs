//! A tiny supervisor for the processes `cargo xtask run` starts (today the server; later
//! the agent, a demo bot and the panel's dev server): spawn them, wait until one exits or
//! the user presses Ctrl-C, then stop all the others so nothing is left running.
//!
//! Stopping is polite first (SIGTERM on Unix, so servers shut down gracefully), then forced
//! after [`STOP_TIMEOUT`] or on a second Ctrl-C. On Windows the console already delivers
//! Ctrl-C to every child, so the polite step is the console's and ours is the forced kill.

use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::cmd;

/// How long children get to exit after the polite stop request.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often child exits are polled (std has no portable "wait for any child").
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why [`Supervisor::wait`] returned.
pub enum Outcome {
    /// Ctrl-C (or SIGTERM/SIGHUP to xtask); all children have been stopped.
    Interrupted,
    /// A child exited on its own; the others have been stopped.
    ChildExited { name: String, status: ExitStatus },
}

struct Running {
    name: String,
    child: Child,
    /// Set once the child has been reaped.
    status: Option<ExitStatus>,
}

pub struct Supervisor {
    children: Vec<Running>,
    interrupts: Receiver<()>,
}

impl Supervisor {
    /// Installs the Ctrl-C handler; create at most one supervisor per process.
    pub fn new() -> Result<Self> {
        let (tx, interrupts) = mpsc::channel();
        ctrlc::set_handler(move || {
            // The receiver only goes away when we are exiting anyway.
            let _ = tx.send(());
        })
        .context("could not install the Ctrl-C handler")?;
        Ok(Self { children: Vec::new(), interrupts })
    }

    /// Starts `command` as a supervised child called `name` (used in messages). If it cannot
    /// start, the children started so far are stopped before the error is returned.
    pub fn spawn(&mut self, name: &str, command: &mut Command) -> Result<()> {
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(command, 0);
        match command.spawn() {
            Ok(child) => {
                self.children.push(Running { name: name.to_owned(), child, status: None });
                Ok(())
            }
            Err(err) => {
                self.stop_all(false);
                Err(err).with_context(|| format!("could not start {name} (`{}`)", cmd::display(command)))
            }
        }
    }

    /// Blocks until a child exits or Ctrl-C arrives, then stops every remaining child. After
    /// Ctrl-C, `before_stop` runs first, while the children are still up (on Unix each child
    /// has its own process group, so the terminal's Ctrl-C reaches xtask alone).
    pub fn wait_and(mut self, before_stop: impl FnOnce()) -> Outcome {
        let (outcome, interrupted) = loop {
            if let Some((name, status)) = self.reap_exited().into_iter().next() {
                let others_running = self.children.iter().any(|r| r.status.is_none());
                let then = if others_running { "; stopping the rest" } else { "" };
                println!("==> {name} exited ({status}){then}");
                break (Outcome::ChildExited { name, status }, false);
            }
            match self.interrupts.recv_timeout(POLL_INTERVAL) {
                Ok(()) => {
                    println!("\n==> interrupted; stopping");
                    break (Outcome::Interrupted, true);
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Cannot happen while the handler holds the sender; treat it like a timeout.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(POLL_INTERVAL),
            }
        };
        if interrupted {
            before_stop();
        }
        self.stop_all(interrupted);
        outcome
    }

    /// Polite stop for everyone still running, then a kill for whoever is left after
    /// [`STOP_TIMEOUT`] or a second Ctrl-C; reaps them all. `interrupted`: the children got
    /// the console's Ctrl-C too (they share our console / process group).
    fn stop_all(&mut self, interrupted: bool) {
        for running in self.children.iter_mut().filter(|r| r.status.is_none()) {
            request_stop(&mut running.child, interrupted);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            for (name, status) in self.reap_exited() {
                println!("    {name} stopped ({status})");
            }
            if self.children.iter().all(|r| r.status.is_some()) {
                return;
            }
            let forced = match self.interrupts.recv_timeout(POLL_INTERVAL) {
                Ok(()) => true,
                Err(_) => Instant::now() >= deadline,
            };
            if forced {
                break;
            }
        }
        for running in self.children.iter_mut().filter(|r| r.status.is_none()) {
            println!("    killing {}", running.name);
            // An error here means it exited in the meantime; wait() below reaps it either way.
            let _ = running.child.kill();
            match running.child.wait() {
                Ok(status) => running.status = Some(status),
                Err(err) => eprintln!("    could not reap {}: {err}", running.name),
            }
        }
    }

    /// Reaps children that have exited since the last call, returning their names and statuses.
    fn reap_exited(&mut self) -> Vec<(String, ExitStatus)> {
        let mut exited = Vec::new();
        for running in self.children.iter_mut().filter(|r| r.status.is_none()) {
            match running.child.try_wait() {
                Ok(Some(status)) => {
                    running.status = Some(status);
                    exited.push((running.name.clone(), status));
                }
                Ok(None) => {}
                Err(err) => eprintln!("    could not check on {}: {err}", running.name),
            }
        }
        exited
    }
}

impl Drop for Supervisor {
    /// Never leave children behind, even when xtask bails out early with an error.
    fn drop(&mut self) {
        if self.children.iter().any(|r| r.status.is_none()) {
            self.stop_all(false);
        }
    }
}

/// Asks a child to shut down gracefully. SIGTERM even after a terminal Ctrl-C (which the
/// child got as well): a Ctrl-C sent to xtask alone (`kill -INT`) must reach it too, and a
/// second shutdown signal is harmless to a server already shutting down.
#[cfg(unix)]
fn request_stop(child: &mut Child, _interrupted: bool) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // ESRCH just means it already exited; the reaping loop notices.
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
}

/// Windows has no SIGTERM. After Ctrl-C the console has already told every child, so we
/// let them finish (the forced kill after the timeout does the rest); otherwise kill now.
#[cfg(not(unix))]
fn request_stop(child: &mut Child, interrupted: bool) {
    if !interrupted {
        // An error means it already exited; the reaping loop notices.
        let _ = child.kill();
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// One test only: the Ctrl-C handler can be installed once per process.
    #[test]
    fn when_one_child_exits_the_others_are_stopped() -> Result<()> {
        let mut supervisor = Supervisor::new()?;
        supervisor.spawn("short", Command::new("sleep").arg("0.2"))?;
        supervisor.spawn("long", Command::new("sleep").arg("60"))?;
        let started = Instant::now();

        let Outcome::ChildExited { name, status } = supervisor.wait_and(|| {}) else {
            panic!("expected a child to exit, not an interrupt");
        };

        assert_eq!(name, "short");
        assert!(status.success());
        // `long` was stopped by SIGTERM, not waited out or killed after STOP_TIMEOUT.
        assert!(started.elapsed() < STOP_TIMEOUT);
        Ok(())
    }
}
