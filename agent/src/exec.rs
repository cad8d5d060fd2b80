//! `agent.exec`: a one-off program with captured output (payload `{program, args?, cwd?,
//! timeout_seconds?}`), only on an agent started with `run --allow-exec`. Output is bounded
//! (the rest is read and dropped, so the program never blocks on a full pipe), the run is
//! bounded by a timeout, and a `cancel` kills it — its whole process group on Unix, its Job
//! Object on Windows.

use std::{process::Stdio, time::Duration};

use serde::Deserialize;
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    sync::watch,
};

use crate::bots::actor::Reply;

/// Bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT: usize = 64 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecPayload {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

/// Runs the program described by `payload`; `cancel` turning true kills it.
pub async fn run(payload: &serde_json::Value, mut cancel: watch::Receiver<bool>) -> Reply {
    let payload: ExecPayload =
        serde_json::from_value(payload.clone()).map_err(|e| format!("agent.exec payload is invalid: {e}"))?;
    let timeout = payload.timeout_seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs).min(MAX_TIMEOUT);
    let mut command = tokio::process::Command::new(&payload.program);
    command.args(&payload.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.kill_on_drop(true);
    if let Some(cwd) = &payload.cwd {
        command.current_dir(cwd);
    }
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(unix)]
    let mut child =
        command.spawn().map_err(|e| crate::runner::describe_spawn_error(&payload.program, &e).to_string())?;
    #[cfg(unix)]
    let tree = child.id();
    // Windows: the program and all it starts live in a kill-on-close job, so `kill_tree` (and
    // dropping the job at the end of this function) takes the whole tree.
    #[cfg(windows)]
    let (mut child, tree) =
        crate::win32::spawn_in_job(&mut command, windows_sys::Win32::System::Threading::CREATE_NO_WINDOW)
            .map_err(|e| crate::runner::describe_spawn_error(&payload.program, &e).to_string())?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let started = std::time::Instant::now();
    let outputs = async { tokio::join!(read_bounded(stdout), read_bounded(stderr)) };
    let finished = async {
        let (out, err) = outputs.await;
        (child.wait().await, out, err)
    };
    let outcome = tokio::select! {
        done = finished => Ok(done),
        () = tokio::time::sleep(timeout) => Err(format!("timed out after {} s: killed", timeout.as_secs())),
        () = cancelled(&mut cancel) => Err("cancelled: killed".to_owned()),
    };
    let (status, (stdout, out_cut), (stderr, err_cut)) = match outcome {
        Ok(done) => done,
        Err(reason) => {
            kill_tree(tree);
            return Err(reason);
        }
    };
    let status = status.map_err(|e| format!("waiting for the program failed: {e}"))?;
    kill_tree(tree);
    let (code, signal) = (status.code(), exit_signal(&status));
    let result = json!({
        "exit_code": code,
        "signal": signal,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": out_cut || err_cut,
        "duration_ms": started.elapsed().as_millis() as u64,
    });
    if code == Some(0) {
        Ok(result)
    } else {
        let how = code.map_or_else(|| format!("signal {}", signal.unwrap_or_default()), |c| format!("code {c}"));
        Err(format!("{} exited with {how}: {}", payload.program, tail(&stderr)))
    }
}

