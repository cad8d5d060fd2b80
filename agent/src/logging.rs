//! The agent's own log: human-readable lines on stderr and, for `run`, JSON lines in a daily
//! rotating file in the agent dir (`logs/agent.YYYY-MM-DD.log`, the last 7 kept).
//!
//! **Secrets never reach a log.** The agent does not log secret values by construction (it
//! logs env *names*, never values). As a second line of defence, every secret value the agent
//! holds is registered here and any log output containing one has it replaced with
//! `[redacted]` before it is written, whichever layer produced it.

use std::{
    io::Write,
    path::Path,
    sync::{OnceLock, RwLock},
};

use tracing_subscriber::{
    fmt::MakeWriter, layer::SubscriberExt as _, util::SubscriberInitExt as _, EnvFilter, Layer as _,
};

/// Values shorter than this are not redacted: replacing every "a" would make logs unreadable
/// while protecting nothing a guess would not find.
pub(crate) const MIN_SECRET_LEN: usize = 3;
const REDACTED: &str = "[redacted]";
/// Daily files kept.
const KEEP_FILES: usize = 7;

fn secrets() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(RwLock::default)
}

/// Registers secret values so that no log line ever shows them.
pub fn register_secrets<'a>(values: impl IntoIterator<Item = &'a String>) {
    let mut known = secrets().write().unwrap_or_else(|p| p.into_inner());
    for value in values {
        if value.len() >= MIN_SECRET_LEN && !known.contains(value) {
            known.push(value.clone());
        }
    }
    // Longest first, so a secret containing another is replaced whole.
    known.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// `text` with every registered secret value replaced.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    replace_secrets(text, &secrets().read().unwrap_or_else(|p| p.into_inner()), REDACTED)
}

/// `text` with every value of `known` (longest first) replaced by `mask`.
pub(crate) fn replace_secrets<'t>(text: &'t str, known: &[String], mask: &str) -> std::borrow::Cow<'t, str> {
    if !known.iter().any(|secret| text.contains(secret.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for secret in known {
        out = out.replace(secret.as_str(), mask);
    }
    std::borrow::Cow::Owned(out)
}

/// Wraps a writer factory so everything written through it is redacted.
pub struct Redacting<M>(pub M);

pub struct RedactingWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    // The fmt layer writes each event in one call, so a secret is never split across writes.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match redact(&text) {
            std::borrow::Cow::Borrowed(_) => self.0.write_all(buf)?,
            std::borrow::Cow::Owned(clean) => self.0.write_all(clean.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("BOTMOX_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logging for `run`: stderr plus the rotating JSON file in `logs_dir`.
pub fn init_run(logs_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(logs_dir)?;
    let file = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("agent")
        .filename_suffix("log")
        .max_log_files(KEEP_FILES)
        .build(logs_dir)?;
    let file_layer = tracing_subscriber::fmt::layer()
        .json()
        .with_ansi(false)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(Redacting(file))
        .with_filter(filter());
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .compact()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(Redacting(std::io::stderr))
        .with_filter(filter());
    tracing_subscriber::registry().with(file_layer).with(stderr_layer).try_init()?;
    Ok(())
}

/// Logging for the short commands (`pair`, `status`, …): warnings on stderr only.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("BOTMOX_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(Redacting(std::io::stderr))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_redacted_in_any_output() -> std::io::Result<()> {
        register_secrets([&"s3cr3t-value-xyz".to_owned(), &"ab".to_owned()]);
        assert_eq!(redact("password=s3cr3t-value-xyz;"), "password=[redacted];");
        assert_eq!(redact("ab stays: too short to mean anything"), "ab stays: too short to mean anything");
        let mut out = Vec::new();
        RedactingWriter(&mut out).write_all(b"{\"msg\":\"got s3cr3t-value-xyz\"}\n")?;
        assert_eq!(String::from_utf8_lossy(&out), "{\"msg\":\"got [redacted]\"}\n");
        Ok(())
    }
}
