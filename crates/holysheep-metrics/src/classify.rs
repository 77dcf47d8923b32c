//! Sorting failures into the `class` label of `holysheep_errors_total`.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::io;

/// The class of a failed call: the `class` label of `holysheep_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A deadline passed: connect, headers, body read or an overall timeout.
    Timeout,
    /// The upstream could not be reached, or the connection broke.
    Connect,
    /// The call was shed because the service was at capacity. Also counted in
    /// `holysheep_shed_total`.
    Overload,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// The label value: `timeout`, `connect`, `overload` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Overload => "overload",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the [`ErrorClass`] of an error returned by the inner service or its response body.
///
/// The error arrives as `&dyn Any` because the layer accepts services and bodies of any error
/// type (`Infallible`, `tower::BoxError`, `hyper::Error`, your own), and the boxed trait
/// objects do not implement [`Error`]. [`DefaultClassifyError::as_error`] turns the usual ones
/// into `&dyn Error`.
///
/// Implemented by [`DefaultClassifyError`] and by any
/// `Fn(&(dyn Any + 'static)) -> ErrorClass + Send + Sync + 'static` closure.
pub trait ClassifyError: Send + Sync + 'static {
    /// The class of `error`, the value the service or the body failed with.
    fn classify(&self, error: &(dyn Any + 'static)) -> ErrorClass;
}

impl<F> ClassifyError for F
where
    F: Fn(&(dyn Any + 'static)) -> ErrorClass + Send + Sync + 'static,
{
    fn classify(&self, error: &(dyn Any + 'static)) -> ErrorClass {
        self(error)
    }
}

type View = for<'a> fn(&'a (dyn Any + 'static)) -> Option<&'a (dyn Error + 'static)>;
type Matcher = fn(&(dyn Error + 'static)) -> bool;

/// The default [`ClassifyError`]: sees the error as `&dyn Error` (see
/// [`as_error`](Self::as_error)), walks it and its `source()` chain, outermost first, and takes
/// the first error it recognises. Messages (`Display`) are never looked at.
///
/// It recognises, at every level of the chain:
/// - error types registered with [`overload`](Self::overload), [`timeout`](Self::timeout) and
///   [`connect`](Self::connect), in the order they were registered;
/// - [`std::io::Error`] of kind `TimedOut` as [`ErrorClass::Timeout`], and of the kinds a broken
///   or refused connection has (`ConnectionRefused`, `ConnectionReset`, `ConnectionAborted`,
///   `NotConnected`, `AddrNotAvailable`, `BrokenPipe`, `HostUnreachable`, `NetworkUnreachable`)
///   as [`ErrorClass::Connect`];
/// - tokio's and tower's timeout `Elapsed` as [`ErrorClass::Timeout`], and tower's load-shed
///   `Overloaded` as [`ErrorClass::Overload`].
///
/// Everything else is [`ErrorClass::Other`]. This crate depends on no other HolySheep layer, so
/// the pool limit's overload error is registered by whoever composes the stack:
///
/// ```
/// use holysheep_metrics::{DefaultClassifyError, MetricsLayer};
///
/// # #[derive(Debug)] struct Overloaded;
/// # impl std::fmt::Display for Overloaded {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("busy") }
/// # }
/// # impl std::error::Error for Overloaded {}
/// // With `holysheep_pool_limit::Overloaded` in place of this stand-in:
/// let layer = MetricsLayer::new()
///     .classify_errors(DefaultClassifyError::new().overload::<Overloaded>());
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct DefaultClassifyError {
    views: Vec<View>,
    registered: Vec<(Matcher, ErrorClass)>,
}

impl DefaultClassifyError {
    /// The classifier with only the built-in rules.
    pub fn new() -> Self {
        Self {
            views: vec![
                view_boxed_send_sync,
                view_boxed_send,
                view_boxed,
                view::<io::Error>,
                view::<tokio::time::error::Elapsed>,
                view::<tower::timeout::error::Elapsed>,
                view::<tower::load_shed::error::Overloaded>,
                view::<http::Error>,
            ],
            registered: Vec::new(),
        }
    }

    /// Lets the classifier see errors of type `E` returned as they are (not boxed), so their
    /// `source()` chain is walked too. Boxed errors (`tower::BoxError`) and the types
    /// registered with the methods below need no such call.
    pub fn error_type<E: Error + 'static>(mut self) -> Self {
        self.views.push(view::<E>);
        self
    }

    /// Classifies errors of type `E` (anywhere in the chain) as [`ErrorClass::Overload`].
    pub fn overload<E: Error + 'static>(self) -> Self {
        self.register::<E>(ErrorClass::Overload)
    }

    /// Classifies errors of type `E` (anywhere in the chain) as [`ErrorClass::Timeout`].
    pub fn timeout<E: Error + 'static>(self) -> Self {
        self.register::<E>(ErrorClass::Timeout)
    }

    /// Classifies errors of type `E` (anywhere in the chain) as [`ErrorClass::Connect`].
    pub fn connect<E: Error + 'static>(self) -> Self {
        self.register::<E>(ErrorClass::Connect)
    }

    fn register<E: Error + 'static>(mut self, class: ErrorClass) -> Self {
        self.registered.push((is::<E>, class));
        self.error_type::<E>()
    }

    /// `error` as `&dyn Error`, when it is a boxed error (`Box<dyn Error + Send + Sync>` and
    /// kin), a [`std::io::Error`], a tokio or tower timeout or overload error, an
    /// [`http::Error`], or a type registered here.
    pub fn as_error<'a>(
        &self,
        error: &'a (dyn Any + 'static),
    ) -> Option<&'a (dyn Error + 'static)> {
        self.views.iter().find_map(|view| view(error))
    }

    fn one(&self, error: &(dyn Error + 'static)) -> Option<ErrorClass> {
        if let Some((_, class)) = self.registered.iter().find(|(m, _)| m(error)) {
            return Some(*class);
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return io_class(io.kind());
        }
        if error.is::<tokio::time::error::Elapsed>() || error.is::<tower::timeout::error::Elapsed>()
        {
            return Some(ErrorClass::Timeout);
        }
        if error.is::<tower::load_shed::error::Overloaded>() {
            return Some(ErrorClass::Overload);
        }
        None
    }

    /// The class of an error already seen as `&dyn Error`: the chain walk of
    /// [`classify`](ClassifyError::classify), for closures that handle a few types themselves.
    pub fn classify_error(&self, error: &(dyn Error + 'static)) -> ErrorClass {
        holysheep_core::error::chain(error)
            .find_map(|e| self.one(e))
            .unwrap_or(ErrorClass::Other)
    }
}

impl Default for DefaultClassifyError {
    fn default() -> Self {
        Self::new()
    }
}

fn view<'a, E: Error + 'static>(
    error: &'a (dyn Any + 'static),
) -> Option<&'a (dyn Error + 'static)> {
    error.downcast_ref::<E>().map(|e| e as _)
}

