//! "Pair again…": give this host a new identity from the tray.
//!
//! With `zenity` (GNOME and most desktops) or `kdialog` (KDE) on `PATH`, the tray asks for
//! confirmation (the current identity is forgotten and its bots are stopped), the server URL
//! and a pairing code, then pairs **into a staging dir** first: a wrong code or URL changes
//! nothing. Only once the server accepted the code does [`swap`] stop the tray's agent,
//! unpair the old identity (`botmox-agent unpair`: its bots stop) and move the new
//! credentials in; the tray then starts the agent again. The old agent stays registered on
//! the server, offline, for an operator to revoke.
//!
//! Without either program the tray opens the control panel (for a new code) and says what to
//! run in a terminal: `botmox-agent unpair`, then `botmox-agent pair`. An unpaired tray
//! notices the credentials `pair` writes and starts the agent by itself.

use std::path::PathBuf;

use tokio::process::Command;

use crate::{config::Credentials, pair, paths::AgentDir};

const TITLE: &str = "botmox agent: pair again";
const STAGING: &str = "pairing.new";

/// What the dialogs need to know.
pub struct Ask {
    pub dir: AgentDir,
    pub server: Option<String>,
    /// Paired and not revoked: pairing again forgets a working identity, so confirm first.
    pub paired: bool,
    pub bots: usize,
}

#[derive(Debug)]
pub enum Outcome {
    /// Paired into the staging dir; [`swap`] finishes.
    Staged(Staged),
    /// Nothing changed; this line tells why or what to do.
    Told(String),
    Cancelled,
}

#[derive(Debug)]
pub struct Staged {
    dir: AgentDir,
    server: String,
    agent_id: uuid::Uuid,
}

/// The dialogs, then pairing into the staging dir.
pub async fn ask_and_stage(ask: Ask) -> Outcome {
    let Some(dialog) = Dialog::find() else {
        // No way to ask here: say what to run in a terminal (a new code is in the panel).
        let Some(server) = &ask.server else {
            return Outcome::Told(
                "To pair, run `botmox-agent pair --server URL --code CODE`; the tray then starts".into(),
            );
        };
        let _ = open::that_detached(format!("{server}/"));
        return Outcome::Told("To pair again: Quit, then `botmox-agent unpair` and `botmox-agent pair …`".into());
    };
    if ask.paired {
        let server = ask.server.as_deref().unwrap_or("its server");
        let question = format!(
            "This host is paired with {server}. Pairing again gives it a new identity: the current one is \
             forgotten and its {} bot(s) are stopped.\n\nContinue?",
            ask.bots
        );
        if !dialog.confirm(&question).await {
            return Outcome::Cancelled;
        }
    }
    let default = ask.server.clone().unwrap_or_else(|| "https://".into());
    let Some(server) = dialog.entry("Server URL (e.g. https://botmox.example.com):", &default).await else {
        return Outcome::Cancelled;
    };
    let server = match crate::parse_server_url(server.trim()) {
        Ok(server) => server,
        Err(e) => return told(&dialog, format!("Not a server URL: {e}")).await,
    };
    let Some(code) = dialog.entry("Pairing code (control panel: Agents → Pair agent):", "").await else {
        return Outcome::Cancelled;
    };
    let staging = ask.dir.root().join(STAGING);
    let _ = std::fs::remove_dir_all(&staging);
    let staged = match AgentDir::resolve(Some(staging.clone())) {
        Ok(staged) => staged,
        Err(e) => return told(&dialog, format!("Pairing failed: {e}")).await,
    };
    // Keep the extra CA of the current credentials when pairing with the same server.
    let ca_file = Credentials::load(&ask.dir.credentials())
        .ok()
        .flatten()
        .filter(|current| current.server == server)
        .and_then(|current| current.ca_file);
    let options = pair::PairOptions { server, code, name: None, labels: Vec::new(), ca_file };
    match pair::pair(&staged, options).await {
        Ok(credentials) => {
            Outcome::Staged(Staged { dir: staged, server: credentials.server, agent_id: credentials.agent_id })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            told(&dialog, format!("Pairing failed, nothing changed: {e}")).await
        }
    }
}

