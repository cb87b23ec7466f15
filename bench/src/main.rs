//! `stavka-bench`: stavka, nginx `proxy_cache` and Varnish in front of one
//! origin on loopback, measured in one run, reported as one set of tables.
//!
//! The servers run pinned to `--server-cpus`, the driver (origin, clients,
//! wrk, h2load) to `--client-cpus`, so the load generator never competes
//! with the server it measures. Contenders take turns within each round, so
//! drift in the machine affects them alike; each figure is the median over
//! rounds.
//! `./x bench` installs the peers, wrk and h2load, builds everything and
//! runs this.
//! `stavka-bench soak` (`./x soak`) is the long-running stability check
//! instead: see [`soak`].

mod cluster;
mod h2load;
mod hit;
mod hls;
mod memory;
mod miss;
mod origin;
mod profile;
mod report;
mod server;
mod slice;
mod soak;
mod tls;
mod wrk;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::report::Results;
use crate::server::{Contender, Tools};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Hit throughput and latency, 1 KiB and 100 KiB.
    Hit,
    /// Time to first byte of a slow 50 MiB miss, alone and collapsed.
    Miss,
    /// Concurrent cold requests for one key.
    Collapse,
    /// Resident memory per cached object.
    Memory,
    /// Range requests into a cold 1 GiB object: origin bytes, hits, time
    /// to first byte (stavka's slices against nginx's slice module).
    Slice,
    /// Over TLS: 1 KiB hits on HTTP/1.1 and h2, and TLS 1.3 handshakes
    /// per second, full and resumed (stavka and nginx; Varnish has no TLS).
    Tls,
    /// Video viewers watching HLS streams at playback pace: segment hits,
    /// time to first byte and origin bytes, without and with the
    /// hls-prefetch policy (nginx for reference; no one else prefetches).
    Hls,
    /// Three stavka edges on loopback, alone, sharing a tier on Redis,
    /// behind two shields, and both: origin requests, hits per tier and
    /// the latency each tier adds (stavka only; a chart besides the
    /// tables).
    Cluster,
}

/// Something other than the comparison.
#[derive(Subcommand)]
enum Command {
    /// stavka alone under long, varied load: fails if memory, descriptors
    /// or the store grow without bound.
    Soak(soak::Args),
}

#[derive(Parser)]
#[command(about = "stavka against nginx proxy_cache and Varnish, in one run")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Rounds; every figure is the median over them.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of measured load per hit run (HTTP and HTTPS).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// wrk's and h2load's keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Objects stored for the memory scenario.
    #[arg(long, default_value_t = 100_000)]
    objects: usize,
    /// Clients of the collapsed slow miss.
    #[arg(long, default_value_t = 20)]
    collapsed: usize,
    /// Clients of the collapsing scenario.
    #[arg(long, default_value_t = 100)]
    collapsing: usize,
    /// Scenarios to run (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Contenders to run (default: all that each scenario takes).
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<Contender>,
    /// CPUs for the servers, as taskset takes them.
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// CPUs for the driver: origin, clients and wrk.
    #[arg(long, default_value = "1")]
    client_cpus: String,
    /// Also profile this stavka configuration's 1 KiB hit path with `perf`.
    #[arg(long)]
    profile: Option<Contender>,
    /// Where the servers keep their caches and logs. tmpfs by default, so
    /// the comparison measures the servers rather than the machine's
    /// filesystem (see docs/benchmarks.md).
    #[arg(long, default_value = "/dev/shm/stavka-bench")]
    work_dir: PathBuf,
    /// Where the Markdown tables go (besides stdout).
    #[arg(long, default_value = "target/bench/results.md")]
    out: PathBuf,
}

/// Hit object sizes.
const HIT_SIZES: [usize; 2] = [1024, 100 * 1024];

/// A client for `connections` concurrent requests, no proxy from the
/// environment, no decompression.
fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client with no TLS or proxy settings builds")
}