fn view_boxed_send_sync<'a>(error: &'a (dyn Any + 'static)) -> Option<&'a (dyn Error + 'static)> {
    error
        .downcast_ref::<Box<dyn Error + Send + Sync>>()
        .map(|e| &**e as _)
}

fn view_boxed_send<'a>(error: &'a (dyn Any + 'static)) -> Option<&'a (dyn Error + 'static)> {
    error
        .downcast_ref::<Box<dyn Error + Send>>()
        .map(|e| &**e as _)
}

fn view_boxed<'a>(error: &'a (dyn Any + 'static)) -> Option<&'a (dyn Error + 'static)> {
    error.downcast_ref::<Box<dyn Error>>().map(|e| &**e as _)
}

fn is<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    error.is::<E>()
}

fn io_class(kind: io::ErrorKind) -> Option<ErrorClass> {
    use io::ErrorKind as K;
    match kind {
        K::TimedOut => Some(ErrorClass::Timeout),
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::AddrNotAvailable
        | K::BrokenPipe
        | K::HostUnreachable
        | K::NetworkUnreachable => Some(ErrorClass::Connect),
        _ => None,
    }
}

impl ClassifyError for DefaultClassifyError {
    fn classify(&self, error: &(dyn Any + 'static)) -> ErrorClass {
        match self.as_error(error) {
            Some(error) => self.classify_error(error),
            None => ErrorClass::Other,
        }
    }
}

impl fmt::Debug for DefaultClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultClassifyError")
            .field("error_types", &self.views.len())
            .field("registered", &self.registered.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(Box<dyn Error + Send + Sync>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[derive(Debug)]
    struct Busy;
    impl fmt::Display for Busy {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("busy")
        }
    }
    impl Error for Busy {}

    fn boxed(c: &DefaultClassifyError, e: Box<dyn Error + Send + Sync>) -> ErrorClass {
        c.classify(&e)
    }

    #[test]
    fn io_kinds_anywhere_in_the_chain() {
        let c = DefaultClassifyError::new();
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(
            boxed(&c, Box::new(Wrap(Box::new(timed_out)))),
            ErrorClass::Timeout
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(c.classify(&refused), ErrorClass::Connect);
        assert_eq!(
            boxed(&c, Box::new(io::Error::other("what"))),
            ErrorClass::Other
        );
        assert_eq!(boxed(&c, "plain".into()), ErrorClass::Other);
        assert_eq!(c.classify(&"not an error"), ErrorClass::Other);
    }

    #[test]
    fn unboxed_types_are_seen_once_registered() {
        let c = DefaultClassifyError::new();
        let wrapped = Wrap(Box::new(io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(c.classify(&wrapped), ErrorClass::Other);
        let c = c.error_type::<Wrap>();
        assert_eq!(c.classify(&wrapped), ErrorClass::Timeout);
    }

    #[test]
    fn tower_errors_and_registered_types() {
        let c = DefaultClassifyError::new();
        assert_eq!(
            c.classify(&tower::timeout::error::Elapsed::new()),
            ErrorClass::Timeout
        );
        assert_eq!(
            boxed(&c, Box::new(tower::load_shed::error::Overloaded::new())),
            ErrorClass::Overload
        );
        assert_eq!(boxed(&c, Box::new(Wrap(Box::new(Busy)))), ErrorClass::Other);
        let c = c.overload::<Busy>();
        assert_eq!(
            boxed(&c, Box::new(Wrap(Box::new(Busy)))),
            ErrorClass::Overload
        );
        assert_eq!(c.classify(&Busy), ErrorClass::Overload);
        let closure = |e: &(dyn Any + 'static)| {
            if e.is::<Wrap>() {
                ErrorClass::Connect
            } else {
                ErrorClass::Other
            }
        };
        assert_eq!(closure.classify(&Wrap(Box::new(Busy))), ErrorClass::Connect);
    }
}
