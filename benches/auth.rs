//! Auth cost benchmark (`cargo bench --bench auth`): what authenticating every request costs on
//! a read (`GET /runs/{id}`) and on `POST /runs`, with an API key and with an HS256 JWT, as a
//! ratio to the same service with auth off. Issue 12's target is at most 5 % on both.
//!
//! Four services run in this one process (embedded runtime, SQLite in a temp dir each), alike
//! but for auth: off (no key or JWT on a loopback bind: the guard runs and lets everyone in);
//! one static API key; an HS256 secret (the token is verified once, then found in the cache by
//! its digest); and off again, the control, started last: what two identical services differ
//! by is the noise floor. Rate limits are off in all of them (0), so only the credential check
//! differs; every POST writes its audit row, auth on or off. Each variant has one reqwest
//! client holding one keep-alive HTTP/1.1 connection, one request in flight at a time. The
//! variants take turns request by request, each turn in the next of all their orders, so drift
//! and bursts of load on the machine land on all of them alike; latencies are pooled, and the
//! p50 ratio of each round (a block of turns) is summarised too. The runs POST starts execute
//! in the background (session start, kickoff); each POST turn waits for its four runs to be
//! running before the next begins, so no POST is measured against another's execution (what is
//! measured is the request: validation, the run and its audit row in one transaction).
//!
//! Then the parts in process, without HTTP: a SHA-256 digest, an API key's and a cached JWT's
//! authentication, a JWT's first verification, and a rate-limit check with a budget on.
//!
//! `BENCH_GETS` (per variant, default 20000) in rounds of `BENCH_GET_BLOCK` (200), and
//! `BENCH_POSTS` (1200) in rounds of `BENCH_POST_BLOCK` (30) scale it. Prints numbers; asserts
//! nothing about speed (a request not answered 2xx stops the run: its numbers would mean
//! nothing). The machine should be otherwise idle: the control row shows whether it was.
//! `BENCH_CONTROL_SENDS_KEY=1` has the control send the API key's header (which it ignores), to
//! tell what the header costs on the wire from what checking it costs.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use macp_control_plane::api::server::Limits;
use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
use macp_control_plane::auth::{AuthArgs, Authenticator, Throttle, ThrottleSettings};
use macp_control_plane::domain::status::RunStatus;
use macp_control_plane::runs::service::RunOptions;
use macp_control_plane::runtime::credentials::Credentials;
use serde_json::{Value, json};

const SEED: &str = include_str!("../examples/seed-decision.json");
const API_KEY: &str = "bench-api-key-4f0c2b7e9a1d8c3b5e6f7a0b1c2d3e4f";
const JWT_SECRET: &str = "bench-jwt-secret-at-least-32-characters-long";
/// The target: auth may cost at most this much over auth off.
const TARGET: f64 = 0.05;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// An HS256 token as an operator (may read and start runs), valid for an hour.
fn jwt(subject: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": subject, "roles": ["operator"], "exp": unix_now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("a token")
}

/// Resident memory of this process (`/proc/self/statm`'s second field, 4 KiB pages).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / 1024.0 / 1024.0)
}

fn auth_args(variant: Kind) -> AuthArgs {
    let mut args = AuthArgs {
        // No rate limits: only the credential check differs between the variants.
        throttle_limit: 0,
        throttle_read_limit: 0,
        ..AuthArgs::default()
    };
    match variant {
        Kind::Off | Kind::OffAgain => {}
        Kind::ApiKey => args.auth_api_keys = vec![API_KEY.to_owned().into()],
        Kind::Jwt => args.auth_jwt_secret = Some(JWT_SECRET.to_owned().into()),
    }
    args
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Off,
    /// A second service with auth off: the noise floor, what two identical services differ by.
    OffAgain,
    ApiKey,
    Jwt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Off => "auth off",
            Kind::OffAgain => "off again",
            Kind::ApiKey => "API key",
            Kind::Jwt => "JWT",
        }
    }
}

/// One service and the client that measures it.
struct Variant {
    kind: Kind,
    app: App,
    client: reqwest::Client,
    base: String,
    /// `authorization` header value; none with auth off (its clients send none).
    credential: Option<String>,
    /// The run every GET reads.
    run_id: String,
    gets: Samples,
    posts: Samples,
}

/// Latencies (µs), pooled, plus each round's p50.
#[derive(Default)]
struct Samples {
    latencies: Vec<f64>,
    round_p50: Vec<f64>,
}

