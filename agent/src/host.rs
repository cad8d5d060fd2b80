//! Facts about this host that the agent tells the server at pairing and in every `hello`.

/// The agent's version, as the server records it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    /// `linux`, `windows`, …
    pub os: String,
    /// `x86_64`, `aarch64`, …
    pub arch: String,
}

impl HostFacts {
    pub fn detect() -> Self {
        Self { hostname: hostname(), os: std::env::consts::OS.into(), arch: std::env::consts::ARCH.into() }
    }
}

/// The host name, cut to what the server accepts (1 to 253 printable characters).
pub fn hostname() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_default();
    let clean: String = raw.chars().filter(|c| !c.is_control()).take(253).collect();
    if clean.trim().is_empty() {
        "unknown-host".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_never_empty() {
        let facts = HostFacts::detect();
        assert!(!facts.hostname.is_empty() && facts.hostname.len() <= 253);
        assert!(!facts.os.is_empty() && !facts.arch.is_empty());
    }
}
