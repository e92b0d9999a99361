//! Relays an upstream SSE stream to the client as it arrives, putting the alias the client
//! asked for into each chunk's `model`, and, when metered, taking the usage chunk's counts
//! for spend (and removing that chunk when only the gateway asked for it).
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
use tollgate_domain::json::top_level_value_span;
use tollgate_domain::pricing::Usage;
use tollgate_domain::sse::last_event_end;
use tollgate_providers::StreamBody;
use tollgate_router::Ticket;

use crate::estimate::Estimator;
use crate::spend::{Meter, has_no_choices, usage_in};

/// An event this long without an end is not SSE; stop holding it back and pass it on.
const MAX_PENDING: usize = 16 * 1024 * 1024;
/// Ready upstream frames are merged into one client frame up to this size.
const MAX_BATCH: usize = 64 * 1024;
/// At most this many self-wakes gather one batch, however fast the upstream trickles.
const MAX_YIELDS: u8 = 24;
/// A batch is sent once this many yield rounds in a row bring nothing new: hyper's client
/// connection task needs about two rounds to hand over each chunk it has already read.
const IDLE_ROUNDS: u8 = 2;

/// Output gathered in one poll: the first piece is kept as it is (no copy), later ones
/// are appended to it.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    joined: BytesMut,
}

impl Batch {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &self.first {
            None if self.joined.is_empty() => self.first = Some(data),
            _ => {
                if let Some(first) = self.first.take() {
                    self.joined.extend_from_slice(&first);
                }
                self.joined.extend_from_slice(&data);
            }
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.joined.len(), Bytes::len)
    }

    fn take(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| (!self.joined.is_empty()).then(|| self.joined.split().freeze()))
    }
}

/// The usage of a metered stream goes to `meter`; `strip` removes the usage-only chunk,
/// which the gateway asked the upstream for on the client's behalf.
struct UsageTap {
    meter: Option<Meter>,
    strip: bool,
    /// Keeps the stream's text until the upstream reports usage, for an estimate if it never
    /// does.
    estimator: Option<Estimator>,
}

impl UsageTap {
    /// Accounts for a stream that ended (or was cut off) without reporting usage, from its
    /// text. Counting may build a tokenizer (a fraction of a second, once), so it runs on a
    /// blocking thread, never on the worker relaying streams.
    fn settle(&mut self) {
        let (Some(meter), Some(estimator)) = (self.meter.take(), self.estimator.take()) else { return };
        let count = move || {
            let mut meter = meter;
            meter.record_estimated(&estimator.stream_usage());
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(count)),
            Err(_) => count(),
        }
    }
}

pub(crate) struct AliasRelay {
    upstream: StreamBody,
    tap: Option<UsageTap>,
    /// The router's ticket for this call: the first event marks the time to first token,
    /// the end reports the usage.
    ticket: Option<Ticket>,
    /// The usage the stream reported, for the ticket.
    usage: Option<Usage>,
    /// Told when the first token arrives (the time-to-first-token metric and log field).
    progress: Option<std::sync::Arc<crate::observe::Progress>>,
    /// The alias as a JSON string literal, compared with each chunk's raw `model`.
    alias_json: String,
    pending: BytesMut,
    /// Output gathered but not yet sent.
    batch: Batch,
    yields: u8,
    idle_rounds: u8,
    done: bool,
}

impl AliasRelay {
    pub(crate) fn new(upstream: StreamBody, alias_json: String) -> Self {
        Self {
            upstream,
            tap: None,
            ticket: None,
            usage: None,
            progress: None,
            alias_json,
            pending: BytesMut::new(),
            batch: Batch::default(),
            yields: 0,
            idle_rounds: 0,
            done: false,
        }
    }

    /// Accounts for the stream's usage with `meter`; `strip` hides the usage chunk.
    pub(crate) fn metered(mut self, meter: Meter, strip: bool) -> Self {
        self.tap = Some(UsageTap { meter: Some(meter), strip, estimator: None });
        self
    }

