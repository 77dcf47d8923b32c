//! `loadgen`: the load harness behind `BENCHMARKS.md`. It reproduces the HolySheep article's
//! before/after table against the mock upstream, measures what the gateway itself costs, and
//! times cache hits; it prints every table it computes and draws its own SVG plots.
//!
//! ```text
//! cargo run --release --example loadgen -- article-table [--duration 30s]
//! cargo run --release --example loadgen -- overhead [--segment 2s --rounds 3]
//! cargo run --release --example loadgen -- hits
//! cargo run --release --example loadgen -- all --out bench-results/
//! cargo run --release --example loadgen -- soak [--duration 10m] --out bench-results/
//! cargo run --example loadgen -- routing [--duration 20s --callers 16] --out bench-results/
//! ```
//!
//! Everything runs in this one process, on loopback: the mock upstream (`holysheep-mock`), the
//! in-process stack (`holysheep::Stack`: `MetricsLayer → CacheLayer → RetryLayer →
//! PoolLimitLayer → HolySheepClient`), the gateway (the `holysheep-gateway` crate, started
//! in-process) and a hyper client. A progress line goes to
//! stderr once a second; results go to stdout (and `--out DIR/loadgen-output.txt`).
//!
//! `soak` (not part of `all`) runs mixed traffic against the gateway for ten minutes while
//! Redis is killed and restarted, and reports memory, open files and the in-flight gauge over
//! time (`--out DIR/soak-output.txt`, `DIR/soak-rss.svg`); see `soak.rs`.
//!
//! `routing` (not part of `all`) compares the gateway in front of one upstream with its router
//! over two upstreams of different latencies, and over two where the fast one dies midway
//! (`--out DIR/loadgen-routing.txt`); see `routing.rs`.

mod driver;
mod fleet;
mod nginx;
mod proxy;
mod report;
mod routing;
mod soak;
mod svg;
mod system;
mod targets;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use holysheep::retry::RetryLayer;
use holysheep_core::BoxError;
use holysheep_core::price::PriceTable;
use holysheep_gateway::{Config, Gateway, GatewayHandle};
use holysheep_mock::{Latency, MockConfig, MockServer};
use holysheep_testkit::redis::RedisServer;

use driver::{Recorder, Run};
use report::{Table, change, delta_us, dur, median, pct, sig3, times};
use targets::{HttpTarget, Shared, StackSettings, StackTarget, UPSTREAM_KEY};
use workload::{Prompts, Workload, Zipf};

/// Requests per month at the article's 50k requests/hour (30 days).
const ARTICLE_REQUESTS_PER_MONTH: f64 = 50_000.0 * 24.0 * 30.0;

/// The bound of the in-memory cache in both the in-process stack and the gateway.
const MEMORY_CACHE_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Parser)]
#[command(about = "Load harness: the article's before/after table, gateway overhead, cache hits")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Clone, PartialEq, Eq)]
enum Command {
    /// The article's table: naive client vs the full stack (in-process and through the gateway).
    ArticleTable,
    /// The gateway's own cost: direct to the mock vs through the gateway (and the in-process
    /// stack), zero upstream latency, unique prompts.
    Overhead,
    /// Cache hit latency end to end: memory and Redis.
    Hits,
    /// All of the above, in that order.
    All,
    /// Upstream calls per distinct prompt with 1, 2 and 4 gateway instances sharing a Redis
    /// (fleet coalescing), under bursts of identical requests spread over the instances.
    Fleet,
    /// Mixed traffic through the gateway for `--duration` (default 10 minutes) with upstream
    /// faults, hang-ups, slow readers and two Redis restarts: memory, open files and the
    /// in-flight gauge over time.
    Soak,
    /// P50 / P99 through the gateway in front of a fast upstream alone, a slow one alone, the
    /// router over both, and the router over both while the fast one dies halfway (each phase
    /// `--duration`, default 20s).
    Routing {
        /// Closed-loop concurrency of every phase.
        #[arg(long, default_value_t = 16)]
        callers: usize,
    },
    /// Runs only the gateway in front of `--upstream`, prints `listening <addr>` and serves
    /// until standard input closes: the child process whose memory `overhead` measures.
    #[command(hide = true)]
    ServeGateway {
        /// The upstream base URL.
        #[arg(long)]
        upstream: String,
        /// The bound of the gateway's memory cache, in MiB.
        #[arg(long, default_value_t = 16)]
        cache_mib: u64,
    },
}

#[derive(Args, Clone)]
struct Opts {
    /// Length of each article-table phase (open loop and closed loop, per client; default
    /// 30s), of each routing phase (default 20s), or of the whole soak (default 10m).
    #[arg(long, global = true, value_parser = report::parse_duration)]
    duration: Option<Duration>,
    /// How many times the soak kills and restarts Redis, evenly spread over the run.
    #[arg(long, global = true, default_value_t = 2)]
    redis_restarts: u32,
    /// How often the soak samples memory, open files and the gauges.
    #[arg(long, global = true, default_value = "5s", value_parser = report::parse_duration)]
    sample_every: Duration,
    /// Time compression of the world: upstream latencies and backoffs are divided by it and
    /// the request rate multiplied by it. Ratios are unchanged; absolute times are compressed.
    #[arg(long, global = true, default_value_t = 10.0)]
    time_scale: f64,
    /// Open-loop request rate in real-world requests per second (the article's 50k/hour).
    #[arg(long, global = true, default_value_t = 50_000.0 / 3600.0)]
    rate: f64,
    /// Closed-loop concurrency of the article-table throughput runs.
    #[arg(long, global = true, default_value_t = 64)]
    concurrency: usize,
    /// The repeat share the Zipf prompt set is sized for (the repeat share itself is measured).
    #[arg(long, global = true, default_value_t = 0.70)]
    repeat_share: f64,
    /// The number of popular prompts the repeats are drawn from.
    #[arg(long, global = true, default_value_t = 100)]
    prompts: usize,
    /// The Zipf exponent.
    #[arg(long, global = true, default_value_t = 1.0)]
    zipf_s: f64,
    /// Seed of prompts and upstream faults.
    #[arg(long, global = true, default_value_t = 42)]
    seed: u64,
    /// Length of one overhead / hits segment.
    #[arg(long, global = true, default_value = "2s", value_parser = report::parse_duration)]
    segment: Duration,
    /// Overhead rounds (each round runs every client at every concurrency once, alternating).
    #[arg(long, global = true, default_value_t = 3)]
    rounds: usize,
    /// Overhead concurrencies.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "1,4,16,64"
    )]
    levels: Vec<usize>,
    /// Skip the gateway (measure the in-process stack only).
    #[arg(long, global = true)]
    no_gateway: bool,
    /// No progress lines.
    #[arg(long, global = true)]
    quiet: bool,
    /// Write the SVG plots and a copy of this output here.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

