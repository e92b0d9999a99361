//! Response bodies the adapters hand back: a stream guarded by an idle timeout, a stream
//! of chunks produced in memory, and an upstream SSE stream translated event by event.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tollgate_domain::sse::first_event_end;

use crate::ProviderError;

/// Fails the stream when no frame arrives within `idle` of the previous one (or of the
/// start), so a stalled upstream cannot hold a client and a connection forever.
pub(crate) struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    on_timeout: Option<ProviderError>,
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, idle: Duration, on_timeout: ProviderError) -> Self {
        Self { inner, idle, sleep: Box::pin(tokio::time::sleep(idle)), on_timeout: Some(on_timeout) }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes, Error = ProviderError> + Unpin,
{
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        let this = &mut *self;
        if this.on_timeout.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(this.on_timeout.take().map(Err)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.on_timeout.is_none() || self.inner.is_end_stream()
    }
}

/// A body made of chunks already in memory, sent one frame each.
pub(crate) struct Chunks(pub(crate) VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Turns one provider's SSE events into OpenAI `chat.completion.chunk` events.
pub(crate) trait TranslateEvents: Send + Unpin + 'static {
    /// Named in the error of a stream that ends early.
    const PROVIDER: &'static str;

    /// One event's JSON (its `data:` lines joined) in, the OpenAI event(s) it becomes out.
    fn event(&mut self, event: &serde_json::Value) -> Option<Bytes>;

    /// Whether the last event has been translated (`[DONE]` included); the stream ends then.
    fn finished(&self) -> bool;
}

/// Hands one raw SSE event (without its blank line) to `translator` as JSON; comments,
/// `event:` lines without data, and data that is not JSON are skipped.
pub(crate) fn translate_raw<T: TranslateEvents>(translator: &mut T, raw: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(raw).ok()?;
    let data: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    if data.is_empty() {
        return None;
    }
    let event: serde_json::Value = serde_json::from_str(&data).ok()?;
    translator.event(&event)
}

/// An upstream SSE stream translated event by event as frames arrive; an event split across
/// frames waits for its end. An upstream that closes before its last event is an error.
pub(crate) struct TranslatedStream<T> {
    upstream: crate::StreamBody,
    buffer: BytesMut,
    translator: T,
    ready: VecDeque<Bytes>,
    done: bool,
}

impl<T: TranslateEvents> TranslatedStream<T> {
    pub(crate) fn new(upstream: crate::StreamBody, translator: T) -> Self {
        Self { upstream, buffer: BytesMut::new(), translator, ready: VecDeque::new(), done: false }
    }

    fn translate(&mut self, event: &[u8]) {
        if let Some(out) = translate_raw(&mut self.translator, event) {
            self.ready.push_back(out);
        }
    }
}

impl<T: TranslateEvents> Body for TranslatedStream<T> {
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
            if this.done || this.translator.finished() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buffer.extend_from_slice(&data);
                        while let Some(end) = first_event_end(&this.buffer) {
                            let event = this.buffer.split_to(end);
                            this.translate(&event);
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    // A last event may arrive without its blank line before the close.
                    if !this.buffer.is_empty() {
                        let rest = this.buffer.split();
                        this.translate(&rest);
                    }
                    if !this.translator.finished() {
                        return Poll::Ready(Some(Err(ProviderError::Protocol(format!(
                            "{} stream ended before its last event",
                            T::PROVIDER
                        )))));
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

    /// A body that yields one frame and then never another.
    struct Stalls(bool);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = ProviderError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
            if std::mem::replace(&mut self.0, false) {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_stream_fails_after_the_gap() {
        let mut body =
            IdleTimeout::new(Stalls(true), Duration::from_secs(5), ProviderError::Protocol("stalled".into()));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "litellm.APIError: stalled");
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn chunks_come_out_in_order() {
        let body = Chunks(VecDeque::from([Bytes::from("a"), Bytes::from("b")]));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ab");
    }
}