/// The text of a stavka node's `/metrics` on its admin listener `admin`.
async fn admin_metrics(client: &reqwest::Client, admin: std::net::SocketAddr) -> Result<String> {
    Ok(client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// GET `url` and check that the body is `size` bytes.
async fn fetch(client: &reqwest::Client, url: &str, size: usize) -> Result<()> {
    let body = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    anyhow::ensure!(
        body.len() == size,
        "{url}: {} bytes, expected {size}",
        body.len()
    );
    Ok(())
}

/// Get `url` (`size` bytes) stored: two requests, the second a hit.
async fn store(url: &str, size: usize) -> Result<()> {
    let client = client(1);
    for _ in 0..2 {
        fetch(&client, url, size).await?;
    }
    Ok(())
}

/// A name no earlier request has used, so every scenario starts cold.
fn fresh(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Scenario {
    /// Who takes part: hits compare policy modes, and reads of the segment
    /// ring (no memory tier) through io_uring and the blocking pool; misses and collapsing
    /// take the per-request policy too; memory compares storage layouts
    /// (the segment ring, objects in files, no memory tier) and the floor
    /// of any pingora cache;
    /// slices and TLS leave Varnish out, which has no equivalent; the
    /// video viewers compare stavka with and without prefetching, and
    /// nginx as the incumbent.
    fn contenders(self) -> &'static [Contender] {
        use Contender::*;
        match self {
            Scenario::Hit => &[
                Stavka,
                StavkaPerRequest,
                StavkaLongLived,
                StavkaDiskOnly,
                StavkaDiskOnlyBlockingPool,
                Nginx,
                Varnish,
            ],
            Scenario::Miss | Scenario::Collapse => &[Stavka, StavkaPerRequest, Nginx, Varnish],
            Scenario::Memory => &[
                Stavka,
                StavkaFiles,
                StavkaDiskOnly,
                PingoraFloor,
                Nginx,
                Varnish,
            ],
            Scenario::Slice => &[StavkaSlice, Nginx],
            Scenario::Tls => &[Stavka, Nginx],
            Scenario::Hls => &[Stavka, StavkaHlsPrefetch, Nginx],
            // Not a comparison: it starts its own nodes.
            Scenario::Cluster => &[],
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    pin_self(&args.client_cpus)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Pin this process (and so wrk, which it spawns) to `cpus`.
fn pin_self(cpus: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -c {cpus} failed");
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|d| d.parent())
        .context("stavka-bench runs from target/<profile>/")?;
    let tools = Tools {
        configs: root.join("bench/configs"),
        stavka: exe.with_file_name("stavka"),
        floor: exe.with_file_name("pingora-floor"),
        guests: target.join("wasm32-wasip2/release"),
        work: args.work_dir.clone(),
        cpus: args.server_cpus.clone(),
    };
    let origin = origin::Origin::start().await?;
    if let Some(Command::Soak(soak)) = &args.command {
        return soak::run(&tools, &origin, soak).await;
    }
    let scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenarios.clone()
    };
    let takes = |s: Scenario, c: Contender| {
        scenarios.contains(&s)
            && s.contenders().contains(&c)
            && (args.contenders.is_empty() || args.contenders.contains(&c))
    };
    let duration = Duration::from_secs(args.duration);
    // One certificate for the run, the same for every TLS contender.
    let certificate = if scenarios.contains(&Scenario::Tls) {
        Some(tls::Certificate::generate(&tools.work.join("certificate"))?)
    } else {
        None
    };
    let mut results = Results::default();
    let mut cluster_rounds = Vec::new();
    for round in 1..=args.runs {
        for contender in round_order(round, |c| scenarios.iter().any(|&s| takes(s, c))) {
            let load = [Scenario::Hit, Scenario::Miss, Scenario::Collapse];
            if load.iter().any(|s| takes(*s, contender)) {
                eprintln!("round {round}/{}: {}", args.runs, contender.as_str());
                let server = tools.start(contender, origin.addr).await?;
                if takes(Scenario::Hit, contender) {
                    for size in HIT_SIZES {
                        let hits = hit::run(
                            &origin,
                            &server,
                            &fresh("hot"),
                            size,
                            args.connections,
                            duration,
                        )
                        .await?;
                        results
                            .hits
                            .entry((contender, size))
                            .or_default()
                            .push(hits);
                    }
                }
                if takes(Scenario::Miss, contender) {
                    for clients in [1, args.collapsed] {
                        let ttfb =
                            miss::first_byte(&origin, &server, &fresh("slow"), clients).await?;
                        results
                            .first_byte
                            .entry((contender, clients))
                            .or_default()
                            .push(ttfb);
                    }
                }
                if takes(Scenario::Collapse, contender) {
                    let collapse =
                        miss::collapse(&origin, &server, &fresh("cold"), args.collapsing).await?;
                    results
                        .collapse
                        .entry((contender, args.collapsing))
                        .or_default()
                        .push(collapse);
                }
                server.stop().await?;
            }
            if takes(Scenario::Memory, contender) {
                eprintln!("round {round}/{}: {} memory", args.runs, contender.as_str());
                let server = tools.start(contender, origin.addr).await?;
                let memory = memory::fill(&origin, &server, &fresh("m"), args.objects).await?;
                results
                    .memory
                    .entry((contender, args.objects))
                    .or_default()
                    .push(memory);
                server.stop().await?;
            }
            if takes(Scenario::Slice, contender) {
                eprintln!("round {round}/{}: {} slices", args.runs, contender.as_str());
                let server = tools.start(contender, origin.addr).await?;
                // The round as the seed: contenders read the same ranges.
                let slices = slice::run(&origin, &server, round as u64).await?;
                results.slices.entry(contender).or_default().push(slices);
                server.stop().await?;
            }
            if takes(Scenario::Hls, contender) {
                eprintln!("round {round}/{}: {} HLS", args.runs, contender.as_str());
                let server = tools.start(contender, origin.addr).await?;
                let viewing = hls::run(&origin, &server).await?;
                results.hls.entry(contender).or_default().push(viewing);
                server.stop().await?;
            }
            if let Some(certificate) = certificate
                .as_ref()
                .filter(|_| takes(Scenario::Tls, contender))
            {
                eprintln!("round {round}/{}: {} TLS", args.runs, contender.as_str());
                let server = tools.start_tls(contender, origin.addr, certificate).await?;
                let tls = tls::run(
                    &origin,
                    &server,
                    certificate,
                    &fresh("tls"),
                    args.connections,
                    duration,
                )
                .await?;
                results.tls.entry(contender).or_default().push(tls);
                server.stop().await?;
            }
        }
        if scenarios.contains(&Scenario::Cluster) {
            eprintln!("round {round}/{}: cluster", args.runs);
            cluster_rounds.push(cluster::run(&tools, &origin, round as u64).await?);
        }
    }
    let mut tables = results.markdown(args.connections, args.duration);
    if !cluster_rounds.is_empty() {
        tables += &cluster::markdown(&cluster_rounds);
        let chart = args.out.with_file_name("cluster.svg");
        if let Some(dir) = chart.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&chart, cluster::chart(&cluster_rounds))
            .with_context(|| format!("writing {}", chart.display()))?;
        eprintln!("chart written to {}", chart.display());
    }
    let report = format!("{}\n{tables}", machine().await);
    println!("{report}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("tables written to {}", args.out.display());
    if let Some(contender) = args.profile {
        let server = tools.start(contender, origin.addr).await?;
        let out = args.out.with_file_name("hit-profile.txt");
        profile::hit_path(
            &server,
            &fresh("profiled"),
            args.connections,
            duration,
            &out,
        )
        .await?;
        server.stop().await?;
        eprintln!("profile written to {}", out.display());
    }
    // The caches are on tmpfs by default: give the memory back. After a
    // failure they stay, with each server's log, for a look.
    std::fs::remove_dir_all(&tools.work)
        .with_context(|| format!("removing {}", tools.work.display()))?;
    Ok(())
}

/// The contenders taking part, in the order round `round` runs them: each
/// round starts one further along, so over rounds every contender runs at
/// every position, and the machine's drift within a round does not always
/// fall on the same ones (docs/benchmarks.md measures that drift).
fn round_order(round: usize, takes_part: impl Fn(Contender) -> bool) -> Vec<Contender> {
    let mut order: Vec<Contender> = Contender::value_variants()
        .iter()
        .copied()
        .filter(|&c| takes_part(c))
        .collect();
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left((round - 1) % len);
    }
    order
}

/// The machine and the versions measured, for the report's header.
async fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let version = |program: &'static str, args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new(program)
            .args(args)
            .output()
            .await;
        out.map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| format!("{program}: not found"))
    };
    format!(
        "## Machine\n\n- CPU: {cpu}, {} logical CPUs\n- kernel: {}\n- {}\n- {}\n- {}\n- {}\n- stavka at commit {}\n",
        // Not available_parallelism: this process is pinned.
        std::fs::read_to_string("/proc/cpuinfo")
            .map_or(0, |s| s.lines().filter(|l| l.starts_with("processor")).count()),
        version("uname", &["-r"]).await,
        version("nginx", &["-v"]).await,
        version("varnishd", &["-V"]).await,
        version("wrk", &["-v"]).await,
        version("h2load", &["--version"]).await,
        version("git", &["rev-parse", "--short", "HEAD"]).await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_runs_at_every_position_over_rounds() {
        let takes_part = |c| {
            matches!(
                c,
                Contender::Stavka | Contender::StavkaPerRequest | Contender::StavkaLongLived
            )
        };
        let rounds: Vec<_> = (1..=4).map(|r| round_order(r, takes_part)).collect();
        use Contender::*;
        assert_eq!(rounds[0], [Stavka, StavkaPerRequest, StavkaLongLived]);
        assert_eq!(rounds[1], [StavkaPerRequest, StavkaLongLived, Stavka]);
        assert_eq!(rounds[2], [StavkaLongLived, Stavka, StavkaPerRequest]);
        assert_eq!(rounds[3], rounds[0]);
        assert!(round_order(1, |_| false).is_empty());
    }
}
