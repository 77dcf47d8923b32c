//! `routing`: P50 / P99 through the gateway in front of one upstream, and through its router
//! (`holysheep-router`: power of two choices over peak-EWMA load, passive ejection) in front
//! of two upstreams of different latencies.
//!
//! Two mock upstreams answer after a log-normal delay (shaped like the article's world in
//! `crate::world`, no faults): a fast one (median 50 ms, P99 225 ms) and a slow one (median
//! 500 ms, P99 2.25 s). These latencies are real, not divided by `--time-scale`. Each phase
//! starts fresh mocks and a fresh in-process gateway and runs a closed loop of unique prompts
//! (no cache hits) at a fixed concurrency for a fixed time:
//!
//! 1. the gateway in front of the fast upstream alone;
//! 2. the gateway in front of the slow upstream alone;
//! 3. the router over both (two `[[deployments]]`, equal weights);
//! 4. the same, with the fast upstream dropped halfway through the run (its connections cut,
//!    its port closed): the errors the client saw (aim 0).
//!
//! The share of upstream calls each mock received comes from the mocks' own counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use holysheep_core::BoxError;
use holysheep_core::price::PriceTable;
use holysheep_gateway::deployments::DeploymentSettings;
use holysheep_gateway::{Config, Gateway, GatewayHandle};
use holysheep_mock::{Latency, MockConfig, MockServer};
use http_body_util::BodyExt;

use crate::driver::{self, Recorder, Run};
use crate::report::{Table, dur, pct, sig3};
use crate::targets::{HttpTarget, UPSTREAM_KEY};
use crate::workload::{Prompts, Workload};
use crate::{Opts, Output};

/// The fast upstream's median and P99.
const FAST: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(225));
/// The slow upstream's median and P99: ten times the fast one's.
const SLOW: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(2250));
/// The path the gateway's deployments call on a mock (its base URL ends in `/v1`).
const CHAT_PATH: &str = "/v1/chat/completions";
/// The length of one phase unless `--duration` says otherwise.
const DEFAULT_PHASE: Duration = Duration::from_secs(20);

/// The upstreams a phase puts behind the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    FastAlone,
    SlowAlone,
    Router,
    RouterFastDies,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::FastAlone,
        Setup::SlowAlone,
        Setup::Router,
        Setup::RouterFastDies,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::FastAlone => "1. fast upstream alone",
            Setup::SlowAlone => "2. slow upstream alone",
            Setup::Router => "3. router over both",
            Setup::RouterFastDies => "4. router, fast dies halfway",
        }
    }
}

/// What one phase measured.
struct Measured {
    rec: Recorder,
    fast_calls: u64,
    slow_calls: u64,
    /// The gateway's `holysheep_router_*` counters that moved during the phase, by series.
    router: BTreeMap<String, f64>,
}

