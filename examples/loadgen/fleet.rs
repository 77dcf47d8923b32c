//! `fleet`: upstream calls per distinct prompt when 1, 2 and 4 gateway instances share a Redis.
//!
//! Each instance is a gateway of its own (own in-flight table, caches, Redis connections and
//! upstream pool), in this process, all in front of one mock upstream. A round sends every
//! distinct prompt of a fresh set from many callers at once, spread over the instances in turn
//! (what a load balancer does to a burst), half of them as JSON and half as streams, and counts
//! what reached the mock. The aim is 1.00 upstream call per distinct prompt at every N; a last
//! round with the most instances and fleet coalescing off shows what it saves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use holysheep_core::BoxError;
use holysheep_gateway::GatewayHandle;
use holysheep_mock::{Latency, MockConfig, MockServer};
use holysheep_testkit::redis::RedisServer;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::report::{Table, dur, sig3};
use crate::targets::HttpTarget;
use crate::workload::chat_body;
use crate::{Opts, Output};

/// Instance counts measured.
const INSTANCES: [usize; 3] = [1, 2, 4];
/// Distinct prompts per round.
const PROMPTS: u64 = 40;
/// Callers per prompt, spread over the instances.
const CALLERS: usize = 16;
/// The mock's answer time: long enough for a burst to arrive while the first call is out.
const UPSTREAM_LATENCY: Duration = Duration::from_millis(300);

pub(crate) async fn fleet(opts: &Opts, out: &mut Output) -> Result<(), BoxError> {
    let redis = RedisServer::from_env_or_start()
        .map_err(|e| format!("the fleet run needs a redis-server: {e}"))?;
    // No upstream faults: a retried fault is a second call that says nothing about coalescing.
    let mock = MockServer::start(
        MockConfig::default()
            .api_key(crate::targets::UPSTREAM_KEY)
            .latency(Latency::fixed(UPSTREAM_LATENCY))
            .stream_gap(Duration::from_millis(20)),
    )
    .await?;
    out.say(format!(
        "## Fleet coalescing: upstream calls per distinct prompt\n\n{PROMPTS} distinct prompts per \
         round, each sent by {CALLERS} callers at once spread over the instances in turn (half as \
         JSON, half as streams; the two shapes of one prompt share one answer), upstream latency \
         {}, no upstream faults, one Redis node ({}). Aim: 1.00 at every N.\n",
        dur(UPSTREAM_LATENCY),
        redis.url()
    ));
    let mut table = Table::new([
        "instances",
        "requests",
        "errors",
        "upstream calls",
        "calls per distinct prompt",
        "misses coalesced locally only (Redis too slow)",
        "round time",
    ]);
    // The last round: the most instances with fleet coalescing off, for comparison.
    let rounds = INSTANCES
        .into_iter()
        .map(|n| (n, true))
        .chain([(INSTANCES[INSTANCES.len() - 1], false)]);
    for (round, (n, fleet)) in rounds.enumerate() {
        let mut gateways = Vec::new();
        for _ in 0..n {
            gateways.push(start(opts, &mock, redis.url(), fleet).await?);
        }
        let targets: Vec<Arc<HttpTarget>> = gateways
            .iter()
            .map(|g| HttpTarget::pooled(&crate::gateway_url(g)).map(Arc::new))
            .collect::<Result<_, _>>()?;
        // Warm every instance (connections to Redis and upstream) on prompts of their own.
        for (i, target) in targets.iter().enumerate() {
            let body = chat_body(1_000_000 + i as u64, 7_000 + round as u64, false);
            read(target.send(body)).await?;
        }
        let before = calls(&mock);
        let local_before = local_only(&gateways[0]).await;
        let seed = opts.seed + 1_000 * (round as u64 + 1);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for prompt in 0..PROMPTS {
            for caller in 0..CALLERS {
                let target = Arc::clone(&targets[(prompt as usize + caller) % n]);
                let body = chat_body(prompt, seed, caller % 2 == 1);
                tasks.push(tokio::spawn(async move { read(target.send(body)).await }));
            }
        }
        let requests = tasks.len();
        let mut errors = 0;
        for task in tasks {
            if !matches!(task.await, Ok(Ok(()))) {
                errors += 1;
            }
        }
        let elapsed = started.elapsed();
        let upstream = calls(&mock) - before;
        let local = local_only(&gateways[0]).await.saturating_sub(local_before);
        table.row([
            if fleet {
                n.to_string()
            } else {
                format!("{n}, fleet coalescing off")
            },
            requests.to_string(),
            errors.to_string(),
            upstream.to_string(),
            sig3(upstream as f64 / PROMPTS as f64),
            local.to_string(),
            dur(elapsed),
        ]);
        for gateway in gateways {
            gateway.shutdown().await;
        }
    }
    out.say(table.render());
    mock.shutdown().await;
    Ok(())
}

async fn start(
    opts: &Opts,
    mock: &MockServer,
    redis: &str,
    fleet: bool,
) -> Result<GatewayHandle, BoxError> {
    let mut config = crate::gateway_config(opts, &mock.base_url(), crate::MEMORY_CACHE_BYTES);
    config.settings.cache.redis = Some(vec![redis.to_owned()]);
    config.settings.cache.fleet_coalescing = Some(fleet);
    // The harness's machine is loaded: a roomy Redis bound, so what is measured is coalescing.
    config.settings.cache.redis_timeout_ms = Some(500);
    Ok(holysheep_gateway::Gateway::start(config).await?)
}

/// Reads an answer to its end; `Err` unless it is a `200` read whole.
async fn read(
    response: impl Future<Output = Result<http::Response<hyper::body::Incoming>, BoxError>>,
) -> Result<(), BoxError> {
    let response = response.await?;
    let status = response.status();
    let body: Bytes = response.into_body().collect().await?.to_bytes();
    if status.is_success() && !body.is_empty() {
        Ok(())
    } else {
        Err(format!("answered {status}").into())
    }
}

/// `holysheep_fleet_local_only_total`, all reasons, from a gateway's `/metrics` (the recorder
/// is the process's, so this is every instance's count).
async fn local_only(gateway: &GatewayHandle) -> u64 {
    let url = format!("http://{}/metrics", gateway.addr());
    let Ok(target) = HttpTarget::pooled(&url) else {
        return 0;
    };
    let Ok(response) = target
        .request(http::Request::get(url.as_str()).body(Default::default()))
        .await
    else {
        return 0;
    };
    let Ok(body) = response.into_body().collect().await else {
        return 0;
    };
    String::from_utf8_lossy(&body.to_bytes())
        .lines()
        .filter(|line| line.starts_with("holysheep_fleet_local_only_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Chat calls the mock has received, counted as they arrive.
fn calls(mock: &MockServer) -> u64 {
    mock.stats().requests_for_path("/v1/chat/completions")
        + mock.stats().requests_for_path("/chat/completions")
}