/// Everything printed, kept for `--out`.
struct Output {
    text: String,
}

impl Output {
    fn say(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    fn write_file(&self, opts: &Opts, name: &str, contents: &str) {
        if let Some(dir) = &opts.out {
            let path = dir.join(name);
            match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, contents)) {
                Ok(()) => eprintln!("wrote {}", path.display()),
                Err(e) => eprintln!("cannot write {}: {e}", path.display()),
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let Cli { command, opts } = Cli::parse();
    // Quiet unless asked: the harness's own output is its report.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if let Command::ServeGateway {
        upstream,
        cache_mib,
    } = &command
    {
        return serve_gateway(&opts, upstream, *cache_mib).await;
    }
    if opts.time_scale <= 0.0 || opts.rate <= 0.0 || opts.rounds == 0 || opts.levels.is_empty() {
        return Err("--time-scale, --rate, --rounds and --levels must be positive".into());
    }
    let mut out = Output {
        text: String::new(),
    };
    out.say(format!("# loadgen ({})", command_line()));
    out.say(format!("machine: {}", system::machine()));
    out.say(
        "note: a shared 2-core machine; other work ran at the same time, so absolute numbers are \
         noisy. Trust ratios measured within one run more than absolute values.",
    );
    out.say("");

    let prices = PriceTable::default();
    let mut sections_run = 0;
    if matches!(command, Command::ArticleTable | Command::All) {
        article_table(&opts, &prices, &mut out).await?;
        sections_run += 1;
    }
    if matches!(command, Command::Overhead | Command::All) {
        overhead(&opts, &prices, &mut out).await?;
        sections_run += 1;
    }
    if matches!(command, Command::Hits | Command::All) {
        hits(&opts, &prices, &mut out).await?;
        sections_run += 1;
    }
    if command == Command::Fleet {
        fleet::fleet(&opts, &mut out).await?;
        sections_run += 1;
    }
    if command == Command::Soak {
        soak::soak(&opts, &mut out).await?;
        sections_run += 1;
    }
    if let Command::Routing { callers } = command {
        routing::routing(&opts, callers, &mut out).await?;
        sections_run += 1;
    }
    debug_assert!(sections_run > 0);
    let name = match command {
        Command::All | Command::ServeGateway { .. } => "loadgen-output.txt".to_owned(),
        Command::ArticleTable => "loadgen-article-table.txt".to_owned(),
        Command::Overhead => "loadgen-overhead.txt".to_owned(),
        Command::Hits => "loadgen-hits.txt".to_owned(),
        Command::Soak => "soak-output.txt".to_owned(),
        Command::Fleet => "loadgen-fleet.txt".to_owned(),
        Command::Routing { .. } => "loadgen-routing.txt".to_owned(),
    };
    out.write_file(&opts, &name, &out.text);
    Ok(())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("loadgen {}", args.join(" "))
}

/// The length of one article-table phase.
fn phase_duration(opts: &Opts) -> Duration {
    opts.duration.unwrap_or(Duration::from_secs(30))
}

fn scaled(opts: &Opts, real: Duration) -> Duration {
    real.div_f64(opts.time_scale)
}

/// The in-process stack's settings: every layer's defaults, with the backoffs and the deadline
/// time-scaled like the rest of the world.
fn stack_settings(opts: &Opts) -> StackSettings {
    StackSettings {
        backoff: (
            scaled(opts, RetryLayer::DEFAULT_BACKOFF_BASE),
            scaled(opts, RetryLayer::DEFAULT_BACKOFF_MAX),
        ),
        deadline: scaled(opts, RetryLayer::DEFAULT_DEADLINE),
        memory_max_bytes: MEMORY_CACHE_BYTES,
    }
}

/// Starts the gateway in-process in front of `mock`, with the same knobs as the
/// in-process stack.
async fn start_gateway(opts: &Opts, mock: &MockServer) -> Result<GatewayHandle, BoxError> {
    start_gateway_for(opts, &mock.base_url(), MEMORY_CACHE_BYTES).await
}

/// The `serve-gateway` child: the gateway alone in its process, so its memory can be read.
async fn serve_gateway(opts: &Opts, upstream: &str, cache_mib: u64) -> Result<(), BoxError> {
    let gateway = start_gateway_for(opts, upstream, cache_mib << 20).await?;
    println!("listening {}", gateway.addr());
    // Serve until the parent closes our standard input (or goes away).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
    gateway.shutdown().await;
    Ok(())
}

async fn start_gateway_for(
    opts: &Opts,
    upstream: &str,
    cache_bytes: u64,
) -> Result<GatewayHandle, BoxError> {
    Ok(Gateway::start(gateway_config(opts, upstream, cache_bytes)).await?)
}

/// The gateway's configuration in front of `upstream`: the in-process stack's knobs, a memory
/// cache bounded at `cache_bytes`.
fn gateway_config(opts: &Opts, upstream: &str, cache_bytes: u64) -> Config {
    let settings = stack_settings(opts);
    let mut config = Config::in_process(upstream, UPSTREAM_KEY);
    let s = &mut config.settings;
    s.server.shutdown_grace_secs = Some(2);
    s.retry.base_ms = Some(millis(settings.backoff.0));
    s.retry.cap_ms = Some(millis(settings.backoff.1));
    s.retry.deadline_secs = Some(settings.deadline.as_secs().max(1));
    s.cache.memory_max_bytes = Some(cache_bytes);
    config
}

/// Whole milliseconds, at least 1 (the gateway's settings are in ms).
fn millis(duration: Duration) -> u64 {
    (duration.as_millis() as u64).max(1)
}

/// The bare proxy's client: the very client the stack builds with its defaults, and no layers
/// around it.
fn proxy_client(upstream: &str) -> Result<holysheep::client::HolySheepClient, BoxError> {
    let stack = holysheep::Stack::builder()
        .client(
            holysheep::client::HolySheepClient::builder()
                .base_url(upstream)
                .api_key(UPSTREAM_KEY),
        )
        .build()?;
    Ok(stack.client().clone())
}

/// nginx in front of `mock`; its static server answers one of the mock's own answers.
async fn start_nginx(mock: &MockServer) -> Result<nginx::Nginx, BoxError> {
    let body: serde_json::Value = serde_json::from_slice(&workload::body_for(0, 1))?;
    let reply =
        holysheep_testkit::post_json(&mock.url("/chat/completions"), Some(UPSTREAM_KEY), &body)
            .await;
    if !reply.status.is_success() {
        return Err(format!(
            "the mock answered {} to the static answer's request",
            reply.status
        )
        .into());
    }
    nginx::Nginx::start(mock.addr(), &reply.text())
}

fn gateway_url(gateway: &GatewayHandle) -> String {
    format!("http://{}/v1/chat/completions", gateway.addr())
}

/// One client's run of one phase, with what the mock saw.
struct Phase {
    name: String,
    rec: Recorder,
    upstream_requests: u64,
    upstream_connections: u64,
}

/// Which client a article-table phase uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Naive,
    Library,
    Gateway,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Naive => "before: naive client",
            Client::Library => "after: library stack",
            Client::Gateway => "after: via gateway",
        }
    }
}