pub(crate) async fn routing(
    opts: &Opts,
    concurrency: usize,
    out: &mut Output,
) -> Result<(), BoxError> {
    if concurrency == 0 {
        return Err("--callers must be positive".into());
    }
    let phase = opts.duration.unwrap_or(DEFAULT_PHASE);
    let prices = PriceTable::default();
    out.say("## Routing: one upstream vs the router over two");
    out.say("");
    out.say(format!(
        "Two mock upstreams, log-normal latency, no faults: fast (median {}, P99 {}) and slow \
         (median {}, P99 {}); latencies are real (not time-scaled). Each phase: fresh mocks, a \
         fresh in-process gateway (memory cache on, retry deadline {} as in the other modes, \
         router defaults: ejection after 5 failures in a row, 10 s first cool-down), a closed loop of unique prompts (no cache hits) at \
         concurrency {concurrency} for {}. `share` = the chat calls that reached each mock \
         (its own counter, counted on arrival); upstream calls above the client's requests are \
         retries.",
        dur(FAST.0),
        dur(FAST.1),
        dur(SLOW.0),
        dur(SLOW.1),
        dur(crate::stack_settings(opts).deadline),
        dur(phase)
    ));
    out.say("");
    let mut table = Table::new([
        "setup",
        "requests",
        "errors",
        "hits",
        "P50",
        "P90",
        "P99",
        "max",
        "throughput",
        "upstream calls",
        "fast share",
        "slow share",
    ]);
    let mut results = Vec::new();
    for (i, setup) in Setup::ALL.into_iter().enumerate() {
        let m = run_phase(opts, setup, phase, concurrency, i as u64, &prices).await?;
        let calls = m.fast_calls + m.slow_calls;
        let share = |n: u64| {
            if calls == 0 {
                "-".to_owned()
            } else {
                pct(n as f64 / calls as f64)
            }
        };
        table.row([
            setup.name().to_owned(),
            m.rec.total().to_string(),
            m.rec.errors.to_string(),
            m.rec.hits.to_string(),
            dur(m.rec.at(0.5)),
            dur(m.rec.at(0.9)),
            dur(m.rec.at(0.99)),
            dur(Duration::from_nanos(m.rec.latency.max())),
            format!("{} req/s", sig3(m.rec.throughput())),
            calls.to_string(),
            share(m.fast_calls),
            share(m.slow_calls),
        ]);
        results.push((setup, m));
    }
    out.say(table.render());
    let of = |setup: Setup| results.iter().find(|r| r.0 == setup).map(|r| &r.1.rec);
    if let (Some(fast), Some(slow), Some(router)) = (
        of(Setup::FastAlone),
        of(Setup::SlowAlone),
        of(Setup::Router),
    ) {
        let ratio = |a: Duration, b: Duration| sig3(a.as_secs_f64() / b.as_secs_f64().max(1e-9));
        out.say(format!(
            "Router vs the fast upstream alone: P50 {}x, P99 {}x, throughput {}x; vs the slow \
             one alone: P50 {}x, P99 {}x, throughput {}x.",
            ratio(router.at(0.5), fast.at(0.5)),
            ratio(router.at(0.99), fast.at(0.99)),
            sig3(router.throughput() / fast.throughput().max(1e-9)),
            ratio(router.at(0.5), slow.at(0.5)),
            ratio(router.at(0.99), slow.at(0.99)),
            sig3(router.throughput() / slow.throughput().max(1e-9)),
        ));
    }
    for (setup, m) in &results {
        if m.rec.errors > 0 {
            out.say(format!(
                "{}: client answers by status (0 = no answer): {}.",
                setup.name(),
                m.rec.statuses_line()
            ));
        }
    }
    if let Some((_, m)) = results.iter().find(|r| r.0 == Setup::RouterFastDies) {
        let series: Vec<String> = m
            .router
            .iter()
            .map(|(series, n)| format!("`{series}` {n}"))
            .collect();
        out.say(format!(
            "Phase 4, the router's own counters (attempts by deployment and result, ejections): \
             {}.",
            if series.is_empty() {
                "none read".to_owned()
            } else {
                series.join(", ")
            }
        ));
    }
    if let Some(dies) = of(Setup::RouterFastDies) {
        out.say(format!(
            "Aim: 0 client errors while the fast upstream dies halfway -> {} of {} ({}): {}",
            dies.errors,
            dies.total(),
            dies.statuses_line(),
            if dies.errors == 0 { "met" } else { "NOT met" }
        ));
    }
    out.say("");
    Ok(())
}

/// Runs one phase on fresh mocks and a fresh gateway.
async fn run_phase(
    opts: &Opts,
    setup: Setup,
    phase: Duration,
    concurrency: usize,
    index: u64,
    prices: &PriceTable,
) -> Result<Measured, BoxError> {
    let seed = opts.seed.wrapping_add(9_000 + 10 * index);
    let fast = MockServer::start(upstream(FAST, seed)).await?;
    let slow = MockServer::start(upstream(SLOW, seed + 1)).await?;
    let (fast_stats, slow_stats) = (Arc::clone(fast.stats()), Arc::clone(slow.stats()));
    let config = match setup {
        Setup::FastAlone => single(opts, &fast),
        Setup::SlowAlone => single(opts, &slow),
        Setup::Router | Setup::RouterFastDies => routed(opts, &fast, &slow),
    };
    let gateway = Gateway::start(config).await?;
    let target = Arc::new(HttpTarget::pooled(&crate::gateway_url(&gateway))?);
    // The metrics recorder is the process's: counters carry over from earlier phases.
    let before = router_counters(&gateway).await;
    let run = Run {
        label: format!("routing {} c={concurrency}", setup.name()),
        target,
        workload: Workload::new(Prompts::Unique, seed),
        duration: phase,
        parse: false,
        progress: !opts.quiet,
    };
    let (rec, fast) = if setup == Setup::RouterFastDies {
        // Dropping the server aborts its connections (requests in flight included) and closes
        // its port: the upstream is gone, not draining.
        let killer = tokio::spawn(async move {
            tokio::time::sleep(phase / 2).await;
            drop(fast);
        });
        let rec = driver::closed_loop(run, concurrency, prices).await;
        killer.await?;
        (rec, None)
    } else {
        (
            driver::closed_loop(run, concurrency, prices).await,
            Some(fast),
        )
    };
    let mut router = router_counters(&gateway).await;
    for (series, value) in router.iter_mut() {
        *value -= before.get(series).copied().unwrap_or(0.0);
    }
    router.retain(|_, value| *value > 0.0);
    let measured = Measured {
        rec,
        fast_calls: fast_stats.requests_for_path(CHAT_PATH),
        slow_calls: slow_stats.requests_for_path(CHAT_PATH),
        router,
    };
    gateway.shutdown().await;
    if let Some(fast) = fast {
        fast.shutdown().await;
    }
    slow.shutdown().await;
    Ok(measured)
}

