//! The tokens reserved for a request before it is sent.

use serde::Deserialize;

/// The fields of a request body the estimate reads; serde skips the rest.
#[derive(Debug, Default, Deserialize, PartialEq)]
struct Asked {
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
}

/// Tokens to reserve for a request body: the prompt estimated at one token per
/// [`BYTES_PER_TOKEN`] bytes of the body (rounded up), plus the completion it may ask for
/// (`max_completion_tokens`, else `max_tokens`, else `default_completion`), times `n`. A
/// request without a body reserves nothing.
///
/// Four bytes per token is the usual figure for English text with OpenAI's tokenizers; the
/// body's JSON punctuation and field names make it an overestimate, which is the safe side for
/// a reservation that is reconciled with the answer's `usage` afterwards anyway.
pub(crate) fn reserve(body: &[u8], default_completion: u64) -> u64 {
    // A request without a body (`GET /models`) asks for no completion.
    if body.is_empty() {
        return 0;
    }
    let prompt = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
    // The byte scan reads the usual body; serde decides what it leaves, when the body names
    // one of the fields (most do not: then they are not parsed at all).
    let asked = scan::asked(body).unwrap_or_else(|| {
        let names_one = contains(body, b"\"max_") || contains(body, b"\"n\"");
        names_one
            .then(|| serde_json::from_slice::<Asked>(body).ok())
            .flatten()
    });
    let completion = asked
        .as_ref()
        .and_then(|a| a.max_completion_tokens.or(a.max_tokens))
        .unwrap_or(default_completion);
    let n = asked.and_then(|a| a.n).unwrap_or(1).clamp(1, 128);
    prompt.saturating_add(completion.saturating_mul(n))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bytes of request body counted as one prompt token in the reservation.
pub(crate) const BYTES_PER_TOKEN: u64 = 4;

/// The three top-level fields read by a scan of the bytes, without a parse of the rest: the
/// messages are skipped string by string, bracket by bracket.
mod scan {
    use super::Asked;

    /// `Some(answer)`: what serde would find in `body` (`Some(None)`: the body is not an
    /// object serde reads as [`Asked`]). `None`: something the scan leaves to serde (an escaped
    /// key, a field twice, a number that is not a plain `u64`, anything unexpected).
    ///
    /// The values skipped are checked only as far as a scan sees them (strings and their
    /// escapes, literals and number characters, brackets that balance); a body malformed
    /// deeper inside (`[1 2]`) that serde would refuse is read here, which changes only the
    /// reservation of a request the upstream refuses anyway.
    pub(super) fn asked(body: &[u8]) -> Option<Option<Asked>> {
        let mut s = Scan { body, at: 0 };
        let mut asked = Asked::default();
        let mut seen = [false; 3];
        s.ws();
        if !s.eat(b'{') {
            return Some(None);
        }
        s.ws();
        if !s.eat(b'}') {
            loop {
                s.ws();
                let key = s.key()?;
                s.ws();
                if !s.eat(b':') {
                    return None;
                }
                s.ws();
                let field = match key {
                    b"max_tokens" => Some(0),
                    b"max_completion_tokens" => Some(1),
                    b"n" => Some(2),
                    _ => None,
                };
                match field {
                    Some(f) => {
                        if std::mem::replace(&mut seen[f], true) {
                            return None;
                        }
                        let value = s.count()?;
                        match f {
                            0 => asked.max_tokens = value,
                            1 => asked.max_completion_tokens = value,
                            _ => asked.n = value,
                        }
                    }
                    None => s.skip_value()?,
                }
                s.ws();
                if s.eat(b',') {
                    continue;
                }
                if s.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        s.ws();
        (s.at == body.len()).then_some(Some(asked))
    }

    /// Where the first `"`, `\\` or control character (what ends a run of a JSON string) is,
    /// eight bytes at a time.
    pub(super) fn next_special(bytes: &[u8]) -> Option<usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // A byte's high bit is set in `(x - ONES) & !x & HIGH` where `x` is 0 (and maybe in
        // bytes after such a byte, never before): the lowest bit set is the first hit.
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let mut at = 0;
        while let Some(chunk) = bytes.get(at..at + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let v = u64::from_le_bytes(word);
            let hits = zero(v ^ (ONES * u64::from(b'"')))
                | zero(v ^ (ONES * u64::from(b'\\')))
                | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
            if hits != 0 {
                return Some(at + (hits.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        bytes[at..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .map(|i| at + i)
    }

    struct Scan<'a> {
        body: &'a [u8],
        at: usize,
    }

    impl<'a> Scan<'a> {
        fn peek(&self) -> Option<u8> {
            self.body.get(self.at).copied()
        }

        fn eat(&mut self, byte: u8) -> bool {
            let hit = self.peek() == Some(byte);
            self.at += usize::from(hit);
            hit
        }

        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                self.at += 1;
            }
        }

        /// A key without escapes, in UTF-8.
        fn key(&mut self) -> Option<&'a [u8]> {
            if !self.eat(b'"') {
                return None;
            }
            let start = self.at;
            let len = next_special(&self.body[start..])?;
            let end = start + len;
            if self.body[end] != b'"' {
                return None;
            }
            self.at = end + 1;
            let key: &'a [u8] = &self.body[start..end];
            (key.is_ascii() || std::str::from_utf8(key).is_ok()).then_some(key)
        }

        /// `null` or a plain `u64` (no sign, fraction, exponent or leading zero).
        fn count(&mut self) -> Option<Option<u64>> {
            if self.body[self.at..].starts_with(b"null") {
                self.at += 4;
                return self.ends_scalar().then_some(None);
            }
            let start = self.at;
            let mut value: u64 = 0;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                self.at += 1;
            }
            let digits = self.at - start;
            let plain = digits > 0 && (digits == 1 || self.body[start] != b'0');
            (plain && self.ends_scalar()).then_some(Some(value))
        }

        /// Whether the scalar just read ends here (and not in `.5`, `e3`, `x`).
        fn ends_scalar(&self) -> bool {
            matches!(
                self.peek(),
                None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            )
        }

        /// Skips a string whose opening quote is at `at`.
        fn skip_string(&mut self) -> Option<()> {
            self.at += 1;
            loop {
                let len = next_special(&self.body[self.at..])?;
                self.at += len;
                match self.body[self.at] {
                    b'"' => {
                        self.at += 1;
                        return Some(());
                    }
                    b'\\' => match self.body.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            self.at += 2;
                        }
                        b'u' => {
                            let hex = self.body.get(self.at + 2..self.at + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 6;
                        }
                        _ => return None,
                    },
                    _ => return None,
                }
            }
        }

        /// Skips a literal or a number.
        fn skip_scalar(&mut self) -> Option<()> {
            let rest = &self.body[self.at..];
            for literal in [&b"true"[..], b"false", b"null"] {
                if rest.starts_with(literal) {
                    self.at += literal.len();
                    return self.ends_scalar().then_some(());
                }
            }
            let len = rest
                .iter()
                .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .count();
            self.at += len;
            (len > 0 && self.ends_scalar()).then_some(())
        }

        /// Skips one value: a scalar, a string, or an array or object to its closing bracket
        /// (nested 128 deep at most: deeper, serde reads the body).
        fn skip_value(&mut self) -> Option<()> {
            // The open brackets, one bit each (1: an object), the innermost lowest.
            let (mut open, mut depth) = (0u128, 0u32);
            loop {
                self.ws();
                match self.peek()? {
                    b'"' => self.skip_string()?,
                    b @ (b'{' | b'[') => {
                        if depth == 128 {
                            return None;
                        }
                        open = (open << 1) | u128::from(b == b'{');
                        depth += 1;
                        self.at += 1;
                        continue;
                    }
                    b @ (b'}' | b']') => {
                        if depth == 0 || (open & 1 == 1) != (b == b'}') {
                            return None;
                        }
                        open >>= 1;
                        depth -= 1;
                        self.at += 1;
                    }
                    b',' | b':' if depth > 0 => {
                        self.at += 1;
                        continue;
                    }
                    _ => self.skip_scalar()?,
                }
                if depth == 0 {
                    return Some(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_bytes_plus_the_completion_asked_for() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
        assert_eq!(reserve(body, 256), (body.len() as u64).div_ceil(4) + 100);
        let body = br#"{"model":"m","max_completion_tokens":7,"max_tokens":100,"n":3}"#;
        assert_eq!(reserve(body, 256), (body.len() as u64).div_ceil(4) + 21);
        let body = br#"{"model":"m"}"#;
        assert_eq!(reserve(body, 256), 4 + 256);
        // Not JSON: the bytes and the default.
        assert_eq!(reserve(b"12345", 10), 2 + 10);
        assert_eq!(reserve(b"", 10), 0);
        assert_eq!(
            reserve(br#"{"max_tokens":18446744073709551615,"n":2}"#, 0),
            u64::MAX
        );
    }

    #[test]
    fn the_special_bytes_of_a_string_are_found_eight_at_a_time() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut bytes: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for i in 0..bytes.len() {
            assert_eq!(scan::next_special(&bytes[i..]), naive(&bytes[i..]), "{i}");
        }
        // Runs of plain text (ASCII and UTF-8) before each kind of special byte, at each offset.
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for len in 0..40 {
                bytes = "é a~\x7f".bytes().cycle().take(len).collect();
                bytes.push(special);
                bytes.extend_from_slice(b"xyz\"");
                assert_eq!(scan::next_special(&bytes), Some(len), "{special} {len}");
            }
        }
        assert_eq!(scan::next_special(b"plain text, no end"), None);
    }

    /// What serde reads of a body (the estimate before the byte scan).
    fn by_serde(body: &[u8]) -> Option<Asked> {
        serde_json::from_slice::<Asked>(body).ok()
    }

    #[test]
    fn the_scan_reads_what_serde_reads() {
        let bodies: &[&str] = &[
            r#"{"model":"m","temperature":0.2,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}"#,
            r#" { "max_tokens" : 7 , "n" : 3 , "max_completion_tokens" : null } "#,
            r#"{"max_tokens":0}"#,
            r#"{"max_tokens":18446744073709551615,"n":2}"#,
            r#"{"max_tokens":18446744073709551616}"#,
            r#"{"max_tokens":-1,"n":2}"#,
            r#"{"max_tokens":1.5}"#,
            r#"{"max_tokens":1e3}"#,
            r#"{"max_tokens":012}"#,
            r#"{"max_tokens":"12"}"#,
            r#"{"max_tokens":12x}"#,
            r#"{"max_tokens":nul}"#,
            r#"{"max_tokens":1,"max_tokens":2}"#,
            r#"{"n":null,"n":null}"#,
            r#"{"max_tokens":5"#,
            r#"{"max_tokens":5}}"#,
            r#"{"max_tokens":5} x"#,
            r#"["max_tokens",5]"#,
            r#""max_tokens""#,
            r#"{}"#,
            r#"{"n":4}"#,
            // Names in the content or nested deeper are not the request's.
            r#"{"messages":[{"role":"user","content":"set \"max_tokens\": 5 and \"n\": 9"}],"max_tokens":30}"#,
            r#"{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"max_tokens":{"type":"integer"},"n":[1,2,{"n":3}]}}}}],"n":2}"#,
            r#"{"messages":[{"content":"\u00e9\n\t\\ \/ \"max_tokens\":1"}],"max_completion_tokens":9}"#,
            r#"{"messages":[{"content":"\q"}],"max_tokens":9}"#,
            r#"{"messages":[{"content":"\u12"}],"max_tokens":9}"#,
            "{\"messages\":[{\"content\":\"a\u{1}b\"}],\"max_tokens\":9}",
            r#"{"messages":[tru],"max_tokens":9}"#,
            r#"{"messages":[true,false,null,-1.5e-3,{}],"max_tokens":9}"#,
            r#"{"messages":[}],"max_tokens":9}"#,
            r#"{"messages":{],"max_tokens":9}"#,
            r#"{"ma\u0078_tokens":9}"#,
            r#"{"model":"é","max_tokens":9}"#,
            r#"{"max_tokens":9,}"#,
            r#"{,"max_tokens":9}"#,
            r#"{"max_tokens" 9}"#,
            "",
            "   ",
        ];
        for body in bodies {
            if let Some(scanned) = scan::asked(body.as_bytes()) {
                assert_eq!(scanned, by_serde(body.as_bytes()), "{body}");
            }
            // The estimate before the scan: serde, on bodies naming one of the fields.
            let names_one =
                contains(body.as_bytes(), b"\"max_") || contains(body.as_bytes(), b"\"n\"");
            let asked = by_serde(body.as_bytes()).filter(|_| names_one);
            let completion = asked
                .as_ref()
                .and_then(|a| a.max_completion_tokens.or(a.max_tokens))
                .unwrap_or(256);
            let n = asked.and_then(|a| a.n).unwrap_or(1).clamp(1, 128);
            let expected = if body.is_empty() {
                0
            } else {
                (body.len() as u64)
                    .div_ceil(4)
                    .saturating_add(completion.saturating_mul(n))
            };
            assert_eq!(reserve(body.as_bytes(), 256), expected, "{body}");
        }
        // The usual bodies are read by the scan, not left to serde.
        for usual in [0, 1, 21, 22, 23, 28] {
            assert!(scan::asked(bodies[usual].as_bytes()).is_some(), "{usual}");
        }
        // Nested deeper than the scan follows: left to serde.
        let deep = format!(
            r#"{{"x":{}1{},"max_tokens":3}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(scan::asked(deep.as_bytes()), None);
        assert_eq!(
            reserve(deep.as_bytes(), 256),
            (deep.len() as u64).div_ceil(4) + 3
        );
    }
}
