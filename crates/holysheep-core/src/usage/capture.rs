//! Reading `model` and `usage` out of OpenAI JSON and SSE answers as they stream past: one
//! reader for every layer that counts tokens (`MetricsLayer`, `QuotaLayer`).

use std::borrow::Cow;
use std::io::IoSlice;

use crate::sse::{SseEvent, SseParser};
use crate::usage::Usage;
use bytes::Buf;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde::Deserialize;

/// The parts of an answer (or of one stream chunk) the metrics need; serde skips the rest.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// Bytes kept from the end of a JSON answer too large to keep whole: its `usage` is last.
const TAIL: usize = 4096;

/// What a body said about itself, once read: [`UsageCapture::finish`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The answer's `model` (of a JSON answer, or of a stream's first chunk).
    pub model: Option<String>,
    /// The answer's `usage` (of a JSON answer, or of the stream chunk that carried it).
    pub usage: Option<Usage>,
}

impl Captured {
    fn take_answer(&mut self, answer: Answer<'_>, want_model: bool) {
        if want_model {
            self.model = answer.model.map(Cow::into_owned);
        }
        if let Some(usage) = answer.usage {
            self.usage = Some(usage);
        }
    }
}

/// How a response body is watched.
#[derive(Debug)]
enum Capture {
    /// Not an answer we understand (or gave up on): bytes pass untouched.
    Off,
    /// A JSON answer, copied up to `limit` bytes and parsed when the body ends.
    Json { buf: Vec<u8>, limit: usize },
    /// A JSON answer past `limit` (a large batch of embeddings): only its last bytes are
    /// kept, where OpenAI answers put `usage`.
    JsonTail { tail: Vec<u8> },
    /// An SSE stream, parsed event by event; only the first event and events with a `usage`
    /// object are handed to serde.
    Sse {
        parser: Box<SseParser>,
        limit: usize,
        model_tried: bool,
        found: Captured,
    },
}

impl Capture {
    /// Picks how to watch a body from its headers. Compressed bodies are not parsed.
    fn for_response(headers: &HeaderMap, len_lower_bound: u64, limit: usize) -> Self {
        if limit == 0 {
            return Self::Off;
        }
        if let Some(enc) = headers.get(CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return Self::Off;
        }
        let Some(ct) = headers.get(CONTENT_TYPE) else {
            return Self::Off;
        };
        let ct = ct.as_bytes();
        let essence = ct.split(|&b| b == b';').next().unwrap_or(ct).trim_ascii();
        let lower = |s: &[u8]| essence.eq_ignore_ascii_case(s);
        let is_json = lower(b"application/json")
            || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"));
        if is_json {
            if len_lower_bound > limit as u64 {
                return Self::JsonTail { tail: Vec::new() };
            }
            // Reserve what the body announced (it fits the limit), so copying never regrows.
            let cap = usize::try_from(len_lower_bound).unwrap_or(0);
            Self::Json {
                buf: Vec::with_capacity(cap),
                limit,
            }
        } else if lower(b"text/event-stream") {
            Self::Sse {
                parser: Box::default(),
                limit,
                model_tried: false,
                found: Captured::default(),
            }
        } else {
            Self::Off
        }
    }

    /// Takes the next data frame.
    fn push(&mut self, data: &impl Buf) {
        let ok = match self {
            Self::Off => return,
            Self::Json { buf, limit } => {
                if buf.len().saturating_add(data.remaining()) > *limit {
                    let mut tail = std::mem::take(buf);
                    keep_tail(&mut tail);
                    *self = Self::JsonTail { tail };
                    return self.push(data);
                }
                for_each_slice(data, |s| buf.extend_from_slice(s))
            }
            Self::JsonTail { tail } => for_each_slice(data, |s| {
                tail.extend_from_slice(s);
                keep_tail(tail);
            }),
            Self::Sse {
                parser,
                limit,
                model_tried,
                found,
            } => {
                let whole = for_each_slice(data, |s| parser.push(s));
                while let Some(event) = parser.next_event() {
                    on_event(&event, model_tried, found);
                }
                // An endless line would grow the parser's buffer without bound.
                whole && parser.buffered() <= *limit
            }
        };
        if !ok {
            *self = Self::Off;
        }
    }

