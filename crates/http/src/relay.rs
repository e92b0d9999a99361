//! Relays an upstream SSE stream to the client as it arrives, putting the alias the client
//! asked for into each chunk's `model`.
//!
//! Frames go out as soon as the events in them are complete; an event split across frames
//! waits only for its own end. When the model already reads as the alias, the upstream's
//! bytes are forwarded without a copy. A failing upstream ends the stream with an
//! OpenAI-shaped error event, as LiteLLM does, because the status line is long gone.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use tollgate_domain::GatewayError;
use tollgate_domain::json::TopLevel;
use tollgate_providers::StreamBody;

/// An event this long without an end is not SSE; stop holding it back and pass it on.
const MAX_PENDING: usize = 16 * 1024 * 1024;

pub(crate) struct AliasRelay {
    upstream: StreamBody,
    /// The alias as a JSON string literal, compared with each chunk's raw `model`.
    alias_json: String,
    pending: BytesMut,
    done: bool,
}

impl AliasRelay {
    pub(crate) fn new(upstream: StreamBody, alias_json: String) -> Self {
        Self { upstream, alias_json, pending: BytesMut::new(), done: false }
    }

    /// Takes a frame of upstream bytes, returns what can be sent now.
    fn process(&mut self, data: Bytes) -> Bytes {
        let whole = if self.pending.is_empty() {
            data
        } else {
            self.pending.extend_from_slice(&data);
            self.pending.split().freeze()
        };
        let complete = last_event_end(&whole).unwrap_or(0);
        if complete < whole.len() {
            if whole.len() - complete > MAX_PENDING {
                return whole;
            }
            self.pending.extend_from_slice(&whole[complete..]);
        }
        let complete = whole.slice(..complete);
        match rewrite_events(&complete, &self.alias_json) {
            Some(rewritten) => Bytes::from(rewritten),
            None => complete,
        }
    }
}

impl Body for AliasRelay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let out = this.process(data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    let error = GatewayError::from(error);
                    tracing::warn!(error = %error.message, "upstream stream failed mid-way");
                    let mut out = BytesMut::from(&this.pending.split()[..]);
                    if !out.is_empty() && !out.ends_with(b"\n\n") {
                        out.extend_from_slice(b"\n\n");
                    }
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&error.to_json());
                    out.extend_from_slice(b"\n\n");
                    return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.pending.split().freeze();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    // An unterminated last event: send it as it came.
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The offset just past the last complete event (`\n\n` or `\r\n\r\n`), if any.
fn last_event_end(bytes: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' && bytes[i + 1] == b'\n' {
            end = Some(i + 2);
            i += 2;
        } else if bytes[i..].starts_with(b"\r\n\r\n") {
            end = Some(i + 4);
            i += 4;
        } else {
            i += 1;
        }
    }
    end
}

/// The events with every `data:` JSON object's top-level `model` set to `alias_json`, or
/// `None` when nothing needed changing.
fn rewrite_events(events: &[u8], alias_json: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied_to = 0;
    let mut line_start = 0;
    while line_start < events.len() {
        let line_end =
            events[line_start..].iter().position(|&b| b == b'\n').map_or(events.len(), |p| line_start + p);
        let line = &events[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(payload) = line.strip_prefix(b"data:") {
            let offset = line_start + 5 + payload.iter().take_while(|b| **b == b' ').count();
            let payload = &events[offset..line_start + line.len()];
            if payload.first() == Some(&b'{')
                && let Ok(top) = TopLevel::parse(payload)
                && top.get("model").is_some_and(|raw| raw.get() != alias_json)
            {
                let buffer = out.get_or_insert_with(|| Vec::with_capacity(events.len() + 64));
                buffer.extend_from_slice(&events[copied_to..offset]);
                buffer.extend_from_slice(&top.rewrite(&[("model", alias_json)]));
                copied_to = offset + payload.len();
            }
        }
        line_start = line_end + 1;
    }
    let mut out = out?;
    out.extend_from_slice(&events[copied_to..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use tollgate_providers::ProviderError;

    /// An upstream that yields the given frames, then optionally an error.
    struct Frames(VecDeque<Result<Bytes, ProviderError>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = ProviderError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::<Bytes>::data)))
        }
    }

    async fn relay(frames: Vec<Result<&'static str, ProviderError>>) -> Vec<Bytes> {
        let upstream =
            Frames(frames.into_iter().map(|f| f.map(|s| Bytes::from_static(s.as_bytes()))).collect());
        let mut relay = AliasRelay::new(upstream.boxed(), "\"alias\"".to_owned());
        let mut out = Vec::new();
        while let Some(frame) = relay.frame().await {
            out.push(frame.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn rewrites_model_in_each_event_frame_by_frame() {
        let out = relay(vec![
            Ok("data: {\"id\":\"1\",\"model\":\"gpt-4o-2024\",\"choices\":[]}\n\n"),
            Ok("data: {\"id\":\"2\",\"model\":\"gpt-4o-2024\"}\n\ndata: [DONE]\n\n"),
        ])
        .await;
        assert_eq!(
            out,
            [
                "data: {\"id\":\"1\",\"model\":\"alias\",\"choices\":[]}\n\n",
                "data: {\"id\":\"2\",\"model\":\"alias\"}\n\ndata: [DONE]\n\n",
            ]
        );
    }

    #[tokio::test]
    async fn joins_an_event_split_across_frames() {
        let out =
            relay(vec![Ok("data: {\"model\":\"x\","), Ok("\"n\":1}\n\n"), Ok("data: [DONE]"), Ok("\n\n")])
                .await;
        assert_eq!(out, ["data: {\"model\":\"alias\",\"n\":1}\n\n", "data: [DONE]\n\n"]);
    }

    #[tokio::test]
    async fn leaves_matching_and_foreign_lines_alone() {
        let input = ": keep-alive\n\nevent: ping\ndata: {\"model\":\"alias\"}\n\ndata: not json\n\n";
        assert_eq!(relay(vec![Ok(input)]).await, [input]);
    }

    #[tokio::test]
    async fn crlf_events_are_recognised() {
        let out = relay(vec![Ok("data: {\"model\":\"x\"}\r\n\r\n")]).await;
        assert_eq!(out, ["data: {\"model\":\"alias\"}\r\n\r\n"]);
    }

    #[tokio::test]
    async fn an_upstream_failure_ends_with_an_error_event() {
        let out = relay(vec![
            Ok("data: {\"model\":\"alias\"}\n\n"),
            Err(ProviderError::Protocol("connection reset".into())),
        ])
        .await;
        assert_eq!(out.len(), 2);
        let event = std::str::from_utf8(&out[1]).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(event.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(json["error"]["message"], "litellm.APIError: connection reset");
        assert_eq!(json["error"]["code"], "502");
    }
}
