//! Local supervision of one bot as a pure state machine (SPEC §5): what state the bot is in,
//! whether and when to restart it, when to give up. It runs no process and reads no clock:
//! the caller passes `now` and does what the returned transitions say (spawn, report), and
//! sleeps until [`Supervisor::deadline`]. That keeps every rule testable with paused time.
//!
//! ```text
//! start ─▶ starting ─spawned─▶ running ─exit─▶ exited (code 0) | crashed
//!              │                  │                 │
//!     spawn_failed ─▶ failed      stop ─▶ stopping ─▶ stopped
//!                                                    policy says restart?
//!                      no ──▶ stay exited/crashed    yes, budget left ─▶ backoff ─deadline─▶ starting
//!                                                    yes, no budget   ─▶ failed
//! ```
//!
//! Backoff starts at `backoff_initial_ms`, doubles up to `backoff_max_ms`, and is reset once
//! the bot has run `stable_after_seconds`. A bot is `failed` when it would need more than
//! `max_restarts` restarts within `window_seconds` (supervisord's FATAL). After an agent
//! restart, [`Supervisor::resume`] takes the bot up in the state it was left in; one left between
//! an exit and its restart gets the policy's decision again from [`Supervisor::resume_policy`].

use std::{collections::VecDeque, time::Duration};

use botmox_contract::bots::{BotState, RestartPolicy, RestartSpec};
use tokio::time::Instant;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by a signal (Unix).
    #[cfg_attr(windows, allow(dead_code))]
    Signal(i32),
    /// An adopted process (not our child) vanished: its status is not knowable.
    Unknown,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(code),
            _ => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            Exit::Signal(signal) => Some(signal),
            _ => None,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => write!(f, "signal {signal}"),
            Exit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// One state change, to be reported as a `bot_state` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: BotState,
    pub exit: Option<Exit>,
    pub restart_count: u32,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Supervisor {
    spec: RestartSpec,
    state: BotState,
    /// Restarts since the last operator start (reported).
    restart_count: u32,
    /// When each recent restart was decided, for the `window_seconds` budget.
    recent: VecDeque<Instant>,
    /// The delay of the next restart.
    backoff: Duration,
    restart_at: Option<Instant>,
    stable_at: Option<Instant>,
    last_error: Option<String>,
}

impl Supervisor {
    pub fn new(spec: RestartSpec) -> Self {
        let backoff = initial_backoff(&spec);
        Self {
            spec,
            state: BotState::Pending,
            restart_count: 0,
            recent: VecDeque::new(),
            backoff,
            restart_at: None,
            stable_at: None,
            last_error: None,
        }
    }

    /// A supervisor resumed after an agent restart, in the state the bot was left in.
    pub fn resume(spec: RestartSpec, state: BotState, restart_count: u32, now: Instant) -> Self {
        let mut supervisor = Self::new(spec);
        supervisor.state = state;
        supervisor.restart_count = restart_count;
        if state == BotState::Running {
            supervisor.stable_at = Some(now + supervisor.stable_after());
        }
        supervisor
    }

    pub fn state(&self) -> BotState {
        self.state
    }

    /// The current state as a transition to itself: for re-reporting the truth.
    pub fn current(&self) -> Transition {
        Transition { state: self.state, exit: None, restart_count: self.restart_count, error: self.last_error.clone() }
    }