async fn told(dialog: &Dialog, message: String) -> Outcome {
    dialog.error(&message).await;
    Outcome::Told(message)
}

/// Replaces the identity: unpair the old one (its bots stop), move the new credentials in.
/// The tray's agent must be stopped first (`unpair` refuses while an agent runs).
pub async fn swap(dir: &AgentDir, staged: Staged) -> Result<String, String> {
    let staging: PathBuf = staged.dir.root().to_path_buf();
    let result = async {
        let unpaired = pair::unpair(dir).await?;
        std::fs::rename(staged.dir.credentials(), dir.credentials())
            .map_err(|e| format!("cannot move the new credentials into {}: {e}", dir.root().display()))?;
        Ok(format!(
            "Paired with {} as agent {}; {} bot(s) of the old identity stopped",
            staged.server, staged.agent_id, unpaired.bots_stopped
        ))
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// `zenity` or `kdialog`.
enum Dialog {
    Zenity,
    KDialog,
}

impl Dialog {
    fn find() -> Option<Self> {
        let on_path = |name: &str| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        };
        if on_path("zenity") {
            Some(Self::Zenity)
        } else if on_path("kdialog") {
            Some(Self::KDialog)
        } else {
            None
        }
    }

    async fn confirm(&self, question: &str) -> bool {
        let mut command = match self {
            Self::Zenity => zenity(&["--question", "--width=420", "--text", &plain(question)]),
            Self::KDialog => kdialog(&["--yesno", question]),
        };
        command.status().await.is_ok_and(|s| s.success())
    }

    /// The text entered, or `None` when cancelled (or empty).
    async fn entry(&self, prompt: &str, default: &str) -> Option<String> {
        let mut command = match self {
            Self::Zenity => zenity(&["--entry", "--width=420", "--text", &plain(prompt), "--entry-text", default]),
            Self::KDialog => kdialog(&["--inputbox", prompt, default]),
        };
        let output = command.output().await.ok()?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success() && !text.is_empty()).then_some(text)
    }

    async fn error(&self, message: &str) {
        let mut command = match self {
            Self::Zenity => zenity(&["--error", "--width=420", "--text", &plain(message)]),
            Self::KDialog => kdialog(&["--error", message]),
        };
        let _ = command.status().await;
    }
}

fn zenity(args: &[&str]) -> Command {
    let mut command = Command::new("zenity");
    command.args(["--title", TITLE]).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    command
}

fn kdialog(args: &[&str]) -> Command {
    let mut command = Command::new("kdialog");
    command.args(["--title", TITLE]).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    command
}

/// zenity reads Pango markup: escape what would be taken for it.
fn plain(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_for_zenity() {
        assert_eq!(plain("a <b> & c"), "a &lt;b&gt; &amp; c");
    }

    #[tokio::test]
    async fn swap_moves_the_new_identity_in_and_clears_the_old_state() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = AgentDir::resolve(Some(root.path().to_path_buf())).map_err(anyhow::Error::msg)?;
        let staged_dir = AgentDir::resolve(Some(root.path().join(STAGING))).map_err(anyhow::Error::msg)?;
        let credentials = |agent_id| Credentials {
            server: "https://botmox.example".into(),
            agent_id,
            agent_token: "token".into(),
            ca_file: None,
            server_settings: None,
            paired_at: chrono::Utc::now(),
            token_since: chrono::Utc::now(),
        };
        let (old, new) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        dir.create()?;
        credentials(old).save(&dir.credentials())?;
        std::fs::write(dir.journal(), "")?;
        staged_dir.create()?;
        credentials(new).save(&staged_dir.credentials())?;
        let staged = Staged { dir: staged_dir, server: "https://botmox.example".into(), agent_id: new };

        let said = swap(&dir, staged).await.map_err(anyhow::Error::msg)?;
        assert!(said.contains(&new.to_string()), "{said}");
        let now = Credentials::load(&dir.credentials())?.map(|c| c.agent_id);
        assert_eq!(now, Some(new));
        assert!(!dir.journal().exists(), "the old identity's journal is gone");
        assert!(!root.path().join(STAGING).exists(), "the staging dir is removed");
        Ok(())
    }
}