/// The article's world, time-compressed.
fn world(opts: &Opts) -> MockConfig {
    MockConfig::default()
        .api_key(UPSTREAM_KEY)
        .latency(Latency::log_normal(
            scaled(opts, Duration::from_millis(1000)),
            scaled(opts, Duration::from_millis(4500)),
        ))
        .cold_penalty(scaled(opts, Duration::from_millis(250)))
        .error_rate(0.023)
        .seed(opts.seed)
}

/// Runs one article-table phase on a fresh mock (and a fresh cache).
async fn article_phase(
    opts: &Opts,
    prices: &PriceTable,
    client: Client,
    workload: &Workload,
    open_rate: Option<f64>,
) -> Result<Phase, BoxError> {
    let mock = MockServer::start(world(opts)).await?;
    let mut gateway = None;
    let target: Shared = match client {
        Client::Naive => Arc::new(HttpTarget::naive(&mock.url("/chat/completions"))?),
        Client::Library => Arc::new(StackTarget::memory(
            &mock.base_url(),
            &stack_settings(opts),
        )?),
        Client::Gateway => {
            let g = start_gateway(opts, &mock).await?;
            let t = HttpTarget::pooled(&gateway_url(&g))?;
            gateway = Some(g);
            Arc::new(t)
        }
    };
    let shape = match open_rate {
        Some(rate) => format!("open {rate:.0}/s"),
        None => format!("closed c={}", opts.concurrency),
    };
    let run = Run {
        label: format!("{} | {shape}", client.name()),
        target,
        workload: workload.clone(),
        duration: phase_duration(opts),
        parse: true,
        progress: !opts.quiet,
    };
    let rec = match open_rate {
        Some(rate) => driver::open_loop(run, rate, prices).await,
        None => driver::closed_loop(run, opts.concurrency, prices).await,
    };
    let phase = Phase {
        name: client.name().to_owned(),
        upstream_requests: mock.stats().requests(),
        upstream_connections: mock.stats().connections(),
        rec,
    };
    if let Some(g) = gateway {
        g.shutdown().await;
    }
    mock.shutdown().await;
    Ok(phase)
}

