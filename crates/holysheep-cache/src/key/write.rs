//! The JSON writer both schemes share, and where its bytes go.
//!
//! The canonical and the Python-compatible text differ only in their separators, strings and
//! floats (a [`Dialect`]); one writer walks the tree for both, straight into the hasher.

use std::fmt;

use serde_json::Number;
use sha2::{Digest, Sha256};

use super::parsed::{Json, View};

/// Deepest JSON nesting that is keyed; deeper bodies are not cached rather than risking the stack.
/// serde_json's parser stops at 128 levels, so parsed bodies never reach it.
pub(super) const MAX_DEPTH: usize = 256;

/// The nesting limit was exceeded.
pub(super) struct TooDeep;

/// One level deeper, or [`TooDeep`] past [`MAX_DEPTH`].
fn deeper(depth: usize) -> Result<usize, TooDeep> {
    if depth >= MAX_DEPTH {
        Err(TooDeep)
    } else {
        Ok(depth + 1)
    }
}

/// Where the text a key hashes goes: the SHA-256 hasher in production (no string is ever built),
/// a `Vec<u8>` in tests that check the exact text.
pub(super) trait Sink: fmt::Write {
    fn bytes(&mut self, b: &[u8]);

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Length-prefixed, so adjacent fields cannot run into each other ("a" + "b/c" vs "a/b" + "c").
    fn framed(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }
}

/// Streams bytes into the hasher, through a small stack buffer: the canonical form arrives in many
/// tiny pieces (`,`, `"`, `:`), and one `update` per piece would cost more than the hashing.
pub(super) struct HashSink {
    hasher: Sha256,
    buf: [u8; HASH_BUF],
    len: usize,
}

/// A multiple of SHA-256's 64-byte block, so flushes hash whole blocks without copying.
const HASH_BUF: usize = 512;

impl HashSink {
    pub(super) fn new() -> Self {
        HashSink {
            hasher: Sha256::new(),
            buf: [0; HASH_BUF],
            len: 0,
        }
    }

    pub(super) fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.buf[..self.len]);
        self.hasher.finalize().into()
    }

    /// `b` does not fit the buffer: fill it, hash it whole, hash `b`'s whole blocks directly and
    /// keep the tail. Every `update` is a multiple of 64 bytes, so the hasher never copies.
    #[inline(never)]
    fn spill(&mut self, b: &[u8]) {
        let (head, rest) = b.split_at((HASH_BUF - self.len).min(b.len()));
        self.buf[self.len..self.len + head.len()].copy_from_slice(head);
        self.hasher.update(self.buf.as_slice());
        let whole = rest.len() - rest.len() % HASH_BUF;
        self.hasher.update(&rest[..whole]);
        let tail = &rest[whole..];
        self.buf[..tail.len()].copy_from_slice(tail);
        self.len = tail.len();
    }
}

impl Sink for HashSink {
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        // Most pieces are a few bytes and fit: one bounds check and a copy.
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.spill(b),
        }
    }
}

impl fmt::Write for HashSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// How a scheme spells JSON.
pub(super) trait Dialect {
    /// Between array items and between object entries.
    const COMMA: &'static [u8];
    /// Between an object key and its value.
    const COLON: &'static [u8];

    /// A number serde_json holds as a float (integers are written as they are).
    fn float<S: Sink>(h: &mut S, f: f64);

    /// A string, quoted; `plain` when it is known to need no escaping (see [`View::Str`]).
    fn string<S: Sink>(h: &mut S, s: &str, plain: bool);
}

/// Writes `v` as JSON in dialect `D`, with every object's keys sorted.
pub(super) fn write_value<D: Dialect, S: Sink, J: Json>(
    h: &mut S,
    cx: &J::Cx,
    v: &J,
    depth: usize,
) -> Result<(), TooDeep> {
    match v.view(cx) {
        View::Null => h.str("null"),
        View::Bool(true) => h.str("true"),
        View::Bool(false) => h.str("false"),
        View::Number(n) => write_number::<D, S>(h, n),
        View::Str(s, plain) => D::string(h, s, plain),
        View::Array(items) => {
            let depth = deeper(depth)?;
            h.bytes(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.bytes(D::COMMA);
                }
                write_value::<D, S, J>(h, cx, item, depth)?;
            }
            h.bytes(b"]");
        }
        View::Object(map) => write_object::<D, S, J>(h, cx, map, depth, |_| false)?,
    }
    Ok(())
}

/// Writes an object in dialect `D` with its keys sorted (code point order, as Python's
/// `sort_keys` too), leaving out the keys `skip` picks.
pub(super) fn write_object<D: Dialect, S: Sink, J: Json>(
    h: &mut S,
    cx: &J::Cx,
    map: &J::Obj,
    depth: usize,
    skip: impl Fn(&str) -> bool,
) -> Result<(), TooDeep> {
    let depth = deeper(depth)?;
    h.bytes(b"{");
    let mut first = true;
    J::for_each_sorted(map, |k, plain, v| {
        if skip(k) {
            return Ok(());
        }
        if !first {
            h.bytes(D::COMMA);
        }
        first = false;
        D::string(h, k, plain);
        h.bytes(D::COLON);
        write_value::<D, S, J>(h, cx, v, depth)
    })?;
    h.bytes(b"}");
    Ok(())
}

/// Integers as they are, floats in the dialect's form. `json.loads` makes an `int` of a literal
/// without `.`/`e`, a `float` otherwise; serde_json keeps that distinction in `Number`.
fn write_number<D: Dialect, S: Sink>(h: &mut S, n: &Number) {
    if let Some(u) = n.as_u64() {
        let _ = write!(h, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(h, "{i}");
    } else if let Some(f) = n.as_f64() {
        D::float(h, f);
    } else {
        // Unreachable with serde_json's number types; hash the text rather than guess.
        let _ = write!(h, "{n}");
    }
}