    /// What the body told, once it has ended (or been dropped).
    fn finish(&mut self) -> Captured {
        match std::mem::replace(self, Self::Off) {
            Self::Off => Captured::default(),
            Self::Json { buf, .. } => {
                let mut found = Captured::default();
                if let Ok(answer) = serde_json::from_slice::<Answer<'_>>(&buf) {
                    found.take_answer(answer, true);
                }
                found
            }
            Self::JsonTail { tail } => Captured {
                model: None,
                usage: usage_in_tail(&tail),
            },
            Self::Sse { found, .. } => found,
        }
    }
}

/// Drops all but the last [`TAIL`] bytes, in batches so each byte moves at most once or twice.
fn keep_tail(tail: &mut Vec<u8>) {
    if tail.len() > 2 * TAIL {
        tail.drain(..tail.len() - TAIL);
    }
}

/// The last top-level-looking `"usage": {...}` in the end of an answer. Inside a JSON string
/// a quote is escaped, so an unescaped `"usage"` followed by a colon is a key.
fn usage_in_tail(tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let at = tail
        .windows(KEY.len())
        .enumerate()
        .rev()
        .filter(|(i, w)| *w == KEY && (*i == 0 || tail[i - 1] != b'\\'))
        .map(|(i, _)| i + KEY.len())
        .find(|&end| tail[end..].trim_ascii_start().starts_with(b":"))?;
    let rest = tail[at..].trim_ascii_start();
    let value = &rest[1..];
    serde_json::Deserializer::from_slice(value)
        .into_iter::<Usage>()
        .next()?
        .ok()
}

fn on_event(event: &SseEvent, model_tried: &mut bool, found: &mut Captured) {
    if event.is_done() {
        return;
    }
    let want_model = !*model_tried;
    // With `stream_options.include_usage` every chunk but the last has `"usage":null`.
    let has_usage = event.data.contains("\"usage\"") && !event.data.contains("\"usage\":null");
    if !want_model && !has_usage {
        return;
    }
    *model_tried = true;
    if let Ok(answer) = serde_json::from_str::<Answer<'_>>(&event.data) {
        found.take_answer(answer, want_model);
    }
}

/// Calls `f` with every byte of `data` without consuming it. False when `data` has more
/// segments than one vectored read shows (then the caller stops parsing rather than guess).
fn for_each_slice(data: &impl Buf, mut f: impl FnMut(&[u8])) -> bool {
    let first = data.chunk();
    if first.len() == data.remaining() {
        f(first);
        return true;
    }
    let mut slices = [IoSlice::new(&[]); 64];
    let n = data.chunks_vectored(&mut slices);
    let seen: usize = slices[..n].iter().map(|s| s.len()).sum();
    if seen != data.remaining() {
        return false;
    }
    for s in &slices[..n] {
        f(s);
    }
    true
}

/// Reads `model` and `usage` from an answer's body as its frames pass, without holding the
/// frames: a JSON answer is copied up to a limit (past it only its last bytes, where `usage`
/// is), an SSE stream is parsed event by event and only the events that carry `usage` (and the
/// first, for `model`) reach serde. Compressed and non-JSON bodies are not read.
///
/// ```
/// use bytes::Bytes;
/// use holysheep_core::usage::{Usage, UsageCapture};
/// use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
/// let mut capture = UsageCapture::for_response(&headers, 0, 1 << 20);
/// capture.push(&Bytes::from_static(b"data: {\"model\":\"gpt-4.1\",\"usage\":null}\n\n"));
/// capture.push(&Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n"));
/// let found = capture.finish();
/// assert_eq!(found.model.as_deref(), Some("gpt-4.1"));
/// assert_eq!(found.usage, Some(Usage::new(5, 7)));
/// ```
#[derive(Debug)]
pub struct UsageCapture(Capture);

impl UsageCapture {
    /// A capture that reads nothing.
    pub const fn off() -> Self {
        Self(Capture::Off)
    }

    /// Picks how to watch a body from its response headers: JSON (`application/json`,
    /// `*+json`) copied up to `limit` bytes (`len_lower_bound` is the body's announced size),
    /// SSE parsed with lines up to `limit` bytes, anything else (or compressed) not at all.
    pub fn for_response(headers: &HeaderMap, len_lower_bound: u64, limit: usize) -> Self {
        Self(Capture::for_response(headers, len_lower_bound, limit))
    }

    /// Whether the body is an SSE stream being read.
    pub fn is_stream(&self) -> bool {
        matches!(self.0, Capture::Sse { .. })
    }

