//! `pair` (exchange a one-time code for this host's identity and token) and `unpair`
//! (forget them, and stop the bots nobody could control any more). Every failure is one line
//! that says what to do: a wrong URL, a server that is not botmox, each refusal of the code.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use botmox_contract::{
    agents::{PairRequest, PairResponse},
    problem::{Problem, CONTENT_TYPE},
};
use chrono::Utc;

use crate::{config::Credentials, host, paths::AgentDir, runner, state_file::StateFile};

pub struct PairOptions {
    pub server: String,
    pub code: String,
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
}

/// Pairs this host; returns the stored credentials.
pub async fn pair(dir: &AgentDir, options: PairOptions) -> Result<Credentials, String> {
    if let Some(existing) = Credentials::load(&dir.credentials()).map_err(|e| format!("{e:#}"))? {
        return Err(format!(
            "this host is already paired with {} as agent {}: run `botmox-agent unpair` first",
            existing.server, existing.agent_id
        ));
    }
    let server = options.server.trim_end_matches('/').to_owned();
    let ca_file = match options.ca_file {
        Some(path) => Some(std::path::absolute(&path).map_err(|e| format!("CA file {}: {e}", path.display()))?),
        None => None,
    };
    let tls = crate::tls::client_config(ca_file.as_deref()).map_err(|e| format!("{e:#}"))?;
    let client = crate::tls::http_client(&tls, Duration::from_secs(30)).map_err(|e| format!("{e:#}"))?;
    let facts = host::HostFacts::detect();
    let request = PairRequest {
        code: options.code.trim().to_owned(),
        // The server names a new agent after the pairing code's name, else after the
        // hostname it is given at pairing; the real hostname follows in the first `hello`.
        // So `--name` travels as the pairing hostname (the pairing request has no name).
        hostname: options.name.clone().unwrap_or_else(|| facts.hostname.clone()),
        os: facts.os,
        arch: facts.arch,
        version: host::VERSION.into(),
        labels: options.labels.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let url = format!("{server}/api/v1/agents/pair");
    let response = client.post(&url).json(&request).send().await.map_err(|e| unreachable_message(&server, &e))?;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CONTENT_TYPE));
    let body = response.bytes().await.map_err(|e| unreachable_message(&server, &e))?;
    if status.as_u16() == 201 {
        let paired: PairResponse = serde_json::from_slice(&body)
            .map_err(|_| format!("{server} answered the pairing, but not like a botmox server: check the URL"))?;
        let now = Utc::now();
        let credentials = Credentials {
            server: server.clone(),
            agent_id: paired.agent_id,
            agent_token: paired.agent_token,
            ca_file,
            server_settings: Some(paired.server_settings),
            paired_at: now,
            token_since: now,
        };
        dir.create().map_err(|e| format!("cannot create {}: {e}", dir.root().display()))?;
        credentials.save(&dir.credentials()).map_err(|e| format!("{e:#}"))?;
        return Ok(credentials);
    }
    match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) if is_problem => Err(refusal(&problem)),
        _ => Err(not_botmox(&client, &server, status).await),
    }
}

/// One line per refusal code, saying what to do.
fn refusal(problem: &Problem) -> String {
    match problem.code.as_str() {
        "pairing_code_invalid" => {
            "pairing code not recognised: check it, or create a new one (panel: Agents → Pair agent)".into()
        }
        "pairing_code_used" => "this pairing code was already used: create a new one and pair again".into(),
        "pairing_code_expired" => "this pairing code has expired: create a new one and pair again".into(),
        "rate_limited" => "too many pairing attempts from this address: wait a minute, then try again".into(),
        code => {
            let field = problem.field.as_deref().map(|f| format!(" ({f})")).unwrap_or_default();
            format!("the server refused the pairing: {}{field} [{code}]", problem.detail)
        }
    }
}

/// The answer was not botmox's: is there a botmox server at this URL at all?
async fn not_botmox(client: &reqwest::Client, server: &str, status: reqwest::StatusCode) -> String {
    let healthz = client.get(format!("{server}/healthz")).send().await;
    let looks_like_botmox = match healthz {
        Ok(response) if response.status().is_success() => response
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|body| body.get("status").is_some() && body.get("version").is_some()),
        _ => false,
    };
    if looks_like_botmox {
        format!("{server} answered the pairing with HTTP {status} and no explanation: check the URL (no path after the host)")
    } else {
        format!("{server} does not look like a botmox server (HTTP {status}, no botmox /healthz): check the URL")
    }
}

/// "Cannot reach …" with the innermost cause (connection refused, DNS, TLS …).
fn unreachable_message(server: &str, error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let what = if error.is_timeout() { "timed out".to_owned() } else { cause.to_string() };
    format!("cannot reach {server}: {what}")
}

/// What `unpair` did.
pub struct Unpaired {
    pub server: Option<String>,
    pub bots_stopped: usize,
}

/// Forgets the credentials; bots left running are stopped (nobody could control them any
/// more), the state, journal and transitions are cleared. Refused while an agent runs with this dir.
pub async fn unpair(dir: &AgentDir) -> Result<Unpaired, String> {
    if crate::status::fetch(dir).await.is_some() {
        return Err("a botmox-agent is running with this agent dir: stop it first, then unpair".into());
    }
    let credentials = Credentials::load(&dir.credentials()).map_err(|e| format!("{e:#}"))?;
    let doc = StateFile::read(&dir.state()).map_err(|e| format!("{e:#}"))?;
    let mut bots_stopped = 0;
    for (id, record) in &doc.bots {
        let Some(process) = &record.process else { continue };
        if let Some((mut adopted, _)) = runner::adopt(process.pid, process.start_ticks, *id, &dir.run_dir()) {
            adopted.terminate(Duration::from_secs(record.spec.stop.timeout_seconds)).await;
            bots_stopped += 1;
        }
    }
    for path in [dir.credentials(), dir.state(), dir.journal(), dir.transitions(), dir.status_addr()] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {}: {e}", path.display()));
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir_all(dir.run_dir());
    Ok(Unpaired { server: credentials.map(|c| c.server), bots_stopped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(code: &str) -> Problem {
        Problem {
            type_uri: format!("urn:botmox:problem:{code}"),
            title: "t".into(),
            status: 400,
            code: code.into(),
            detail: "labels.x: bad".into(),
            hint: None,
            field: Some("labels.x".into()),
            instance: None,
            errors: Vec::new(),
        }
    }

    #[test]
    fn every_refusal_says_what_to_do_in_one_line() {
        for code in
            ["pairing_code_invalid", "pairing_code_used", "pairing_code_expired", "rate_limited", "invalid_field"]
        {
            let message = refusal(&problem(code));
            assert!(!message.contains('\n'), "{message}");
            assert!(!message.is_empty());
        }
        assert!(refusal(&problem("pairing_code_expired")).contains("expired"));
        assert!(refusal(&problem("invalid_field")).contains("labels.x"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let agent_dir = AgentDir::resolve(Some(dir.path().to_path_buf())).map_err(anyhow::Error::msg)?;
        // Bind and drop: a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let options = PairOptions {
            server: format!("http://127.0.0.1:{port}"),
            code: "K7QX-M2PD-9HFA".into(),
            name: None,
            labels: Vec::new(),
            ca_file: None,
        };
        let err = pair(&agent_dir, options).await.err().ok_or_else(|| anyhow::anyhow!("must fail"))?;
        assert!(err.starts_with("cannot reach http://127.0.0.1:"), "{err}");
        assert!(!agent_dir.credentials().exists(), "nothing stored");
        Ok(())
    }
}
