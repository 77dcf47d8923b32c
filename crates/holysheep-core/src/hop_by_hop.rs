//! Hop-by-hop header fields (RFC 9110 §7.6.1): what describes one connection and must not be
//! passed on by anything that forwards a message to another.
//!
//! They are the fields named in the message's own `Connection` header, `Connection` itself, and
//! the fields that are always connection-specific: `Keep-Alive`, `Proxy-Connection`, `TE`,
//! `Transfer-Encoding`, `Upgrade`, and, as proxies have long treated them, `Trailer`,
//! `Proxy-Authenticate` and `Proxy-Authorization`. The gateway drops them from requests on their
//! way upstream and from answers on their way back; `HolySheepClient` drops them in both
//! directions as well, so an app that forwards through the client alone is covered too.
//!
//! ```
//! use holysheep_core::hop_by_hop::{HopByHop, remove_hop_by_hop};
//! use http::HeaderMap;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("connection", "keep-alive, x-session".parse().unwrap());
//! headers.insert("x-session", "this connection only".parse().unwrap());
//! headers.insert("x-request-id", "r-1".parse().unwrap());
//!
//! // While copying headers onto another message:
//! let hop = HopByHop::of(&headers);
//! let kept: Vec<&str> = headers.keys().filter(|n| !hop.contains(n)).map(|n| n.as_str()).collect();
//! assert_eq!(kept, ["x-request-id"]);
//!
//! // Or in place:
//! remove_hop_by_hop(&mut headers);
//! assert_eq!(headers.len(), 1);
//! ```

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The fields that are hop-by-hop in every message, whatever its `Connection` says.
static ALWAYS: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// The hop-by-hop fields of one message: the fixed ones, and those its `Connection` names.
///
/// Built once per message ([`HopByHop::of`]) for code that copies headers onto another
/// message and filters as it goes. It allocates only when `Connection` names other fields.
#[derive(Debug, Clone, Default)]
pub struct HopByHop {
    named: Vec<HeaderName>,
}

impl HopByHop {
    /// The hop-by-hop fields of a message with these headers.
    pub fn of(headers: &HeaderMap) -> Self {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::try_from(token.trim()).ok())
            .filter(|name| !ALWAYS.contains(name))
            .collect();
        Self { named }
    }

    /// Whether `name` is hop-by-hop in this message.
    pub fn contains(&self, name: &HeaderName) -> bool {
        ALWAYS.contains(name) || self.named.contains(name)
    }
}

/// Removes every hop-by-hop field from `headers`: those its `Connection` names, then the fixed
/// ones (see the [module docs](self)).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages hold none: one pass over their few names, hashing none, tells. Fields are
    // named by `Connection`, which is one of the fixed ones, so none of those means none at all.
    if !headers.keys().any(|name| ALWAYS.contains(name)) {
        return;
    }
    let hop = HopByHop::of(headers);
    for name in hop.named.iter().chain(ALWAYS.iter()) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn fields_named_in_connection_go_with_it() {
        let mut map = headers(&[
            ("connection", "close, X-Hop-One"),
            ("connection", " x-hop-two ,,"),
            ("x-hop-one", "1"),
            ("x-hop-two", "2"),
            ("x-end-to-end", "kept"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("content-type", "application/json"),
        ]);
        let hop = HopByHop::of(&map);
        assert!(hop.contains(&HeaderName::from_static("x-hop-one")));
        assert!(hop.contains(&header::TE));
        assert!(!hop.contains(&header::CONTENT_TYPE));
        remove_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-end-to-end"]);
    }

    #[test]
    fn a_connection_value_that_is_no_list_of_names_removes_only_itself() {
        let mut map = HeaderMap::new();
        map.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xff not a token, (x)").unwrap(),
        );
        map.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1);
        assert!(map.contains_key("x-kept"));
    }

    #[test]
    fn nothing_to_remove_allocates_nothing() {
        let map = headers(&[("content-type", "application/json")]);
        assert_eq!(HopByHop::of(&map).named.capacity(), 0);
    }
}