/// The signal that ended the program (Unix only).
fn exit_signal(status: &std::process::ExitStatus) -> Option<i32> {
    #[cfg(unix)]
    return std::os::unix::process::ExitStatusExt::signal(status);
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads to the end, keeping the first [`MAX_OUTPUT`] bytes; `true` if more were dropped.
async fn read_bounded(stream: Option<impl AsyncRead + Unpin>) -> (String, bool) {
    let Some(mut stream) = stream else { return (String::new(), false) };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut cut = false;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

/// The last line of `text`, short, for an error message.
fn tail(text: &str) -> String {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(300).collect()
}

/// Kills what is left of the program's group (its own children included).
#[cfg(unix)]
fn kill_tree(pid: Option<u32>) {
    if let Some(pid) = pid {
        crate::runner::kill_orphan_group(pid);
    }
}

/// Kills what is left of the program's job (its own children included).
#[cfg(windows)]
fn kill_tree(job: crate::win32::Job) {
    if let Err(e) = job.terminate(1) {
        tracing::debug!(error = %e, "cannot terminate an agent.exec job");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_cancel() -> watch::Receiver<bool> {
        watch::channel(false).1
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let payload = json!({ "program": "sh", "args": ["-c", "echo hello; echo oops >&2"] });
        let result = run(&payload, no_cancel()).await.expect("runs");
        assert_eq!((result["exit_code"].as_i64(), result["stdout"].as_str()), (Some(0), Some("hello\n")));
        assert_eq!(result["stderr"], "oops\n");
        let failed = run(&json!({ "program": "sh", "args": ["-c", "echo bad >&2; exit 4"] }), no_cancel()).await;
        assert_eq!(failed, Err("sh exited with code 4: bad".into()));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn bounds_output() {
        let payload = json!({ "program": "sh", "args": ["-c", "head -c 200000 /dev/zero | tr '\\0' a"] });
        let result = run(&payload, no_cancel()).await.expect("runs");
        assert_eq!(result["stdout"].as_str().map(str::len), Some(MAX_OUTPUT));
        assert_eq!(result["truncated"], true);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn cancel_and_timeout_kill_it() {
        let (tx, rx) = watch::channel(false);
        let running = tokio::spawn(async move { run(&json!({ "program": "sleep", "args": ["30"] }), rx).await });
        tx.send_replace(true);
        let reply = tokio::time::timeout(Duration::from_secs(10), running).await.expect("bounded").expect("joins");
        assert_eq!(reply, Err("cancelled: killed".into()));
        let timed = run(&json!({ "program": "sleep", "args": ["30"], "timeout_seconds": 0 }), no_cancel()).await;
        assert!(timed.is_err_and(|e| e.contains("timed out")));
    }

    #[cfg(windows)]
    #[tokio::test]
    async fn captures_output_and_exit_code_on_windows() {
        let payload = json!({ "program": "cmd", "args": ["/C", "echo hello& echo oops>&2"] });
        let result = run(&payload, no_cancel()).await.expect("runs");
        assert_eq!((result["exit_code"].as_i64(), result["stdout"].as_str()), (Some(0), Some("hello\r\n")));
        assert_eq!(result["stderr"], "oops\r\n");
        let failed = run(&json!({ "program": "cmd", "args": ["/C", "echo bad>&2& exit 4"] }), no_cancel()).await;
        assert_eq!(failed, Err("cmd exited with code 4: bad".into()));
    }

    #[cfg(windows)]
    #[tokio::test]
    async fn bounds_output_on_windows() {
        let line = "0123456789012345678901234567890123456789";
        let payload = json!({ "program": "cmd", "args": ["/C", format!("for /L %i in (1,1,3000) do @echo {line}")] });
        let result = run(&payload, no_cancel()).await.expect("runs");
        assert_eq!(result["stdout"].as_str().map(str::len), Some(MAX_OUTPUT));
        assert_eq!(result["truncated"], true);
    }

    /// The program and the child it started are in one job: cancel and timeout end both,
    /// long before the 30 pings would.
    #[cfg(windows)]
    #[tokio::test]
    async fn cancel_and_timeout_kill_it_on_windows() {
        let tree =
            json!({ "program": "cmd", "args": ["/C", "start /B ping -n 30 127.0.0.1 >NUL & ping -n 30 127.0.0.1"] });
        let started = std::time::Instant::now();
        let (tx, rx) = watch::channel(false);
        let payload = tree.clone();
        let running = tokio::spawn(async move { run(&payload, rx).await });
        tx.send_replace(true);
        let reply = tokio::time::timeout(Duration::from_secs(10), running).await.expect("bounded").expect("joins");
        assert_eq!(reply, Err("cancelled: killed".into()));
        let mut timed_out = tree;
        timed_out["timeout_seconds"] = json!(1);
        let timed = run(&timed_out, no_cancel()).await;
        assert!(timed.is_err_and(|e| e.contains("timed out")));
        assert!(started.elapsed() < Duration::from_secs(20), "killed, not waited for: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn refuses_bad_payloads_and_missing_programs() {
        assert!(run(&json!({ "args": [] }), no_cancel()).await.is_err());
        let missing = run(&json!({ "program": "/no/such/program" }), no_cancel()).await;
        assert!(missing.is_err_and(|e| e.contains("not found")));
    }
}
