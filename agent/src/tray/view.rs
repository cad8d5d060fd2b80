//! What the tray shows, computed from a [`StatusReport`] without touching the GUI: the
//! light (icon colour), the tooltip, the status lines and bot lines of the menu, and which
//! actions are allowed. Pure, so every rule is tested here; the GUI only draws a [`View`].

use crate::status::StatusReport;

/// The icon's state (SPEC §5: grey idle, yellow connecting, green online, red error, dark
/// revoked; paused is grey with a pause sign).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Light {
    /// No agent runs (or not paired).
    Idle,
    Connecting,
    Online,
    /// Paused from the tray: disconnected on purpose, bots still supervised.
    Paused,
    /// Cannot reach the server, the agent failed, or a bot failed.
    Error,
    Revoked,
}

impl Light {
    pub fn word(self) -> &'static str {
        match self {
            Light::Idle => "not running",
            Light::Connecting => "connecting",
            Light::Online => "online",
            Light::Paused => "paused",
            Light::Error => "error",
            Light::Revoked => "revoked",
        }
    }
}

/// Who runs the agent the tray shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The tray runs it (in this process): pause, resume and pair again are available.
    Own,
    /// Another process (a service) runs it: the tray only shows it.
    Service,
    /// Nothing runs and the host is not paired.
    NotPaired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub light: Light,
    pub tooltip: String,
    /// Disabled menu lines, first one the headline.
    pub lines: Vec<String>,
    /// `name: state` per bot.
    pub bots: Vec<String>,
    pub server: Option<String>,
    pub source: Source,
    /// The own agent runs (so Pause/Resume means something).
    pub running: bool,
    pub paused: bool,
}

impl View {
    /// `note`: the tray's own message (an action's outcome); `previous`: the last light,
    /// so that the retries after a lost connection stay red instead of blinking yellow.
    pub fn build(report: &StatusReport, source: Source, note: Option<&str>, previous: Light) -> Self {
        let light = light(report, previous);
        let running = report.live;
        let paused = report.connection == "paused";
        let total = report.bots.len();
        let count = |state: &str| report.bots.iter().filter(|b| b.state == state).count();
        let (bots_running, bots_failed) = (count("running"), count("failed"));
        let mut summary = format!("{total} bot{}: {bots_running} running", if total == 1 { "" } else { "s" });
        if bots_failed > 0 {
            summary.push_str(&format!(", {bots_failed} failed"));
        }
        let headline = match (source, light) {
            (Source::NotPaired, _) => "botmox agent: not paired".to_owned(),
            (_, Light::Error) if report.connection == "connected" => {
                format!("botmox agent: online, {bots_failed} bot{} failed", if bots_failed == 1 { "" } else { "s" })
            }
            (_, light) => format!("botmox agent: {}", light.word()),
        };
        let server = report.server.clone();
        let mut lines = vec![headline.clone()];
        match &server {
            Some(server) => lines.push(format!("Server: {server}")),
            None => lines.push("Pair this host to use it: Pair…".to_owned()),
        }
        lines.push(summary.clone());
        if source == Source::Service {
            let pid = report.agent_pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            lines.push(format!("Shows the service's agent{pid}: control it with systemctl"));
        }
        if paused {
            lines.push("Paused: no commands from the server; bots keep running".to_owned());
        }
        if report.connection != "connected" {
            if let Some(error) = &report.last_connection_error {
                lines.push(format!("Last error: {}", shorten(error)));
            }
        }
        if light == Light::Revoked {
            lines.push("Revoked by the server: its bots were stopped. Pair again… to use this host".to_owned());
        }
        if let Some(note) = note {
            lines.push(shorten(note));
        }
        let mut tooltip = headline;
        if let Some(server) = &server {
            tooltip.push_str(&format!("\n{server}"));
        }
        tooltip.push_str(&format!("\n{summary}"));
        if source == Source::Service {
            tooltip.push_str("\nservice instance: view only");
        }
        let bots = report.bots.iter().map(|b| format!("{}: {}", b.name, b.state)).collect();
        Self { light, tooltip, lines, bots, server, source, running, paused }
    }

    /// Pause/Resume needs the own agent running and connected or paused.
    pub fn can_pause(&self) -> bool {
        self.source == Source::Own && self.running && self.light != Light::Revoked
    }

    /// Pairing again replaces the identity of an agent the tray runs (or of none).
    pub fn can_pair(&self) -> bool {
        self.source != Source::Service
    }
}

