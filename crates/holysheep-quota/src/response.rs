//! OpenAI's rate-limit headers, and the `429` of a refused request.

use std::fmt::Write;

use bytes::Bytes;
use holysheep_core::error::ErrorBody;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::decision::{RateState, Reason, Verdict};

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
pub(crate) fn insert_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    if let Some(state) = &verdict.requests {
        insert_trio(
            headers,
            state,
            [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
        );
    }
    if let Some(state) = &verdict.tokens {
        insert_trio(
            headers,
            state,
            [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS],
        );
    }
}

fn insert_trio(headers: &mut HeaderMap, state: &RateState, [l, r, t]: [HeaderName; 3]) {
    headers.insert(l, HeaderValue::from(state.limit));
    headers.insert(r, HeaderValue::from(state.remaining));
    // On the stack: this runs for every answer.
    let mut text = StackText::default();
    write_duration(&mut text, state.reset_ms);
    if let Ok(value) = HeaderValue::from_bytes(text.as_bytes()) {
        headers.insert(t, value);
    }
}

/// A few bytes of text without an allocation (longer text is cut, which a duration never is).
#[derive(Default)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
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
    write_duration(&mut out, ms);
    out
}

/// Writes a duration as OpenAI writes its reset headers.
fn write_duration(out: &mut impl Write, ms: f64) {
    let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    let whole_ms = ms.ceil() as u64;
    if whole_ms < 1000 {
        let _ = write!(out, "{whole_ms}ms");
        return;
    }
    let hours = whole_ms / 3_600_000;
    let minutes = whole_ms / 60_000 % 60;
    let secs_ms = whole_ms % 60_000;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let (s, mut frac) = (secs_ms / 1000, secs_ms % 1000);
    if frac == 0 {
        let _ = write!(out, "{s}s");
    } else {
        let mut width = 3;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        let _ = write!(out, "{s}.{frac:0width$}s");
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
        // The longest there is still fits the stack buffer of the headers.
        let mut headers = HeaderMap::new();
        let verdict = Verdict {
            requests: Some(RateState {
                limit: 1,
                remaining: 0,
                reset_ms: 1e300,
            }),
            ..Verdict::default()
        };
        insert_headers(&mut headers, &verdict);
        assert_eq!(headers[RESET_REQUESTS], duration_text(1e300).as_str());
    }
}
