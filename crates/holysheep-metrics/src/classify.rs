//! Sorting failures into the `class` label of `holysheep_errors_total`.

use std::any::Any;
use std::error::Error;
use std::fmt;

pub use holysheep_core::error::ErrorClass;
use holysheep_core::error::{as_error, as_error_of};

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

/// The default [`ClassifyError`]: `holysheep-core`'s one classification of errors,
/// [`ErrorClass::of`], applied to the error seen as `&dyn Error`.
///
/// So the label is `overload` for a shed ([`Overloaded`], from `PoolLimitLayer` or any other
/// layer, and tower's load-shed error), `deadline` for a passed [`DeadlineExceeded`] (from
/// `RetryLayer`), `timeout` and `connect` for transport failures (I/O errors, hyper's,
/// tower's and tokio's timeouts), and `other` for the rest, wherever they are in the error's
/// `source()` chain. No registration is needed for any HolySheep layer.
///
/// Errors are seen as `&dyn Error` by [`as_error`](Self::as_error) when they are boxed
/// (`tower::BoxError` and kin, what most tower stacks return) or one of the types
/// [`holysheep_core::error::as_error`] knows; a service or body that fails with another
/// error type, unboxed, is registered with [`error_type`](Self::error_type) so its chain is
/// walked too.
///
/// ```
/// use holysheep_metrics::{DefaultClassifyError, MetricsLayer};
///
/// # #[derive(Debug)] struct MyError;
/// # impl std::fmt::Display for MyError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("mine") }
/// # }
/// # impl std::error::Error for MyError {}
/// // For a service whose error type is `MyError`, returned as it is:
/// let layer = MetricsLayer::new().classify_errors(DefaultClassifyError::new().error_type::<MyError>());
/// # let _ = layer;
/// ```
///
/// [`Overloaded`]: holysheep_core::error::Overloaded
/// [`DeadlineExceeded`]: holysheep_core::error::DeadlineExceeded
#[derive(Clone, Default)]
pub struct DefaultClassifyError {
    views: Vec<View>,
}

impl DefaultClassifyError {
    /// The classifier for boxed errors and the error types `holysheep-core` knows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets the classifier see errors of type `E` returned as they are (not boxed), so they
    /// and their `source()` chain are classified too. Boxed errors (`tower::BoxError`) and the
    /// types [`holysheep_core::error::as_error`] knows need no such call.
    pub fn error_type<E: Error + 'static>(mut self) -> Self {
        self.views.push(as_error_of::<E>);
        self
    }

    /// `error` as `&dyn Error`: what [`holysheep_core::error::as_error`] sees, or a type
    /// registered with [`error_type`](Self::error_type).
    pub fn as_error<'a>(
        &self,
        error: &'a (dyn Any + 'static),
    ) -> Option<&'a (dyn Error + 'static)> {
        as_error(error).or_else(|| self.views.iter().find_map(|view| view(error)))
    }
}

impl ClassifyError for DefaultClassifyError {
    fn classify(&self, error: &(dyn Any + 'static)) -> ErrorClass {
        self.as_error(error)
            .map_or(ErrorClass::Other, ErrorClass::of)
    }
}

impl fmt::Debug for DefaultClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultClassifyError")
            .field("error_types", &self.views.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    use holysheep_core::BoxError;
    use holysheep_core::error::{DeadlineExceeded, Overloaded};

    #[derive(Debug)]
    struct Wrap(BoxError);
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

    fn boxed(c: &DefaultClassifyError, e: BoxError) -> ErrorClass {
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
    fn the_layers_errors_need_no_registration() {
        let c = DefaultClassifyError::new();
        let shed = Overloaded::new(Duration::from_secs(1));
        assert_eq!(
            boxed(&c, Box::new(Wrap(Box::new(shed)))),
            ErrorClass::Overload
        );
        assert_eq!(c.classify(&shed), ErrorClass::Overload);
        let late = DeadlineExceeded::new(Duration::from_secs(1));
        assert_eq!(boxed(&c, Box::new(late)), ErrorClass::Deadline);
        assert_eq!(
            c.classify(&tower::timeout::error::Elapsed::new()),
            ErrorClass::Timeout
        );
        assert_eq!(
            boxed(&c, Box::new(tower::load_shed::error::Overloaded::new())),
            ErrorClass::Overload
        );
        let closure = |e: &(dyn Any + 'static)| {
            if e.is::<Wrap>() {
                ErrorClass::Connect
            } else {
                ErrorClass::Other
            }
        };
        assert_eq!(closure.classify(&Wrap("busy".into())), ErrorClass::Connect);
    }
}
