//! Validation of bot definitions: what serde's types cannot say. Every rule names the field it
//! checks, so a refused definition tells its author exactly what to fix.

use std::collections::BTreeSet;

use botmox_contract::bots::{ExecSpec, RestartSpec, StopSpec};

use crate::http::error::{ApiError, ApiResult};

pub const MAX_NAME: usize = 64;
const MAX_PATH: usize = 4096;
const MAX_ARGS: usize = 256;
const MAX_ARG: usize = 8192;
const MAX_ENV: usize = 256;
const MAX_ENV_VALUE: usize = 32 * 1024;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 64;
const MAX_STOP_TIMEOUT_S: u64 = 3600;
const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
const MAX_WINDOW_S: u64 = 7 * 24 * 3600;
const MAX_RESTARTS: u32 = 10_000;

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, detail)
}

/// `farmer-eu-01`: a letter or digit, then letters, digits, `.`, `_`, `-`; at most 64.
pub fn name(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME {
        return Err(invalid(field, format!("must be at most {MAX_NAME} characters")));
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(invalid(
            field,
            "may contain only letters, digits, `.`, `_` and `-`, and must start with a letter or digit",
        )
        .with_hint("e.g. farmer-eu-01"));
    }
    Ok(())
}

fn text(field: &str, value: &str, max: usize, allow_empty: bool) -> ApiResult<()> {
    if !allow_empty && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("must be at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn env_key(field: &str, key: &str) -> ApiResult<()> {
    let mut chars = key.chars();
    let valid = key.len() <= 256
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(field, format!("`{key}` is not a valid environment variable name (letters, digits, `_`)")))
    }
}

pub fn exec(spec: &ExecSpec) -> ApiResult<()> {
    text("exec.program", &spec.program, MAX_PATH, false)?;
    if spec.args.len() > MAX_ARGS {
        return Err(invalid("exec.args", format!("at most {MAX_ARGS} arguments")));
    }
    for (i, arg) in spec.args.iter().enumerate() {
        if arg.len() > MAX_ARG {
            return Err(invalid(format!("exec.args[{i}]"), format!("must be at most {MAX_ARG} bytes")));
        }
        if arg.contains('\0') {
            return Err(invalid(format!("exec.args[{i}]"), "must not contain NUL"));
        }
    }
    if let Some(cwd) = &spec.cwd {
        text("exec.cwd", cwd, MAX_PATH, false)?;
    }
    if spec.env.len() + spec.secret_env.len() > MAX_ENV {
        return Err(invalid("exec.env", format!("at most {MAX_ENV} variables (env and secret_env together)")));
    }
    for (key, value) in &spec.env {
        env_key(&format!("exec.env.{key}"), key)?;
        if value.len() > MAX_ENV_VALUE || value.contains('\0') {
            return Err(invalid(format!("exec.env.{key}"), format!("must be at most {MAX_ENV_VALUE} bytes, no NUL")));
        }
    }
    for (key, secret) in &spec.secret_env {
        let field = format!("exec.secret_env.{key}");
        env_key(&field, key)?;
        if spec.env.contains_key(key) {
            return Err(invalid(field, "is also set in exec.env; a variable comes from one place"));
        }
        name(&field, secret).map_err(|_| invalid(&field, format!("`{secret}` is not a valid secret name")))?;
    }
    Ok(())
}

pub fn restart(spec: &RestartSpec) -> ApiResult<()> {
    if spec.max_restarts > MAX_RESTARTS {
        return Err(invalid("restart.max_restarts", format!("must be at most {MAX_RESTARTS}")));
    }
    if !(1..=MAX_WINDOW_S).contains(&spec.window_seconds) {
        return Err(invalid("restart.window_seconds", format!("must be between 1 and {MAX_WINDOW_S}")));
    }
    if !(1..=MAX_BACKOFF_MS).contains(&spec.backoff_initial_ms) {
        return Err(invalid("restart.backoff_initial_ms", format!("must be between 1 and {MAX_BACKOFF_MS}")));
    }
    if !(spec.backoff_initial_ms..=MAX_BACKOFF_MS).contains(&spec.backoff_max_ms) {
        return Err(invalid(
            "restart.backoff_max_ms",
            format!("must be between backoff_initial_ms ({}) and {MAX_BACKOFF_MS}", spec.backoff_initial_ms),
        ));
    }
    if spec.stable_after_seconds > MAX_WINDOW_S {
        return Err(invalid("restart.stable_after_seconds", format!("must be at most {MAX_WINDOW_S}")));
    }
    Ok(())
}

pub fn stop(spec: &StopSpec) -> ApiResult<()> {
    if spec.timeout_seconds > MAX_STOP_TIMEOUT_S {
        return Err(invalid("stop.timeout_seconds", format!("must be at most {MAX_STOP_TIMEOUT_S}")));
    }
    Ok(())
}

pub fn tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut seen = BTreeSet::new();
    for (i, tag) in tags.iter().enumerate() {
        let field = format!("tags[{i}]");
        let ok = !tag.is_empty()
            && tag.len() <= MAX_TAG
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '='));
        if !ok {
            return Err(invalid(field, format!("tags are 1 to {MAX_TAG} letters, digits or `._-:=`")));
        }
        if !seen.insert(tag) {
            return Err(invalid(field, format!("`{tag}` appears twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("name", "farmer-eu-01").is_ok());
        assert!(name("name", "a").is_ok());
        assert!(name("name", "").is_err());
        assert!(name("name", "-leading").is_err());
        assert!(name("name", "has space").is_err());
        assert!(name("name", "tab\there").is_err());
        assert!(name("name", &"x".repeat(MAX_NAME)).is_ok());
        assert!(name("name", &"x".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn backoff_bounds() {
        let mut spec = RestartSpec::default();
        assert!(restart(&spec).is_ok());
        spec.backoff_max_ms = spec.backoff_initial_ms - 1;
        assert!(restart(&spec).is_err());
        spec = RestartSpec { window_seconds: 0, ..RestartSpec::default() };
        assert!(restart(&spec).is_err());
    }

    #[test]
    fn secret_env_may_not_shadow_env() {
        let mut spec = ExecSpec {
            program: "python3".into(),
            args: vec![],
            cwd: None,
            env: [("A".to_string(), "1".to_string())].into(),
            secret_env: [("A".to_string(), "pw".to_string())].into(),
        };
        assert!(exec(&spec).is_err());
        spec.env.clear();
        assert!(exec(&spec).is_ok());
        spec.secret_env.insert("1BAD".into(), "pw".into());
        assert!(exec(&spec).is_err());
    }
}