/// A mock upstream with a log-normal `(median, p99)` latency and no faults.
fn upstream(latency: (Duration, Duration), seed: u64) -> MockConfig {
    MockConfig::default()
        .api_key(UPSTREAM_KEY)
        .latency(Latency::log_normal(latency.0, latency.1))
        .seed(seed)
}

/// The gateway in front of `mock` alone.
fn single(opts: &Opts, mock: &MockServer) -> Config {
    crate::gateway_config(opts, &mock.base_url(), crate::MEMORY_CACHE_BYTES)
}

/// The gateway's router over `fast` and `slow`: two `[[deployments]]` of equal weight, each
/// with the gateway's own upstream key (no `api_key_env`).
fn routed(opts: &Opts, fast: &MockServer, slow: &MockServer) -> Config {
    let mut config = crate::gateway_config(opts, &fast.base_url(), crate::MEMORY_CACHE_BYTES);
    config.settings.deployments = [("fast", fast), ("slow", slow)]
        .into_iter()
        .map(|(name, mock)| DeploymentSettings {
            name: Some(name.to_owned()),
            base_url: mock.base_url(),
            ..DeploymentSettings::default()
        })
        .collect();
    config
}

/// The gateway's `holysheep_router_*` series from its `/metrics`, by series (name and labels);
/// empty when they cannot be read.
async fn router_counters(gateway: &GatewayHandle) -> BTreeMap<String, f64> {
    let url = format!("http://{}/metrics", gateway.addr());
    let Ok(target) = HttpTarget::pooled(&url) else {
        return BTreeMap::new();
    };
    let Ok(response) = target
        .request(http::Request::get(url.as_str()).body(Default::default()))
        .await
    else {
        return BTreeMap::new();
    };
    let Ok(body) = response.into_body().collect().await else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&body.to_bytes())
        .lines()
        .filter(|line| line.starts_with("holysheep_router_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse::<f64>().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn opts() -> Opts {
        crate::Cli::try_parse_from(["loadgen", "routing", "--quiet"])
            .expect("valid arguments")
            .opts
    }

    /// The single-upstream gateway calls its own mock and the router's gateway the two, on the
    /// path the shares are counted on.
    #[tokio::test]
    async fn the_gateways_call_the_mocks_the_shares_count() {
        let opts = opts();
        let start = || MockServer::start(MockConfig::default().api_key(UPSTREAM_KEY));
        let (fast, slow) = (start().await.expect("mock"), start().await.expect("mock"));
        let calls = |mock: &MockServer| mock.stats().requests_for_path(CHAT_PATH);
        let mut seen = Vec::new();
        for config in [single(&opts, &slow), routed(&opts, &fast, &slow)] {
            let before = (calls(&fast), calls(&slow));
            let gateway = Gateway::start(config).await.expect("gateway");
            let target = HttpTarget::pooled(&crate::gateway_url(&gateway)).expect("target");
            let workload = Workload::new(Prompts::Unique, 5);
            for i in 0..20 {
                let (_, body) = workload.request(i);
                let outcome = crate::driver::Target::call(&target, body, false).await;
                assert!(outcome.ok(), "request {i}: {:?}", outcome.status);
            }
            gateway.shutdown().await;
            seen.push((calls(&fast) - before.0, calls(&slow) - before.1));
        }
        // Alone, the slow mock took every call; routed, the two took 20 between them.
        assert_eq!(seen[0], (0, 20));
        assert_eq!(seen[1].0 + seen[1].1, 20);
    }

    /// Phase 4 end to end, shortened: the fast upstream dies halfway and the client sees no
    /// error; both upstreams took calls and the router ejected the dead one.
    #[tokio::test]
    async fn the_dying_phase_answers_every_request() {
        let prices = PriceTable::default();
        let m = run_phase(
            &opts(),
            Setup::RouterFastDies,
            Duration::from_secs(2),
            4,
            0,
            &prices,
        )
        .await
        .expect("phase");
        assert!(m.rec.total() > 0);
        assert_eq!(m.rec.errors, 0, "{}", m.rec.statuses_line());
        assert!(m.fast_calls > 0 && m.slow_calls > 0);
        assert_eq!(
            m.router
                .get("holysheep_router_ejections_total{deployment=\"fast\"}")
                .copied(),
            Some(1.0)
        );
    }
}
