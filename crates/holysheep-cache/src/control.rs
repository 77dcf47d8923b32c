//! Request `Cache-Control` directives: see [`RequestControl`].

use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// The request `Cache-Control` directives the cache acts on, read with RFC 9111 §5.2.1 request
/// semantics.
///
/// | directive | read the cache | write the answer |
/// |---|---|---|
/// | `no-store` | no | no |
/// | `no-cache` (or `Pragma: no-cache` without `Cache-Control`) | no: go upstream | yes: refreshes the entry |
/// | `max-age=0` | no, like `no-cache` (no stored answer is 0 s old) | yes, with the layer's TTL |
/// | `max-age=N` | only an entry stored at most `N` s ago | yes, with TTL `min(N, layer TTL)` |
///
/// `max-age=N` on a request means "I accept a stored answer at most N seconds old" (RFC 9111
/// §5.2.1.1). The cache also uses it as the TTL of the entry the request writes, capped by the
/// layer's TTL so a client cannot pin entries longer than the operator allows. An entry whose age
/// is unknown (a plain-JSON entry written by another program, e.g. the reference Python client)
/// is taken as fresh: the store's TTL already bounds it.
///
/// Unknown directives and malformed values are ignored, as RFC 9111 asks of caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestControl {
    /// `no-store`: neither read nor write.
    pub no_store: bool,
    /// `no-cache`: skip the lookup, refresh the entry.
    pub no_cache: bool,
    /// `max-age=N`, in seconds.
    pub max_age: Option<u64>,
}

impl RequestControl {
    /// Reads the directives from request headers. Every `Cache-Control` header line counts;
    /// `Pragma: no-cache` counts only when there is no `Cache-Control` (RFC 9111 §5.4).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut control = Self::default();
        let mut any = false;
        for value in headers.get_all(CACHE_CONTROL) {
            any = true;
            if let Ok(value) = value.to_str() {
                control.parse_into(value);
            }
        }
        if !any {
            for value in headers.get_all(PRAGMA) {
                if let Ok(value) = value.to_str()
                    && value
                        .split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
                {
                    control.no_cache = true;
                }
            }
        }
        control
    }

    fn parse_into(&mut self, value: &str) {
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                self.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                self.no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                // RFC 9111 §1.2.2: a delta-seconds too large to represent means "very large".
                if let Some(arg) = arg
                    && !arg.is_empty()
                    && arg.bytes().all(|b| b.is_ascii_digit())
                {
                    let n = arg.parse::<u64>().unwrap_or(u64::MAX);
                    // With several max-age directives the most restrictive one wins.
                    self.max_age = Some(self.max_age.map_or(n, |m| m.min(n)));
                }
            }
        }
    }

    /// Whether the stored entry may be looked up at all.
    pub fn may_read(&self) -> bool {
        !self.no_store && !self.no_cache && self.max_age != Some(0)
    }

    /// Whether the answer may be stored.
    pub fn may_write(&self) -> bool {
        !self.no_store
    }

    /// Whether an entry of this age (seconds; `None` = unknown) may answer the request.
    pub fn accepts_age(&self, age: Option<u64>) -> bool {
        match (self.max_age, age) {
            (Some(max), Some(age)) => age <= max,
            _ => true,
        }
    }

    /// The TTL of an entry written for this request, given the layer's TTL. `None` when nothing
    /// should be written.
    pub fn ttl(&self, layer_ttl: Duration) -> Option<Duration> {
        if self.no_store {
            return None;
        }
        let ttl = match self.max_age {
            Some(0) | None => layer_ttl,
            Some(n) => layer_ttl.min(Duration::from_secs(n)),
        };
        (!ttl.is_zero()).then_some(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&str]) -> RequestControl {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        RequestControl::from_headers(&h)
    }

    #[test]
    fn directives() {
        assert_eq!(parse(&[]), RequestControl::default());
        let c = parse(&["No-Store"]);
        assert!(c.no_store && !c.may_read() && !c.may_write());
        let c = parse(&["no-cache"]);
        assert!(!c.may_read() && c.may_write());
        let c = parse(&["max-age=60, foo=\"bar\"", "max-age=\"30\""]);
        assert_eq!(c.max_age, Some(30));
        assert!(c.may_read());
        assert!(c.accepts_age(Some(30)) && !c.accepts_age(Some(31)) && c.accepts_age(None));
    }

    #[test]
    fn max_age_zero_is_no_cache_for_reading() {
        let c = parse(&["max-age=0"]);
        assert!(!c.may_read());
        assert_eq!(
            c.ttl(Duration::from_secs(3600)),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn ttl_is_capped_by_the_layer() {
        let layer = Duration::from_secs(3600);
        assert_eq!(
            parse(&["max-age=10"]).ttl(layer),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse(&["max-age=99999"]).ttl(layer), Some(layer));
        assert_eq!(
            parse(&["max-age=99999999999999999999999"]).ttl(layer),
            Some(layer)
        );
        assert_eq!(parse(&["no-store"]).ttl(layer), None);
    }

    #[test]
    fn malformed_values_are_ignored() {
        assert_eq!(parse(&["max-age=-1, max-age=, max-age=1x"]).max_age, None);
    }

    #[test]
    fn pragma_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(RequestControl::from_headers(&h).no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!RequestControl::from_headers(&h).no_cache);
    }
}
