//! Response bodies the adapters hand back: a stream guarded by an idle timeout, and a
//! stream of chunks produced in memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

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
