//! Newline-delimited JSON streams (one JSON object per line, as Ollama streams its answers),
//! translated line by line into OpenAI SSE events as frames arrive.
//!
//! A line split across frames waits for its end; a line that is not JSON fails the stream
//! with an error naming the provider and quoting the line, rather than being skipped, since
//! a skipped line could be the one carrying the end of the answer or its usage.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use crate::ProviderError;
use crate::body::TranslateEvents;

/// A line this long without its newline is not NDJSON from a model server.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// How much of a bad line an error quotes.
const MAX_QUOTED: usize = 200;

/// Splits bytes into complete lines, holding back a line until its newline arrives.
#[derive(Default)]
pub(crate) struct Lines {
    buffer: BytesMut,
}

impl Lines {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete line without its line ending (`\n` or `\r\n`); blank lines are
    /// skipped.
    pub(crate) fn next_line(&mut self) -> Option<Bytes> {
        while let Some(end) = memchr::memchr(b'\n', &self.buffer) {
            let line = self.buffer.split_to(end + 1).freeze();
            let line = trim(line);
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }

    /// What is left once the stream has ended: a last line sent without its newline.
    pub(crate) fn rest(&mut self) -> Option<Bytes> {
        let rest = trim(self.buffer.split().freeze());
        (!rest.is_empty()).then_some(rest)
    }

    pub(crate) fn pending(&self) -> usize {
        self.buffer.len()
    }
}

fn trim(line: Bytes) -> Bytes {
    let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    line.slice(start..end)
}

/// A line as JSON, or an error that names the provider and quotes the line.
pub(crate) fn parse_line(provider: &str, line: &[u8]) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_slice(line).map_err(|error| {
        let text = String::from_utf8_lossy(line);
        let end = text.char_indices().nth(MAX_QUOTED).map_or(text.len(), |(i, _)| i);
        let ellipsis = if end < text.len() { "…" } else { "" };
        ProviderError::Protocol(format!(
            "{provider} sent a stream line that is not JSON ({error}): {}{ellipsis}",
            &text[..end]
        ))
    })
}

/// An upstream NDJSON stream whose lines `translator` turns into OpenAI events. An upstream
/// that closes before the translator has seen its last line is an error.
pub(crate) struct NdjsonStream<T> {
    upstream: crate::StreamBody,
    lines: Lines,
    translator: T,
    ready: VecDeque<Bytes>,
    /// An error to report once the events before it have gone out.
    failure: Option<ProviderError>,
    done: bool,
}

impl<T: TranslateEvents> NdjsonStream<T> {
    pub(crate) fn new(upstream: crate::StreamBody, translator: T) -> Self {
        Self {
            upstream,
            lines: Lines::default(),
            translator,
            ready: VecDeque::new(),
            failure: None,
            done: false,
        }
    }

    fn translate(&mut self, line: &[u8]) {
        if self.failure.is_some() || self.translator.finished() {
            return;
        }
        match parse_line(T::PROVIDER, line) {
            Ok(value) => {
                if let Some(out) = self.translator.event(&value) {
                    self.ready.push_back(out);
                }
            }
            Err(error) => self.failure = Some(error),
        }
    }
}

impl<T: TranslateEvents> Body for NdjsonStream<T> {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        let this = &mut *self;
        loop {
            if let Some(out) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            if let Some(error) = this.failure.take() {
                this.done = true;
                return Poll::Ready(Some(Err(error)));
            }
            if this.done || this.translator.finished() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.lines.push(&data);
                        while let Some(line) = this.lines.next_line() {
                            this.translate(&line);
                        }
                        if this.lines.pending() > MAX_LINE {
                            this.failure = Some(ProviderError::Protocol(format!(
                                "{} sent a stream line longer than {} MiB",
                                T::PROVIDER,
                                MAX_LINE / (1024 * 1024)
                            )));
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(rest) = this.lines.rest() {
                        this.translate(&rest);
                    }
                    if this.failure.is_none() && !this.translator.finished() {
                        this.failure = Some(ProviderError::Protocol(format!(
                            "{} stream ended before its last line",
                            T::PROVIDER
                        )));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::Value;

    /// Echoes each line's `n` as an event; the line with `done: true` ends the stream.
    #[derive(Default)]
    struct Echo {
        finished: bool,
    }

    impl TranslateEvents for Echo {
        const PROVIDER: &'static str = "echo";

        fn event(&mut self, line: &Value) -> Option<Bytes> {
            self.finished = line["done"] == true;
            Some(Bytes::from(format!("[{}]", line["n"])))
        }

        fn finished(&self) -> bool {
            self.finished
        }
    }

    fn upstream(frames: Vec<Vec<u8>>) -> crate::StreamBody {
        let frames = frames.into_iter().map(|f| Ok::<_, ProviderError>(Frame::data(Bytes::from(f))));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    async fn run(frames: Vec<Vec<u8>>) -> (String, Option<String>) {
        let mut body = NdjsonStream::new(upstream(frames), Echo::default());
        let mut out = String::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => out.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap()),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        (out, error)
    }

    const STREAM: &str = "{\"n\":1,\"text\":\"h\u{e9}llo\"}\n\r\n{\"n\":2}\r\n  \n{\"n\":3,\"done\":true}\n";

    #[tokio::test]
    async fn lines_split_at_every_byte_boundary_come_out_whole() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (out, error) = run(vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()]).await;
            assert_eq!((out.as_str(), error), ("[1][2][3]", None), "cut at {cut}");
        }
        // And one byte per frame, the multi-byte character split too.
        let (out, error) = run(bytes.iter().map(|b| vec![*b]).collect()).await;
        assert_eq!((out.as_str(), error), ("[1][2][3]", None));
    }

    #[tokio::test]
    async fn a_last_line_without_its_newline_is_read() {
        let (out, error) = run(vec![b"{\"n\":1}\n{\"n\":2,\"done\":true}".to_vec()]).await;
        assert_eq!((out.as_str(), error), ("[1][2]", None));
    }

    #[tokio::test]
    async fn a_malformed_line_fails_the_stream_after_the_lines_before_it() {
        let (out, error) = run(vec![b"{\"n\":1}\n{\"n\": oops}\n{\"n\":3,\"done\":true}\n".to_vec()]).await;
        assert_eq!(out, "[1]");
        let error = error.expect("a malformed line is an error");
        assert!(error.starts_with("litellm.APIError: echo sent a stream line that is not JSON ("), "{error}");
        assert!(error.ends_with("): {\"n\": oops}"), "{error}");
    }

    #[tokio::test]
    async fn a_stream_cut_before_its_last_line_is_an_error() {
        let (out, error) = run(vec![b"{\"n\":1}\n{\"n\":2".to_vec()]).await;
        assert_eq!(out, "[1]");
        let error = error.unwrap();
        assert!(error.contains("echo sent a stream line that is not JSON"), "{error}");
        let (out, error) = run(vec![b"{\"n\":1}\n".to_vec()]).await;
        assert_eq!(out, "[1]");
        assert_eq!(error.as_deref(), Some("litellm.APIError: echo stream ended before its last line"));
    }

    #[test]
    fn long_bad_lines_are_quoted_short() {
        let line = format!("{{{}", "x".repeat(1000));
        let ProviderError::Protocol(message) = parse_line("ollama", line.as_bytes()).unwrap_err() else {
            panic!()
        };
        assert!(message.ends_with(&format!("{}…", "x".repeat(MAX_QUOTED - 1))), "{message}");
        assert!(message.len() < 400);
    }
}