impl Samples {
    fn add_round(&mut self, latencies: Vec<f64>) {
        let round = sorted(latencies);
        self.round_p50.push(percentile(&round, 0.5));
        self.latencies.extend(round);
    }

    /// Requests per second of one client sending them one after another: the count over the
    /// time they took (the other variants' turns in between are not counted).
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / (self.latencies.iter().sum::<f64>() / 1e6)
    }
}

async fn start(kind: Kind, dir: &tempfile::TempDir) -> Variant {
    let database = dir.path().join(format!("{kind:?}.db"));
    let app = App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: format!("sqlite://{}?mode=rwc", database.display()).into(),
        store: Default::default(),
        runtime: RuntimeTarget::Embedded(Default::default()),
        credentials: Credentials::Dev {
            observer: "macp-control-plane".into(),
        },
        request_timeout: Duration::from_secs(10),
        run_options: RunOptions::default(),
        registry: macp_control_plane::registry::RegistryOptions::new("packs"),
        cors_origins: Vec::new(),
        edge: Default::default(),
        otlp_endpoint: None,
        limits: Limits {
            // A variant's connection waits idle while the others are measured; it must not be
            // closed for that (each phase starts with unmeasured requests anyway).
            header_read_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
        auth: auth_args(kind),
    })
    .await
    .expect("app starts");
    let credential = match kind {
        // The service ignores it: what sending and parsing the header costs, apart from checking.
        Kind::OffAgain if std::env::var_os("BENCH_CONTROL_SENDS_KEY").is_some() => {
            Some(format!("Bearer {API_KEY}"))
        }
        Kind::Off | Kind::OffAgain => None,
        Kind::ApiKey => Some(format!("Bearer {API_KEY}")),
        Kind::Jwt => Some(format!("Bearer {}", jwt("bench-operator"))),
    };
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let mut variant = Variant {
        kind,
        base: format!("http://{}", app.address),
        app,
        client,
        credential,
        run_id: String::new(),
        gets: Samples::default(),
        posts: Samples::default(),
    };
    variant.run_id = variant.post_run().await;
    settle(&variant.app, &variant.run_id).await;
    variant
}

/// The seed example with a fresh idempotency key, so every POST starts a new run.
fn seed_request() -> Value {
    let mut request: Value = serde_json::from_str(SEED).expect("the seed is JSON");
    request["execution"]["idempotencyKey"] = json!(uuid::Uuid::new_v4().to_string());
    request
}

impl Variant {
    fn with_credential(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
            None => request,
        }
    }

    async fn get_run(&self) {
        let response = self
            .with_credential(
                self.client
                    .get(format!("{}/runs/{}", self.base, self.run_id)),
            )
            .send()
            .await
            .expect("GET /runs/{id} answered");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        assert!(
            status.is_success(),
            "{}: GET /runs/{{id}} answered {status}: {}",
            self.kind.name(),
            String::from_utf8_lossy(&body)
        );
    }

    /// Body built before the clock starts: the request's serialisation is the client's cost.
    async fn post_body(&self, body: Vec<u8>) -> String {
        let response = self
            .with_credential(
                self.client
                    .post(format!("{}/runs", self.base))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body),
            )
            .send()
            .await
            .expect("POST /runs answered");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        assert!(
            status == reqwest::StatusCode::CREATED,
            "{}: POST /runs answered {status} (a new run is 201): {}",
            self.kind.name(),
            String::from_utf8_lossy(&body)
        );
        let started: Value = serde_json::from_slice(&body).expect("JSON");
        started["runId"].as_str().expect("runId").to_owned()
    }

    async fn post_run(&self) -> String {
        self.post_body(serde_json::to_vec(&seed_request()).expect("encodes"))
            .await
    }

    /// One measured GET, in µs.
    async fn timed_get(&self) -> f64 {
        let sent = Instant::now();
        self.get_run().await;
        sent.elapsed().as_secs_f64() * 1e6
    }

    /// One measured POST (its body built before the clock starts), in µs, and the new run.
    async fn timed_post(&self) -> (f64, String) {
        let body = serde_json::to_vec(&seed_request()).expect("encodes");
        let sent = Instant::now();
        let run_id = self.post_body(body).await;
        (sent.elapsed().as_secs_f64() * 1e6, run_id)
    }
}

