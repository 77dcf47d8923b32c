//! The fleet backend: every instance's checks in one Redis (a node or a Cluster), one atomic
//! Lua script per check.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script, Value};
use tokio::sync::OnceCell;
use tokio::time::{Instant, timeout};

use crate::decision::{Check, RateState, Reason, Verdict};
use crate::gcra::{Budget, Gcra, TenantState, day_window, month_window};
use crate::limits::Limits;
use crate::memory::MemoryBackend;
use crate::names;
use crate::usage::TenantUsage;

/// How long a tenant's counters outlive its last request: past a month, so a monthly budget
/// survives quiet weeks.
const KEY_TTL_MS: u64 = 35 * 86_400_000;
/// How often, at most, a failing Redis is logged at warn.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Bound of a connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Target {
    Node(redis::Client),
    // Boxed: a cluster client is large next to a node's.
    Cluster(Box<ClusterClient>),
}

#[derive(Clone)]
enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where a fleet's quota counters live: one Redis node or a Redis Cluster. Give it to
/// [`QuotaLayer::with_redis`](crate::QuotaLayer::with_redis).
///
/// Each check is one round trip: an atomic Lua script (`EVALSHA`, falling back to `EVAL` when
/// the server does not know it yet) on the tenant's hash `{quota:TENANT}:state`. The hash tag
/// keeps every key of a tenant in one Cluster slot. Settling a request (its tokens and dollars,
/// when its answer ends) is a second script, sent in the background.
///
/// Redis is a soft dependency. A check that fails or takes longer than the
/// [`timeout`](Self::timeout) is decided by this instance alone, with limits at
/// [`fallback_share`](Self::fallback_share) of the fleet's, logged at warn at most once every
/// 10 s and counted in [`FALLBACKS`](crate::names::FALLBACKS); for the
/// [`retry_interval`](Self::retry_interval) after a failure checks go straight to the local
/// limits rather than wait for a timeout each. No request fails because of Redis.
#[derive(Clone)]
pub struct RedisQuota {
    target: Target,
    timeout: Duration,
    retry_interval: Duration,
    fallback_share: f64,
    key_prefix: Arc<str>,
}

impl std::fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match self.target {
            Target::Node(_) => "node",
            Target::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisQuota")
            .field("target", &target)
            .field("timeout", &self.timeout)
            .field("retry_interval", &self.retry_interval)
            .field("fallback_share", &self.fallback_share)
            .finish_non_exhaustive()
    }
}

impl RedisQuota {
    /// Default of [`timeout`](Self::timeout): 50 ms, as the cache's Redis store.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    /// Default of [`retry_interval`](Self::retry_interval): 250 ms.
    pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(250);
    /// Default of [`fallback_share`](Self::fallback_share): 0.5.
    pub const DEFAULT_FALLBACK_SHARE: f64 = 0.5;

    /// Counters on the Redis node at `url`. Never waits for Redis; fails only on a malformed
    /// URL.
    pub fn connect(url: &str) -> Result<Self, RedisError> {
        Ok(Self::new(Target::Node(redis::Client::open(url)?)))
    }

    /// Counters on the Redis Cluster reachable through any of `urls`. Never waits for Redis.
    pub fn cluster(urls: &[&str]) -> Result<Self, RedisError> {
        let client = ClusterClient::builder(urls.iter().copied())
            .retries(1)
            .connection_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self::new(Target::Cluster(Box::new(client))))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            timeout: Self::DEFAULT_TIMEOUT,
            retry_interval: Self::DEFAULT_RETRY_INTERVAL,
            fallback_share: Self::DEFAULT_FALLBACK_SHARE,
            key_prefix: Arc::from(""),
        }
    }

    /// The longest a check waits for Redis before this instance decides alone.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failure, how long checks skip Redis before trying it again.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The share (0 to 1) of each fleet limit one instance enforces alone while Redis cannot
    /// be reached: `1 / instances` keeps the fleet at its limit, more lets it exceed the limit
    /// rather than refuse. Requests in flight are counted per instance anyway.
    pub fn fallback_share(mut self, share: f64) -> Self {
        self.fallback_share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            Self::DEFAULT_FALLBACK_SHARE
        };
        self
    }

    /// Text put inside the hash tag before `quota:`, to keep several fleets (or tests) apart
    /// in one Redis: keys become `{PREFIXquota:TENANT}:state`.
    pub fn key_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.key_prefix = prefix.into();
        self
    }
}

