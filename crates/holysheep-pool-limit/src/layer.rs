use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::request::Parts;
use tower_layer::Layer;

use crate::adaptive::Aimd;
use crate::service::PoolLimit;
use crate::state::{Config, PoolLimitHandle, Shared};

/// Applies [`PoolLimit`] to a service: caps in-flight upstream requests in total and per host,
/// queues briefly for a slot, then sheds with [`Overloaded`](crate::Overloaded).
///
/// Defaults (the pool of the reference Python client): 100 in total, 30 per host, a queue of at
/// most 1000 waiting requests, each waiting at most 5 s, and shed requests told to come back
/// after 1 s.
///
/// Why 5 s: LLM calls hold a slot for seconds (a stream for tens of seconds), so slots turn
/// over on that time scale; with a 1 s wait, a burst that would be served a moment later is
/// shed instead. 5 s is still well inside the 60 s retry deadline and gives up long before a
/// queued caller's own timeout would.
///
/// # Configuration and the pool
///
/// The layer holds plain configuration and one pool: the slots, the queue, the counters and
/// the adaptive limit, shared like the connection pool they protect. Creating the layer and
/// calling its setters only records configuration. The pool is created once, from the
/// configuration in force, when a service is first built from the layer ([`Layer::layer`]) or
/// a [`handle`](Self::handle) is first taken; from then on every service built from this
/// layer, and every handle taken from it, uses that pool and its configuration.
///
/// Clones of the layer, and the layers its setters return, share the pool too: everything
/// derived from one [`new`](Self::new) is one pool, whichever of them builds first. So
/// configure the layer completely before building from it; a setter called after the pool
/// exists changes nothing of it (and logs a warning). For an independent pool, start from
/// another `PoolLimitLayer::new`.
#[derive(Clone)]
pub struct PoolLimitLayer {
    config: Config,
    pool: Arc<OnceLock<Arc<Shared>>>,
}

impl std::fmt::Debug for PoolLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolLimitLayer")
            .field("config", &self.config)
            .field("pool_built", &self.pool.get().is_some())
            .finish()
    }
}

impl Default for PoolLimitLayer {
    /// [`DEFAULT_TOTAL`](Self::DEFAULT_TOTAL) in total, [`DEFAULT_PER_HOST`](Self::DEFAULT_PER_HOST)
    /// per host.
    fn default() -> Self {
        Self::new(Self::DEFAULT_TOTAL, Self::DEFAULT_PER_HOST)
    }
}

impl PoolLimitLayer {
    /// Default cap on requests in flight in total: 100, as the reference Python client's pool.
    pub const DEFAULT_TOTAL: usize = 100;
    /// Default cap on requests in flight to one host: 30, as the reference Python client's pool.
    pub const DEFAULT_PER_HOST: usize = 30;
    /// Default of [`queue_timeout`](Self::queue_timeout): 5 s.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`max_queue`](Self::max_queue): 1000.
    pub const DEFAULT_MAX_QUEUE: usize = 1000;
    /// Default of [`shed_retry_after`](Self::shed_retry_after): 1 s.
    pub const DEFAULT_SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

    /// At most `total` requests in flight, and `per_host` to any one host.
    ///
    /// The host is the request URI's authority, else its `Host` header, else one shared default
    /// bucket. Behind a gateway whose client adds the base URL, requests carry relative paths
    /// and all land in one bucket: the effective cap is then the smaller of the two, as with
    /// the aiohttp pool of the reference Python client. Use [`key_fn`](Self::key_fn) to bucket
    /// otherwise. Limits of 0 are raised to 1.
    pub fn new(total: usize, per_host: usize) -> Self {
        Self {
            config: Config::new(total, per_host),
            pool: Arc::default(),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        if self.pool.get().is_some() {
            tracing::warn!(
                "PoolLimitLayer configured after its pool was built; the setting does not apply"
            );
        }
        f(&mut self.config);
        self
    }

    /// The pool, created from the configuration on first use.
    fn pool(&self) -> Arc<Shared> {
        let pool = self
            .pool
            .get_or_init(|| Arc::new(Shared::new(self.config.clone())));
        Arc::clone(pool)
    }

    /// The cap on requests in flight in total (default 100); 0 is raised to 1.
    pub fn total(self, total: usize) -> Self {
        self.with(|c| c.total = total)
    }

    /// The cap on requests in flight to one host (default 30); 0 is raised to 1.
    pub fn per_host(self, per_host: usize) -> Self {
        self.with(|c| c.per_host = per_host)
    }

    /// The two caps in force, `(total, per_host)` (a configured 0 reads as 1).
    pub fn limits(&self) -> (usize, usize) {
        (self.config.total.max(1), self.config.per_host.max(1))
    }

    /// How long a request may wait for a slot before it is shed (default 5 s): one bound for
    /// its whole wait, for the total and the host slot, in `poll_ready` and in the call. Zero
    /// sheds at once whenever the pool is full.
    pub fn queue_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.queue_timeout = timeout)
    }

    /// How many requests may wait for a slot at once (default 1000); more are shed at once.
    pub fn max_queue(self, depth: usize) -> Self {
        self.with(|c| c.max_queue = depth)
    }

    /// The retry delay a shed request suggests to its caller (default 1 s).
    pub fn shed_retry_after(self, delay: Duration) -> Self {
        self.with(|c| c.shed_retry_after = delay)
    }

    /// Names the per-host bucket of a request from its head; `None` selects the default
    /// bucket. For example, a tenant header, or a fixed upstream name.
    pub fn key_fn<F>(self, key: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.with(|c| c.key = Some(Arc::new(key)))
    }

    /// Lets the total cap adapt to the upstream: lowered when errors, overload statuses or
    /// latency climb, raised again as answers come back good, never above the configured
    /// total. See [`Aimd`] for the algorithm and its defaults.
    ///
    /// ```
    /// use holysheep_pool_limit::{Aimd, PoolLimitLayer};
    ///
    /// let layer = PoolLimitLayer::new(100, 100).adaptive(Aimd::default().min_limit(4));
    /// assert_eq!(layer.handle().limit(), 100);
    /// ```
    pub fn adaptive(self, aimd: Aimd) -> Self {
        self.with(|c| c.adaptive = Some(aimd))
    }

    /// A handle to the pool's counters (in flight, queued, shed, current limit), for metrics.
    ///
    /// It observes every service built from this layer and its clones, before or after the
    /// handle is taken. Taking it creates the pool if no service has yet, so configure the
    /// layer first (see [Configuration and the pool](Self#configuration-and-the-pool)).
    pub fn handle(&self) -> PoolLimitHandle {
        PoolLimitHandle::new(self.pool())
    }
}

impl<S> Layer<S> for PoolLimitLayer {
    type Service = PoolLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PoolLimit::from_shared(inner, self.pool())
    }
}
