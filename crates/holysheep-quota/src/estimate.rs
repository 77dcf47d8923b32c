//! The tokens reserved for a request before it is sent.

use serde::Deserialize;

/// The fields of a request body the estimate reads; serde skips the rest.
#[derive(Deserialize)]
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
    // Most bodies name none of the fields: then they are not parsed at all.
    let names_one = contains(body, b"\"max_") || contains(body, b"\"n\"");
    let asked = names_one
        .then(|| serde_json::from_slice::<Asked>(body).ok())
        .flatten();
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
}
