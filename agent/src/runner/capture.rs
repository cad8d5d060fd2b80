//! Turning a bot's stdout/stderr bytes into log lines: split on `\n` (a trailing `\r` is
//! dropped), invalid UTF-8 replaced, and every line bounded — a longer one is cut and marked,
//! and the rest of it up to the next newline is skipped, so a bot printing one endless line
//! cannot grow the agent's memory. The bytes come from whatever the platform runner hands
//! over as an [`Output`]: the read end of a FIFO on Unix (so bots outlive the agent), an
//! anonymous pipe on Windows (where they never do); the splitting is the same.

use std::{pin::Pin, sync::Arc};

use botmox_contract::logs::LogStream;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The longest line shipped, marker included (the server keeps 16 KiB per line).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
const CUT_MARKER: &str = " …[line cut at 16 KiB]";

/// A stream of a bot's output.
pub type Output = Pin<Box<dyn AsyncRead + Send>>;

/// Where finished lines go (the bot's log sink).
pub trait LineSink: Send + Sync {
    fn line(&self, stream: LogStream, text: String);
}

#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Content bytes kept of a line before it is cut.
    keep: usize,
    /// Inside a line that was cut: skip until the newline.
    skipping: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    /// Lines of at most `max_bytes` bytes, marker included.
    pub fn new(max_bytes: usize) -> Self {
        Self { buf: Vec::new(), keep: max_bytes.saturating_sub(CUT_MARKER.len()).max(1), skipping: false }
    }

    /// Feeds bytes; finished lines are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<String>) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest, ends_line) = match newline {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if self.skipping {
                self.skipping = !ends_line;
                continue;
            }
            let room = self.keep - self.buf.len();
            if chunk.len() > room {
                self.buf.extend_from_slice(&chunk[..room]);
                let mut line = String::from_utf8_lossy(&self.buf).into_owned();
                line.push_str(CUT_MARKER);
                out.push(line);
                self.buf.clear();
                self.skipping = !ends_line;
                continue;
            }
            self.buf.extend_from_slice(chunk);
            if ends_line {
                out.push(self.take_line());
            }
        }
    }

    /// The output ended: a last line without a newline is still a line.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            out.push(self.take_line());
        }
        self.skipping = false;
    }

    fn take_line(&mut self) -> String {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        line
    }
}

/// Reads `output` to its end, handing each line to `sink`.
pub async fn pump(mut output: Output, stream: LogStream, sink: Arc<dyn LineSink>) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 8 * 1024];
    let mut lines = Vec::new();
    loop {
        match output.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => splitter.push(&buf[..n], &mut lines),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "bot output ended with an error");
                break;
            }
        }
        for line in lines.drain(..) {
            sink.line(stream, line);
        }
    }
    splitter.finish(&mut lines);
    for line in lines {
        sink.line(stream, line);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut out);
        }
        splitter.finish(&mut out);
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let lines = split(&[b"hel", b"lo\nwor", b"ld\r\n\n", b"tail"], MAX_LINE_BYTES);
        assert_eq!(lines, ["hello", "world", "", "tail"]);
    }

    #[test]
    fn cuts_long_lines_marks_them_and_skips_their_rest() {
        let max = 64;
        let long = [b'a'; 200];
        let lines = split(&[&long[..100], &long[100..], b"\nnext\n"], max);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with(CUT_MARKER));
        assert!(lines[0].len() <= max, "the marker fits in the bound: {}", lines[0].len());
        assert!(lines[0].starts_with("aaaa"));
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn a_line_exactly_at_the_bound_is_whole() {
        let max = 64;
        let keep = max - CUT_MARKER.len();
        let exact = format!("{}\n", "b".repeat(keep));
        assert_eq!(split(&[exact.as_bytes()], max), ["b".repeat(keep)]);
    }

    #[test]
    fn the_default_bound_is_16_kib() {
        let huge = vec![b'z'; 100_000];
        let lines = split(&[&huge, b"\n"], MAX_LINE_BYTES);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(split(&[b"caf\xff\n"], MAX_LINE_BYTES), ["caf\u{fffd}"]);
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<(LogStream, String)>>);

    impl LineSink for Collect {
        fn line(&self, stream: LogStream, text: String) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push((stream, text));
        }
    }

    #[tokio::test]
    async fn pump_reads_to_the_end() {
        let sink = Arc::new(Collect::default());
        let output: Output = Box::pin(&b"one\ntwo"[..]);
        pump(output, LogStream::Stderr, sink.clone()).await;
        let got = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(got, [(LogStream::Stderr, "one".to_owned()), (LogStream::Stderr, "two".to_owned())]);
    }
}