fn light(report: &StatusReport, previous: Light) -> Light {
    match report.connection.as_str() {
        "connected" if report.bots.iter().any(|b| b.state == "failed") => Light::Error,
        "connected" => Light::Online,
        "connecting" | "starting" if previous == Light::Error => Light::Error,
        "connecting" | "starting" => Light::Connecting,
        "paused" => Light::Paused,
        "revoked" => Light::Revoked,
        "disconnected" | "error" => Light::Error,
        _ => Light::Idle,
    }
}

/// Menu lines stay one short line.
fn shorten(text: &str) -> String {
    const MAX: usize = 90;
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= MAX {
        return line.to_owned();
    }
    let cut: String = line.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::BotStatus;

    fn report(connection: &str, bots: &[(&str, &str)]) -> StatusReport {
        StatusReport {
            live: connection != "not running",
            agent_id: Some(uuid::Uuid::nil()),
            server: Some("https://botmox.example".into()),
            connection: connection.into(),
            transport: None,
            since: None,
            last_connection_error: Some("connection refused".into()),
            agent_pid: Some(42),
            draining: false,
            frames_buffered: 0,
            log_lines_dropped: 0,
            bots: bots
                .iter()
                .map(|(name, state)| BotStatus {
                    id: uuid::Uuid::nil(),
                    name: (*name).into(),
                    state: (*state).into(),
                    desired: "running".into(),
                    pid: None,
                    restart_count: 0,
                    last_error: None,
                })
                .collect(),
            last_errors: Vec::new(),
        }
    }

    #[test]
    fn the_light_follows_the_connection() {
        let light =
            |connection: &str, previous| View::build(&report(connection, &[]), Source::Own, None, previous).light;
        assert_eq!(light("connected", Light::Idle), Light::Online);
        assert_eq!(light("connecting", Light::Idle), Light::Connecting);
        assert_eq!(light("disconnected", Light::Online), Light::Error);
        assert_eq!(light("connecting", Light::Error), Light::Error, "retries stay red until connected");
        assert_eq!(light("paused", Light::Online), Light::Paused);
        assert_eq!(light("revoked", Light::Online), Light::Revoked);
        assert_eq!(light("not running", Light::Online), Light::Idle);
    }

    #[test]
    fn tooltip_and_lines_tell_server_and_bot_counts() {
        let bots = [("a", "running"), ("b", "running"), ("c", "failed")];
        let view = View::build(&report("connected", &bots), Source::Own, None, Light::Idle);
        assert_eq!(view.light, Light::Error, "a failed bot needs attention");
        assert_eq!(
            view.tooltip,
            "botmox agent: online, 1 bot failed\nhttps://botmox.example\n3 bots: 2 running, 1 failed"
        );
        assert_eq!(view.bots, ["a: running", "b: running", "c: failed"]);
        assert!(view.lines.contains(&"Server: https://botmox.example".to_owned()), "{:?}", view.lines);
        assert!(!view.lines.iter().any(|l| l.starts_with("Last error")), "no stale error while online");
        assert!(view.can_pause() && view.can_pair());
    }

    #[test]
    fn a_service_instance_is_shown_but_not_controlled() {
        let view = View::build(&report("connected", &[("a", "running")]), Source::Service, None, Light::Idle);
        assert_eq!(view.light, Light::Online);
        assert!(!view.can_pause() && !view.can_pair());
        assert!(view.tooltip.ends_with("service instance: view only"), "{}", view.tooltip);
        assert!(view.lines.iter().any(|l| l.contains("(pid 42)") && l.contains("systemctl")), "{:?}", view.lines);
    }

    #[test]
    fn paused_revoked_and_unpaired_say_what_to_do() {
        let paused = View::build(&report("paused", &[]), Source::Own, None, Light::Online);
        assert!(paused.paused && paused.can_pause());
        assert!(paused.lines.iter().any(|l| l.starts_with("Paused: no commands")), "{:?}", paused.lines);

        let revoked = View::build(&report("revoked", &[]), Source::Own, Some("agent stopped"), Light::Online);
        assert!(!revoked.can_pause() && revoked.can_pair());
        assert!(revoked.lines.iter().any(|l| l.contains("Pair again")), "{:?}", revoked.lines);
        assert_eq!(revoked.lines.last().map(String::as_str), Some("agent stopped"));

        let mut unpaired = report("not running", &[]);
        unpaired.server = None;
        let view = View::build(&unpaired, Source::NotPaired, None, Light::Idle);
        assert_eq!((view.light, view.lines[0].as_str()), (Light::Idle, "botmox agent: not paired"));
        assert!(view.can_pair() && !view.can_pause());
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        let long = "x".repeat(200) + "\nsecond line";
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), 90);
        assert!(cut.ends_with('…') && !cut.contains('\n'));
    }
}
