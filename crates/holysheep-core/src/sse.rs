//! An incremental Server-Sent-Events parser, and the two encoders the layers need.
//!
//! Bytes arrive in whatever pieces the network makes; [`SseParser`] takes them as they come and
//! yields whole events. It follows the WHATWG event-stream rules that matter for LLM streams:
//! lines end in LF, CRLF or CR (a CRLF split across two reads is still one line end), lines that
//! start with `:` are comments, one space after the colon is dropped, several `data:` lines join
//! with `\n`, and an event is dispatched at a blank line.
//!
//! ```
//! use holysheep_core::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! parser.push(b"data: {\"a\"");
//! assert!(parser.next_event().is_none());
//! parser.push(b":1}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n");
//! assert_eq!(parser.next_event().unwrap().data, "{\"a\":1}");
//! assert!(parser.next_event().unwrap().is_done());
//! assert!(parser.next_event().is_none());
//! ```

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

/// The `data: [DONE]` event that ends an OpenAI stream, with its blank line.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// Encodes one `data:` event. Newlines (`\n`) inside `data` become several `data:` lines, so a
/// string without `\r` survives the trip through a parser (a lone CR ends a line in SSE; JSON
/// text, what OpenAI streams carry, never holds a raw one).
pub fn encode_event(data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the stream set one.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, when the stream set one.
    pub id: Option<String>,
}

impl SseEvent {
    /// Whether this is OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// An incremental Server-Sent-Events parser. See the [module docs](self).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    // A CR ended the last line; an LF at the start of the next read belongs to it.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    ready: VecDeque<SseEvent>,
    // A line that was not UTF-8 was read (its value taken with replacement characters).
    invalid_utf8: bool,
}

impl SseParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the stream. Whole events become available from
    /// [`next_event`](Self::next_event).
    pub fn push(&mut self, chunk: &[u8]) {
        let mut chunk = chunk;
        // Only the first byte after the CR can complete its CRLF: an LF read alone ends it too.
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < chunk.len() {
            match chunk[i] {
                b'\n' | b'\r' => {
                    let is_cr = chunk[i] == b'\r';
                    if self.buf.is_empty() {
                        self.line(&chunk[start..i]);
                    } else {
                        self.buf.extend_from_slice(&chunk[start..i]);
                        let owned = std::mem::take(&mut self.buf);
                        self.line(&owned);
                    }
                    i += 1;
                    if is_cr {
                        if i < chunk.len() {
                            if chunk[i] == b'\n' {
                                i += 1;
                            }
                        } else {
                            self.after_cr = true;
                        }
                    }
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.buf.extend_from_slice(&chunk[start..]);
    }

    /// The next whole event, if one has been dispatched.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Bytes of an unfinished line still buffered. A stream that ends with this non-zero, or with
    /// data not yet dispatched, was cut mid-event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
            + if self.has_data {
                self.data.len() + 1
            } else {
                0
            }
    }

    /// Whether a line of the stream so far was not UTF-8. The events carry such a line's value
    /// with U+FFFD in place of the bad bytes, so a caller that keeps the raw bytes (a cache)
    /// can tell that they are not the text it parsed.
    pub fn saw_invalid_utf8(&self) -> bool {
        self.invalid_utf8
    }

    fn line(&mut self, line: &[u8]) {
        // One UTF-8 check per line; a line that fails it is read with U+FFFD for the bad bytes
        // (':' is ASCII, so fields split the same either way).
        let line = match std::str::from_utf8(line) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => {
                self.invalid_utf8 = true;
                String::from_utf8_lossy(line)
            }
        };
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // An id with a NUL is ignored, as the spec says.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry:` and unknown fields do not matter to an LLM stream.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if !self.has_data {
            self.event = None;
            return;
        }
        self.has_data = false;
        self.ready.push_back(SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece);
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn a_line_that_is_not_utf8_is_reported() {
        let mut p = SseParser::new();
        // "é" split across two reads is one valid character.
        p.push(b"data: caf\xc3");
        p.push(b"\xa9\n\n");
        assert_eq!(p.next_event().unwrap().data, "café");
        assert!(!p.saw_invalid_utf8());
        p.push(b"data: \xff\n\n");
        assert_eq!(p.next_event().unwrap().data, "\u{FFFD}");
        assert!(p.saw_invalid_utf8());
    }

    /// Found by the `sse` fuzz target: a CR and its LF read apart left the parser waiting for
    /// another LF, so the blank line after them (`\r`, `\n`, `\n`) was taken for the rest of
    /// the CRLF and the event never dispatched.
    #[test]
    fn an_lf_read_alone_completes_its_crlf() {
        let pieces: [&[u8]; 4] = [b"data: a\r", b"\n", b"\n", b"data: b\n\n"];
        let events = parse_all(&pieces);
        assert_eq!(events, parse_all(&[b"data: a\r\n\ndata: b\n\n"]));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "a");
    }

    #[test]
    fn openai_stream() {
        let events = parse_all(&[b"data: {\"x\":1}\n\ndata: {\"x\":2}\n\ndata: [DONE]\n\n"]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].data, "{\"x\":2}");
        assert!(events[2].is_done());
        assert!(!events[0].is_done());
    }

    #[test]
    fn comments_fields_and_multiline_data() {
        let events =
            parse_all(&[b": ping\n\nevent: delta\nid: 7\ndata: a\ndata:b\nretry: 10\nunknown\n\n"]);
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("delta".into()),
                data: "a\nb".into(),
                id: Some("7".into())
            }]
        );
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        let events = parse_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\r"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "a");
        assert_eq!(events[1].data, "b");
    }

    #[test]
    fn blank_line_without_data_dispatches_nothing() {
        assert!(parse_all(&[b"\n\n\nevent: x\n\n"]).is_empty());
    }

    #[test]
    fn unfinished_event_is_buffered_not_dispatched() {
        let mut p = SseParser::new();
        p.push(b"data: {\"x\":1}\n\ndata: {\"cut");
        assert!(p.next_event().is_some());
        assert!(p.next_event().is_none());
        assert!(p.buffered() > 0);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let events = parse_all(&[b"data: \xff\xfe\n\n"]);
        assert_eq!(events[0].data, "\u{fffd}\u{fffd}");
    }

    #[test]
    fn encode_round_trips_newlines() {
        let events = parse_all(&[&encode_event("one\ntwo"), DONE_EVENT]);
        assert_eq!(events[0].data, "one\ntwo");
        assert!(events[1].is_done());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            datas in proptest::collection::vec("[^\r\n]{0,20}", 1..6),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut stream = String::new();
            for d in &datas {
                stream.push_str(&format!(": c{eol}data: {d}{eol}{eol}"));
            }
            let bytes = stream.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&bytes[last..c]);
                last = c;
            }
            pieces.push(&bytes[last..]);
            let whole = parse_all(&[bytes]);
            let split = parse_all(&pieces);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), datas.len());
            for (e, d) in whole.iter().zip(&datas) {
                prop_assert_eq!(&e.data, d);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut p = SseParser::new();
            p.push(&bytes);
            while p.next_event().is_some() {}
        }
    }
}