    /// Estimates the usage with `estimator` if the stream reports none (metered relays only).
    pub(crate) fn estimating(mut self, estimator: Estimator) -> Self {
        if let Some(tap) = &mut self.tap {
            tap.estimator = Some(estimator);
        }
        self
    }

    /// Reports the stream's first event and its end (with its usage, when the relay is
    /// metered) to the router through `ticket`.
    pub(crate) fn tracked(mut self, ticket: Ticket) -> Self {
        self.ticket = Some(ticket).filter(Ticket::is_tracked);
        self
    }

    /// Tells `progress` when the first token arrives.
    pub(crate) fn observed(mut self, progress: &std::sync::Arc<crate::observe::Progress>) -> Self {
        self.progress = Some(std::sync::Arc::clone(progress));
        self
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
        let mut complete = whole.slice(..complete);
        if let Some(estimator) = self.tap.as_mut().and_then(|tap| tap.estimator.as_mut()) {
            estimator.keep(&complete);
        }
        if let Some(tap) = &mut self.tap
            && reports_usage(&complete)
        {
            let (usage, kept) = take_usage(&complete, tap.strip);
            if let Some(usage) = usage
                && let Some(mut meter) = tap.meter.take()
            {
                tap.estimator = None;
                meter.record(&usage);
                self.usage = Some(usage);
            }
            if let Some(kept) = kept {
                complete = Bytes::from(kept);
            }
        }
        match rewrite_events(&complete, &self.alias_json) {
            Some(rewritten) => Bytes::from(rewritten),
            None => complete,
        }
    }
}

/// A stream cut short (the client left, the upstream broke) is still accounted for: from
/// its usage if that arrived, else from the text it carried.
impl Drop for AliasRelay {
    fn drop(&mut self) {
        if let Some(tap) = &mut self.tap {
            tap.settle();
        }
    }
}

impl Body for AliasRelay {
    type Data = Bytes;
    type Error = Infallible;