/// Waits until a run is past starting (its session bound, kickoff sent), so its background
/// work does not run into the next measurement.
async fn settle(app: &App, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = app.service.get(run_id).await.expect("the run exists");
        match run.status {
            RunStatus::Queued | RunStatus::Starting | RunStatus::BindingSession => {}
            RunStatus::Running => return,
            other => panic!("run {run_id} ended {other:?} before the bench was done"),
        }
        assert!(Instant::now() < deadline, "run {run_id} never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn print_table(title: &str, variants: &[Variant], samples: fn(&Variant) -> &Samples) {
    println!("\n{title}");
    println!(
        "  {:9} {:>9} {:>9} {:>9} {:>9}   {:>7} {:>7} {:>7} {:>7}   {:>23}   ≤5 %: p50, req/s",
        "",
        "req/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "×req/s",
        "×p50",
        "×p90",
        "×p99",
        "×p50 rounds: mid (p10–90)",
    );
    let off = samples(&variants[0]);
    let off_sorted = sorted(off.latencies.clone());
    let (off_p50, off_p90, off_p99) = (
        percentile(&off_sorted, 0.5),
        percentile(&off_sorted, 0.9),
        percentile(&off_sorted, 0.99),
    );
    for variant in variants {
        let own = samples(variant);
        let latencies = sorted(own.latencies.clone());
        let (p50, p90, p99) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
        );
        let rate = own.rate();
        // Each round's p50 over auth off's in the same round: how much the rounds agree.
        let per_round = sorted(
            own.round_p50
                .iter()
                .zip(&off.round_p50)
                .map(|(own, off)| own / off)
                .collect(),
        );
        let verdict = if variant.kind == Kind::Off {
            String::new()
        } else {
            let yes = |holds: bool| if holds { "yes" } else { "NO" };
            format!(
                "{} ({:+.1} %), {} ({:+.1} %)",
                yes(p50 <= off_p50 * (1.0 + TARGET)),
                (p50 / off_p50 - 1.0) * 100.0,
                yes(rate >= off.rate() * (1.0 - TARGET)),
                (rate / off.rate() - 1.0) * 100.0,
            )
        };
        println!(
            "  {:9} {:>9.0} {:>9.0} {:>9.0} {:>9.0}   {:>7.3} {:>7.3} {:>7.3} {:>7.3}   {:>7.3} ({:.3}–{:.3})   {verdict}",
            variant.kind.name(),
            rate,
            p50,
            p90,
            p99,
            rate / off.rate(),
            p50 / off_p50,
            p90 / off_p90,
            p99 / off_p99,
            percentile(&per_round, 0.5),
            percentile(&per_round, 0.1),
            percentile(&per_round, 0.9),
        );
    }
    if let Some(control) = variants
        .iter()
        .find(|variant| variant.kind == Kind::OffAgain)
    {
        let own = samples(control);
        let p50 = percentile(&sorted(own.latencies.clone()), 0.5);
        println!(
            "  noise floor: the control, auth off as well, is {:+.1} % on p50 and {:+.1} % on req/s; \
             smaller differences say nothing",
            (p50 / off_p50 - 1.0) * 100.0,
            (own.rate() / off.rate() - 1.0) * 100.0,
        );
    }
}

/// Every order of `0..count`.
fn permutations(count: usize) -> Vec<Vec<usize>> {
    if count == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(count - 1) {
        for position in 0..count {
            let mut order = shorter.clone();
            order.insert(position, count - 1);
            all.push(order);
        }
    }
    all
}

/// Nanoseconds per call of `call`, over `count` calls.
async fn time_per_call<F, Fut>(count: usize, mut call: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    for index in 0..count {
        call(index).await;
    }
    started.elapsed().as_secs_f64() * 1e9 / count as f64
}

