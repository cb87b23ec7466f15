//! `stavka-bench soak`: stavka under a long, varied load, watched for
//! anything that grows without bound.
//!
//! Clients request many keys (most from a hot set, some spread over every
//! key, some never seen before) of the origin's `/flaky/` objects, which
//! expire after 30 s and fail 1% of the time; purges by URL, prefix and tag
//! arrive through the admin API, and the policy module file is re-installed
//! (alternating two modules, so each install is a real reload). Memory, open
//! file descriptors, bytes in the store directory and errors are sampled
//! throughout. The run fails when, after the first quarter's warm-up, the
//! last quarter's memory or descriptors exceed the second quarter's by more
//! than [`MEMORY_MARGIN`] / [`FD_MARGIN`], when the store directory ever
//! holds more than its bound plus [`DISK_SLACK`], when more than
//! [`ERROR_BUDGET`] of requests fail other than by the origin's own
//! failures, or when re-installed modules are not reloaded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::origin::{Origin, FLAKY_FAILS_ONE_IN, FLAKY_FAILURE};
use crate::server::{Contender, Running, Tools};

/// The soaked store's disk bound: small, so eviction runs all the time
/// (and no smaller than the template's 64 MiB `max_object_size`).
pub const DISK_BYTES: u64 = 96 << 20;
/// The soaked store's memory tier bound.
pub const MEMORY_BYTES: u64 = 8 << 20;
/// Files being written (up to `write_concurrency`, 64, of the largest
/// 64 KiB object) are in the directory before eviction can count them.
const DISK_SLACK: u64 = 64 * 64 * 1024;
/// Growth of memory from the second quarter to the last that still passes:
/// allocator fragmentation and lazily grown pools, not a leak.
const MEMORY_MARGIN: (f64, u64) = (0.10, 8 << 20);
/// Growth of open descriptors that still passes (connections in flight).
const FD_MARGIN: usize = 32;
/// Requests that may fail for reasons other than the origin's failures.
const ERROR_BUDGET: f64 = 0.001;
/// Object sizes, by key.
const SIZES: [usize; 4] = [1024, 4 * 1024, 16 * 1024, 64 * 1024];
/// Surrogate tags, by key.
const TAGS: u64 = 32;
/// How often memory, descriptors and the store directory are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often a purge is sent.
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// How often the policy module is re-installed.
const RELOAD_EVERY: Duration = Duration::from_secs(15);
/// Error messages kept for the report.
const KEEP_ERRORS: usize = 10;

/// The soak's options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Minutes of load.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Distinct keys (besides the never-repeated ones).
    #[arg(long, default_value_t = 20_000)]
    keys: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Where the Markdown report goes (besides stdout).
    #[arg(long, default_value = "target/bench/soak.md")]
    out: PathBuf,
}

/// One look at the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    requests: u64,
    pss: u64,
    fds: usize,
    disk: u64,
    errors: u64,
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    origin_failures: AtomicU64,
    errors: AtomicU64,
    purges: AtomicU64,
    installs: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEEP_ERRORS {
            kept.push(what);
        }
    }
}

/// A small deterministic generator: the load is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The path of key `k`: its size and tag follow from it.
fn key_path(k: u64) -> (String, usize) {
    let size = SIZES[(k % SIZES.len() as u64) as usize];
    (format!("/flaky/{size}/g{}/k{k}", k % TAGS), size)
}

/// Run the soak against the stavka binary next to this one.
pub async fn run(tools: &Tools, origin: &Origin, args: &Args) -> Result<()> {
    let guests = [
        tools.guests.join(crate::server::TTL_RULES),
        tools.guests.join("decisions.wasm"),
    ];
    for guest in &guests {
        anyhow::ensure!(
            guest.exists(),
            "{} is missing: build the guests first",
            guest.display()
        );
    }
    let server = tools.start(Contender::StavkaSoak, origin.addr).await?;
    let admin = server.admin.context("stavka has an admin listener")?;
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();
    let end = started + length;
    let tally = Arc::new(Tally::default());
    let loads_before = policy_loads(admin).await?;
    eprintln!(
        "soak: {:.1} min, {} keys, {} connections, store bound {} MiB",
        args.minutes,
        args.keys,
        args.connections,
        DISK_BYTES >> 20
    );

    let client = crate::client(args.connections);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.connections {
        let (client, tally, base) = (client.clone(), tally.clone(), server.url(""));
        let keys = args.keys;
        tasks.spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
            let mut unique = 0u64;
            while Instant::now() < end {
                let roll = rng.next() % 100;
                let (path, size) = if roll < 88 {
                    key_path(rng.next() % (keys / 20).max(1))
                } else if roll < 98 {
                    key_path(rng.next() % keys)
                } else {
                    unique += 1;
                    (format!("/flaky/1024/once/w{worker}-{unique}"), 1024)
                };
                get(&client, &format!("{base}{path}"), size, &tally).await;
            }
        });
    }
    tasks.spawn(purges(admin, args.keys, end, tally.clone()));
    tasks.spawn(reinstalls(
        server.dir.join("policies"),
        guests,
        end,
        tally.clone(),
    ));

    let mut samples = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        let sample = sample(&server, started, &tally).await?;
        eprintln!(
            "soak: {:>4.0} s  {:>8} requests  {:>6.1} MiB  {:>4} fds  {:>5.1} MiB on disk  {} errors",
            sample.at.as_secs_f64(),
            sample.requests,
            mib(sample.pss),
            sample.fds,
            mib(sample.disk),
            sample.errors
        );
        samples.push(sample);
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a soak task panicked")?;
    }
    let loads = policy_loads(admin).await? - loads_before;

    let report = Report {
        args,
        samples: &samples,
        tally: &tally,
        loads,
        length,
    };
    let (text, verdict) = report.render();
    println!("{text}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    let dir = server.dir.clone();
    server.stop().await?;
    std::fs::remove_dir_all(dir.join("cache"))?;
    match verdict {
        Ok(()) => {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            // Shared with other runs' directories: removed only if empty.
            let _ = std::fs::remove_dir(&tools.work);
            Ok(())
        }
        Err(why) => bail!(
            "soak failed: {why}\n(the server's log is {})",
            dir.join("server.log").display()
        ),
    }
}

