//! AWS's binary event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock's
//! ConverseStream sends it, decoded from bytes that may be split anywhere; and a body that
//! turns the decoded messages into SSE events for [`crate::body::TranslatedStream`].
//!
//! A message is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes),
//! the headers, the payload, and a CRC32 of everything before it. Both checksums are
//! checked, and lengths over AWS's own limits are refused before anything is buffered for
//! them, so a corrupt or hostile stream fails at once instead of holding memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame};
use serde_json::Value;

use crate::{ProviderError, StreamBody};

const PRELUDE_LEN: usize = 12;
/// Prelude plus the trailing message CRC: the size of a message with no headers or payload.
const MIN_MESSAGE_LEN: usize = 16;
/// AWS's limits: 128 KiB of headers and 16 MiB of payload in one message.
pub(crate) const MAX_HEADERS_LEN: usize = 128 * 1024;
pub(crate) const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;

/// A header's value, one variant per wire type (0 to 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Bytes),
    String(String),
    Timestamp(i64),
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Bytes,
}

impl Message {
    /// A string header's value (`:event-type`, `:message-type`, ...).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(key, value)| match value {
            HeaderValue::String(text) if key == name => Some(text.as_str()),
            _ => None,
        })
    }
}

fn malformed(reason: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(format!("bedrock event stream: {reason}"))
}

/// Collects bytes and hands out whole messages.
#[derive(Default)]
pub(crate) struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether bytes of an unfinished message are waiting.
    pub(crate) fn has_partial(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// The next complete message, `None` until one has fully arrived, or an error for a
    /// frame that is corrupt or too large (the stream cannot be resynchronised after that).
    pub(crate) fn next_message(&mut self) -> Result<Option<Message>, ProviderError> {
        if self.buffer.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let word = |at: usize| {
            u32::from_be_bytes([
                self.buffer[at],
                self.buffer[at + 1],
                self.buffer[at + 2],
                self.buffer[at + 3],
            ])
        };
        let (total, headers_len, prelude_crc) = (word(0) as usize, word(4) as usize, word(8));
        // The prelude's own checksum comes first: lengths read from a corrupt prelude mean
        // nothing, and must not decide how much is buffered.
        let computed = crc32fast::hash(&self.buffer[..8]);
        if computed != prelude_crc {
            return Err(malformed(format!(
                "prelude checksum mismatch (frame says {prelude_crc:#010x}, computed {computed:#010x})"
            )));
        }
        if headers_len > MAX_HEADERS_LEN {
            return Err(malformed(format!(
                "headers of {headers_len} bytes exceed the limit of {MAX_HEADERS_LEN}"
            )));
        }
        let payload_len = total.checked_sub(MIN_MESSAGE_LEN + headers_len).ok_or_else(|| {
            malformed(format!("message length {total} is shorter than its headers ({headers_len})"))
        })?;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(malformed(format!(
                "payload of {payload_len} bytes exceeds the limit of {MAX_PAYLOAD_LEN}"
            )));
        }
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        let frame = self.buffer.split_to(total).freeze();
        let message_crc =
            u32::from_be_bytes([frame[total - 4], frame[total - 3], frame[total - 2], frame[total - 1]]);
        let computed = crc32fast::hash(&frame[..total - 4]);
        if computed != message_crc {
            return Err(malformed(format!(
                "message checksum mismatch (frame says {message_crc:#010x}, computed {computed:#010x})"
            )));
        }
        let headers = parse_headers(frame.slice(PRELUDE_LEN..PRELUDE_LEN + headers_len))?;
        let payload = frame.slice(PRELUDE_LEN + headers_len..total - 4);
        Ok(Some(Message { headers, payload }))
    }
}