async fn article_table(opts: &Opts, prices: &PriceTable, out: &mut Output) -> Result<(), BoxError> {
    let rate = opts.rate * opts.time_scale;
    let planned = (phase_duration(opts).as_secs_f64() * rate).floor() as u64;
    let zipf = Zipf::new(opts.prompts, opts.zipf_s);
    let Some(hot) = workload::calibrate_hot(&zipf, planned.max(1), opts.repeat_share) else {
        return Err(format!(
            "a repeat share of {} is out of reach with {planned} requests over {} popular prompts: \
             lower --prompts or lengthen --duration",
            opts.repeat_share, opts.prompts
        )
        .into());
    };
    let workload = Workload::new(Prompts::Mixed { zipf, hot }, opts.seed);

    out.say("## The article's table: before vs after");
    out.say("");
    out.say("World (real-world terms; the run divides every time by the time scale):");
    out.say(format!(
        "- upstream generation latency: log-normal, median 1000 ms, p99 4500 ms \
         (run: {} / {})",
        dur(scaled(opts, Duration::from_millis(1000))),
        dur(scaled(opts, Duration::from_millis(4500)))
    ));
    out.say(format!(
        "- cold connection penalty (DNS+TCP+TLS) on the first request of each connection: 250 ms (run: {})",
        dur(scaled(opts, Duration::from_millis(250)))
    ));
    out.say("- transient upstream errors: 2.3% of requests answered 500/502/503 at random");
    out.say(format!(
        "- workload: {:.1}% of requests draw from {} popular prompts by Zipf(s={}) across the article's \
         four models, the rest are prompts never seen before; the share is set so that {}% of the \
         {planned} open-loop requests are expected to repeat an earlier prompt. The measured \
         share is in the table (a longer run repeats a little more, up to {:.1}%).",
        hot * 100.0,
        opts.prompts,
        opts.zipf_s,
        opts.repeat_share * 100.0,
        hot * 100.0
    ));
    out.say(format!(
        "- open loop at {:.1} req/s real-world (the article's 50k/hour) x time scale {} = {rate:.0} req/s \
         for {}; latency from each request's scheduled send time",
        opts.rate,
        opts.time_scale,
        dur(phase_duration(opts))
    ));
    out.say(format!(
        "- closed loop at concurrency {} for {} (throughput)",
        opts.concurrency,
        dur(phase_duration(opts))
    ));
    out.say("- before: hyper-util client with pool_max_idle_per_host(0) (a new connection per request), no cache, no retry");
    out.say(format!(
        "- after: MetricsLayer -> CacheLayer(memory, {} MiB) -> RetryLayer(3 retries, budget 20%) -> \
         PoolLimitLayer(100, 30) -> HolySheepClient, in-process (library) and through the gateway",
        MEMORY_CACHE_BYTES >> 20
    ));
    out.say("- cost: tokens x the HolySheep price table, counting each upstream answer once (a completion id seen again came from the cache)");
    out.say("");

    let mut clients = vec![Client::Naive, Client::Library];
    if !opts.no_gateway {
        clients.push(Client::Gateway);
    }
    let mut open = Vec::new();
    for client in &clients {
        open.push(article_phase(opts, prices, *client, &workload, Some(rate)).await?);
    }
    let mut closed = Vec::new();
    for client in &clients {
        closed.push(article_phase(opts, prices, *client, &workload, None).await?);
    }

    let mut header = vec![
        "metric".to_owned(),
        "article before".to_owned(),
        "article after".to_owned(),
        "article change".to_owned(),
        "before (naive)".to_owned(),
    ];
    for p in &open[1..] {
        header.push(p.name.trim_start_matches("after: ").to_owned());
        header.push("change".to_owned());
    }
    let mut table = Table::new(header);
    let mut row = |metric: &str,
                   seed: [&str; 3],
                   value: &dyn Fn(&Phase, &Phase) -> String,
                   delta: &dyn Fn(&Phase, &Phase, &Phase, &Phase) -> String| {
        let mut cells = vec![metric.to_owned()];
        cells.extend(seed.iter().map(|s| (*s).to_owned()));
        cells.push(value(&open[0], &closed[0]));
        for (o, c) in open[1..].iter().zip(&closed[1..]) {
            cells.push(value(o, c));
            cells.push(delta(&open[0], &closed[0], o, c));
        }
        table.row(cells);
    };
    let lat = |p: &Phase, q: f64| p.rec.at(q).as_secs_f64() * 1e3;
    row(
        "P50 latency (open loop)",
        ["1,250 ms", "48 ms", "-96%"],
        &|o, _| dur(o.rec.at(0.5)),
        &|b, _, o, _| change(lat(b, 0.5), lat(o, 0.5)),
    );
    row(
        "P99 latency (open loop)",
        ["4,800 ms", "180 ms", "-96%"],
        &|o, _| dur(o.rec.at(0.99)),
        &|b, _, o, _| change(lat(b, 0.99), lat(o, 0.99)),
    );
    row(
        "P99.9 latency (open loop)",
        ["", "", ""],
        &|o, _| dur(o.rec.at(0.999)),
        &|b, _, o, _| change(lat(b, 0.999), lat(o, 0.999)),
    );
    row(
        &format!("throughput (closed loop, c={})", opts.concurrency),
        ["80 req/s", "2,500 req/s", "31x"],
        &|_, c| format!("{} req/s", sig3(c.rec.throughput())),
        &|_, bc, _, c| times(bc.rec.throughput(), c.rec.throughput()),
    );
    row(
        "upstream calls (mock, open loop)",
        ["", "", ""],
        &|o, _| o.upstream_requests.to_string(),
        &|b, _, o, _| change(b.upstream_requests as f64, o.upstream_requests as f64),
    );
    row(
        "upstream connections (mock, open loop)",
        ["", "", ""],
        &|o, _| o.upstream_connections.to_string(),
        &|b, _, o, _| change(b.upstream_connections as f64, o.upstream_connections as f64),
    );
    row(
        "API cost of the open-loop run",
        ["", "", ""],
        &|o, _| format!("${:.4}", o.rec.dollars),
        &|b, _, o, _| change(b.rec.dollars, o.rec.dollars),
    );
    row(
        "API cost per month at 50k req/h",
        ["$1,000", "$280", "-72%"],
        &|o, _| {
            format!(
                "${:.0}",
                o.rec.dollars / o.rec.total().max(1) as f64 * ARTICLE_REQUESTS_PER_MONTH
            )
        },
        &|b, _, o, _| change(b.rec.dollars, o.rec.dollars),
    );
    row(
        "error rate (open loop)",
        ["2.3%", "0.02%", ""],
        &|o, _| pct(o.rec.error_rate()),
        &|b, _, o, _| change(b.rec.error_rate(), o.rec.error_rate()),
    );
    row(
        "error rate (closed loop)",
        ["", "", ""],
        &|_, c| pct(c.rec.error_rate()),
        &|_, bc, _, c| change(bc.rec.error_rate(), c.rec.error_rate()),
    );
    row(
        "requests repeating an earlier prompt (open loop)",
        ["~70%", "~70%", ""],
        &|o, _| pct(o.rec.repeats.share()),
        &|_, _, _, _| String::new(),
    );
    row(
        "requests repeating an earlier prompt (closed loop)",
        ["", "", ""],
        &|_, c| pct(c.rec.repeats.share()),
        &|_, _, _, _| String::new(),
    );
    row(
        "cache hits (x-cache: HIT, open / closed loop)",
        ["", "", ""],
        &|o, c| format!("{} / {}", pct(o.rec.hit_rate()), pct(c.rec.hit_rate())),
        &|_, _, _, _| String::new(),
    );
    row(
        "requests sent (open / closed)",
        ["", "", ""],
        &|o, c| format!("{} / {}", o.rec.total(), c.rec.total()),
        &|_, _, _, _| String::new(),
    );
    out.say(table.render());

    // Service time beside the scheduled-time latency: the gap is the harness's own lateness.
    let mut detail = Table::new([
        "open loop",
        "P50 from schedule",
        "P50 from send",
        "P99 from schedule",
        "P99 from send",
        "dropped",
    ]);
    for p in &open {
        let svc = |q: f64| dur(Duration::from_nanos(p.rec.service.value_at_quantile(q)));
        detail.row([
            p.name.clone(),
            dur(p.rec.at(0.5)),
            svc(0.5),
            dur(p.rec.at(0.99)),
            svc(0.99),
            p.rec.dropped.to_string(),
        ]);
    }
    out.say(detail.render());

    // Where the article's bar is out of reach of this world, say why, with the measured numbers.
    let after = &open[1];
    let hit = after.rec.hit_rate();
    let before_mean = closed[0].rec.latency.mean() / 1e9;
    let miss_share = 1.0 - closed[1].rec.hit_rate();
    // The log-normal's mean: median x exp(sigma^2 / 2), sigma from the p99.
    let sigma = (4500f64 / 1000.0).ln() / 2.326_347_874;
    let upstream_mean =
        scaled(opts, Duration::from_millis(1000)).as_secs_f64() * (sigma * sigma / 2.0).exp();
    let slots = opts.concurrency.min(30) as f64;
    let after_bound = slots / (miss_share.max(1e-9) * upstream_mean);
    out.say("Bounds of this world (why a number may miss the article's bar):");
    out.say(format!(
        "- throughput in a closed loop is concurrency / mean latency. Before: {} / {:.3} s = {} req/s. \
         After, a hit costs next to nothing but every miss holds one of the pool limit's 30 upstream \
         slots for the upstream's mean latency ({:.3} s), so throughput is at most \
         min(concurrency, 30) / (miss share x mean latency) = {slots} / ({:.2} x {:.3} s) = {} req/s, \
         {} the naive client's. The article's 31x needs a miss share near 3%: a workload of almost only \
         repeats, not one with {} of its requests new.",
        opts.concurrency,
        before_mean,
        sig3(opts.concurrency as f64 / before_mean.max(1e-9)),
        upstream_mean,
        miss_share,
        upstream_mean,
        sig3(after_bound),
        times(opts.concurrency as f64 / before_mean.max(1e-9), after_bound),
        pct(miss_share),
    ));
    out.say(format!(
        "- cost can only fall by the share of requests that never reach the upstream: hits {} \
         (plus before's failed calls, which cost nothing). The article's -72% matches a ~70% repeat share.",
        pct(hit)
    ));
    out.say(format!(
        "- P99 after stays at the upstream's own tail: the slowest 1% are misses that wait for \
         generation (p99 {}), so the article's 180 ms P99 is out of reach unless ~99% of requests hit.",
        dur(scaled(opts, Duration::from_millis(4500)))
    ));
    out.say(format!(
        "- all times are compressed by {}: multiply a latency by {} for real-world terms; ratios \
         hold, except that the harness's own microseconds weigh {}x more than they would.",
        opts.time_scale, opts.time_scale, opts.time_scale
    ));
    out.say("");

    let histograms: Vec<(&str, &hdrhistogram::Histogram<u64>)> = open
        .iter()
        .map(|p| (p.name.as_str(), &p.rec.latency))
        .collect();
    out.write_file(
        opts,
        "article-latency.svg",
        &svg::percentile_chart(
            &format!(
                "Open loop {rate:.0} req/s, latency from scheduled send (time scale 1/{})",
                opts.time_scale
            ),
            &histograms,
        ),
    );
    Ok(())
}