/// One request, tallied: the full body, the origin's own failure passed
/// on, or an error.
async fn get(client: &reqwest::Client, url: &str, size: usize, tally: &Tally) {
    tally.requests.fetch_add(1, Ordering::Relaxed);
    let resp = match client.get(url).send().await {
        Ok(resp) => resp,
        Err(e) => return tally.error(format!("{url}: {e}")),
    };
    let status = resp.status();
    match resp.bytes().await {
        Ok(body) if status == 200 && body.len() == size => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) if status == FLAKY_FAILURE.as_u16() => {
            tally.origin_failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(body) => tally.error(format!("{url}: {status}, {} bytes", body.len())),
        Err(e) => tally.error(format!("{url}: {status}, body: {e}")),
    }
}

/// Purge by URL, prefix and tag in turn until `end`.
async fn purges(admin: std::net::SocketAddr, keys: u64, end: Instant, tally: Arc<Tally>) {
    let client = crate::client(1);
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let mut turn = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(PURGE_EVERY).await;
        let k = rng.next() % keys;
        let body = match turn % 3 {
            0 => format!(r#"{{"url": "127.0.0.1{}"}}"#, key_path(k).0),
            1 => format!(
                r#"{{"prefix": "127.0.0.1/flaky/{}/g{}/"}}"#,
                SIZES[(k % SIZES.len() as u64) as usize],
                k % TAGS
            ),
            _ => format!(r#"{{"tag": "g{}"}}"#, k % TAGS),
        };
        turn += 1;
        let sent = client
            .post(format!("http://{admin}/purge"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent.map(|r| r.status()) {
            Ok(status) if status.is_success() => {
                tally.purges.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => tally.error(format!("purge {body}: {status}")),
            Err(e) => tally.error(format!("purge {body}: {e}")),
        }
    }
}

/// Re-install the policy module, alternating `guests`, until `end`: written
/// beside it and renamed into place, as a deployment would.
async fn reinstalls(policies: PathBuf, guests: [PathBuf; 2], end: Instant, tally: Arc<Tally>) {
    let mut turn = 1;
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        if Instant::now() + Duration::from_secs(2) >= end {
            return;
        }
        let temp = policies.join("p.wasm.new");
        let installed = std::fs::copy(&guests[turn % 2], &temp)
            .and_then(|_| std::fs::rename(&temp, policies.join("p.wasm")));
        match installed {
            Ok(()) => {
                tally.installs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.error(format!("installing the policy module: {e}")),
        }
        turn += 1;
    }
}

/// Module versions loaded so far, from `stavka_policy_loads_total`.
async fn policy_loads(admin: std::net::SocketAddr) -> Result<u64> {
    let text = crate::admin_metrics(&crate::client(1), admin).await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("stavka_policy_loads_total{")
                && l.contains(r#"module="p""#)
                && l.contains(r#"result="loaded""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn sample(server: &Running, started: Instant, tally: &Tally) -> Result<Sample> {
    let cache = server.dir.join("cache");
    let disk = tokio::task::spawn_blocking(move || dir_bytes(&cache)).await??;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .context("stavka is not running")?
        .count();
    Ok(Sample {
        at: started.elapsed(),
        requests: tally.requests.load(Ordering::Relaxed),
        pss: server.pss_bytes()?,
        fds,
        disk,
        errors: tally.errors.load(Ordering::Relaxed),
    })
}

/// Bytes in the files under `dir` (their lengths, not the blocks they
/// take: what the store's bound counts).
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            // A file renamed or evicted while we look is simply not counted.
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

struct Report<'a> {
    args: &'a Args,
    samples: &'a [Sample],
    tally: &'a Tally,
    loads: u64,
    length: Duration,
}

impl Report<'_> {
    /// The Markdown report and the verdict.
    fn render(&self) -> (String, Result<(), String>) {
        let t = self.tally;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let requests = load(&t.requests);
        let in_quarter = |q: u32| {
            let (from, to) = (self.length * q / 4, self.length * (q + 1) / 4);
            self.samples
                .iter()
                .filter(move |s| s.at > from && s.at <= to + SAMPLE_EVERY / 2)
        };
        let max_pss = |q| in_quarter(q).map(|s| s.pss).max().unwrap_or(0);
        let max_fds = |q| in_quarter(q).map(|s| s.fds).max().unwrap_or(0);
        let (pss_base, pss_last) = (max_pss(1), max_pss(3));
        let (fds_base, fds_last) = (max_fds(1), max_fds(3));
        let disk_max = self.samples.iter().map(|s| s.disk).max().unwrap_or(0);
        let pss_limit = (pss_base as f64 * (1.0 + MEMORY_MARGIN.0)) as u64 + MEMORY_MARGIN.1;
        let fds_limit = fds_base + FD_MARGIN;
        let disk_limit = DISK_BYTES + DISK_SLACK;
        let errors = load(&t.errors);
        let installs = load(&t.installs);

        let mut problems = Vec::new();
        if self.samples.len() < 8 {
            problems.push(format!(
                "only {} samples: run for at least a minute",
                self.samples.len()
            ));
        }
        if pss_last > pss_limit {
            problems.push(format!(
                "memory grew: {:.1} MiB in the last quarter, limit {:.1} MiB (second quarter {:.1} MiB)",
                mib(pss_last), mib(pss_limit), mib(pss_base)
            ));
        }
        if fds_last > fds_limit {
            problems.push(format!(
                "descriptors grew: {fds_last} in the last quarter, limit {fds_limit} (second quarter {fds_base})"
            ));
        }
        if disk_max > disk_limit {
            problems.push(format!(
                "store directory reached {:.1} MiB, over its bound of {:.1} MiB plus {:.1} MiB in flight",
                mib(disk_max), mib(DISK_BYTES), mib(DISK_SLACK)
            ));
        }
        if errors as f64 > requests as f64 * ERROR_BUDGET {
            problems.push(format!(
                "{errors} errors in {requests} requests, over the budget of {:.1}%",
                ERROR_BUDGET * 100.0
            ));
        }
        if installs > 0 && self.loads * 2 < installs {
            problems.push(format!(
                "{installs} module installs but only {} reloads",
                self.loads
            ));
        }

        let mut text = format!(
            "## Soak\n\n{:.1} minutes, {} keys (88% of requests to the hottest 5%, 10% to any key, \
             2% to keys never requested before), {} connections; store bound {} MiB disk, {} MiB memory; \
             origin objects fresh 30 s, one origin request in {} fails with {}.\n\n",
            self.args.minutes,
            self.args.keys,
            self.args.connections,
            DISK_BYTES >> 20,
            MEMORY_BYTES >> 20,
            FLAKY_FAILS_ONE_IN,
            FLAKY_FAILURE.as_u16(),
        );
        text +=
            "| time | requests | req/s | memory (PSS) | open fds | store directory | errors |\n\
                 |---:|---:|---:|---:|---:|---:|---:|\n";
        let step = self.samples.len().div_ceil(20).max(1);
        let mut previous = (Duration::ZERO, 0);
        for (i, s) in self.samples.iter().enumerate() {
            if i % step == 0 || i + 1 == self.samples.len() {
                let rate = (s.requests - previous.1) as f64 / (s.at - previous.0).as_secs_f64();
                text += &format!(
                    "| {:.0} s | {} | {:.0} | {:.1} MiB | {} | {:.1} MiB | {} |\n",
                    s.at.as_secs_f64(),
                    s.requests,
                    rate,
                    mib(s.pss),
                    s.fds,
                    mib(s.disk),
                    s.errors
                );
                previous = (s.at, s.requests);
            }
        }
        text += &format!(
            "\n- requests: {requests} ({} full bodies, {} origin failures passed on, {errors} errors)\n\
             - purges: {}; module installs: {installs}, reloads seen: {}\n\
             - memory: second quarter max {:.1} MiB, last quarter max {:.1} MiB (limit {:.1} MiB)\n\
             - open fds: second quarter max {fds_base}, last quarter max {fds_last} (limit {fds_limit})\n\
             - store directory: max {:.1} MiB (limit {:.1} MiB)\n",
            load(&t.ok),
            load(&t.origin_failures),
            load(&t.purges),
            self.loads,
            mib(pss_base),
            mib(pss_last),
            mib(pss_limit),
            mib(disk_max),
            mib(disk_limit),
        );
        let kept = t.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        for e in kept.iter() {
            text += &format!("- error: {e}\n");
        }
        let verdict = if problems.is_empty() {
            text += "\n**Pass**: nothing grew without bound.\n";
            Ok(())
        } else {
            text += &format!("\n**Fail**: {}\n", problems.join("; "));
            Err(problems.join("; "))
        };
        (text, verdict)
    }
}
