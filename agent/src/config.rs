//! The credentials file (`agent.json`: server URL, agent id, agent token, TLS extras) and the
//! one way the agent writes any of its files: [`write_private`], atomic (temp file + rename)
//! and owner-only (0600 on Unix), so a crash never leaves a half-written file and no other
//! user can read a token.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use botmox_contract::agents::ServerSettings;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What `pair` stores and `run` needs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Base URL of the server, without a trailing slash.
    pub server: String,
    pub agent_id: Uuid,
    pub agent_token: String,
    /// An extra CA certificate (PEM) to trust for this server, besides the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The settings the server gave at pairing (the long-poll transport has no `settings` frame).
    #[serde(default)]
    pub server_settings: Option<ServerSettings>,
    pub paired_at: DateTime<Utc>,
    /// When the token was last replaced (`pair` or rotation); rotation is weekly from here.
    pub token_since: DateTime<Utc>,
}

/// The token never reaches a log line, even through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("agent_id", &self.agent_id)
            .field("agent_token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `None` when the host is not paired (no file).
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let credentials = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid credentials file (pair again)", path.display()))?;
        Ok(Some(credentials))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_private(path, &json).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The URL of an API path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }
}

/// Writes `bytes` to `path` atomically with owner-only permissions.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        // Not fsynced: a killed agent loses nothing (the page cache survives the process);
        // only a host crash could, and the state is then re-learnt from the running processes.
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            server: "https://botmox.example".into(),
            agent_id: Uuid::now_v7(),
            agent_token: "bmxa_secret_token".into(),
            ca_file: None,
            server_settings: Some(ServerSettings::default()),
            paired_at: Utc::now(),
            token_since: Utc::now(),
        }
    }

    #[test]
    fn round_trips_and_is_owner_only() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.json");
        assert!(Credentials::load(&path)?.is_none(), "absent means not paired");
        let credentials = sample();
        credentials.save(&path)?;
        let loaded = Credentials::load(&path)?.context("saved")?;
        assert_eq!((loaded.agent_id, loaded.agent_token.as_str()), (credentials.agent_id, "bmxa_secret_token"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn debug_output_hides_the_token() {
        assert!(!format!("{:?}", sample()).contains("bmxa_secret_token"));
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.json");
        std::fs::write(&path, "{not json")?;
        let err = Credentials::load(&path).err().context("must fail")?;
        assert!(err.to_string().contains("pair again"), "{err}");
        Ok(())
    }
}