fn parse_headers(mut bytes: Bytes) -> Result<Vec<(String, HeaderValue)>, ProviderError> {
    let short = || malformed("a header runs past the end of the headers");
    let mut headers = Vec::new();
    while bytes.has_remaining() {
        let name_len = bytes.get_u8() as usize;
        if name_len == 0 || bytes.remaining() < name_len + 1 {
            return Err(short());
        }
        let name = String::from_utf8(bytes.split_to(name_len).to_vec())
            .map_err(|_| malformed("a header name is not UTF-8"))?;
        let need = |bytes: &Bytes, n: usize| if bytes.remaining() < n { Err(short()) } else { Ok(()) };
        let value = match bytes.get_u8() {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => {
                need(&bytes, 1)?;
                HeaderValue::Byte(bytes.get_i8())
            }
            3 => {
                need(&bytes, 2)?;
                HeaderValue::Short(bytes.get_i16())
            }
            4 => {
                need(&bytes, 4)?;
                HeaderValue::Int(bytes.get_i32())
            }
            5 => {
                need(&bytes, 8)?;
                HeaderValue::Long(bytes.get_i64())
            }
            kind @ (6 | 7) => {
                need(&bytes, 2)?;
                let len = bytes.get_u16() as usize;
                need(&bytes, len)?;
                let value = bytes.split_to(len);
                if kind == 6 {
                    HeaderValue::Bytes(value)
                } else {
                    HeaderValue::String(
                        String::from_utf8(value.to_vec())
                            .map_err(|_| malformed(format!("header '{name}' is not UTF-8")))?,
                    )
                }
            }
            8 => {
                need(&bytes, 8)?;
                HeaderValue::Timestamp(bytes.get_i64())
            }
            9 => {
                need(&bytes, 16)?;
                let mut uuid = [0; 16];
                bytes.copy_to_slice(&mut uuid);
                HeaderValue::Uuid(uuid)
            }
            other => return Err(malformed(format!("header '{name}' has unknown value type {other}"))),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// What a decoded message means to the chat stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamItem {
    /// An event (`messageStart`, `contentBlockDelta`, ...) and its JSON payload, unparsed.
    Event { event_type: String, payload: Bytes },
    /// A modelled exception (`throttlingException`, ...) or an unmodelled error
    /// (`:message-type error`), with its message.
    Exception { exception_type: String, message: String },
}

/// Reads a message's `:message-type`. Messages of other types are skipped.
pub(crate) fn classify(message: &Message) -> Result<Option<StreamItem>, ProviderError> {
    match message.header(":message-type") {
        Some("event") => {
            let event_type =
                message.header(":event-type").ok_or_else(|| malformed("an event without :event-type"))?;
            // Spliced into JSON as a key below, so it must need no escaping.
            if event_type.is_empty() || !event_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(malformed(format!("unexpected event type '{event_type}'")));
            }
            Ok(Some(StreamItem::Event {
                event_type: event_type.to_owned(),
                payload: message.payload.clone(),
            }))
        }
        Some("exception") => {
            let exception_type = message.header(":exception-type").unwrap_or("exception").to_owned();
            let body: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            let message = body
                .get("message")
                .or_else(|| body.get("Message"))
                .and_then(Value::as_str)
                .map_or_else(|| String::from_utf8_lossy(&message.payload).into_owned(), str::to_owned);
            Ok(Some(StreamItem::Exception { exception_type, message }))
        }
        Some("error") => Ok(Some(StreamItem::Exception {
            exception_type: message.header(":error-code").unwrap_or("error").to_owned(),
            message: message.header(":error-message").unwrap_or("bedrock stream error").to_owned(),
        })),
        _ => Ok(None),
    }
}

/// The SSE event an item becomes: `data: {"<eventType>": <payload>}`, or for an exception
/// `data: {"exception": {"type", "message"}}`, the shapes the chat translator reads. The
/// payload is spliced in as it came, unless a line break in it would end the SSE event early.
fn to_sse(item: &StreamItem) -> Bytes {
    match item {
        StreamItem::Event { event_type, payload } => {
            let payload: &[u8] = if payload.is_empty() { b"{}" } else { payload };
            let mut out = Vec::with_capacity(payload.len() + event_type.len() + 16);
            out.extend_from_slice(b"data: {\"");
            out.extend_from_slice(event_type.as_bytes());
            out.extend_from_slice(b"\":");
            if memchr::memchr2(b'\n', b'\r', payload).is_some() {
                let compact =
                    serde_json::from_slice::<Value>(payload).map(|v| v.to_string()).unwrap_or_default();
                out.extend_from_slice(compact.as_bytes());
            } else {
                out.extend_from_slice(payload);
            }
            out.extend_from_slice(b"}\n\n");
            Bytes::from(out)
        }
        StreamItem::Exception { exception_type, message } => {
            let json = serde_json::json!({"exception": {"type": exception_type, "message": message}});
            Bytes::from(format!("data: {json}\n\n"))
        }
    }
}

/// Bedrock's event stream as SSE events, one per decoded message.
pub(crate) struct EventStreamAsSse {
    upstream: StreamBody,
    decoder: Decoder,
    ready: VecDeque<StreamItem>,
    done: bool,
}

impl EventStreamAsSse {
    pub(crate) fn new(upstream: StreamBody) -> Self {
        Self { upstream, decoder: Decoder::default(), ready: VecDeque::new(), done: false }
    }

    /// Reads until at least one item is ready or the stream ends.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProviderError>> {
        while self.ready.is_empty() && !self.done {
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                        while let Some(message) = self.decoder.next_message()? {
                            if let Some(item) = classify(&message)? {
                                self.ready.push_back(item);
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(None) => {
                    self.done = true;
                    if self.decoder.has_partial() {
                        return Poll::Ready(Err(malformed("the stream ended in the middle of a message")));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The exception the stream opens with, if it opens with one: Bedrock answers 200 and
    /// then reports some failures (throttling, validation) as the first message, which is
    /// better returned as an error status than as a stream that fails at once.
    pub(crate) async fn leading_exception(&mut self) -> Result<Option<(String, String)>, ProviderError> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        Ok(match self.ready.front() {
            Some(StreamItem::Exception { exception_type, message }) => {
                Some((exception_type.clone(), message.clone()))
            }
            _ => None,
        })
    }
}

impl Body for EventStreamAsSse {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        let this = &mut *self;
        if let Some(item) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(to_sse(&item)))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.poll_fill(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => {
                this.done = true;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Ok(())) => {
                Poll::Ready(this.ready.pop_front().map(|item| Ok(Frame::data(to_sse(&item)))))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Encodes a message with string headers; the test side of the wire format (the mock
    /// upstream has its own encoder).
    pub(crate) fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut head = Vec::new();
        for (name, value) in headers {
            head.push(name.len() as u8);
            head.extend_from_slice(name.as_bytes());
            head.push(7);
            head.extend_from_slice(&(value.len() as u16).to_be_bytes());
            head.extend_from_slice(value.as_bytes());
        }
        let total = (MIN_MESSAGE_LEN + head.len() + payload.len()) as u32;
        let mut frame = Vec::new();
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&(head.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame.extend_from_slice(&head);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame
    }

    pub(crate) fn event(event_type: &str, payload: &str) -> Vec<u8> {
        encode(
            &[(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        )
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, ProviderError> {
        let mut decoder = Decoder::default();
        decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(message) = decoder.next_message()? {
            out.push(message);
        }
        assert!(!decoder.has_partial());
        Ok(out)
    }

    #[test]
    fn decodes_aws_empty_message_vector() {
        // aws-c-event-stream's "empty_message" test vector: no headers, no payload.
        let bytes = [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff];
        let messages = decode_all(&bytes).unwrap();
        assert_eq!(messages, [Message { headers: Vec::new(), payload: Bytes::new() }]);
    }

    #[test]
    fn decodes_aws_int32_header_vector() {
        // aws-c-event-stream's "int32_header" test vector: one int32 header, a JSON payload.
        let mut bytes = vec![0, 0, 0, 0x2d, 0, 0, 0, 0x10, 0x41, 0xc4, 0x24, 0xb8, 0x0a];
        bytes.extend_from_slice(b"event-type");
        bytes.extend_from_slice(&[0x04, 0x00, 0x00, 0xa0, 0x0c]);
        bytes.extend_from_slice(b"{'foo':'bar'}");
        bytes.extend_from_slice(&[0x36, 0xf4, 0x80, 0xa0]);
        let message = decode_all(&bytes).unwrap().remove(0);
        assert_eq!(message.headers, [("event-type".to_owned(), HeaderValue::Int(0xa00c))]);
        assert_eq!(message.payload, "{'foo':'bar'}");
    }

    #[test]
    fn decodes_every_header_type() {
        let mut head = Vec::new();
        let mut push = |name: &str, kind: u8, value: &[u8]| {
            head.push(name.len() as u8);
            head.extend_from_slice(name.as_bytes());
            head.push(kind);
            head.extend_from_slice(value);
        };
        push("t", 0, &[]);
        push("f", 1, &[]);
        push("b", 2, &[0xff]);
        push("s", 3, &(-2i16).to_be_bytes());
        push("i", 4, &7i32.to_be_bytes());
        push("l", 5, &(-9i64).to_be_bytes());
        push("y", 6, &[0, 2, 0xde, 0xad]);
        push("x", 7, &[0, 2, b'h', b'i']);
        push("d", 8, &1_700_000_000_000i64.to_be_bytes());
        push("u", 9, &[7; 16]);
        let total = (MIN_MESSAGE_LEN + head.len() + 2) as u32;
        let mut frame = total.to_be_bytes().to_vec();
        frame.extend_from_slice(&(head.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame.extend_from_slice(&head);
        frame.extend_from_slice(b"{}");
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        let message = decode_all(&frame).unwrap().remove(0);
        let values: Vec<HeaderValue> = message.headers.into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                HeaderValue::Bool(true),
                HeaderValue::Bool(false),
                HeaderValue::Byte(-1),
                HeaderValue::Short(-2),
                HeaderValue::Int(7),
                HeaderValue::Long(-9),
                HeaderValue::Bytes(Bytes::from_static(&[0xde, 0xad])),
                HeaderValue::String("hi".into()),
                HeaderValue::Timestamp(1_700_000_000_000),
                HeaderValue::Uuid([7; 16]),
            ]
        );
        assert_eq!(message.payload, "{}");
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode_the_same() {
        let mut stream = event("messageStart", r#"{"p":"abcd","role":"assistant"}"#);
        stream.extend(event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#));
        stream.extend(event("messageStop", r#"{"stopReason":"end_turn"}"#));
        let whole = decode_all(&stream).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..=stream.len() {
            let mut decoder = Decoder::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                decoder.push(part);
                while let Some(message) = decoder.next_message().unwrap() {
                    got.push(message);
                }
            }
            assert_eq!(got, whole, "split at byte {cut}");
        }
        // And one byte at a time.
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(message) = decoder.next_message().unwrap() {
                got.push(message);
            }
        }
        assert_eq!(got, whole);
        assert_eq!(whole[1].header(":event-type"), Some("contentBlockDelta"));
    }

    #[test]
    fn bad_checksums_are_rejected_with_a_clear_error() {
        let good = event("messageStart", r#"{"role":"assistant"}"#);
        let mut bad_payload = good.clone();
        let at = bad_payload.len() - 6;
        bad_payload[at] ^= 0x20;
        let error = decode_all(&bad_payload).unwrap_err().to_string();
        assert!(error.contains("message checksum mismatch"), "{error}");
        let mut bad_prelude = good.clone();
        bad_prelude[3] ^= 1;
        let error = decode_all(&bad_prelude).unwrap_err().to_string();
        assert!(error.contains("prelude checksum mismatch"), "{error}");
        assert!(error.starts_with("litellm.APIError: bedrock event stream"), "{error}");
    }

    #[test]
    fn oversized_frames_are_refused_before_they_are_buffered() {
        let prelude = |total: u32, headers: u32| {
            let mut bytes = total.to_be_bytes().to_vec();
            bytes.extend_from_slice(&headers.to_be_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
            bytes
        };
        let huge_headers = prelude(1 << 20, (MAX_HEADERS_LEN + 1) as u32);
        assert!(
            decode_all(&huge_headers).unwrap_err().to_string().contains("headers of 131073 bytes exceed")
        );
        let huge_payload = prelude((MAX_PAYLOAD_LEN + MIN_MESSAGE_LEN + 1) as u32, 0);
        assert!(decode_all(&huge_payload).unwrap_err().to_string().contains("exceeds the limit"));
        let too_short = prelude(8, 0);
        assert!(decode_all(&too_short).unwrap_err().to_string().contains("shorter than its headers"));
        // A header that claims more bytes than the headers hold.
        let mut frame = encode(&[(":event-type", "x")], b"");
        frame[PRELUDE_LEN] = 200;
        let body_end = frame.len() - 4;
        let crc = crc32fast::hash(&frame[..body_end]).to_be_bytes();
        frame[body_end..].copy_from_slice(&crc);
        assert!(decode_all(&frame).unwrap_err().to_string().contains("runs past"));
    }

    #[test]
    fn messages_classify_as_events_and_exceptions() {
        let event = decode_all(&event("metadata", r#"{"usage":{"inputTokens":3}}"#)).unwrap().remove(0);
        assert_eq!(
            classify(&event).unwrap(),
            Some(StreamItem::Event {
                event_type: "metadata".into(),
                payload: Bytes::from_static(br#"{"usage":{"inputTokens":3}}"#)
            })
        );
        let exception = encode(
            &[(":exception-type", "throttlingException"), (":message-type", "exception")],
            br#"{"message":"Too many requests"}"#,
        );
        let exception = decode_all(&exception).unwrap().remove(0);
        assert_eq!(
            classify(&exception).unwrap(),
            Some(StreamItem::Exception {
                exception_type: "throttlingException".into(),
                message: "Too many requests".into()
            })
        );
        let error = encode(
            &[(":message-type", "error"), (":error-code", "InternalFailure"), (":error-message", "boom")],
            b"",
        );
        let error = decode_all(&error).unwrap().remove(0);
        assert_eq!(
            classify(&error).unwrap(),
            Some(StreamItem::Exception { exception_type: "InternalFailure".into(), message: "boom".into() })
        );
    }

    #[test]
    fn payloads_are_spliced_unless_a_line_break_would_cut_the_event() {
        let item = |payload: &'static str| StreamItem::Event {
            event_type: "contentBlockDelta".into(),
            payload: Bytes::from_static(payload.as_bytes()),
        };
        assert_eq!(to_sse(&item(r#"{"a":1}"#)), "data: {\"contentBlockDelta\":{\"a\":1}}\n\n");
        assert_eq!(to_sse(&item("{\n\n\"a\": 1}")), "data: {\"contentBlockDelta\":{\"a\":1}}\n\n");
        assert_eq!(to_sse(&item("")), "data: {\"contentBlockDelta\":{}}\n\n");
        let bad = encode(&[(":message-type", "event"), (":event-type", "x\"y")], b"{}");
        assert!(decode_all(&bad).map(|m| classify(&m[0])).unwrap().is_err());
    }

    #[tokio::test]
    async fn the_body_turns_frames_into_sse_and_fails_on_a_truncated_stream() {
        let mut bytes = event("messageStart", r#"{"role":"assistant"}"#);
        bytes.extend(event("messageStop", r#"{"stopReason":"end_turn"}"#));
        // Frames cut in odd places, as TCP may deliver them.
        let chunks: VecDeque<Bytes> = bytes.chunks(7).map(Bytes::copy_from_slice).collect();
        let body = EventStreamAsSse::new(crate::body::Chunks(chunks).boxed());
        let text = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            text,
            "data: {\"messageStart\":{\"role\":\"assistant\"}}\n\ndata: {\"messageStop\":{\"stopReason\":\"end_turn\"}}\n\n"
        );

        let cut = Bytes::copy_from_slice(&bytes[..bytes.len() - 3]);
        let body = EventStreamAsSse::new(crate::body::Chunks(VecDeque::from([cut])).boxed());
        let error = body.collect().await.unwrap_err().to_string();
        assert!(error.contains("ended in the middle of a message"), "{error}");
    }

    #[tokio::test]
    async fn a_leading_exception_is_reported_before_the_stream_starts() {
        let exception = encode(
            &[(":exception-type", "throttlingException"), (":message-type", "exception")],
            br#"{"message":"slow down"}"#,
        );
        let mut body =
            EventStreamAsSse::new(crate::body::Chunks(VecDeque::from([Bytes::from(exception)])).boxed());
        assert_eq!(
            body.leading_exception().await.unwrap(),
            Some(("throttlingException".to_owned(), "slow down".to_owned()))
        );
        let mut body = EventStreamAsSse::new(
            crate::body::Chunks(VecDeque::from([Bytes::from(event("messageStart", "{}"))])).boxed(),
        );
        assert_eq!(body.leading_exception().await.unwrap(), None);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "data: {\"messageStart\":{}}\n\n", "the peeked event is still sent");
    }
}
