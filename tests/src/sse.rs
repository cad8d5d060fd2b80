//! A Server-Sent Events reader for tests: `/api/v1/events` and `GET /bots/{id}/logs?follow=true`.
//! It reads the response body chunk by chunk, parses the `text/event-stream` format (WHATWG
//! HTML §9.2.6: `id:`/`event:`/`data:` fields, comments, any of the three line endings), and
//! hands out whole events with bounded waits — a test waits for the event it expects, it
//! never sleeps.
//!
//! Written here rather than taken from a crate: the SSE client crates pull in their own HTTP
//! stack or reconnect logic; a test wants the raw events of exactly one response, and the
//! format is forty lines.

use std::{collections::VecDeque, time::Duration};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// The `event:` field (`None` means the default type, `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.data).with_context(|| format!("SSE data is not the expected JSON: {}", self.data))
    }
}

/// The incremental `text/event-stream` parser: feed it bytes as they arrive, get events out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line ending.
    after_cr: bool,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    /// The stream's last event id (it persists across events, as in a browser).
    pub last_event_id: Option<String>,
    /// Comment lines seen (`: keep-alive`), for tests of keep-alives.
    pub comments: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `bytes` and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                        events.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_owned());
                self.last_event_id = Some(value.to_owned());
            }
            _ => {} // `retry` and unknown fields: nothing a test needs.
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let id = self.id.take();
        let event = self.event.take();
        // An event without data is not dispatched (only its id counts).
        let data = self.data.take()?;
        Some(SseEvent { id, event, data })
    }
}

/// An open event stream.
pub struct SseStream {
    response: reqwest::Response,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
}

impl SseStream {
    /// Sends the request and checks that the answer is a `200 text/event-stream`.
    pub async fn open(request: reqwest::RequestBuilder) -> anyhow::Result<Self> {
        let response = tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .context("the event stream did not answer within 10 s")??;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status != 200 || !content_type.starts_with("text/event-stream") {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("expected 200 text/event-stream, got {status} `{content_type}`: {body}");
        }
        Ok(Self { response, parser: SseParser::new(), ready: VecDeque::new() })
    }

    /// The stream's last event id so far (what a reconnect sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id.as_deref()
    }

    /// Keep-alive comments received so far.
    pub fn comments(&self) -> u64 {
        self.parser.comments
    }

    /// The next event, waiting at most `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .with_context(|| format!("no SSE event within {timeout:?}"))?
                .context("the event stream failed")?;
            match chunk {
                Some(bytes) => self.ready.extend(self.parser.push(&bytes)),
                None => anyhow::bail!("the event stream ended"),
            }
        }
    }

    /// Skips events until one satisfies `predicate` (bounded by `timeout` in all) and returns it.
    pub async fn wait_for(
        &mut self,
        mut predicate: impl FnMut(&SseEvent) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next_event(left).await.with_context(|| {
                let tail: Vec<&str> = skipped.iter().rev().take(10).map(|e: &SseEvent| e.data.as_str()).collect();
                format!("no matching SSE event within {timeout:?}; last events seen (newest first): {tail:?}")
            })?;
            if predicate(&event) {
                return Ok(event);
            }
            skipped.push(event);
        }
    }

    /// Like [`SseStream::wait_for`], on the events' JSON data parsed as `T` (events whose data
    /// is not a `T` are skipped).
    pub async fn wait_for_json<T: DeserializeOwned>(
        &mut self,
        mut predicate: impl FnMut(&T) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let event = self.wait_for(|e| e.json::<T>().map(|value| predicate(&value)).unwrap_or(false), timeout).await?;
        event.json()
    }
}

#[cfg(test)]
mod tests {
    use super::{SseEvent, SseParser};

    fn event(id: Option<&str>, name: Option<&str>, data: &str) -> SseEvent {
        SseEvent { id: id.map(str::to_owned), event: name.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let mut parser = SseParser::new();
        let events = parser.push(b": keep-alive\n\nid: 1\nevent: bot_state\ndata: {\"a\":1}\n\ndata: x\ndata:y\n\n");
        assert_eq!(events, vec![event(Some("1"), Some("bot_state"), "{\"a\":1}"), event(None, None, "x\ny")]);
        assert_eq!(parser.comments, 1);
        assert_eq!(parser.last_event_id.as_deref(), Some("1"), "the last id persists across events");
    }

    #[test]
    fn events_split_across_chunks_and_any_line_ending() {
        let mut parser = SseParser::new();
        let stream = b"id: 7\r\nevent: e\r\ndata: h\xc3\xa9llo\r\n\r\nid: 8\rdata: two\r\r";
        let mut events = Vec::new();
        for byte in stream {
            events.extend(parser.push(std::slice::from_ref(byte)));
        }
        assert_eq!(events, vec![event(Some("7"), Some("e"), "héllo"), event(Some("8"), None, "two")]);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_but_its_id_counts() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"id: 42\nevent: nothing\n\n").is_empty());
        assert_eq!(parser.last_event_id.as_deref(), Some("42"));
        assert_eq!(parser.push(b"data\n\n"), vec![event(None, None, "")], "a field without a colon has an empty value");
    }
}
