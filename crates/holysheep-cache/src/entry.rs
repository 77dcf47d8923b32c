//! What a cache entry holds, and how it is written to a store.
//!
//! The two formats (plain completion JSON for [`KeyScheme::PythonCompat`], a versioned envelope
//! otherwise) are described in the crate docs, under "Stored values". [`Entry::decode`] reads
//! both; decoding never copies the chunks: they are slices of the stored value.
//!
//! [`KeyScheme::PythonCompat`]: crate::KeyScheme::PythonCompat

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderValue;

const MAGIC: &[u8; 4] = b"HSC\x01";
const KIND_JSON: u8 = 1;
const KIND_STREAM: u8 = 2;
const FLAG_USAGE: u8 = 1;

/// The body of a cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryBody {
    /// A whole JSON answer.
    Json(Bytes),
    /// A Server-Sent-Events answer, as the chunks the upstream sent, ending with `[DONE]`.
    Stream {
        /// The chunks, in order.
        chunks: Vec<Bytes>,
        /// Whether the stream holds a usage-only chunk (`stream_options.include_usage`).
        has_usage: bool,
    },
}

/// A cached answer: always a complete `200 OK` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    body: EntryBody,
    content_type: HeaderValue,
    stored_at: Option<u64>,
}

impl Entry {
    /// A whole JSON answer with its `content-type`.
    pub(crate) fn json(body: Bytes, content_type: HeaderValue) -> Self {
        Self {
            body: EntryBody::Json(body),
            content_type,
            stored_at: None,
        }
    }

    /// A streamed answer with its `content-type`.
    pub(crate) fn stream(chunks: Vec<Bytes>, has_usage: bool, content_type: HeaderValue) -> Self {
        Self {
            body: EntryBody::Stream { chunks, has_usage },
            content_type,
            stored_at: None,
        }
    }

    /// Sets when the entry was stored, in unix seconds.
    pub(crate) fn stored_at(mut self, unix_secs: u64) -> Self {
        self.stored_at = Some(unix_secs);
        self
    }

    /// Sets the store time to now.
    pub(crate) fn stored_now(self) -> Self {
        self.stored_at(now_secs())
    }

    /// The body.
    pub(crate) fn body(&self) -> &EntryBody {
        &self.body
    }

    /// The `content-type` the upstream answered with.
    pub(crate) fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }

    /// Seconds since the entry was stored; `None` when unknown (a plain-JSON entry).
    pub(crate) fn age(&self) -> Option<u64> {
        self.stored_at.map(|at| now_secs().saturating_sub(at))
    }

    /// The body's size in bytes.
    pub(crate) fn len(&self) -> usize {
        match &self.body {
            EntryBody::Json(b) => b.len(),
            EntryBody::Stream { chunks, .. } => chunks.iter().map(Bytes::len).sum(),
        }
    }

    /// The canonical envelope (see the crate docs, "Stored values").
    pub(crate) fn encode(&self) -> Bytes {
        let ct = self.content_type.as_bytes();
        let ct = &ct[..ct.len().min(usize::from(u16::MAX))];
        let mut out = BytesMut::with_capacity(20 + ct.len() + self.len() + 64);
        out.put_slice(MAGIC);
        match &self.body {
            EntryBody::Json(_) => out.put_u8(KIND_JSON),
            EntryBody::Stream { .. } => out.put_u8(KIND_STREAM),
        }
        let flags = match &self.body {
            EntryBody::Stream {
                has_usage: true, ..
            } => FLAG_USAGE,
            _ => 0,
        };
        out.put_u8(flags);
        out.put_u64(self.stored_at.unwrap_or(0));
        out.put_u16(ct.len() as u16);
        out.put_slice(ct);
        match &self.body {
            EntryBody::Json(body) => out.put_slice(body),
            EntryBody::Stream { chunks, .. } => {
                out.put_u32(chunks.len() as u32);
                for chunk in chunks {
                    out.put_u32(chunk.len() as u32);
                    out.put_slice(chunk);
                }
            }
        }
        out.freeze()
    }

    /// Reads a stored value: the canonical envelope, or plain completion JSON. `None` for anything
    /// else; never panics.
    pub(crate) fn decode(value: Bytes) -> Option<Self> {
        if value.starts_with(MAGIC) {
            return decode_envelope(value);
        }
        let first = value.iter().find(|b| !b.is_ascii_whitespace())?;
        (*first == b'{').then(|| Self::json(value, HeaderValue::from_static("application/json")))
    }
}