/// The parts of the check, in process: where the time goes if there is any to find.
async fn parts(dir: &tempfile::TempDir) {
    let store = macp_control_plane::store::Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("parts.db").display()
    ))
    .await
    .expect("store");
    let args = AuthArgs {
        auth_api_keys: vec![API_KEY.to_owned().into()],
        auth_jwt_secret: Some(JWT_SECRET.to_owned().into()),
        ..AuthArgs::default()
    };
    let auth = Authenticator::new(
        args.setup(std::net::Ipv4Addr::LOCALHOST.into(), store, 0)
            .expect("auth setup"),
    );
    const CALLS: usize = 200_000;
    let token = jwt("bench-operator");
    let digest = time_per_call(CALLS, |_| async {
        std::hint::black_box(macp_control_plane::auth::keys::digest(
            std::hint::black_box(&token),
        ));
    })
    .await;
    let key = time_per_call(CALLS, |_| async {
        auth.authenticate(Some(API_KEY)).await.expect("key");
    })
    .await;
    let cached = time_per_call(CALLS, |_| async {
        auth.authenticate(Some(&token)).await.expect("jwt");
    })
    .await;
    // Distinct tokens, each verified once (signature, claims, cache insert).
    const FRESH: usize = 5_000;
    let tokens: Vec<String> = (0..FRESH)
        .map(|index| jwt(&format!("operator-{index}")))
        .collect();
    let fresh = time_per_call(FRESH, |index| {
        let token = &tokens[index];
        let auth = &auth;
        async move {
            auth.authenticate(Some(token)).await.expect("jwt");
        }
    })
    .await;
    // The default budgets are on in production; an effectively endless one keeps every check
    // on the allowed path.
    let throttle = Throttle::new(ThrottleSettings {
        write_limit: u32::MAX,
        read_limit: u32::MAX,
        window: Duration::from_secs(60),
    });
    let throttled = time_per_call(CALLS, |_| async {
        let _ = std::hint::black_box(throttle.check("bench-operator", false));
    })
    .await;
    println!(
        "\nin process, per call: SHA-256 of the JWT {digest:.0} ns; API key authenticate {key:.0} ns; \
         JWT authenticate, cached {cached:.0} ns; JWT first verification {:.1} µs; \
         rate-limit check with a budget on (off in the table above) {throttled:.0} ns",
        fresh / 1000.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let get_block = env_number("BENCH_GET_BLOCK", 200).max(1);
        let get_rounds = (env_number("BENCH_GETS", 20_000) / get_block).max(1);
        let post_block = env_number("BENCH_POST_BLOCK", 30).max(1);
        let post_rounds = (env_number("BENCH_POSTS", 1200) / post_block).max(1);
        println!(
            "macp-control-plane auth benchmark: per variant {} GET /runs/{{id}} in {get_rounds} rounds and {} POST /runs \
             in {post_rounds} rounds, the variants taking turns; one keep-alive HTTP/1.1 connection each; \
             SQLite; embedded runtime; {} cores",
            get_rounds * get_block,
            post_rounds * post_block,
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let started = Instant::now();
        let mut variants = Vec::new();
        // The control starts last: if the order services start in mattered, it would show.
        for kind in [Kind::Off, Kind::ApiKey, Kind::Jwt, Kind::OffAgain] {
            variants.push(start(kind, &dir).await);
        }
        // The variants take turns request by request, each turn in the next of all their
        // orders, so a burst of background work or drift on the machine lands on all of them
        // alike, and each follows each of the others as often (what the previous request left
        // behind, on the other core, is everyone's). A round is a block of turns; its p50s give
        // the per-round ratios.
        let count = variants.len();
        let orders = permutations(count);
        let order = |turn: usize| orders[turn % orders.len()].clone();
        for variant in &variants {
            // Unmeasured: every connection open and warm.
            variant.get_run().await;
        }
        for round in 0..get_rounds {
            let mut latencies = vec![Vec::with_capacity(get_block); count];
            for turn in 0..get_block {
                for index in order(round * get_block + turn) {
                    latencies[index].push(variants[index].timed_get().await);
                }
            }
            for (variant, latencies) in variants.iter_mut().zip(latencies) {
                variant.gets.add_round(latencies);
            }
        }
        for round in 0..post_rounds {
            let mut latencies = vec![Vec::with_capacity(post_block); count];
            for turn in 0..post_block {
                let mut runs = Vec::with_capacity(count);
                for index in order(round * post_block + turn) {
                    let (latency, run_id) = variants[index].timed_post().await;
                    latencies[index].push(latency);
                    runs.push((index, run_id));
                }
                // The runs execute in the background (session start, kickoff); the next turn
                // starts once they have, so no POST is measured against another's execution.
                for (index, run_id) in runs {
                    settle(&variants[index].app, &run_id).await;
                }
            }
            for (variant, latencies) in variants.iter_mut().zip(latencies) {
                variant.posts.add_round(latencies);
            }
        }
        print_table(
            "GET /runs/{id} (one run, read back)",
            &variants,
            |variant| &variant.gets,
        );
        print_table(
            "POST /runs (the seed example, a new run each; its audit row in the same transaction)",
            &variants,
            |variant| &variant.posts,
        );
        parts(&dir).await;
        println!(
            "\nprocess RSS at the end {:.1} MB ({} services, {} runs each); measured in {:.0} s",
            rss_mb(),
            variants.len(),
            1 + post_rounds * post_block,
            started.elapsed().as_secs_f64()
        );
        for variant in variants {
            variant.app.stop().await;
        }
    });
}
