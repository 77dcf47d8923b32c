//! OpenAI's rate-limit headers, and the `429` of a refused request.

use std::fmt::Write;

use bytes::Bytes;
use holysheep_core::error::ErrorBody;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::decision::{Reason, Verdict};

/// `x-ratelimit-limit-requests`.
pub const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
/// `x-ratelimit-remaining-requests`.
pub const REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
/// `x-ratelimit-reset-requests`.
pub const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
/// `x-ratelimit-limit-tokens`.
pub const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
/// `x-ratelimit-remaining-tokens`.
pub const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
/// `x-ratelimit-reset-tokens`.
pub const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Sets the `x-ratelimit-*` headers of the limits the tenant has.
///
/// This runs for every answer of a limited tenant, so the (up to six) values are written on the
/// stack and moved to the heap in one allocation that they all share.
pub(crate) fn insert_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    let trios = [
        (
            verdict.requests.as_ref(),
            [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
        ),
        (
            verdict.tokens.as_ref(),
            [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS],
        ),
    ];
    let mut text = StackText::default();
    // Where each value ends in `text`, in the order of `trios`.
    let mut ends = [0; 6];
    let mut count = 0;
    for (state, _) in &trios {
        let Some(state) = state else { continue };
        let written = write!(text, "{}", state.limit)
            .map(|()| ends[count] = text.len)
            .and_then(|()| write!(text, "{}", state.remaining))
            .map(|()| ends[count + 1] = text.len)
            .and_then(|()| write_duration(&mut text, state.reset_ms))
            .map(|()| ends[count + 2] = text.len);
        if written.is_err() {
            // Never for numbers and durations (the buffer holds the longest); no headers then
            // rather than wrong ones.
            return;
        }
        count += 3;
    }
    if count == 0 {
        return;
    }
    headers.reserve(count);
    let shared = Bytes::from_owner(text);
    let names = trios
        .into_iter()
        .filter(|(state, _)| state.is_some())
        .flat_map(|(_, names)| names);
    let mut start = 0;
    for (name, &end) in names.zip(&ends[..count]) {
        if let Ok(value) = HeaderValue::from_maybe_shared(shared.slice(start..end)) {
            headers.insert(name, value);
        }
        start = end;
    }
}

/// A few bytes of text without an allocation (longer text is refused, which the rate-limit
/// headers never are: two trios of two `u64`s and a duration).
struct StackText {
    bytes: [u8; 160],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        Self {
            bytes: [0; 160],
            len: 0,
        }
    }
}

impl AsRef<[u8]> for StackText {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A duration as OpenAI writes its reset headers: `250ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
#[cfg(test)]
fn duration_text(ms: f64) -> String {
    let mut out = String::new();
    let _ = write_duration(&mut out, ms);
    out
}

/// Writes a duration as OpenAI writes its reset headers.
fn write_duration(out: &mut impl Write, ms: f64) -> std::fmt::Result {
    let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    let whole_ms = ms.ceil() as u64;
    if whole_ms < 1000 {
        return write!(out, "{whole_ms}ms");
    }
    let hours = whole_ms / 3_600_000;
    let minutes = whole_ms / 60_000 % 60;
    let secs_ms = whole_ms % 60_000;
    if hours > 0 {
        write!(out, "{hours}h")?;
    }
    if hours > 0 || minutes > 0 {
        write!(out, "{minutes}m")?;
    }
    let (s, mut frac) = (secs_ms / 1000, secs_ms % 1000);
    if frac == 0 {
        write!(out, "{s}s")
    } else {
        let mut width = 3;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(out, "{s}.{frac:0width$}s")
    }
}

/// The `429` of a refused request, in OpenAI's shape, with `Retry-After` in whole seconds
/// (rounded up, at least 1) and the rate-limit headers.
pub(crate) fn rejection(tenant: &str, reason: Reason, verdict: &Verdict) -> Response<Bytes> {
    let (message, type_, code) = match reason {
        Reason::Requests => (
            format!(
                "Rate limit reached for tenant {tenant} on requests per minute. Please try again later."
            ),
            "requests",
            "rate_limit_exceeded",
        ),
        Reason::Tokens => (
            format!(
                "Rate limit reached for tenant {tenant} on tokens per minute. Please try again later."
            ),
            "tokens",
            "rate_limit_exceeded",
        ),
        Reason::Concurrency => (
            format!(
                "Too many concurrent requests for tenant {tenant}. Please try again when one has finished."
            ),
            "requests",
            "rate_limit_exceeded",
        ),
        Reason::DailyBudget => (
            format!("You exceeded the daily budget of tenant {tenant}. It renews at midnight UTC."),
            "insufficient_quota",
            "insufficient_quota",
        ),
        Reason::MonthlyBudget => (
            format!(
                "You exceeded the monthly budget of tenant {tenant}. It renews on the first of the month (UTC)."
            ),
            "insufficient_quota",
            "insufficient_quota",
        ),
    };
    let mut response = ErrorBody::new(message, type_)
        .with_code(code)
        .into_response(StatusCode::TOO_MANY_REQUESTS);
    let secs = (verdict.retry_after_ms / 1000.0).ceil();
    let secs = if secs.is_finite() {
        secs.max(1.0) as u64
    } else {
        1
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    insert_headers(response.headers_mut(), verdict);
    response.extensions_mut().insert(reason);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::RateState;

    #[test]
    fn durations_read_like_openai_headers() {
        assert_eq!(duration_text(0.0), "0ms");
        assert_eq!(duration_text(249.2), "250ms");
        assert_eq!(duration_text(1000.0), "1s");
        assert_eq!(duration_text(1500.0), "1.5s");
        assert_eq!(duration_text(360_000.0), "6m0s");
        assert_eq!(duration_text(3_723_000.0), "1h2m3s");
        assert_eq!(duration_text(f64::NAN), "0ms");
        assert_eq!(duration_text(1050.0), "1.05s");
        assert_eq!(duration_text(61_007.0), "1m1.007s");
        // The longest there is still fits the stack buffer of the headers, both trios.
        let mut headers = HeaderMap::new();
        let longest = RateState {
            limit: u64::MAX,
            remaining: u64::MAX,
            reset_ms: 1e300,
        };
        let verdict = Verdict {
            requests: Some(longest),
            tokens: Some(longest),
            ..Verdict::default()
        };
        insert_headers(&mut headers, &verdict);
        for (limit, remaining, reset) in [
            (LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS),
            (LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS),
        ] {
            assert_eq!(headers[limit], u64::MAX.to_string().as_str());
            assert_eq!(headers[remaining], u64::MAX.to_string().as_str());
            assert_eq!(headers[reset], duration_text(1e300).as_str());
        }
    }

    #[test]
    fn headers_of_the_limits_the_tenant_has() {
        let mut headers = HeaderMap::new();
        let verdict = Verdict {
            tokens: Some(RateState {
                limit: 1000,
                remaining: 250,
                reset_ms: 45_000.0,
            }),
            ..Verdict::default()
        };
        insert_headers(&mut headers, &verdict);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[LIMIT_TOKENS], "1000");
        assert_eq!(headers[REMAINING_TOKENS], "250");
        assert_eq!(headers[RESET_TOKENS], "45s");
        insert_headers(&mut headers, &Verdict::default());
        assert_eq!(headers.len(), 3);
    }
}