    pub fn restart_count(&self) -> u32 {
        self.restart_count
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// A new definition's restart rules apply from the next decision on.
    pub fn set_spec(&mut self, spec: RestartSpec) {
        self.backoff = self.backoff.clamp(initial_backoff(&spec), Duration::from_millis(spec.backoff_max_ms.max(1)));
        self.spec = spec;
    }

    /// When [`Supervisor::tick`] must next be called, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.restart_at, self.stable_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An operator's start: a fresh restart budget. The caller spawns the process next.
    pub fn start(&mut self) -> Transition {
        self.restart_count = 0;
        self.recent.clear();
        self.backoff = initial_backoff(&self.spec);
        self.restart_at = None;
        self.stable_at = None;
        self.last_error = None;
        self.enter(BotState::Starting, None)
    }

    /// The process runs.
    pub fn spawned(&mut self, now: Instant) -> Transition {
        self.stable_at = Some(now + self.stable_after());
        self.last_error = None;
        self.enter(BotState::Running, None)
    }

    /// The process could not be started (no such program, not executable, bad cwd): `failed`
    /// at once — a restart would fail the same way, so no silent restart loop.
    pub fn spawn_failed(&mut self, reason: String) -> Transition {
        self.restart_at = None;
        self.stable_at = None;
        self.last_error = Some(reason);
        self.enter(BotState::Failed, None)
    }

    /// The process cannot be started by the agent alone (e.g. its secrets are only in the
    /// server's hands after an agent restart): `crashed`, waiting for the server's start.
    pub fn blocked(&mut self, reason: String) -> Transition {
        self.restart_at = None;
        self.stable_at = None;
        self.last_error = Some(reason);
        self.enter(BotState::Crashed, None)
    }

    /// The process ended by itself. Returns the exit transition (`exited`/`crashed`), then
    /// `backoff` or `failed` when the policy asks for a restart.
    pub fn exited(&mut self, exit: Exit, now: Instant) -> Vec<Transition> {
        self.stable_at = None;
        let first = if exit.success() {
            self.last_error = None;
            self.enter(BotState::Exited, Some(exit))
        } else {
            self.last_error = Some(format!("the process ended: {exit}"));
            self.enter(BotState::Crashed, Some(exit))
        };
        if !self.restarts_after(exit.success()) {
            return vec![first];
        }
        vec![first, self.restart_or_give_up(Some(exit), now)]
    }

    /// A bot recovered after an agent restart between an exit and its restart: `crashed` or
    /// `exited` (the exit written down, the policy's decision not), or `backoff` (the restart
    /// decided, its time lost with the previous run). The policy decides again, now: `backoff`
    /// (to be reported; its deadline then starts the bot) or `failed` when the restart budget
    /// is spent. `None` when nothing is to report: already `backoff` (only its deadline is
    /// set again, the restart count stands), or a policy that restarts nothing after this exit
    /// (the bot stays as it is).
    pub fn resume_policy(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            BotState::Backoff => {
                self.restart_at = Some(now + self.backoff);
                None
            }
            BotState::Crashed if self.restarts_after(false) => Some(self.restart_or_give_up(None, now)),
            BotState::Exited if self.restarts_after(true) => Some(self.restart_or_give_up(None, now)),
            _ => None,
        }
    }

    /// Whether the policy restarts the bot after an exit, successful or not.
    fn restarts_after(&self, success: bool) -> bool {
        match self.spec.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }

    /// After an exit the policy restarts: `backoff` with the next delay, or `failed` when
    /// `max_restarts` were spent within the window.
    fn restart_or_give_up(&mut self, exit: Option<Exit>, now: Instant) -> Transition {
        let window = Duration::from_secs(self.spec.window_seconds);
        while self.recent.front().is_some_and(|&at| now.saturating_duration_since(at) >= window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.spec.max_restarts as usize {
            let reason = format!(
                "crash loop: gave up after {} restarts within {} s (last: {})",
                self.spec.max_restarts,
                self.spec.window_seconds,
                exit.unwrap_or(Exit::Unknown)
            );
            self.last_error = Some(reason);
            return self.enter(BotState::Failed, exit);
        }
        self.recent.push_back(now);
        self.restart_count += 1;
        self.restart_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_millis(self.spec.backoff_max_ms.max(1)));
        self.enter(BotState::Backoff, exit)
    }

    /// Time passed: a stable run resets the backoff; an elapsed backoff means `starting`
    /// (returned: the caller spawns the process).
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        if self.stable_at.is_some_and(|at| now >= at) {
            self.stable_at = None;
            self.backoff = initial_backoff(&self.spec);
        }
        if self.restart_at.is_some_and(|at| now >= at) {
            self.restart_at = None;
            return Some(self.enter(BotState::Starting, None));
        }
        None
    }

    /// A stop was asked while the process runs.
    pub fn stopping(&mut self) -> Transition {
        self.restart_at = None;
        self.stable_at = None;
        self.enter(BotState::Stopping, None)
    }

    /// The bot is stopped by request (its process is gone, or there was none).
    pub fn stopped(&mut self, exit: Option<Exit>) -> Transition {
        self.restart_at = None;
        self.stable_at = None;
        self.last_error = None;
        self.enter(BotState::Stopped, exit)
    }

    fn stable_after(&self) -> Duration {
        Duration::from_secs(self.spec.stable_after_seconds)
    }

    fn enter(&mut self, state: BotState, exit: Option<Exit>) -> Transition {
        self.state = state;
        Transition { state, exit, restart_count: self.restart_count, error: self.last_error.clone() }
    }
}

