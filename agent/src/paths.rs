//! Where the agent keeps its files. Only the credentials file exists so far:
//! `%APPDATA%\botmox\agent.json` on Windows, `$XDG_CONFIG_HOME/botmox/agent.json` or
//! `~/.config/botmox/agent.json` elsewhere. Plain std instead of the `dirs` crate: these
//! two rules are all we need, and they stay visible here.

use std::path::PathBuf;

const APP_DIR: &str = "botmox";
const CREDENTIALS_FILE: &str = "agent.json";

/// The path of this host's credentials file (which may not exist).
pub fn credentials_file() -> Result<PathBuf, String> {
    config_dir(|name| std::env::var_os(name).map(PathBuf::from)).map(|dir| dir.join(APP_DIR).join(CREDENTIALS_FILE))
}

/// The per-user config directory, from the environment as given by `var`.
fn config_dir(var: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf, String> {
    // Empty or relative values are ignored, as the XDG spec requires.
    let absolute = |name: &str| var(name).filter(|p| p.is_absolute());
    if cfg!(windows) {
        return absolute("APPDATA").ok_or_else(|| "APPDATA is not set".to_owned());
    }
    absolute("XDG_CONFIG_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".config")))
        .ok_or_else(|| "neither XDG_CONFIG_HOME nor HOME is set".to_owned())
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<PathBuf> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| PathBuf::from(v))
    }

    #[test]
    fn prefers_xdg_config_home() {
        let dir = config_dir(env(&[("XDG_CONFIG_HOME", "/x/cfg"), ("HOME", "/home/u")]));
        assert_eq!(dir, Ok(PathBuf::from("/x/cfg")));
    }

    #[test]
    fn falls_back_to_home_dot_config() {
        assert_eq!(config_dir(env(&[("HOME", "/home/u")])), Ok(PathBuf::from("/home/u/.config")));
        let relative_xdg = env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(config_dir(relative_xdg), Ok(PathBuf::from("/home/u/.config")));
    }

    #[test]
    fn errors_without_any_home() {
        assert!(config_dir(env(&[])).is_err());
    }
}
