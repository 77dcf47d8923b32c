//! The Python-compatible writer: the exact text the reference Python client hashes.
//!
//! That client (from the HolySheep article) keys a request on
//! `json.dumps({"model", "messages", "temperature", "max_tokens"}, sort_keys=True)`; this writes
//! the same bytes, so both derive the same key for the same request.

use std::fmt::{self, Write as _};

use super::parsed::Json;
use super::write::{Dialect, Sink, TooDeep, write_value};

/// The reference Python client's defaults when a request omits them.
const DEFAULT_TEMPERATURE: &str = "0.7";
const DEFAULT_MAX_TOKENS: &str = "1000";

/// Writes what the reference Python client hashes: `json.dumps({...}, sort_keys=True)` of its
/// four fields.
pub(super) fn write_python_compat<S: Sink, J: Json>(
    h: &mut S,
    cx: &J::Cx,
    body: &J::Obj,
    model: &str,
) -> Result<(), TooDeep> {
    h.str("{\"max_tokens\": ");
    match J::get(body, "max_tokens") {
        Some(v) => write_value::<Python, S, J>(h, cx, v, 0)?,
        None => h.str(DEFAULT_MAX_TOKENS),
    }
    h.str(", \"messages\": ");
    match J::get(body, "messages") {
        Some(v) => write_value::<Python, S, J>(h, cx, v, 0)?,
        None => h.str("null"),
    }
    h.str(", \"model\": ");
    python_str(h, model);
    h.str(", \"temperature\": ");
    match J::get(body, "temperature") {
        Some(v) => write_value::<Python, S, J>(h, cx, v, 0)?,
        None => h.str(DEFAULT_TEMPERATURE),
    }
    h.str("}");
    Ok(())
}

/// Python's `json.dumps(v, sort_keys=True)` with default separators and `ensure_ascii=True`.
struct Python;

impl Dialect for Python {
    const COMMA: &'static [u8] = b", ";
    const COLON: &'static [u8] = b": ";

    fn float<S: Sink>(h: &mut S, f: f64) {
        python_float_repr(h, f);
    }

    fn string<S: Sink>(h: &mut S, s: &str, _plain: bool) {
        python_str(h, s);
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation when the decimal exponent is
/// in `-4 < decpt <= 16` (with `.0` for integral values), else `d.ddde±XX`.
fn python_float_repr<S: Sink>(h: &mut S, f: f64) {
    if f.is_nan() {
        h.str("NaN");
        return;
    }
    if f.is_infinite() {
        h.str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python's repr: `-1.2345e-7`.
    let mut buf = StackBuf::<40>::new();
    if write!(buf, "{f:e}").is_err() {
        // A finite f64 has at most 17 significant digits and a 3-digit exponent; never reached.
        let _ = write!(h, "{f:e}");
        return;
    }
    let text = buf.as_str();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits = StackBuf::<24>::new();
    for c in mantissa.chars().filter(char::is_ascii_digit) {
        let _ = digits.write_char(c);
    }
    let digits = digits.as_str();
    let n = digits.len() as i32;
    let decpt = exp + 1;

    if negative {
        h.str("-");
    }
    if decpt <= -4 || decpt > 16 {
        h.str(&digits[..1]);
        if n > 1 {
            h.str(".");
            h.str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(
            h,
            "e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    } else if decpt <= 0 {
        h.str("0.");
        for _ in 0..-decpt {
            h.str("0");
        }
        h.str(digits);
    } else if decpt >= n {
        h.str(digits);
        for _ in 0..decpt - n {
            h.str("0");
        }
        h.str(".0");
    } else {
        let split = decpt as usize;
        h.str(&digits[..split]);
        h.str(".");
        h.str(&digits[split..]);
    }
}

/// Python's `ensure_ascii` string encoding: short escapes for `"\\\b\f\n\r\t`, `\uxxxx` (lowercase)
/// for everything outside printable ASCII, surrogate pairs above the BMP.
fn python_str<S: Sink>(h: &mut S, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn unicode_escape<S: Sink>(h: &mut S, unit: u16) {
        let esc = [
            b'\\',
            b'u',
            HEX[usize::from(unit >> 12)],
            HEX[usize::from((unit >> 8) & 0xf)],
            HEX[usize::from((unit >> 4) & 0xf)],
            HEX[usize::from(unit & 0xf)],
        ];
        h.bytes(&esc);
    }
    h.bytes(b"\"");
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let short: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            ' '..='~' => continue,
            _ => None,
        };
        h.str(&s[run..i]);
        run = i + c.len_utf8();
        match short {
            Some(esc) => h.bytes(esc),
            None => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    unicode_escape(h, *unit);
                }
            }
        }
    }
    h.str(&s[run..]);
    h.bytes(b"\"");
}

/// A fixed-size `fmt::Write` target, to format floats without allocating.
struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    fn new() -> Self {
        StackBuf {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
