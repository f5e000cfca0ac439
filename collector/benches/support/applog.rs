//! Lines like an application's log, about 200 bytes each, from a seeded generator so every run
//! compresses the same text. Two texts (`BENCH_TEXT`):
//! - `requests` (default): each request logs four lines (started, query, cache, completed) that
//!   share its id, user and path, with a timestamp, the app's context and a span id, a level, a
//!   thread, a logger, and varying numbers (rows, durations, sizes, statuses);
//! - `random-ids`: every line a request of its own with a fresh 64-bit id and random fields: the
//!   hard case (whole-file `zstd -3` gets about 4.6x on it, `-19` 6.4x).

const LEVELS: [&str; 4] = ["INFO", "INFO", "DEBUG", "WARN"];
const LOGGERS: [&str; 5] = [
    "com.example.api.OrderController",
    "com.example.api.UserController",
    "com.example.db.ConnectionPool",
    "com.example.cache.RedisClient",
    "com.example.auth.TokenFilter",
];
const METHODS: [&str; 3] = ["GET", "GET", "POST"];
const RESOURCES: [&str; 4] = ["orders", "users", "items", "carts"];
const STATUSES: [u16; 5] = [200, 200, 200, 201, 404];

/// Which text `line` makes, from `BENCH_TEXT`.
pub fn random_ids() -> bool {
    std::env::var("BENCH_TEXT").is_ok_and(|t| t == "random-ids")
}

/// Line `i` of a source seeded with `seed` (sources differ in their fields).
pub fn line(seed: u64, i: u64) -> Vec<u8> {
    if random_ids() {
        return random_line(seed, i);
    }
    let request = i / 4;
    let mut rq = fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(request));
    let mut rl = fastrand::Rng::with_seed(seed.wrapping_mul(7_000_003).wrapping_add(i));
    let ms = 1_764_669_600_000 + i * 97 + rl.u64(0..50);
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (id, user, worker) = (rq.u64(..), rq.u32(0..20_000), rq.u8(1..17));
    let (method, resource, item) = (
        METHODS[rq.usize(..METHODS.len())],
        RESOURCES[rq.usize(..RESOURCES.len())],
        rq.u32(1..100_000),
    );
    // The context a logging framework adds to every line (MDC): app, environment, span.
    let head = format!(
        "2026-12-02T{h:02}:{m:02}:{s:02}.{millis:03}Z app=shop-api env=prod span={:08x}",
        rl.u32(..)
    );
    match i % 4 {
        0 => format!(
            "{head} INFO  [worker-{worker}] com.example.api.RequestLogger - request started id={id:016x} user=u{user:05} method={method} path=/api/v1/{resource}/{item} client=10.0.{}.{}",
            rq.u8(0..4),
            rq.u8(1..255)
        ),
        1 => format!(
            "{head} DEBUG [worker-{worker}] com.example.db.ConnectionPool - query id={id:016x} sql=\"SELECT * FROM {resource} WHERE id = ?\" rows={} took_ms={}",
            rl.u8(0..3),
            rl.u16(1..40)
        ),
        2 => format!(
            "{head} DEBUG [worker-{worker}] com.example.cache.RedisClient - cache {} id={id:016x} key={resource}:{item} ttl_s=300",
            if rl.u8(0..4) == 0 { "miss" } else { "hit" }
        ),
        _ => format!(
            "{head} INFO  [worker-{worker}] com.example.api.RequestLogger - request completed id={id:016x} status={} duration_ms={} bytes={}",
            STATUSES[rl.usize(..STATUSES.len())],
            rl.u32(1..900),
            rl.u32(100..60_000)
        ),
    }
    .into_bytes()
}

fn random_line(seed: u64, i: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(i));
    let ms = 1_764_669_600_000 + i * 97 + rng.u64(0..50);
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        "2026-12-02T{h:02}:{m:02}:{s:02}.{millis:03}Z {:<5} [worker-{}] {} - request id={:016x} user=u{:05} {} /api/v1/{}/{} status={} duration_ms={} bytes={}",
        LEVELS[rng.usize(..LEVELS.len())],
        rng.u8(1..17),
        LOGGERS[rng.usize(..LOGGERS.len())],
        rng.u64(..),
        rng.u32(0..20_000),
        METHODS[rng.usize(..METHODS.len())],
        RESOURCES[rng.usize(..RESOURCES.len())],
        rng.u32(1..1_000_000),
        STATUSES[rng.usize(..STATUSES.len())],
        rng.u32(1..900),
        rng.u32(100..60_000),
    )
    .into_bytes()
}
