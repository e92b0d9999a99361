//! Server-sent events framing: where events end in a buffer of bytes. An event ends with a
//! blank line, `\n\n` or `\r\n\r\n`.

/// The offset just past the first complete event, if there is one.
pub fn first_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buffer, b"\n\n").map(|p| p + 2);
    let crlf = memchr::memmem::find(buffer, b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The offset just past the last complete event, if any. Searched from the end, since
/// upstream frames usually end exactly on an event boundary.
pub fn last_event_end(buffer: &[u8]) -> Option<usize> {
    let mut end = buffer.len();
    while let Some(newline) = memchr::memrchr(b'\n', &buffer[..end]) {
        let before = &buffer[..newline];
        if before.ends_with(b"\n") || before.ends_with(b"\r\n\r") {
            return Some(newline + 1);
        }
        end = newline;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_end_handles_both_line_endings() {
        assert_eq!(first_event_end(b"event: a\ndata: {}\n\nevent: b"), Some(19));
        assert_eq!(first_event_end(b"event: a\r\ndata: {}\r\n\r\n"), Some(22));
        assert_eq!(first_event_end(b"data: a\r\n\r\ndata: b\n\n"), Some(11));
        assert_eq!(first_event_end(b"event: a\ndata: {}\n"), None);
    }

    #[test]
    fn last_event_end_is_found_from_the_back() {
        assert_eq!(last_event_end(b"data: a\n\ndata: b\n\n"), Some(18));
        assert_eq!(last_event_end(b"data: a\n\ndata: b\n"), Some(9));
        assert_eq!(last_event_end(b"data: a\r\n\r\ndata: b"), Some(11));
        assert_eq!(last_event_end(b"data: a\ndata: b\n"), None);
        assert_eq!(last_event_end(b""), None);
    }
}
