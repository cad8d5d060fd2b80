//! The long-poll transport of the simulated agent: `GET /api/v1/agent/commands/next?wait=…`
//! in a loop (once `hello` is accepted) and `POST /api/v1/agent/frames` for everything the
//! agent says. The same task also beats the heart.

use std::{future::Future, pin::Pin, time::Duration};

use botmox_contract::protocol::{AgentFrame, FramesOutcome, PolledCommands};
use tokio::sync::watch;

use super::{
    link::{tick, Link, Outgoing},
    Disconnect, FrameError,
};

#[derive(Clone)]
pub(super) struct Endpoint {
    pub client: reqwest::Client,
    pub base_url: String,
    pub token: String,
    pub wait: Duration,
}

/// A request that did not answer 200.
#[derive(Debug)]
struct HttpError {
    status: Option<u16>,
    code: String,
    detail: String,
}

impl HttpError {
    /// The credential is no good any more: the agent is cut off.
    fn cut_off(&self) -> Option<u16> {
        self.status.filter(|s| matches!(s, 401 | 403))
    }

    fn as_frame_error(&self) -> FrameError {
        FrameError { code: self.code.clone(), detail: self.detail.clone(), index: None }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.status, self.code, self.detail)
    }
}

type Polling = Pin<Box<dyn Future<Output = Result<PolledCommands, HttpError>> + Send>>;

pub(super) async fn run(endpoint: Endpoint, mut link: Link, closed: watch::Sender<Option<Disconnect>>) {
    let mut heartbeat = link.heartbeat_timer();
    // Polling starts once the server has taken `hello` (before it, it would refuse the poll).
    let mut polling: Option<Polling> = None;
    let end = loop {
        tokio::select! {
            polled = async { polling.as_mut().expect("guarded by the branch condition").await }, if polling.is_some() => {
                match polled {
                    Ok(polled) => {
                        let mut answer = Vec::new();
                        for envelope in polled.commands {
                            answer.extend(link.shared.on_command(&link, envelope));
                        }
                        for id in polled.cancel {
                            let _ = link.cancels.send(id);
                        }
                        if !answer.is_empty() {
                            if let Err(e) = post_frames(&endpoint, &link, &answer).await {
                                break e.cut_off().map_or_else(|| Disconnect::Lost(e.to_string()), Disconnect::Refused);
                            }
                        }
                        polling = Some(Box::pin(poll_once(endpoint.clone())));
                    }
                    Err(e) => break e.cut_off().map_or_else(|| Disconnect::Lost(e.to_string()), Disconnect::Refused),
                }
            }
            outgoing = link.out.recv() => match outgoing {
                Some(Outgoing::Frames(frames, done)) => {
                    let has_hello = frames.iter().position(|f| matches!(f, AgentFrame::Hello { .. }));
                    match post_frames(&endpoint, &link, &frames).await {
                        Ok(outcome) => {
                            let hello_taken = has_hello.is_some_and(|i| !outcome.refused.iter().any(|r| r.index as usize == i));
                            if hello_taken && polling.is_none() {
                                polling = Some(Box::pin(poll_once(endpoint.clone())));
                            }
                            let _ = done.send(Ok(Some(outcome)));
                        }
                        Err(e) => {
                            let cut_off = e.cut_off();
                            if let Some(status) = cut_off {
                                // Before answering, so the sender sees why.
                                closed.send_replace(Some(Disconnect::Refused(status)));
                            }
                            let _ = done.send(Err(anyhow::anyhow!("POST /agent/frames: {e}")));
                            if let Some(status) = cut_off {
                                break Disconnect::Refused(status);
                            }
                        }
                    }
                }
                Some(Outgoing::Raw(text, done)) => {
                    match post(&endpoint, text).await {
                        Ok(outcome) => {
                            report_refused(&link, &outcome);
                            let _ = done.send(Ok(Some(outcome)));
                        }
                        Err(e) => {
                            let _ = link.errors.send(e.as_frame_error());
                            let _ = done.send(Ok(None));
                        }
                    }
                }
                Some(Outgoing::Close | Outgoing::Drop) | None => break Disconnect::ByAgent,
            },
            () = tick(&mut heartbeat) => {
                if link.heartbeats_on() {
                    if let Err(e) = post_frames(&endpoint, &link, &[link.shared.heartbeat_frame()]).await {
                        if let Some(status) = e.cut_off() {
                            break Disconnect::Refused(status);
                        }
                    }
                }
            }
        }
    };
    closed.send_replace(Some(end));
}

async fn poll_once(endpoint: Endpoint) -> Result<PolledCommands, HttpError> {
    let url = format!("{}/api/v1/agent/commands/next?wait={}", endpoint.base_url, endpoint.wait.as_secs());
    let request =
        endpoint.client.get(url).bearer_auth(&endpoint.token).timeout(endpoint.wait + Duration::from_secs(15));
    let response = request.send().await.map_err(transport_error)?;
    read_json(response).await
}

/// Posts frames; refused ones go to the error channel as well.
async fn post_frames(endpoint: &Endpoint, link: &Link, frames: &[AgentFrame]) -> Result<FramesOutcome, HttpError> {
    let body = serde_json::to_string(frames).map_err(|e| HttpError {
        status: None,
        code: "sim_encode".into(),
        detail: e.to_string(),
    })?;
    let outcome = post(endpoint, body).await.inspect_err(|e| {
        let _ = link.errors.send(e.as_frame_error());
    })?;
    report_refused(link, &outcome);
    Ok(outcome)
}

fn report_refused(link: &Link, outcome: &FramesOutcome) {
    for refused in &outcome.refused {
        let _ = link.errors.send(FrameError {
            code: refused.code.clone(),
            detail: refused.detail.clone(),
            index: Some(refused.index),
        });
    }
}

async fn post(endpoint: &Endpoint, body: String) -> Result<FramesOutcome, HttpError> {
    let request = endpoint
        .client
        .post(format!("{}/api/v1/agent/frames", endpoint.base_url))
        .bearer_auth(&endpoint.token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(Duration::from_secs(30))
        .body(body);
    let response = request.send().await.map_err(transport_error)?;
    read_json(response).await
}

async fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, HttpError> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(transport_error)?;
    if status != 200 {
        // A problem+json body names what went wrong.
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(HttpError {
            status: Some(status),
            code: problem["code"].as_str().unwrap_or("http_error").to_owned(),
            detail: problem["detail"]
                .as_str()
                .map_or_else(|| String::from_utf8_lossy(&bytes).into_owned(), str::to_owned),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| HttpError {
        status: Some(status),
        code: "sim_unreadable_answer".into(),
        detail: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
    })
}

fn transport_error(e: reqwest::Error) -> HttpError {
    HttpError { status: None, code: "transport".into(), detail: e.to_string() }
}