fn initial_backoff(spec: &RestartSpec) -> Duration {
    Duration::from_millis(spec.backoff_initial_ms.min(spec.backoff_max_ms.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn spec(policy: RestartPolicy, max_restarts: u32) -> RestartSpec {
        RestartSpec {
            policy,
            max_restarts,
            window_seconds: 60,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 4_000,
            stable_after_seconds: 30,
        }
    }

    fn states(transitions: &[Transition]) -> Vec<BotState> {
        transitions.iter().map(|t| t.state).collect()
    }

    /// Drives a running bot through a crash and its backoff; returns the delay waited.
    async fn crash_and_restart(sup: &mut Supervisor) -> Duration {
        let crashed = sup.exited(Exit::Code(1), Instant::now());
        assert_eq!(states(&crashed), [BotState::Crashed, BotState::Backoff]);
        let deadline = sup.deadline().expect("a backoff has a deadline");
        let delay = deadline - Instant::now();
        advance(delay - Duration::from_millis(1)).await;
        assert_eq!(sup.tick(Instant::now()), None, "not before the backoff is over");
        advance(Duration::from_millis(1)).await;
        let starting = sup.tick(Instant::now()).expect("the backoff is over");
        assert_eq!(starting.state, BotState::Starting);
        assert_eq!(sup.spawned(Instant::now()).state, BotState::Running);
        delay
    }

    #[tokio::test(start_paused = true)]
    async fn start_then_running_with_a_fresh_budget() {
        let mut sup = Supervisor::new(spec(RestartPolicy::OnFailure, 3));
        assert_eq!(sup.state(), BotState::Pending);
        assert_eq!(sup.start().state, BotState::Starting);
        let running = sup.spawned(Instant::now());
        assert_eq!((running.state, running.restart_count, running.exit), (BotState::Running, 0, None));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_maximum() {
        let mut sup = Supervisor::new(spec(RestartPolicy::Always, 10));
        sup.start();
        sup.spawned(Instant::now());
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(crash_and_restart(&mut sup).await);
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 4]);
        assert_eq!(sup.restart_count(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_run_resets_the_backoff() {
        let mut sup = Supervisor::new(spec(RestartPolicy::OnFailure, 10));
        sup.start();
        sup.spawned(Instant::now());
        assert_eq!(crash_and_restart(&mut sup).await, Duration::from_secs(1));
        assert_eq!(crash_and_restart(&mut sup).await, Duration::from_secs(2));
        // Running 30 s is stable: the deadline fires and the next crash waits 1 s again.
        let stable = sup.deadline().expect("the stability deadline");
        advance(stable - Instant::now()).await;
        assert_eq!(sup.tick(Instant::now()), None, "stability changes no state");
        assert_eq!(sup.deadline(), None);
        assert_eq!(crash_and_restart(&mut sup).await, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_after_max_restarts_within_the_window() {
        let mut sup = Supervisor::new(spec(RestartPolicy::OnFailure, 2));
        sup.start();
        sup.spawned(Instant::now());
        crash_and_restart(&mut sup).await;
        crash_and_restart(&mut sup).await;
        let last = sup.exited(Exit::Signal(9), Instant::now());
        assert_eq!(states(&last), [BotState::Crashed, BotState::Failed]);
        assert_eq!(last[1].exit, Some(Exit::Signal(9)));
        assert!(last[1].error.as_deref().is_some_and(|e| e.contains("crash loop")), "{last:?}");
        assert_eq!(sup.deadline(), None, "failed waits for an operator");
        // An operator start gives a fresh budget.
        sup.start();
        sup.spawned(Instant::now());
        assert_eq!(states(&sup.exited(Exit::Code(3), Instant::now())), [BotState::Crashed, BotState::Backoff]);
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_older_than_the_window_do_not_count() {
        let mut sup = Supervisor::new(spec(RestartPolicy::OnFailure, 2));
        sup.start();
        sup.spawned(Instant::now());
        crash_and_restart(&mut sup).await;
        crash_and_restart(&mut sup).await;
        advance(Duration::from_secs(61)).await;
        sup.tick(Instant::now());
        let crashed = sup.exited(Exit::Code(1), Instant::now());
        assert_eq!(states(&crashed), [BotState::Crashed, BotState::Backoff]);
        assert_eq!(crashed[1].restart_count, 3, "the count keeps growing; only the budget is windowed");
    }

    #[tokio::test(start_paused = true)]
    async fn policies_decide_what_an_exit_means() {
        let mut on_failure = Supervisor::new(spec(RestartPolicy::OnFailure, 5));
        on_failure.start();
        on_failure.spawned(Instant::now());
        let exited = on_failure.exited(Exit::Code(0), Instant::now());
        assert_eq!(states(&exited), [BotState::Exited], "a clean exit is not restarted on-failure");
        assert_eq!(exited[0].exit, Some(Exit::Code(0)));

        let mut always = Supervisor::new(spec(RestartPolicy::Always, 5));
        always.start();
        always.spawned(Instant::now());
        assert_eq!(states(&always.exited(Exit::Code(0), Instant::now())), [BotState::Exited, BotState::Backoff]);

        let mut never = Supervisor::new(spec(RestartPolicy::Never, 5));
        never.start();
        never.spawned(Instant::now());
        let crashed = never.exited(Exit::Unknown, Instant::now());
        assert_eq!(states(&crashed), [BotState::Crashed]);
        assert_eq!(never.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cancels_a_pending_restart() {
        let mut sup = Supervisor::new(spec(RestartPolicy::Always, 5));
        sup.start();
        sup.spawned(Instant::now());
        sup.exited(Exit::Code(1), Instant::now());
        assert!(sup.deadline().is_some());
        let stopped = sup.stopped(None);
        assert_eq!((stopped.state, stopped.error), (BotState::Stopped, None));
        assert_eq!(sup.deadline(), None);
        advance(Duration::from_secs(10)).await;
        assert_eq!(sup.tick(Instant::now()), None, "no restart after a stop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_spawn_failure_is_failed_not_a_restart_loop() {
        let mut sup = Supervisor::new(spec(RestartPolicy::Always, 5));
        sup.start();
        let failed = sup.spawn_failed("program `nope` not found".into());
        assert_eq!(failed.state, BotState::Failed);
        assert_eq!(failed.error.as_deref(), Some("program `nope` not found"));
        assert_eq!(sup.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_running_bot_becomes_stable_later() {
        let mut sup = Supervisor::resume(spec(RestartPolicy::OnFailure, 5), BotState::Running, 2, Instant::now());
        assert_eq!((sup.state(), sup.restart_count()), (BotState::Running, 2));
        assert_eq!(sup.deadline(), Some(Instant::now() + Duration::from_secs(30)));
        let crashed = sup.exited(Exit::Unknown, Instant::now());
        assert_eq!(states(&crashed), [BotState::Crashed, BotState::Backoff]);
        assert_eq!(crashed[0].error.as_deref(), Some("the process ended: exit status unknown"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bot_recovered_between_an_exit_and_its_restart_resumes_the_policy() {
        // Crashed, the restart not yet decided: backoff (one more restart), then starting.
        let mut sup = Supervisor::resume(spec(RestartPolicy::OnFailure, 5), BotState::Crashed, 1, Instant::now());
        let backoff = sup.resume_policy(Instant::now()).expect("on-failure restarts a crash");
        assert_eq!((backoff.state, backoff.restart_count, backoff.exit), (BotState::Backoff, 2, None));
        assert_eq!(sup.deadline(), Some(Instant::now() + Duration::from_secs(1)));
        advance(Duration::from_secs(1)).await;
        assert_eq!(sup.tick(Instant::now()).map(|t| (t.state, t.restart_count)), Some((BotState::Starting, 2)));

        // Already in backoff: the same restart, its time set again; the count stands.
        let mut sup = Supervisor::resume(spec(RestartPolicy::OnFailure, 5), BotState::Backoff, 3, Instant::now());
        assert_eq!(sup.resume_policy(Instant::now()), None, "nothing new to report");
        advance(Duration::from_secs(1)).await;
        assert_eq!(sup.tick(Instant::now()).map(|t| (t.state, t.restart_count)), Some((BotState::Starting, 3)));

        // A clean exit restarts under `always` only; `never` restarts nothing.
        let mut exited = Supervisor::resume(spec(RestartPolicy::Always, 5), BotState::Exited, 0, Instant::now());
        assert_eq!(exited.resume_policy(Instant::now()).map(|t| t.state), Some(BotState::Backoff));
        for (policy, state) in [(RestartPolicy::OnFailure, BotState::Exited), (RestartPolicy::Never, BotState::Crashed)]
        {
            let mut sup = Supervisor::resume(spec(policy, 5), state, 0, Instant::now());
            assert_eq!(sup.resume_policy(Instant::now()), None, "{policy:?} after {state:?}");
            assert_eq!((sup.state(), sup.deadline()), (state, None));
        }
        // Other states are not this function's business.
        let mut failed = Supervisor::resume(spec(RestartPolicy::Always, 5), BotState::Failed, 5, Instant::now());
        assert_eq!((failed.resume_policy(Instant::now()), failed.deadline()), (None, None));

        // No restart budget at all: failed, not a restart.
        let mut spent = Supervisor::resume(spec(RestartPolicy::Always, 0), BotState::Crashed, 4, Instant::now());
        let given_up = spent.resume_policy(Instant::now()).expect("a decision");
        assert_eq!(given_up.state, BotState::Failed);
        assert!(given_up.error.as_deref().is_some_and(|e| e.contains("exit status unknown")), "{given_up:?}");
    }
}