/// The clients of an overhead run.
struct OverheadTargets {
    names: Vec<&'static str>,
    targets: Vec<Shared>,
}

async fn warm(target: &Shared, prices: &PriceTable, seed: u64) {
    let run = Run {
        label: "warm-up".into(),
        target: target.clone(),
        workload: Workload::new(Prompts::Unique, seed),
        duration: Duration::from_millis(500),
        parse: false,
        progress: false,
    };
    let _ = driver::closed_loop(run, 8, prices).await;
}

async fn overhead(opts: &Opts, prices: &PriceTable, out: &mut Output) -> Result<(), BoxError> {
    let mock = MockServer::start(MockConfig::default().api_key(UPSTREAM_KEY)).await?;
    let gateway = if opts.no_gateway {
        None
    } else {
        Some(start_gateway(opts, &mock).await?)
    };
    let mut set = OverheadTargets {
        names: vec!["direct"],
        targets: vec![Arc::new(HttpTarget::pooled(
            &mock.url("/chat/completions"),
        )?)],
    };
    let proxy = proxy::ProxyHandle::start(proxy_client(&mock.base_url())?).await?;
    set.names.push("proxy");
    set.targets.push(Arc::new(HttpTarget::pooled(&format!(
        "http://{}/v1/chat/completions",
        proxy.addr()
    ))?));
    let nginx = start_nginx(&mock).await;
    let nginx_note = match &nginx {
        Ok(n) => {
            set.names.push("nginx");
            set.targets
                .push(Arc::new(HttpTarget::pooled(&n.proxy_url())?));
            "`nginx` = the same client to nginx as a reverse proxy to the mock (its own process, \
             one worker, upstream keep-alive, no access log)"
                .to_owned()
        }
        Err(e) => format!("nginx rows skipped: {e}"),
    };
    if let Some(g) = &gateway {
        set.names.push("forward");
        set.targets.push(Arc::new(
            HttpTarget::pooled(&gateway_url(g))?
                .with_header(http::header::CACHE_CONTROL, "no-store"),
        ));
        set.names.push("gateway");
        set.targets
            .push(Arc::new(HttpTarget::pooled(&gateway_url(g))?));
    }
    set.names.push("library");
    set.targets.push(Arc::new(StackTarget::memory(
        &mock.base_url(),
        &stack_settings(opts),
    )?));

    // Idle: everything started, nothing sent yet.
    let rss_idle = system::rss_kb().unwrap_or(0);

    out.say("## The gateway's own cost");
    out.say("");
    out.say(format!(
        "Mock with zero latency, no faults, no cold penalty; unique prompts (every request a cache \
         miss that is stored: the full miss path). Closed loop, {} rounds x concurrency {:?} x \
         clients, {} per segment, clients alternating within each round (order reversed every \
         other round). Clients: `direct` = pooled hyper client straight to the mock; `proxy` = \
         the same client to a bare hyper proxy (hyper-util auto server, `TCP_NODELAY`, each \
         request handed unparsed to a `HolySheepClient` with no layers, `/v1` stripped, the \
         answer streamed back): the floor of any HTTP gateway in front of the mock; `forward` = \
         the same client to the gateway (in-process, axum over loopback HTTP) with \
         `Cache-Control: no-store`, so the gateway forwards through its stack to the mock and \
         stores nothing (the issue's forward path; the aims below are on it); `gateway` = the \
         same without it: every request a miss that is stored; `library` = the same stack \
         called in-process (no HTTP hop in front); {nginx_note}. The harness, the proxy, the gateway and the mock \
         share this process and its 2 cores.",
        opts.rounds,
        opts.levels,
        dur(opts.segment)
    ));
    out.say("");

    for (i, t) in set.targets.iter().enumerate() {
        warm(t, prices, 9_000 + i as u64).await;
    }

    let n = set.targets.len();
    let mut merged: Vec<Vec<Recorder>> = (0..n)
        .map(|_| opts.levels.iter().map(|_| Recorder::new()).collect())
        .collect();
    // Per round: [target][level] = (p50 ns, p99 ns, throughput).
    let mut per_round: Vec<Vec<Vec<(f64, f64, f64)>>> =
        vec![vec![Vec::new(); opts.levels.len()]; n];
    let mut segment_seed = opts.seed.wrapping_mul(1000);
    for round in 0..opts.rounds {
        for (li, &level) in opts.levels.iter().enumerate() {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            for ti in order {
                segment_seed += 1;
                let run = Run {
                    label: format!("overhead r{} {} c={level}", round + 1, set.names[ti]),
                    target: set.targets[ti].clone(),
                    workload: Workload::new(Prompts::Unique, segment_seed),
                    duration: opts.segment,
                    parse: false,
                    progress: !opts.quiet,
                };
                let rec = driver::closed_loop(run, level, prices).await;
                per_round[ti][li].push((
                    rec.latency.value_at_quantile(0.5) as f64,
                    rec.latency.value_at_quantile(0.99) as f64,
                    rec.throughput(),
                ));
                merged[ti][li].merge(&rec);
            }
        }
    }

    let mut table = Table::new([
        "client",
        "concurrency",
        "requests",
        "errors",
        "P50",
        "P99",
        "P99.9",
        "throughput",
        "35-45 ms",
    ]);
    for (ti, recorders) in merged.iter().enumerate() {
        for (r, level) in recorders.iter().zip(&opts.levels) {
            table.row([
                set.names[ti].to_owned(),
                level.to_string(),
                r.total().to_string(),
                r.errors.to_string(),
                dur(r.at(0.5)),
                dur(r.at(0.99)),
                dur(r.at(0.999)),
                format!("{} req/s", sig3(r.throughput())),
                r.band_35_45ms.to_string(),
            ]);
        }
    }
    out.say(table.render());
    for (ti, recorders) in merged.iter().enumerate() {
        for (r, level) in recorders.iter().zip(&opts.levels) {
            if r.errors > 0 {
                out.say(format!(
                    "Errors of `{}` at concurrency {level}, by status: {}.",
                    set.names[ti],
                    r.statuses_line()
                ));
            }
        }
    }

    let mut added = Table::new([
        "vs direct",
        "concurrency",
        "added P50",
        "added P99",
        "added P50 (median of rounds)",
        "added P99 (median of rounds)",
        "throughput ratio (median of rounds)",
    ]);
    let mut lines: Vec<svg::ConcurrencyLine> = Vec::new();
    let mut added_p99_c1 = None;
    for ti in 1..n {
        let mut p50_line = Vec::new();
        let mut p99_line = Vec::new();
        for (li, &level) in opts.levels.iter().enumerate() {
            let (d, t) = (&merged[0][li], &merged[ti][li]);
            let (m50, m99, mtp) = round_medians(&per_round[ti][li], &per_round[0][li]);
            added.row([
                set.names[ti].to_owned(),
                level.to_string(),
                delta_us(t.at(0.5), d.at(0.5)),
                delta_us(t.at(0.99), d.at(0.99)),
                signed_us(m50),
                signed_us(m99),
                format!("{}x", sig3(mtp)),
            ]);
            p50_line.push((level, m50 / 1e3));
            p99_line.push((level, m99 / 1e3));
            if level == 1 && set.names[ti] == "forward" {
                added_p99_c1 = Some(m99 / 1e3);
            }
        }
        lines.push((format!("{} P50", set.names[ti]), p50_line, false, ti));
        lines.push((format!("{} P99", set.names[ti]), p99_line, true, ti));
    }
    out.say(added.render());
    let position = |name: &str| set.names.iter().position(|n| *n == name);
    // The forward path (no-store) and the miss path (stored), each against the bare proxy and
    // nginx; the aims are on the forward path, as the issue measures it.
    let pairs = ["forward", "gateway"]
        .into_iter()
        .flat_map(|ours| ["proxy", "nginx"].map(|reference| (ours, reference)));
    for (ours, reference) in pairs {
        let (Some(ri), Some(gi)) = (position(reference), position(ours)) else {
            continue;
        };
        let mut vs = Table::new([
            format!("{ours} vs {reference}"),
            "concurrency".to_owned(),
            "added P50".to_owned(),
            "added P99".to_owned(),
            "added P50 (median of rounds)".to_owned(),
            "added P99 (median of rounds)".to_owned(),
            "throughput ratio (median of rounds)".to_owned(),
        ]);
        let mut p50_line = Vec::new();
        let mut p99_line = Vec::new();
        let mut ratios = Vec::new();
        for (li, &level) in opts.levels.iter().enumerate() {
            let (p, g) = (&merged[ri][li], &merged[gi][li]);
            let (m50, m99, mtp) = round_medians(&per_round[gi][li], &per_round[ri][li]);
            vs.row([
                ours.to_owned(),
                level.to_string(),
                delta_us(g.at(0.5), p.at(0.5)),
                delta_us(g.at(0.99), p.at(0.99)),
                signed_us(m50),
                signed_us(m99),
                format!("{}x", sig3(mtp)),
            ]);
            p50_line.push((level, m50 / 1e3));
            p99_line.push((level, m99 / 1e3));
            ratios.push((level, m50, m99, mtp));
        }
        lines.push((format!("{ours} vs {reference} P50"), p50_line, false, n));
        lines.push((format!("{ours} vs {reference} P99"), p99_line, true, n));
        out.say(vs.render());
        if ours != "forward" {
            continue;
        }
        if reference == "proxy" {
            if let Some(&(_, m50, m99, mtp)) = ratios.iter().find(|r| r.0 == 1) {
                out.say(format!(
                    "Design: the gateway's overhead close to a bare hyper proxy -> forward minus \
                     proxy at concurrency 1 (median of rounds): P50 {}, P99 {}, throughput {}x \
                     the proxy's.",
                    signed_us(m50),
                    signed_us(m99),
                    sig3(mtp)
                ));
            }
        } else {
            for &(level, _, _, mtp) in ratios.iter().filter(|r| r.0 == 1 || r.0 == 64) {
                out.say(format!(
                    "Aim: forward throughput at least 0.7x nginx's at concurrency {level} -> \
                     {}x (median of rounds): {}",
                    sig3(mtp),
                    if mtp >= 0.7 { "met" } else { "NOT met" }
                ));
            }
        }
    }
    if let Some(us) = added_p99_c1 {
        out.say(format!(
            "Aim: added P99 at concurrency 1 under 100 µs -> {} µs (median of rounds): {}",
            sig3(us),
            if us < 100.0 { "met" } else { "NOT met" }
        ));
    }
    let band: u64 = merged.iter().flatten().map(|r| r.band_35_45ms).sum();
    let total: u64 = merged.iter().flatten().map(|r| r.total()).sum();
    // A Nagle / delayed-ACK stall hits a steady share of requests (every one of some shape),
    // not one in a million: a handful is scheduling noise on a busy machine.
    let verdict = if band == 0 {
        "none stalled"
    } else if (band as f64) < total as f64 * 1e-4 {
        "isolated outliers (under 0.01%), not a Nagle pattern"
    } else {
        "a steady share: look at TCP_NODELAY on the sockets involved"
    };
    out.say(format!(
        "Nagle / delayed-ACK check: {band} of {total} zero-latency requests took 35-45 ms: {verdict}."
    ));
    let rss_load = merged
        .iter()
        .flatten()
        .map(|r| r.max_rss_kb)
        .max()
        .unwrap_or(0);
    out.say(format!(
        "Whole harness process (load client + mock + in-process gateway + library stack, two \
         caches of {} MiB): VmRSS idle {} MB, under load up to {} MB.",
        MEMORY_CACHE_BYTES >> 20,
        sig3(rss_idle as f64 / 1024.0),
        sig3(rss_load as f64 / 1024.0),
    ));
    if !opts.no_gateway {
        match gateway_memory(opts, prices, &mock).await {
            Ok(line) => out.say(line),
            Err(e) => out.say(format!("Gateway process memory: not measured ({e}).")),
        }
    }
    out.say("");
    out.write_file(
        opts,
        "overhead.svg",
        &svg::by_concurrency_chart(
            "Added latency vs direct-to-mock, and gateway vs bare proxy (median of rounds)",
            &lines,
        ),
    );
    drop(proxy);
    drop(nginx);
    if let Some(g) = gateway {
        g.shutdown().await;
    }
    mock.shutdown().await;
    Ok(())
}