    /// Sends whatever the upstream has ready, merged into one frame: events that arrived
    /// together leave together (one write instead of one per event), and nothing waits for
    /// events that have not arrived.
    ///
    /// hyper's client hands a body over one chunk per poll of its connection task, so an
    /// upstream read holding eight events looks like eight separate frames here. When the
    /// upstream is not ready right after a frame, the relay yields (a self-wake, no timer)
    /// to let that task pass on what it already read, and sends the batch once
    /// `IDLE_ROUNDS` rounds bring nothing new. A real pause between tokens therefore costs
    /// a few scheduler rounds (microseconds), while a burst costs one write, not one per event.
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        while !this.done && this.batch.len() < MAX_BATCH {
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => {
                    if this.batch.len() == 0 {
                        return Poll::Pending;
                    }
                    if this.idle_rounds < IDLE_ROUNDS && this.yields < MAX_YIELDS {
                        this.idle_rounds += 1;
                        this.yields += 1;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    break;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if let Some(ticket) = &mut this.ticket {
                            ticket.first_token();
                        }
                        if let Some(progress) = this.progress.take() {
                            progress.first_token();
                        }
                        let out = this.process(data);
                        this.batch.push(out);
                        this.idle_rounds = 0;
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    // A broken stream says nothing about latency or usage; it only ends.
                    this.ticket = None;
                    let error = GatewayError::from(error);
                    tracing::warn!(error = %error.message, "upstream stream failed mid-way");
                    let mut out = BytesMut::from(&this.pending.split()[..]);
                    if !out.is_empty() && !out.ends_with(b"\n\n") {
                        out.extend_from_slice(b"\n\n");
                    }
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&error.to_json());
                    out.extend_from_slice(b"\n\n");
                    this.batch.push(out.freeze());
                }
                Poll::Ready(None) => {
                    this.done = true;
                    // An unterminated last event goes out as it came.
                    this.batch.push(this.pending.split().freeze());
                    if let Some(ticket) = this.ticket.take() {
                        ticket.finish(this.usage.as_ref());
                    }
                    if let Some(tap) = &mut this.tap {
                        tap.settle();
                    }
                }
            }
        }
        this.yields = 0;
        this.idle_rounds = 0;
        match this.batch.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None if this.done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Whether some event may carry a usage object: a `"usage":` key followed by `{` (OpenAI
/// sends `"usage":null` on every chunk but the last once usage is asked for, and those
/// need no parsing).
fn reports_usage(events: &[u8]) -> bool {
    memchr::memmem::find_iter(events, b"\"usage\":")
        .any(|at| events[at + 8..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

/// The `data:` lines of `events`: where each line starts, where its payload lies, and where
/// the next line starts.
fn data_lines(events: &[u8]) -> impl Iterator<Item = (usize, std::ops::Range<usize>, usize)> + '_ {
    let mut next = 0;
    std::iter::from_fn(move || {
        while next < events.len() {
            let start = next;
            let end = memchr::memchr(b'\n', &events[start..]).map_or(events.len(), |p| start + p);
            next = (end + 1).min(events.len());
            let line = &events[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(payload) = line.strip_prefix(b"data:") {
                let offset = start + 5 + payload.iter().take_while(|b| **b == b' ').count();
                return Some((start, offset..start + line.len(), next));
            }
        }
        None
    })
}

/// The usage reported in `events`, and (when `strip`) the events without the usage-only
/// chunk, or `None` when nothing was removed.
fn take_usage(events: &[u8], strip: bool) -> (Option<Usage>, Option<Vec<u8>>) {
    let mut usage = None;
    let mut out: Option<Vec<u8>> = None;
    let mut copied_to = 0;
    for (start, payload, next) in data_lines(events) {
        let payload = &events[payload];
        let Some(found) = usage_in(payload) else { continue };
        usage = Some(found);
        if strip && has_no_choices(payload) && start >= copied_to {
            // Drop the line and the blank line that ends its event.
            let blank = [&b"\r\n"[..], b"\n"].into_iter().find(|blank| events[next..].starts_with(blank));
            let buffer = out.get_or_insert_with(|| Vec::with_capacity(events.len()));
            buffer.extend_from_slice(&events[copied_to..start]);
            copied_to = next + blank.map_or(0, <[u8]>::len);
        }
    }
    let out = out.map(|mut out| {
        out.extend_from_slice(&events[copied_to..]);
        out
    });
    (usage, out)
}

/// The events with every `data:` JSON object's top-level `model` set to `alias_json`, or
/// `None` when nothing needed changing.
fn rewrite_events(events: &[u8], alias_json: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied_to = 0;
    for (_, payload_at, _) in data_lines(events) {
        let payload = &events[payload_at.clone()];
        if let Some(model) = top_level_value_span(payload, "model")
            && payload[model.start] == b'"'
            && &payload[model.clone()] != alias_json.as_bytes()
        {
            let buffer = out.get_or_insert_with(|| Vec::with_capacity(events.len() + 64));
            buffer.extend_from_slice(&events[copied_to..payload_at.start + model.start]);
            buffer.extend_from_slice(alias_json.as_bytes());
            copied_to = payload_at.start + model.end;
        }
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

    /// What the scripted upstream does on each poll.
    enum Step {
        Data(&'static str),
        Fail(ProviderError),
        /// Not ready yet: wakes itself and returns `Pending` once.
        Wait,
        /// `Wait`s for longer than the relay's idle rounds: the upstream has paused.
        Gap,
    }

    struct Script(VecDeque<Step>);

    impl Body for Script {
        type Data = Bytes;
        type Error = ProviderError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(text)) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(text.as_bytes())))))
                }
                Some(Step::Fail(error)) => Poll::Ready(Some(Err(error))),
                Some(Step::Wait | Step::Gap) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    async fn relay(steps: Vec<Step>) -> Vec<Bytes> {
        // `Gap` is a real pause: still nothing after the relay's yield rounds.
        let steps = steps.into_iter().flat_map(|s| match s {
            Gap => std::iter::repeat_with(|| Wait).take(usize::from(IDLE_ROUNDS) + 1).collect(),
            other => vec![other],
        });
        let mut relay = AliasRelay::new(Script(steps.collect()).boxed(), "\"alias\"".to_owned());
        let mut out = Vec::new();
        while let Some(frame) = relay.frame().await {
            out.push(frame.unwrap().into_data().unwrap());
        }
        out
    }

    use Step::{Data, Fail, Gap, Wait};

    fn events(bytes: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(bytes).split("\n\n").filter(|e| !e.is_empty()).map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn rewrites_model_in_each_event_and_sends_what_is_ready() {
        let out = relay(vec![
            Data("data: {\"id\":\"1\",\"model\":\"gpt-4o-2024\",\"choices\":[]}\n\n"),
            Gap,
            Data("data: {\"id\":\"2\",\"model\":\"gpt-4o-2024\"}\n\n"),
            Wait,
            Data("data: [DONE]\n\n"),
        ])
        .await;
        assert_eq!(
            out,
            [
                "data: {\"id\":\"1\",\"model\":\"alias\",\"choices\":[]}\n\n",
                "data: {\"id\":\"2\",\"model\":\"alias\"}\n\ndata: [DONE]\n\n",
            ],
            "a frame goes out when the upstream pauses; frames a yield round gathers leave together"
        );
    }

    #[tokio::test]
    async fn joins_an_event_split_across_frames() {
        let out = relay(vec![
            Data("data: {\"model\":\"x\","),
            Gap,
            Data("\"n\":1}\n\n"),
            Gap,
            Data("data: [DONE]"),
            Gap,
            Data("\n\n"),
        ])
        .await;
        assert_eq!(out, ["data: {\"model\":\"alias\",\"n\":1}\n\n", "data: [DONE]\n\n"]);
    }

    #[tokio::test]
    async fn leaves_matching_and_foreign_lines_alone() {
        let input = ": keep-alive\n\nevent: ping\ndata: {\"model\":\"alias\"}\n\ndata: not json\n\n";
        assert_eq!(relay(vec![Data(input)]).await, [input]);
    }

    #[test]
    fn the_usage_chunk_is_read_and_removed_when_only_the_gateway_asked() {
        let events = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let (usage, kept) = take_usage(events, true);
        assert_eq!(usage.map(|u| u.total_tokens()), Some(7));
        assert_eq!(
            String::from_utf8(kept.unwrap()).unwrap(),
            "data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: [DONE]\n\n"
        );
        let (usage, kept) = take_usage(events, false);
        assert!(usage.is_some() && kept.is_none(), "a client that asked keeps its chunk");
        assert!(!reports_usage(b"data: {\"choices\":[],\"usage\":null}\n\n"));
        assert!(reports_usage(b"data: {\"usage\": {\"prompt_tokens\":1}}\n\n"));
        let crlf = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n";
        assert_eq!(take_usage(crlf, true).1.unwrap(), b"data: [DONE]\r\n\r\n");
    }

    #[tokio::test]
    async fn crlf_events_are_recognised() {
        let out = relay(vec![Data("data: {\"model\":\"x\"}\r\n\r\n")]).await;
        assert_eq!(out, ["data: {\"model\":\"alias\"}\r\n\r\n"]);
    }

    #[tokio::test]
    async fn an_upstream_failure_ends_with_an_error_event() {
        let out = relay(vec![
            Data("data: {\"model\":\"alias\"}\n\ndata: {\"mod"),
            Fail(ProviderError::Protocol("connection reset".into())),
        ])
        .await;
        assert_eq!(out.len(), 1);
        let events = events(&out[0]);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[1], "data: {\"mod", "the partial event is flushed, then the error");
        let json: serde_json::Value =
            serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(json["error"]["message"], "litellm.APIError: connection reset");
        assert_eq!(json["error"]["code"], "502");
    }
}
