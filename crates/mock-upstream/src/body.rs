//! The response body type: a whole buffer, or SSE events sent one frame at a time.
//!
//! One enum instead of a boxed body keeps the non-stream hot path allocation-free, and a
//! hand-written SSE body (rather than a channel fed by a task) makes pacing, stalling and
//! cancellation detection exact: the body itself knows when hyper dropped it unfinished.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::Shared;

pub(crate) enum MockBody {
    /// A complete body; `None` once sent.
    Full(Option<Bytes>),
    Sse(SseBody),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(bytes.into()))
    }
}

/// How a stream is paced.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pacing {
    /// Wait this long before every event after the first.
    pub delay: Option<Duration>,
    /// Send this many events, then never another byte.
    pub stall_after: Option<usize>,
}

/// Pre-built SSE events (the last one is OpenAI's `data: [DONE]` or Anthropic's
/// `message_stop`), each sent as its own frame.
pub(crate) struct SseBody {
    events: std::vec::IntoIter<Bytes>,
    pacing: Pacing,
    sent: usize,
    /// Allocated once, on the first delay, then reset for each later one.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the last event went out; a body dropped before that was cancelled by the
    /// client.
    finished: bool,
    shared: Arc<Shared>,
}

impl SseBody {
    pub(crate) fn new(events: Vec<Bytes>, pacing: Pacing, shared: Arc<Shared>) -> Self {
        SseBody {
            finished: events.is_empty(),
            events: events.into_iter(),
            pacing,
            sent: 0,
            sleep: None,
            shared,
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if self.pacing.stall_after.is_some_and(|limit| self.sent >= limit) {
            // Stalling: no waker is registered, so hyper never polls again; the body just
            // sits there until the client closes the connection and hyper drops it.
            return Poll::Pending;
        }
        if let Some(delay) = self.pacing.delay.filter(|_| self.sent > 0) {
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            // Arm the timer for the next event now; it only counts from this frame on.
            sleep.as_mut().reset(tokio::time::Instant::now() + delay);
        }
        let event = self.events.next();
        self.sent += 1;
        if self.events.len() == 0 {
            self.finished = true;
        }
        Poll::Ready(event)
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.stream_cancelled();
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Sse(sse) => sse.poll_event(cx).map(|event| event.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Sse(sse) => sse.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // An exact hint lets hyper send content-length instead of chunked encoding.
            MockBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}