    /// Whether the capture reads nothing (any more).
    pub fn is_off(&self) -> bool {
        matches!(self.0, Capture::Off)
    }

    /// Takes the body's next data frame (the frame is only looked at).
    pub fn push(&mut self, data: &impl Buf) {
        self.0.push(data);
    }

    /// What the body told, once it has ended (or been dropped). The capture is off afterwards.
    pub fn finish(&mut self) -> Captured {
        self.0.finish()
    }
}

impl Default for UsageCapture {
    fn default() -> Self {
        Self::off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn json_split_anywhere() {
        let body = br#"{"id":"x","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        for split in 0..body.len() {
            let mut c = Capture::for_response(&headers("application/json; charset=utf-8"), 0, 1024);
            c.push(&Bytes::copy_from_slice(&body[..split]));
            c.push(&Bytes::copy_from_slice(&body[split..]));
            let found = c.finish();
            assert_eq!(found.model.as_deref(), Some("gpt-4.1"));
            assert_eq!(found.usage, Some(Usage::new(12, 30)));
        }
    }

    #[test]
    fn json_over_the_limit_keeps_its_usage_from_the_tail() {
        // A batch of embeddings far past the capture limit: usage comes last.
        let mut body = String::from(r#"{"object":"list","data":["#);
        for i in 0..2000 {
            body.push_str(&format!(
                r#"{{"object":"embedding","index":{i},"embedding":[0.1,-0.2,0.3]}},"#
            ));
        }
        body.push_str(r#"{"index":1,"note":"\"usage\": {\"prompt_tokens\": 1}"}],"model":"text-embedding-3-small","usage": {"prompt_tokens":4096,"total_tokens":4096}}"#);
        for piece in [7, 1000, body.len()] {
            let mut c = Capture::for_response(&headers("application/json"), 0, 1024);
            for chunk in body.as_bytes().chunks(piece) {
                c.push(&Bytes::copy_from_slice(chunk));
            }
            assert!(matches!(c, Capture::JsonTail { .. }));
            assert_eq!(c.finish().usage, Some(Usage::new(4096, 0)));
        }
        let mut c = Capture::for_response(&headers("application/json"), 100_000, 1024);
        c.push(&Bytes::from(body.clone()));
        assert_eq!(c.finish().usage, Some(Usage::new(4096, 0)));
        assert_eq!(usage_in_tail(br#"{"data":[],"usage":"#), None);
        assert_eq!(usage_in_tail(br#"{"x":"\"usage\": {}"}"#), None);
    }

    #[test]
    fn compressed_or_foreign_bodies_are_not_parsed() {
        let mut h = headers("application/json");
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(matches!(Capture::for_response(&h, 0, 1024), Capture::Off));
        assert!(matches!(
            Capture::for_response(&headers("text/plain"), 0, 1024),
            Capture::Off
        ));
        assert!(matches!(
            Capture::for_response(&headers("application/problem+json"), 0, 1024),
            Capture::Json { .. }
        ));
    }

    #[test]
    fn multi_segment_buffers_are_read_whole() {
        let body = br#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let (a, b) = body.split_at(10);
        let chained = Bytes::from_static(a).chain(Bytes::from_static(b));
        let mut c = Capture::for_response(&headers("application/json"), 0, 1024);
        c.push(&chained);
        assert_eq!(c.finish().usage, Some(Usage::new(3, 4)));
    }

    #[test]
    fn sse_model_from_first_chunk_usage_from_last() {
        let stream = concat!(
            "data: {\"model\":\"deepseek-v3.2\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"model\":\"ignored\",\"choices\":[{\"delta\":{\"content\":\"!\"}}],\"usage\":null}\n\n",
            "data: {\"model\":\"ignored\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        )
        .as_bytes();
        for piece in [1, 7, 64, stream.len()] {
            let mut c = Capture::for_response(&headers("text/event-stream"), 0, 1024);
            for chunk in stream.chunks(piece) {
                c.push(&Bytes::copy_from_slice(chunk));
            }
            let found = c.finish();
            assert_eq!(found.model.as_deref(), Some("deepseek-v3.2"));
            assert_eq!(found.usage, Some(Usage::new(5, 7)));
        }
    }

    #[test]
    fn sse_endless_line_stops_parsing() {
        let mut c = Capture::for_response(&headers("text/event-stream"), 0, 8);
        c.push(&Bytes::from_static(b"data: 0123456789"));
        assert!(matches!(c, Capture::Off));
    }
}
