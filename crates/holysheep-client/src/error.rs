//! The error type of [`HolySheepClient`](crate::HolySheepClient) and its response body.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use holysheep_core::BoxError;

/// An error from [`HolySheepClient`](crate::HolySheepClient): bad configuration, a failed
/// connection, a failed exchange, a timeout, or a broken response body.
///
/// Non-2xx answers are *not* errors: they come back as `Ok(Response)` so layers above can
/// classify them.
///
/// `Display` names what went wrong in one line and never contains the API key; the cause is
/// available through [`source()`](std::error::Error::source). The chain is kept intact for
/// retry classifiers:
///
/// - a connect failure reaches hyper-util's connect error and the underlying [`std::io::Error`]
///   (for example `ConnectionRefused`);
/// - every timeout ([`is_timeout`](Error::is_timeout)) has a [`std::io::Error`] of kind
///   [`TimedOut`](std::io::ErrorKind::TimedOut) in its chain;
/// - failures of the exchange or of the body keep [`hyper::Error`] in the chain, so
///   `is_incomplete_message()`, `is_closed()` and `is_canceled()` can be checked by downcasting.
pub struct Error {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Config(String),
    Connect,
    Request,
    Body,
    ConnectTimeout,
    HeadersTimeout(Duration),
    ReadTimeout(Duration),
}

impl Error {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Config(message.into()),
            source: None,
        }
    }

    pub(crate) fn config_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Config(message.into()),
            source: Some(source.into()),
        }
    }

    pub(crate) fn request(source: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Request,
            source: Some(source.into()),
        }
    }

    /// Classifies a failure of hyper-util's client: connect errors (and connect timeouts,
    /// recognised by a `TimedOut` io error in the chain) apart from failed exchanges.
    pub(crate) fn from_client(error: hyper_util::client::legacy::Error) -> Self {
        let kind = if !error.is_connect() {
            Kind::Request
        } else if chain_has_timed_out(&error) {
            Kind::ConnectTimeout
        } else {
            Kind::Connect
        };
        Self {
            kind,
            source: Some(Box::new(error)),
        }
    }

    pub(crate) fn body(source: hyper::Error) -> Self {
        Self {
            kind: Kind::Body,
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn headers_timeout(after: Duration) -> Self {
        Self {
            kind: Kind::HeadersTimeout(after),
            source: Some(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "response headers deadline elapsed",
            ))),
        }
    }

    pub(crate) fn read_timeout(after: Duration) -> Self {
        Self {
            kind: Kind::ReadTimeout(after),
            source: Some(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "response body read timeout elapsed",
            ))),
        }
    }

    /// The client could not be built: a bad base URL, an API key that is not a valid header
    /// value, or a TLS setup failure.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config(_))
    }

    /// No connection to the upstream could be made (DNS, TCP or TLS), including a connect
    /// timeout. No byte of the request reached the upstream.
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect | Kind::ConnectTimeout)
    }

    /// A deadline passed: the connect timeout, the response-headers deadline
    /// ([`Builder::timeout`](crate::Builder::timeout)) or the body read timeout
    /// ([`Builder::read_timeout`](crate::Builder::read_timeout)).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            Kind::ConnectTimeout | Kind::HeadersTimeout(_) | Kind::ReadTimeout(_)
        )
    }

    /// The request could not be sent or its response head could not be read on an
    /// established connection (for example the upstream closed the connection), or the
    /// upstream URI could not be built from the request.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request)
    }

    /// The response body failed after the headers arrived: a broken stream or the read
    /// timeout between body frames.
    pub fn is_body(&self) -> bool {
        matches!(self.kind, Kind::Body | Kind::ReadTimeout(_))
    }
}

fn chain_has_timed_out(error: &(dyn StdError + 'static)) -> bool {
    holysheep_core::error::chain(error)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::TimedOut)
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut builder = f.debug_struct("holysheep_client::Error");
        builder.field("kind", &self.kind);
        if let Some(source) = &self.source {
            builder.field("source", source);
        }
        builder.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Config(message) => write!(f, "invalid client configuration: {message}"),
            Kind::Connect => f.write_str("could not connect to the upstream"),
            Kind::Request => f.write_str("upstream request failed"),
            Kind::Body => f.write_str("upstream response body failed"),
            Kind::ConnectTimeout => f.write_str("timed out connecting to the upstream"),
            Kind::HeadersTimeout(after) => {
                write!(f, "upstream sent no response headers within {after:?}")
            }
            Kind::ReadTimeout(after) => {
                write!(f, "upstream response body stalled for more than {after:?}")
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|source| source as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_carry_a_timed_out_io_error() {
        for error in [
            Error::headers_timeout(Duration::from_secs(60)),
            Error::read_timeout(Duration::from_secs(50)),
        ] {
            assert!(error.is_timeout());
            assert!(!error.is_connect());
            assert_eq!(
                holysheep_testkit::io_error_kinds(&error),
                [io::ErrorKind::TimedOut]
            );
        }
        assert!(Error::read_timeout(Duration::from_secs(1)).is_body());
        assert!(!Error::headers_timeout(Duration::from_secs(1)).is_body());
    }

    #[test]
    fn display_names_the_failure() {
        assert_eq!(
            Error::headers_timeout(Duration::from_secs(60)).to_string(),
            "upstream sent no response headers within 60s"
        );
        assert_eq!(
            Error::config("base URL has no host").to_string(),
            "invalid client configuration: base URL has no host"
        );
        let error = Error::config("x");
        assert!(error.is_config());
        assert!(!error.is_timeout() && !error.is_request() && !error.is_body());
    }

    #[test]
    fn timed_out_is_found_deep_in_a_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapper")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let timed_out = Wrapper(io::Error::new(io::ErrorKind::TimedOut, "slow"));
        assert!(chain_has_timed_out(&timed_out));
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!chain_has_timed_out(&refused));
    }
}