/// Medians over rounds of `client - baseline` P50 and P99 (ns) and of `client / baseline`
/// throughput, from each round's `(p50 ns, p99 ns, throughput)` pairs: every round compares
/// two segments run back to back, so slow drift of the machine cancels out.
fn round_medians(client: &[(f64, f64, f64)], baseline: &[(f64, f64, f64)]) -> (f64, f64, f64) {
    let rounds: Vec<(f64, f64, f64)> = client
        .iter()
        .zip(baseline)
        .map(|(c, b)| (c.0 - b.0, c.1 - b.1, c.2 / b.2.max(1e-9)))
        .collect();
    (
        median(&rounds.iter().map(|r| r.0).collect::<Vec<_>>()),
        median(&rounds.iter().map(|r| r.1).collect::<Vec<_>>()),
        median(&rounds.iter().map(|r| r.2).collect::<Vec<_>>()),
    )
}

/// Nanoseconds as signed microseconds, `+12.3 µs`.
fn signed_us(ns: f64) -> String {
    format!(
        "{}{} µs",
        if ns < 0.0 { "-" } else { "+" },
        sig3(ns.abs() / 1e3)
    )
}

/// Starts the gateway as a child process (`serve-gateway`) in front of `mock`, reads its VmRSS
/// idle, then every 100 ms while unique prompts at concurrency 64 fill its bounded cache.
async fn gateway_memory(
    opts: &Opts,
    prices: &PriceTable,
    mock: &MockServer,
) -> Result<String, BoxError> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::AsyncBufReadExt;
    const CACHE_MIB: u64 = 16;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["serve-gateway", "--upstream", &mock.base_url()])
        .args(["--cache-mib", &CACHE_MIB.to_string()])
        .args(["--time-scale", &opts.time_scale.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("the gateway child exited at once")?;
    let stdout = child
        .stdout
        .take()
        .ok_or("no stdout from the gateway child")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "the gateway child did not start within 10 s")??
        .ok_or("the gateway child closed its output")?;
    let addr = line
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected line from the gateway child: {line}"))?
        .to_owned();
    let target: Shared = Arc::new(HttpTarget::pooled(&format!(
        "http://{addr}/v1/chat/completions"
    ))?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = system::rss_kb_of(pid).unwrap_or(0);

    let max = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (max, stop) = (max.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = system::rss_kb_of(pid) {
                    max.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let run = Run {
        label: "gateway process memory c=64".into(),
        target,
        workload: Workload::new(Prompts::Unique, opts.seed.wrapping_add(555)),
        duration: opts.segment * 3,
        parse: false,
        progress: !opts.quiet,
    };
    let rec = driver::closed_loop(run, 64, prices).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let end = system::rss_kb_of(pid).unwrap_or(0);
    let peak = max.load(Ordering::Relaxed).max(end);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let mb = |kb: u64| sig3(kb as f64 / 1024.0);
    Ok(format!(
        "Gateway process memory (the gateway alone in a child process, memory cache bounded at \
         {CACHE_MIB} MiB, {} unique prompts at concurrency 64 over {}, so the cache fills and \
         evicts): VmRSS idle {} MB, peak under load {} MB, at the end {} MB. Aim under 50 MB: {}.",
        rec.total(),
        dur(opts.segment * 3),
        mb(idle),
        mb(peak),
        mb(end),
        if peak < 50 * 1024 { "met" } else { "NOT met" }
    ))
}

/// Sends each of the first `prompts` prompts once so the cache holds them.
async fn fill(target: &Shared, prompts: u64, seed: u64) {
    for i in 0..prompts {
        let _ = target.call(workload::body_for(i, seed), false).await;
    }
    // Stores are written in a task after the answer; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// The hit run's nginx row.
const STATIC: &str = "static answer (nginx)";

async fn hits(opts: &Opts, prices: &PriceTable, out: &mut Output) -> Result<(), BoxError> {
    const PROMPTS: u64 = 100;
    let mock = MockServer::start(MockConfig::default().api_key(UPSTREAM_KEY)).await?;
    let settings = stack_settings(opts);
    let mut names: Vec<String> = Vec::new();
    let mut targets: Vec<Shared> = Vec::new();
    names.push("miss floor: direct to mock (no cache)".to_owned());
    targets.push(Arc::new(HttpTarget::pooled(
        &mock.url("/chat/completions"),
    )?));
    let gateway = if opts.no_gateway {
        None
    } else {
        Some(start_gateway(opts, &mock).await?)
    };
    if let Some(g) = &gateway {
        names.push("gateway, memory (HTTP)".to_owned());
        targets.push(Arc::new(HttpTarget::pooled(&gateway_url(g))?));
    }
    names.push("library, memory".to_owned());
    targets.push(Arc::new(StackTarget::memory(&mock.base_url(), &settings)?));
    let nginx = start_nginx(&mock).await;
    let nginx_note = match &nginx {
        Ok(n) => {
            names.push(STATIC.to_owned());
            targets.push(Arc::new(HttpTarget::pooled(&n.static_url())?));
            format!(
                "`{STATIC}` = nginx returning one stored answer (its own process, one worker): \
                 the fastest a hit served over HTTP could be (no `x-cache`, so its hit column is 0)."
            )
        }
        Err(e) => format!("The static-answer row was skipped: {e}."),
    };
    let redis = RedisServer::from_env_or_start();
    let redis_note = match &redis {
        Ok(r) => match StackTarget::redis(&mock.base_url(), r.url(), &settings).await {
            Ok(t) => {
                names.push("library, Redis only".to_owned());
                targets.push(Arc::new(t));
                let origin = if r.is_external() {
                    "REDIS_URL"
                } else {
                    "redis-server started by the harness"
                };
                format!("Redis: {origin} at {}.", r.url())
            }
            Err(e) => format!("Redis: skipped ({e})."),
        },
        Err(e) => format!("Redis: skipped ({e})."),
    };

    out.say("## Cache hit latency, end to end");
    out.say("");
    out.say(format!(
        "{PROMPTS} prompts sent once to fill the cache, then requested round robin in a closed loop \
         ({} per run) at concurrency 1, 16 and 64; the mock answers at once. `gateway` = HTTP to the \
         in-process gateway (its memory tier); `library` = the in-process stack; `Redis only` = \
         CacheLayer over RedisStore with no memory tier, so every hit is a Redis GET over \
         loopback. {nginx_note} {redis_note}",
        dur(opts.segment * 2)
    ));
    out.say("");

    let mut table = Table::new([
        "client",
        "concurrency",
        "requests",
        "hits",
        "P50",
        "P99",
        "P99.9",
        "throughput",
    ]);
    let mut curves: Vec<(String, Recorder)> = Vec::new();
    let mut redis_p50 = None;
    // (gateway, static answer) throughput at concurrency 64, the gateway's P50 at 1.
    let (mut gateway_64, mut static_64, mut gateway_p50) = (None, None, None);
    for (i, (name, target)) in names.iter().zip(&targets).enumerate() {
        let seed = 77_000 + i as u64;
        fill(target, PROMPTS, seed).await;
        for level in [1usize, 16, 64] {
            let run = Run {
                label: format!("hits {name} c={level}"),
                target: target.clone(),
                workload: Workload::new(Prompts::Cycle(PROMPTS), seed),
                duration: opts.segment * 2,
                parse: false,
                progress: !opts.quiet,
            };
            let rec = driver::closed_loop(run, level, prices).await;
            table.row([
                name.clone(),
                level.to_string(),
                rec.total().to_string(),
                pct(rec.hit_rate()),
                dur(rec.at(0.5)),
                dur(rec.at(0.99)),
                dur(rec.at(0.999)),
                format!("{} req/s", sig3(rec.throughput())),
            ]);
            if level == 64 && name.starts_with("gateway") {
                gateway_64 = Some(rec.throughput());
            }
            if level == 64 && name == STATIC {
                static_64 = Some(rec.throughput());
            }
            if level == 1 && name.starts_with("gateway") {
                gateway_p50 = Some(rec.at(0.5));
            }
            if level == 1 {
                if name.contains("Redis") {
                    redis_p50 = Some(rec.at(0.5));
                }
                // The legend has little room: the words before the first comma or colon.
                let short = match name.split_once(": ") {
                    Some((_, rest)) => rest.split(" (").next().unwrap_or(rest),
                    None => name.split(" (").next().unwrap_or(name),
                };
                curves.push((short.to_owned(), rec));
            }
        }
    }
    out.say(table.render());
    match redis_p50 {
        Some(p50) => out.say(format!(
            "Aim: Redis hit P50 under 250 µs -> {}: {}",
            dur(p50),
            if p50 < Duration::from_micros(250) {
                "met"
            } else {
                "NOT met"
            }
        )),
        None => out.say("Aim: Redis hit P50 under 250 µs -> skipped (no Redis)."),
    }
    if let Some(p50) = gateway_p50 {
        out.say(format!(
            "Aim: gateway hit P50 at concurrency 1 at most 80 µs -> {}: {}",
            dur(p50),
            if p50 <= Duration::from_micros(80) {
                "met"
            } else {
                "NOT met"
            }
        ));
    }
    if let (Some(g), Some(s)) = (gateway_64, static_64) {
        let ratio = g / s;
        out.say(format!(
            "Aim: gateway hit throughput at concurrency 64 at least 0.5x the static answer's -> \
             {} / {} req/s = {}x: {}",
            sig3(g),
            sig3(s),
            sig3(ratio),
            if ratio >= 0.5 { "met" } else { "NOT met" }
        ));
    }
    out.say("");
    let histograms: Vec<(&str, &hdrhistogram::Histogram<u64>)> = curves
        .iter()
        .map(|(n, r)| (n.as_str(), &r.latency))
        .collect();
    out.write_file(
        opts,
        "hits.svg",
        &svg::percentile_chart("Cache hit latency, concurrency 1", &histograms),
    );
    drop(redis);
    drop(nginx);
    if let Some(g) = gateway {
        g.shutdown().await;
    }
    mock.shutdown().await;
    Ok(())
}
