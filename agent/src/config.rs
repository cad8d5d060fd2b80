//! The credentials file (`agent.json`: server URL, agent id, agent token, TLS extras) and the
//! one way the agent writes any of its files: [`write_private`], atomic (temp file + rename)
//! and owner-only (0600 on Unix), so a crash never leaves a half-written file and no other
//! user can read a token. On Windows the token is also DPAPI-protected for the current user
//! (`agent_token_dpapi`, base64; the file holds no `agent_token`), so a copy of the file is
//! useless to anyone else; on Unix it stays in clear (`agent_token`) in its 0600 file. Each
//! OS refuses the other's form with a reason.

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
        let invalid = || format!("{} is not a valid credentials file (pair again)", path.display());
        let mut json: serde_json::Value = serde_json::from_str(&text).with_context(invalid)?;
        token_from_file(&mut json).with_context(|| format!("cannot use the agent token in {}", path.display()))?;
        let credentials = serde_json::from_value(json).with_context(invalid)?;
        Ok(Some(credentials))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_value(self)?;
        token_to_file(&mut json)?;
        let json = serde_json::to_vec_pretty(&json)?;
        write_private(path, &json).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The URL of an API path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }
}

/// The token's key in the file when it is in clear: Unix, where the file is 0600.
const CLEAR_TOKEN: &str = "agent_token";
/// Its key when DPAPI-protected for the current user (Windows), base64 of the DPAPI blob.
const DPAPI_TOKEN: &str = "agent_token_dpapi";

/// Turns the serialised credentials into the file's form of the token (Windows: DPAPI).
#[cfg(windows)]
fn token_to_file(json: &mut serde_json::Value) -> anyhow::Result<()> {
    use base64::Engine as _;
    let Some(fields) = json.as_object_mut() else { return Ok(()) };
    let Some(serde_json::Value::String(token)) = fields.remove(CLEAR_TOKEN) else { return Ok(()) };
    let sealed = crate::win32::dpapi_protect(token.as_bytes(), "botmox agent token")
        .context("cannot protect the agent token with DPAPI")?;
    fields.insert(DPAPI_TOKEN.into(), base64::engine::general_purpose::STANDARD.encode(sealed).into());
    Ok(())
}

#[cfg(not(windows))]
fn token_to_file(_json: &mut serde_json::Value) -> anyhow::Result<()> {
    Ok(())
}

/// Turns the file's form of the token back into the clear field; a file written on the
/// other kind of OS is refused with a reason.
#[cfg(windows)]
fn token_from_file(json: &mut serde_json::Value) -> anyhow::Result<()> {
    use base64::Engine as _;
    let Some(fields) = json.as_object_mut() else { return Ok(()) };
    anyhow::ensure!(
        !fields.contains_key(CLEAR_TOKEN),
        "the token is stored in clear, as only a Unix agent writes it; on Windows it must be DPAPI-protected \
         (`{DPAPI_TOKEN}`): pair this host again"
    );
    let Some(serde_json::Value::String(sealed)) = fields.remove(DPAPI_TOKEN) else { return Ok(()) };
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .with_context(|| format!("`{DPAPI_TOKEN}` is not base64"))?;
    let token = crate::win32::dpapi_unprotect(&sealed).context(
        "DPAPI cannot decrypt it: only the Windows user who paired can, on the machine where they paired; \
         pair again as this user",
    )?;
    let token = String::from_utf8(token).context("the decrypted token is not text")?;
    fields.insert(CLEAR_TOKEN.into(), token.into());
    Ok(())
}

#[cfg(not(windows))]
fn token_from_file(json: &mut serde_json::Value) -> anyhow::Result<()> {
    anyhow::ensure!(
        json.get(DPAPI_TOKEN).is_none(),
        "the token is DPAPI-protected (`{DPAPI_TOKEN}`, not `{CLEAR_TOKEN}`), as only a Windows agent writes it, \
         and only that Windows user can decrypt it: pair this host again"
    );
    Ok(())
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
    fn the_token_is_never_in_clear_on_windows() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.json");
        sample().save(&path)?;
        let text = std::fs::read_to_string(&path)?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        if cfg!(windows) {
            assert!(!text.contains("bmxa_secret_token"), "the token is in clear: {text}");
            assert!(json[DPAPI_TOKEN].is_string() && json.get(CLEAR_TOKEN).is_none(), "{text}");
        } else {
            assert_eq!(json[CLEAR_TOKEN], "bmxa_secret_token", "Unix keeps it in clear in a 0600 file");
        }
        let loaded = Credentials::load(&path)?.context("saved")?;
        assert_eq!(loaded.agent_token, "bmxa_secret_token");
        Ok(())
    }

    #[test]
    fn a_token_in_the_other_os_form_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.json");
        sample().save(&path)?;
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let fields = json.as_object_mut().context("an object")?;
        if cfg!(windows) {
            fields.remove(DPAPI_TOKEN);
            fields.insert(CLEAR_TOKEN.into(), "bmxa_secret_token".into());
        } else {
            fields.remove(CLEAR_TOKEN);
            fields.insert(DPAPI_TOKEN.into(), "AQAAANCMnd8BFdERjHoAwE".into());
        }
        std::fs::write(&path, serde_json::to_vec(&json)?)?;
        let err = format!("{:#}", Credentials::load(&path).err().context("must fail")?);
        let expected = if cfg!(windows) { "stored in clear" } else { "DPAPI-protected" };
        assert!(err.contains(expected) && err.contains("pair this host again"), "{err}");
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