/// The running backend.
pub(crate) struct RedisBackend {
    config: RedisQuota,
    conn: OnceCell<Conn>,
    down_until: Mutex<Option<Instant>>,
    last_warn: Mutex<Option<Instant>>,
    local: MemoryBackend,
    check_script: Script,
    settle_script: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    pub(crate) fn new(config: RedisQuota) -> Self {
        Self {
            config,
            conn: OnceCell::new(),
            down_until: Mutex::new(None),
            last_warn: Mutex::new(None),
            local: MemoryBackend::default(),
            check_script: Script::new(include_str!("check.lua")),
            settle_script: Script::new(include_str!("settle.lua")),
        }
    }

    fn key(&self, tenant: &str) -> String {
        // A brace would end (or start) the hash tag early: such names are written in hex.
        if tenant.contains(['{', '}']) {
            let hex: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{{{}quota:x{hex}}}:state", self.config.key_prefix)
        } else {
            format!("{{{}quota:{tenant}}}:state", self.config.key_prefix)
        }
    }

    async fn conn(&self) -> Result<Conn, RedisError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let conn: Result<Conn, RedisError> = match &self.config.target {
                    Target::Node(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_number_of_retries(0)
                            .set_connection_timeout(Some(CONNECT_TIMEOUT))
                            .set_response_timeout(Some(self.config.timeout));
                        Ok(Conn::Node(ConnectionManager::new_lazy_with_config(
                            client.clone(),
                            config,
                        )?))
                    }
                    Target::Cluster(client) => {
                        let config = redis::cluster::ClusterConfig::new()
                            .set_connection_timeout(CONNECT_TIMEOUT)
                            .set_response_timeout(self.config.timeout);
                        Ok(Conn::Cluster(
                            client.get_async_connection_with_config(config).await?,
                        ))
                    }
                };
                conn
            })
            .await?;
        Ok(conn.clone())
    }

    fn is_down(&self) -> bool {
        let down = self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        down.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now + self.config.retry_interval);
        let mut last = self
            .last_warn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            tracing::debug!(%error, "quota: Redis unavailable");
        } else {
            *last = Some(now);
            tracing::warn!(
                %error,
                share = self.config.fallback_share,
                "quota: Redis unavailable; enforcing this instance's share of the limits meanwhile"
            );
        }
    }

    pub(crate) async fn check(&self, tenant: &Arc<str>, limits: &Limits, check: Check) -> Verdict {
        if !self.is_down() {
            match timeout(
                self.config.timeout,
                self.remote_check(tenant, limits, &check),
            )
            .await
            {
                Ok(Ok(verdict)) => return verdict,
                Ok(Err(error)) => self.failed(&error),
                Err(_) => self.failed(&"no answer within the timeout"),
            }
        }
        counter!(names::FALLBACKS).increment(1);
        let mut verdict =
            self.local
                .check(tenant, &limits.scaled(self.config.fallback_share), &check);
        verdict.local = true;
        verdict
    }

    async fn remote_check(
        &self,
        tenant: &str,
        limits: &Limits,
        check: &Check,
    ) -> Result<Verdict, RedisError> {
        let now = check.now_ms;
        let (day, day_end) = day_window(now);
        let (month, month_end) = month_window(now);
        let signed = |l: Option<u64>| l.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut invocation = self.check_script.key(self.key(tenant));
        invocation
            .arg(format!("{now:.3}"))
            .arg(signed(limits.requests_per_minute))
            .arg(signed(limits.tokens_per_minute))
            .arg(check.tokens)
            .arg(limits.dollars_per_day.unwrap_or(-1.0))
            .arg(limits.dollars_per_month.unwrap_or(-1.0))
            .arg(day)
            .arg(day_end)
            .arg(month)
            .arg(month_end)
            .arg(KEY_TTL_MS)
            .arg(if check.may_cost { "1" } else { "0" });
        let reply: Vec<i64> = match self.conn().await? {
            Conn::Node(mut c) => invocation.invoke_async(&mut c).await?,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await?,
        };
        let [reason, wait, rrem, rreset, trem, treset, ..] = reply[..] else {
            return Err(RedisError::from((
                redis::ErrorKind::Parse,
                "quota script reply too short",
            )));
        };
        let mut verdict = Verdict::default();
        let reason = match reason {
            1 => Some(Reason::Requests),
            2 => Some(Reason::Tokens),
            4 => Some(Reason::DailyBudget),
            5 => Some(Reason::MonthlyBudget),
            _ => None,
        };
        if let Some(reason) = reason {
            verdict.reject(reason, wait as f64);
        }
        let rate = |limit: Option<u64>, remaining: i64, reset: i64| {
            limit.map(|limit| RateState {
                limit,
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset_ms: reset.max(0) as f64,
            })
        };
        verdict.requests = rate(limits.requests_per_minute, rrem, rreset);
        verdict.tokens = rate(limits.tokens_per_minute, trem, treset);
        Ok(verdict)
    }

    /// Settles a request decided by Redis in the background; one decided locally, locally.
    pub(crate) fn settle(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        limits: &Limits,
        local: bool,
        token_delta: i64,
        usd: f64,
        now_ms: f64,
    ) {
        let scaled = limits.scaled(self.config.fallback_share);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.local.settle(tenant, &scaled, token_delta, usd, now_ms);
            return;
        };
        if local {
            self.local.settle(tenant, &scaled, token_delta, usd, now_ms);
            return;
        }
        let this = Arc::clone(self);
        let tenant = Arc::clone(tenant);
        let limits = *limits;
        runtime.spawn(async move {
            let sent = timeout(
                this.config.timeout,
                this.remote_settle(&tenant, &limits, token_delta, usd, now_ms),
            )
            .await;
            let error: Option<Box<dyn std::fmt::Display + Send>> = match sent {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Box::new(e)),
                Err(_) => Some(Box::new("no answer within the timeout")),
            };
            if let Some(error) = error {
                // Not lost: counted where the next checks are decided meanwhile.
                this.failed(&*error);
                this.local
                    .settle(&tenant, &scaled, token_delta, usd, now_ms);
            }
        });
    }

    async fn remote_settle(
        &self,
        tenant: &str,
        limits: &Limits,
        token_delta: i64,
        usd: f64,
        now: f64,
    ) -> Result<(), RedisError> {
        let signed = |l: Option<u64>| l.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut invocation = self.settle_script.key(self.key(tenant));
        invocation
            .arg(format!("{now:.3}"))
            .arg(signed(limits.tokens_per_minute))
            .arg(token_delta)
            .arg(format!("{usd:.9}"))
            .arg(day_window(now).0)
            .arg(month_window(now).0)
            .arg(KEY_TTL_MS);
        let _: Value = match self.conn().await? {
            Conn::Node(mut c) => invocation.invoke_async(&mut c).await?,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await?,
        };
        Ok(())
    }

    pub(crate) async fn usage(
        &self,
        tenant: &Arc<str>,
        limits: &Limits,
        now_ms: f64,
    ) -> TenantUsage {
        if !self.is_down() {
            match timeout(self.config.timeout, self.remote_state(tenant)).await {
                Ok(Ok(state)) => return TenantUsage::from_state(&state, limits, now_ms),
                Ok(Err(error)) => self.failed(&error),
                Err(_) => self.failed(&"no answer within the timeout"),
            }
        }
        let mut usage =
            self.local
                .usage(tenant, &limits.scaled(self.config.fallback_share), now_ms);
        usage.local_fallback = true;
        usage
    }

    async fn remote_state(&self, tenant: &str) -> Result<TenantState, RedisError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key(tenant)).arg(&[
            "rtat", "rlim", "ttat", "tlim", "dwin", "dspent", "mwin", "mspent",
        ]);
        let f: Vec<Option<String>> = match self.conn().await? {
            Conn::Node(mut c) => cmd.query_async(&mut c).await?,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await?,
        };
        let num = |i: usize| -> f64 {
            f.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let win = |i: usize| -> i64 {
            f.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN)
        };
        Ok(TenantState {
            requests: Gcra {
                tat: num(0),
                limit: num(1) as u64,
            },
            tokens: Gcra {
                tat: num(2),
                limit: num(3) as u64,
            },
            day: Budget {
                window: win(4),
                spent: num(5),
            },
            month: Budget {
                window: win(6),
                spent: num(7),
            },
        })
    }
}
