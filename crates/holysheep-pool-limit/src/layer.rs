use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use tower_layer::Layer;

use crate::adaptive::Aimd;
use crate::service::PoolLimit;
use crate::state::{Config, PoolLimitHandle, Shared};

/// Applies [`PoolLimit`] to a service: caps in-flight upstream requests in total and per host,
/// queues briefly for a slot, then sheds with [`Overloaded`](crate::Overloaded).
///
/// All services this layer builds, and their clones, share one pool of slots, like the
/// connection pool they protect; build another layer for an independent pool.
///
/// Defaults (the seed's pool): 100 in total, 30 per host, a queue of at most 1000 waiting
/// requests, each waiting at most 5 s, and shed requests told to come back after 1 s.
///
/// Why 5 s: LLM calls hold a slot for seconds (a stream for tens of seconds), so slots turn
/// over on that time scale; with a 1 s wait, a burst that would be served a moment later is
/// shed instead. 5 s is still well inside the 60 s retry deadline and gives up long before a
/// queued caller's own timeout would.
#[derive(Clone)]
pub struct PoolLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PoolLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolLimitLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Default for PoolLimitLayer {
    fn default() -> Self {
        Self::new(100, 30)
    }
}

impl PoolLimitLayer {
    /// At most `total` requests in flight, and `per_host` to any one host.
    ///
    /// The host is the request URI's authority, else its `Host` header, else one shared default
    /// bucket. Behind a gateway whose client adds the base URL, requests carry relative paths
    /// and all land in one bucket: the effective cap is then the smaller of the two, as with
    /// the seed's aiohttp pool. Use [`key_fn`](Self::key_fn) to bucket otherwise. Limits of 0
    /// are raised to 1.
    pub fn new(total: usize, per_host: usize) -> Self {
        Self {
            shared: Arc::new(Shared::new(Config::new(total, per_host))),
        }
    }

    fn with(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config.clone();
        f(&mut config);
        Self {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// How long a request may wait for a slot before it is shed (default 5 s). Zero sheds at
    /// once whenever the pool is full.
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

    /// A handle to the pool's counters (in flight, queued, shed), for metrics.
    ///
    /// Take it once the layer is configured: each builder method starts a fresh pool.
    pub fn handle(&self) -> PoolLimitHandle {
        PoolLimitHandle::new(Arc::clone(&self.shared))
    }
}

impl<S> Layer<S> for PoolLimitLayer {
    type Service = PoolLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PoolLimit::from_shared(inner, Arc::clone(&self.shared))
    }
}
