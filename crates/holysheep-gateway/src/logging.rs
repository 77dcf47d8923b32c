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
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

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
    let ansi = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    // An error only means a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if ansi => builder.try_init(),
        LogFormat::Text => builder.fmt_fields(PlainFields).try_init(),
    };
}

/// The fields of a text line without colours, written exactly as tracing-subscriber's
/// `DefaultFields` writes them then — `name=value`, the value as `Debug`, the message and
/// errors with ANSI escape sequences made harmless when the writer asks for it — but straight
/// to the line: `DefaultFields` runs its styling (two painted strings per field) even when
/// every style is empty, which was about 6 % of the gateway's instructions per cache hit.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`PlainFields`].
pub(crate) struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn write_field(&mut self, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        match field.name() {
            "message" => {
                let sanitize = self.writer.sanitizes_ansi_escapes();
                write!(self.writer, "{:?}", Sanitized { value, sanitize })
            }
            name => {
                self.writer
                    .write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.writer.write_char('=')?;
                write!(self.writer, "{value:?}")
            }
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let sanitize = self.writer.sanitizes_ansi_escapes();
        let shown = Sanitized {
            value: &format_args!("{value}"),
            sanitize,
        };
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{shown:?} {}.sources={}",
                    field.name(),
                    Sources { source, sanitize }
                ),
            ),
            None => self.record_debug(field, &format_args!("{shown:?}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Log metadata of `log` records, written by the line's own format already.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = self.write_field(field, value);
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A value as `Debug`, with the control characters terminals act on written as escapes when
/// `sanitize` (as tracing-subscriber does for messages and errors).
struct Sanitized<'a> {
    value: &'a dyn fmt::Debug,
    sanitize: bool,
}

impl fmt::Debug for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.sanitize {
            return write!(f, "{:?}", self.value);
        }
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    match c {
                        '\x1b' => self.0.write_str("\\x1b")?,
                        '\x07' => self.0.write_str("\\x07")?,
                        '\x08' => self.0.write_str("\\x08")?,
                        '\x0c' => self.0.write_str("\\x0c")?,
                        '\x7f' => self.0.write_str("\\x7f")?,
                        '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                        c => self.0.write_char(c)?,
                    }
                }
                Ok(())
            }
        }
        write!(Escaping(f), "{:?}", self.value)
    }
}

/// An error's sources as a list, each as `Display`, sanitized like the error itself.
struct Sources<'a> {
    source: &'a (dyn std::error::Error + 'static),
    sanitize: bool,
}

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.source);
        while let Some(error) = next {
            list.entry(&Sanitized {
                value: &format_args!("{error}"),
                sanitize: self.sanitize,
            });
            next = error.source();
        }
        list.finish()
    }
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
        // Runs of characters shown as they are go out in one write.
        let mut run = 0;
        for (at, c) in shown.char_indices() {
            // The escape for `c`, `None` for a `\u{..}` one; characters shown as they are
            // stay in the run.
            let escape = match c {
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                '\\' => Some("\\\\"),
                '"' if quoted => Some("\\\""),
                c if is_unsafe(c) => None,
                _ => continue,
            };
            f.write_str(&shown[run..at])?;
            run = at + c.len_utf8();
            match escape {
                Some(escape) => f.write_str(escape)?,
                None => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        f.write_str(&shown[run..])?;
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
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a subscriber without colours or time writes for `emit`, with these fields.
    fn written<N>(fields: N, emit: impl FnOnce()) -> String
    where
        N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + Send + Sync + 'static,
    {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .fmt_fields(fields)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \u{1b}[31mfailed")
        }
    }

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner\u{9b} cause")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl std::error::Error for Inner {}

    fn events() {
        let span = tracing::info_span!("http", request_id = "0b5c-\"q\"", n = 3u64);
        let _entered = span.enter();
        tracing::info!(
            method = %Untrusted("POST"),
            model = %Untrusted("a model\n"),
            status = 200u16,
            attempts = 0u64,
            delta = -4i64,
            duration_ms = 0.125f64,
            whole = 2.0f64,
            ok = true,
            r#type = "keyword",
            text = "with \"quotes\" and \u{1b}",
            debug = ?Some("x"),
            "request"
        );
        tracing::warn!(
            error = &Outer(Inner) as &(dyn std::error::Error + 'static),
            "upstream \u{1b}[2J call failed"
        );
        tracing::warn!(error = &Inner as &(dyn std::error::Error + 'static));
        tracing::info!("message only \u{7}");
        tracing::info!(empty = "", "");
    }

    #[test]
    fn plain_fields_write_what_default_fields_write_without_colours() {
        let default = written(
            tracing_subscriber::fmt::format::DefaultFields::new(),
            events,
        );
        let plain = written(PlainFields, events);
        assert_eq!(default.lines().count(), 5, "{default}");
        assert_eq!(plain, default);
    }

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
