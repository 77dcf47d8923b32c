//! Log set-up and the one line per request.

use std::fmt::{self, Write};
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::response::Response;
use holysheep_core::error::ErrorClass;
use holysheep_core::signal::{Attempts, CacheOutcome, Namespace, RequestModel};
use http::{Method, Request};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: level from `RUST_LOG` (default `info`), text or JSON lines.
/// A second call (tests start many gateways in one process) leaves the first in place.
///
/// redis-rs logs every connection attempt to a Redis node that is down at warn (hundreds a
/// minute); the cache store logs each node's failure itself, once per node per 10 s. So the
/// `redis` target is kept to errors unless `RUST_LOG` names it.
pub(crate) fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let names_redis = std::env::var("RUST_LOG").is_ok_and(|spec| spec.contains("redis"));
    if !names_redis && let Ok(directive) = "redis=error".parse() {
        filter = filter.add_directive(directive);
    }
    // Colours only for a terminal: escape codes in a log file or a collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    // An error only means a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Layer: one `info` line per request with method, route, tenant, model, status, cache outcome,
/// upstream attempts and the time until the response head (a stream goes on after it).
///
/// Only the route pattern is logged, never the query string or any header, so no key can end
/// up in a log line. What the caller chose (the method, the model) is logged as [`Untrusted`]:
/// it cannot break the line, forge a field or flood the log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog { inner }
    }
}

/// The service of [`RequestLogLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RequestLog<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestLog<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = request.method().clone();
        // A clone of the matched path shares its string; no copy per request.
        let route = request.extensions().get::<MatchedPath>().cloned();
        RequestLogFuture {
            inner: self.inner.call(request),
            start,
            method,
            route,
        }
    }
}

pin_project! {
    /// The response future of [`RequestLog`]: logs the line when the response head is ready.
    pub(crate) struct RequestLogFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        method: Method,
        route: Option<MatchedPath>,
    }
}

impl<F, E> Future for RequestLogFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        log_line(*this.start, this.method, this.route.as_ref(), &response);
        Poll::Ready(Ok(response))
    }
}

fn log_line(start: Instant, method: &Method, route: Option<&MatchedPath>, response: &Response) {
    let extensions = response.extensions();
    let model = extensions
        .get::<RequestModel>()
        .map_or("-", RequestModel::as_str);
    let cache = extensions
        .get::<CacheOutcome>()
        .map_or("-", |outcome| outcome.as_str());
    let attempts = extensions.get::<Attempts>().map_or(0, |a| a.0);
    let error = extensions.get::<ErrorClass>().map_or("-", |e| e.as_str());
    // The tenant's name from the configuration, or the digest prefix of a gateway key.
    let tenant = extensions.get::<Namespace>().map_or("-", Namespace::as_str);
    tracing::info!(
        method = %Untrusted(method.as_str()),
        route = %route.map_or("unmatched", MatchedPath::as_str),
        tenant = %Untrusted(tenant),
        model = %Untrusted(model),
        status = response.status().as_u16(),
        cache = %cache,
        attempts = attempts,
        error = %error,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
}

/// The most bytes of one caller-supplied value a log line carries; the rest is counted.
const MAX_UNTRUSTED_BYTES: usize = 256;

/// A value the caller chose, as a log line may carry it.
///
/// The text log format writes a field's value as it is (JSON escapes its own), so a model of
/// `"gpt-4.1\nINJECTED status=200"` would start a forged line, and ANSI escape sequences would
/// reach the terminal. Here control characters (line breaks, escape sequences, bidirectional
/// overrides) are written as escapes (`\n`, `\u{1b}`), a backslash as `\\`; a value with a
/// space, `"` or `=` is quoted so it cannot pose as more fields; and only the first 256 bytes
/// are written, followed by the count of the rest.
pub(crate) struct Untrusted<'a>(pub(crate) &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        let mut cut = value.len().min(MAX_UNTRUSTED_BYTES);
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        let (shown, rest) = value.split_at(cut);
        let quoted = shown.contains([' ', '"', '=']);
        if quoted {
            f.write_char('"')?;
        }
        for c in shown.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                '"' if quoted => f.write_str("\\\"")?,
                c if is_unsafe(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        if quoted {
            f.write_char('"')?;
        }
        if !rest.is_empty() {
            write!(f, "...({} more bytes)", rest.len())?;
        }
        Ok(())
    }
}

/// Characters a terminal or a log viewer acts on rather than shows: controls (C0, DEL, C1),
/// the Unicode line and paragraph separators, and the bidirectional marks and overrides that
/// reorder what is shown.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(value: &str) -> String {
        Untrusted(value).to_string()
    }

    #[test]
    fn plain_values_are_written_as_they_are() {
        assert_eq!(shown("gpt-4.1"), "gpt-4.1");
        assert_eq!(shown("deepseek/v3.2:free"), "deepseek/v3.2:free");
        assert_eq!(shown("模型-日本語"), "模型-日本語");
    }

    #[test]
    fn line_breaks_and_escape_sequences_are_escaped() {
        assert_eq!(
            shown("a\nb\r\tc\u{1b}[31md\u{7}\u{9b}e"),
            r"a\nb\r\tc\u{1b}[31md\u{7}\u{9b}e"
        );
        assert_eq!(shown("x\u{202e}y\u{2028}z"), r"x\u{202e}y\u{2028}z");
        // A backslash typed by the caller cannot pass for an escape.
        assert_eq!(shown(r"a\nb"), r"a\\nb");
    }

    #[test]
    fn values_that_could_pose_as_fields_are_quoted() {
        assert_eq!(shown("m status=200"), r#""m status=200""#);
        assert_eq!(shown(r#"m" x"#), r#""m\" x""#);
    }

    #[test]
    fn long_values_are_cut_on_a_character_and_counted() {
        let long = "é".repeat(1000);
        let out = shown(&long);
        assert!(out.len() <= MAX_UNTRUSTED_BYTES + 32, "{}", out.len());
        assert!(out.ends_with("...(1744 more bytes)"), "{out}");
        assert!(out.starts_with("éé"));
    }
}