fn decode_envelope(value: Bytes) -> Option<Entry> {
    let mut buf = value.slice(MAGIC.len()..);
    if buf.remaining() < 1 + 1 + 8 + 2 {
        return None;
    }
    let kind = buf.get_u8();
    let flags = buf.get_u8();
    let stored_at = buf.get_u64();
    let ct_len = usize::from(buf.get_u16());
    if buf.remaining() < ct_len {
        return None;
    }
    let content_type = HeaderValue::from_maybe_shared(buf.split_to(ct_len)).ok()?;
    let body = match kind {
        KIND_JSON => EntryBody::Json(buf),
        KIND_STREAM => {
            if buf.remaining() < 4 {
                return None;
            }
            let count = buf.get_u32() as usize;
            // Each chunk needs at least its 4-byte length, which bounds the allocation.
            if count > buf.remaining() / 4 {
                return None;
            }
            let mut chunks = Vec::with_capacity(count);
            for _ in 0..count {
                if buf.remaining() < 4 {
                    return None;
                }
                let len = buf.get_u32() as usize;
                if buf.remaining() < len {
                    return None;
                }
                chunks.push(buf.split_to(len));
            }
            if buf.has_remaining() {
                return None;
            }
            EntryBody::Stream {
                chunks,
                has_usage: flags & FLAG_USAGE != 0,
            }
        }
        _ => return None,
    };
    Some(Entry {
        body,
        content_type,
        stored_at: (stored_at != 0).then_some(stored_at),
    })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse() -> HeaderValue {
        HeaderValue::from_static("text/event-stream")
    }

    #[test]
    fn envelopes_round_trip() {
        let json = Entry::json(
            Bytes::from_static(b"{\"a\":1}"),
            HeaderValue::from_static("application/json; charset=utf-8"),
        )
        .stored_at(1_700_000_000);
        assert_eq!(Entry::decode(json.encode()), Some(json));
        let stream = Entry::stream(
            vec![
                Bytes::from_static(b"data: 1\n\n"),
                Bytes::new(),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
            true,
            sse(),
        );
        let decoded = Entry::decode(stream.encode()).unwrap();
        assert_eq!(decoded, stream);
        assert_eq!(decoded.age(), None);
    }

    #[test]
    fn plain_json_is_an_entry() {
        let e = Entry::decode(Bytes::from_static(b"  {\"id\":\"x\"}")).unwrap();
        assert_eq!(e.content_type(), "application/json");
        assert!(matches!(e.body(), EntryBody::Json(_)));
    }

    #[test]
    fn corrupt_values_are_none_never_a_panic() {
        let good = Entry::stream(vec![Bytes::from_static(b"data: x\n\n")], false, sse()).encode();
        for cut in 0..good.len() {
            assert_eq!(Entry::decode(good.slice(..cut)), None, "cut at {cut}");
        }
        let mut extra = BytesMut::from(&good[..]);
        extra.put_u8(0);
        assert_eq!(Entry::decode(extra.freeze()), None);
        let mut huge = BytesMut::from(&good[..]);
        let count_at = 4 + 1 + 1 + 8 + 2 + "text/event-stream".len();
        huge[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Entry::decode(huge.freeze()), None);
        for junk in [
            &b""[..],
            b"HSC\x01\x09",
            b"[1,2]",
            b"OK",
            b"HSC\x02aaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(Entry::decode(Bytes::copy_from_slice(junk)), None);
        }
    }

    #[test]
    fn age_counts_from_stored_at() {
        let e = Entry::json(Bytes::new(), sse()).stored_at(now_secs() - 10);
        assert!(e.age().unwrap() >= 10);
    }
}
