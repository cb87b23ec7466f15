//! The contenders: stavka in its configurations, nginx and Varnish, each
//! started from the configuration checked in under `bench/configs/`, pinned
//! to the server CPUs, and stopped (with every process it forked) when the
//! scenario is done. stavka and nginx can also listen for TLS, with the
//! additions in `stavka-tls.toml` and `nginx-tls.conf`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::tls::Certificate;

/// The ttl-rules guest's file name among the built guests.
pub const TTL_RULES: &str = "ttl_rules.wasm";

/// One server configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Contender {
    /// stavka with no policy.
    Stavka,
    /// stavka with the ttl-rules policy, a fresh instance per request.
    StavkaPerRequest,
    /// stavka with the ttl-rules policy, reused instances.
    StavkaLongLived,
    /// stavka with no memory tier: what it keeps in memory per object
    /// besides bodies (memory scenario), and hits read from the segment
    /// ring, through io_uring where the kernel has it (hit scenario).
    StavkaDiskOnly,
    /// [`Contender::StavkaDiskOnly`] reading the ring on the blocking pool
    /// (`io_engine = "blocking-pool"`; hit scenario only).
    StavkaDiskOnlyBlockingPool,
    /// stavka with every object in its own files, no segment ring: the
    /// store's file engine against the ring (memory scenario only).
    StavkaFiles,
    /// stavka caching large objects as slices (`slice.toml`; slice
    /// scenario only): off elsewhere, where it would turn the 50 MiB miss
    /// into a sliced object.
    StavkaSlice,
    /// stavka with the hls-prefetch policy, long-lived, and the site's
    /// `[site.prefetch]` (`prefetch.toml`; hls scenario only).
    StavkaHlsPrefetch,
    /// nginx `proxy_cache`.
    Nginx,
    /// Varnish with its built-in VCL.
    Varnish,
    /// pingora with pingora-cache and its own in-memory storage, nothing
    /// else (`src/bin/pingora-floor.rs`; memory scenario only): the floor of
    /// a cache built on pingora, to tell pingora's cost from stavka's.
    PingoraFloor,
    /// stavka for the soak: small memory and disk bounds so eviction runs
    /// all the time, and the long-lived policy the soak re-installs.
    StavkaSoak,
}

impl Contender {
    /// Its name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Contender::Stavka => "stavka",
            Contender::StavkaPerRequest => "stavka + per-request policy",
            Contender::StavkaLongLived => "stavka + long-lived policy",
            Contender::StavkaDiskOnly => "stavka, disk tier only",
            Contender::StavkaDiskOnlyBlockingPool => "stavka, disk only, blocking pool",
            Contender::StavkaFiles => "stavka, objects in files",
            Contender::StavkaSlice => "stavka + slices",
            Contender::StavkaHlsPrefetch => "stavka + hls-prefetch",
            Contender::Nginx => "nginx",
            Contender::Varnish => "Varnish",
            Contender::PingoraFloor => "pingora-cache alone (MemCache)",
            Contender::StavkaSoak => "stavka (soak)",
        }
    }

    /// The stavka policy, if any: its sidecar under `bench/configs/` and
    /// its guest's file name among the built guests.
    fn policy(self) -> Option<(&'static str, &'static str)> {
        match self {
            Contender::StavkaPerRequest => Some(("per-request.toml", TTL_RULES)),
            Contender::StavkaLongLived | Contender::StavkaSoak => {
                Some(("long-lived.toml", TTL_RULES))
            }
            Contender::StavkaHlsPrefetch => Some(("hls-prefetch.toml", "hls_prefetch.wasm")),
            _ => None,
        }
    }

    /// The site's `[site.prefetch]` table under `bench/configs/`, if it
    /// prefetches.
    fn prefetch(self) -> Option<&'static str> {
        (self == Contender::StavkaHlsPrefetch).then_some("prefetch.toml")
    }
}

/// Where the programs and configurations are.
pub struct Tools {
    /// `bench/configs/`.
    pub configs: PathBuf,
    /// The release `stavka` binary.
    pub stavka: PathBuf,
    /// The release `pingora-floor` binary, beside it.
    pub floor: PathBuf,
    /// The example guests, built for wasm32-wasip2 in release mode.
    pub guests: PathBuf,
    /// Scratch space; each start wipes its own subdirectory.
    pub work: PathBuf,
    /// `taskset` CPU list for servers.
    pub cpus: String,
}

/// What a measured load cost a server: its processes' CPU time (user and
/// system) over the load's wall time. CPU per request is less exposed than
/// req/s to what else the machine runs: a server that loses its core for a
/// while serves fewer requests, not dearer ones.
#[derive(Debug, Clone, Copy)]
pub struct ServerCost {
    /// CPU time the server's processes used.
    pub cpu: Duration,
    /// From the load's start to its end.
    pub elapsed: Duration,
}

impl ServerCost {
    /// CPU time per one of `count` operations.
    pub fn each(&self, count: u64) -> Duration {
        self.cpu.div_f64(count.max(1) as f64)
    }

    /// The share of one CPU the server used: near 1, the server was the
    /// limit; well below, the client was, or the server lost its core.
    pub fn busy(&self) -> f64 {
        self.cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// A started contender.
pub struct Running {
    /// Which one.
    pub contender: Contender,
    /// Its proxy listener.
    pub addr: SocketAddr,
    /// Its TLS listener, when started with one.
    pub tls: Option<SocketAddr>,
    /// stavka's admin listener (the peers have none).
    pub admin: Option<SocketAddr>,
    /// Its scratch directory: stavka's store is `cache/` and its policy
    /// directory `policies/` under it.
    pub dir: PathBuf,
    child: Child,
    pid: u32,
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Fill `{{name}}` placeholders; a placeholder left over is a bug in the
/// template or here, so it fails loudly.
fn render(template: &Path, vars: &[(&str, String)]) -> Result<String> {
    let mut text = std::fs::read_to_string(template)
        .with_context(|| format!("reading {}", template.display()))?;
    for (name, value) in vars {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(at) = text.find("{{") {
        bail!("{}: unfilled placeholder at byte {at}", template.display());
    }
    Ok(text)
}

impl Tools {
    /// Start `contender` in front of `origin` and wait until it answers.
    pub async fn start(&self, contender: Contender, origin: SocketAddr) -> Result<Running> {
        self.launch(contender, origin, None, None).await
    }

    /// One node of a multi-node setup (the cluster scenario): plain stavka
    /// in its own directory `name` under the work directory, with `extra`
    /// appended to its configuration (the site's sub-tables first, such as
    /// `[site.shield]`, then top-level tables such as `[shared]`).
    pub async fn start_node(&self, name: &str, origin: SocketAddr, extra: &str) -> Result<Running> {
        self.launch(Contender::Stavka, origin, None, Some((name, extra)))
            .await
    }

    /// [`Tools::start`], also listening for TLS (HTTP/1.1 and h2 by ALPN)
    /// with `certificate`. stavka and nginx only: Varnish has no TLS.
    pub async fn start_tls(
        &self,
        contender: Contender,
        origin: SocketAddr,
        certificate: &Certificate,
    ) -> Result<Running> {
        self.launch(contender, origin, Some(certificate), None)
            .await
    }

    async fn launch(
        &self,
        contender: Contender,
        origin: SocketAddr,
        certificate: Option<&Certificate>,
        node: Option<(&str, &str)>,
    ) -> Result<Running> {
        let (dir, extra) = match node {
            Some((name, extra)) => (self.work.join(name), extra),
            None => (self.work.join(format!("{contender:?}").to_lowercase()), ""),
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let addr = free_addr()?;
        let tls = match certificate {
            Some(certificate) => Some((free_addr()?, certificate)),
            None => None,
        };
        let ((program, args), admin) = match contender {
            Contender::Nginx => (self.nginx(&dir, addr, origin, tls)?, None),
            Contender::Varnish if tls.is_some() => bail!("Varnish does not terminate TLS"),
            Contender::Varnish => (self.varnish(&dir, addr, origin)?, None),
            Contender::PingoraFloor => (self.floor(addr, origin), None),
            _ => {
                let admin = free_addr()?;
                let command = self.stavka(contender, &dir, addr, admin, origin, tls)?;
                if !extra.is_empty() {
                    let path = dir.join("stavka.toml");
                    let config = std::fs::read_to_string(&path)? + extra;
                    std::fs::write(&path, config)?;
                }
                (command, Some(admin))
            }
        };
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(&self.cpus)
            .arg(&program)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("child has no pid")?;
        let mut running = Running {
            contender,
            addr,
            tls: tls.map(|(addr, _)| addr),
            admin,
            dir: dir.clone(),
            child,
            pid,
        };
        running.wait_ready().await.with_context(|| {
            format!(
                "{} did not start; see {}",
                contender.as_str(),
                dir.join("server.log").display()
            )
        })?;
        Ok(running)
    }

    /// The floor's command line: it has no configuration file.
    fn floor(&self, addr: SocketAddr, origin: SocketAddr) -> (PathBuf, Vec<String>) {
        (
            self.floor.clone(),
            vec![addr.to_string(), origin.to_string()],
        )
    }

    fn stavka(
        &self,
        contender: Contender,
        dir: &Path,
        addr: SocketAddr,
        admin: SocketAddr,
        origin: SocketAddr,
        tls: Option<(SocketAddr, &Certificate)>,
    ) -> Result<(PathBuf, Vec<String>)> {
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies)?;
        let policy = match contender.policy() {
            Some((sidecar, guest)) => {
                let guest = self.guests.join(guest);
                std::fs::copy(self.configs.join(sidecar), policies.join("p.toml"))?;
                std::fs::copy(&guest, policies.join("p.wasm"))
                    .with_context(|| format!("copying {}", guest.display()))?;
                "policy = \"p\"".to_owned()
            }
            None => String::new(),
        };
        let prefetch = match contender.prefetch() {
            Some(table) => std::fs::read_to_string(self.configs.join(table))?,
            None => String::new(),
        };
        let (memory_bytes, memory_max_object, disk_bytes) = match contender {
            Contender::StavkaDiskOnly | Contender::StavkaDiskOnlyBlockingPool => {
                ("0".into(), "0", "4GiB".into())
            }
            Contender::StavkaSoak => (
                crate::soak::MEMORY_BYTES.to_string(),
                "64KiB",
                crate::soak::DISK_BYTES.to_string(),
            ),
            _ => ("256MiB".into(), "256KiB", "4GiB".into()),
        };
        let store = match contender {
            Contender::StavkaFiles => "segment_bytes = \"0\"",
            Contender::StavkaDiskOnlyBlockingPool => "io_engine = \"blocking-pool\"",
            _ => "",
        };
        let slice = match contender {
            Contender::StavkaSlice => std::fs::read_to_string(self.configs.join("slice.toml"))?,
            _ => String::new(),
        };
        let tls = self.tls_fragment("stavka-tls.toml", tls)?;
        let config = render(
            &self.configs.join("stavka.toml"),
            &[
                ("listen", addr.to_string()),
                ("admin", admin.to_string()),
                ("origin", origin.to_string()),
                ("dir", dir.display().to_string()),
                ("memory_bytes", memory_bytes),
                ("memory_max_object", memory_max_object.to_owned()),
                ("disk_bytes", disk_bytes),
                ("store", store.to_owned()),
                ("policy", policy),
                ("prefetch", prefetch),
                ("slice", slice),
                ("tls", tls),
            ],
        )?;
        let path = dir.join("stavka.toml");
        std::fs::write(&path, config)?;
        Ok((
            self.stavka.clone(),
            vec!["--config".into(), path.display().to_string()],
        ))
    }

    fn nginx(
        &self,
        dir: &Path,
        addr: SocketAddr,
        origin: SocketAddr,
        tls: Option<(SocketAddr, &Certificate)>,
    ) -> Result<(PathBuf, Vec<String>)> {
        let tls = self.tls_fragment("nginx-tls.conf", tls)?;
        let config = render(
            &self.configs.join("nginx.conf"),
            &[
                ("listen", addr.to_string()),
                ("origin", origin.to_string()),
                ("dir", dir.display().to_string()),
                ("tls", tls),
            ],
        )?;
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config)?;
        let args = ["-e", "error.log", "-p", &dir.display().to_string(), "-c"];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(path.display().to_string());
        Ok(("nginx".into(), args))
    }

    /// The TLS listener's part of a configuration, from the file `name`
    /// under `bench/configs/`: empty without TLS.
    fn tls_fragment(&self, name: &str, tls: Option<(SocketAddr, &Certificate)>) -> Result<String> {
        let Some((addr, certificate)) = tls else {
            return Ok(String::new());
        };
        render(
            &self.configs.join(name),
            &[
                ("listen", addr.to_string()),
                ("cert", certificate.cert.display().to_string()),
                ("key", certificate.key.display().to_string()),
            ],
        )
    }

    fn varnish(
        &self,
        dir: &Path,
        addr: SocketAddr,
        origin: SocketAddr,
    ) -> Result<(PathBuf, Vec<String>)> {
        let vcl = render(
            &self.configs.join("varnish.vcl"),
            &[
                ("origin_host", origin.ip().to_string()),
                ("origin_port", origin.port().to_string()),
            ],
        )?;
        let path = dir.join("varnish.vcl");
        std::fs::write(&path, vcl)?;
        let args = [
            "-F".to_owned(),
            "-j".into(),
            "none".into(),
            "-n".into(),
            dir.join("varnish").display().to_string(),
            "-a".into(),
            addr.to_string(),
            "-T".into(),
            "none".into(),
            "-f".into(),
            path.display().to_string(),
            "-s".into(),
            "malloc,256m".into(),
            "-p".into(),
            "thread_pools=1".into(),
            "-p".into(),
            "default_grace=0".into(),
            "-p".into(),
            "default_keep=0".into(),
        ];
        Ok(("varnishd".into(), args.into()))
    }
}

impl Running {
    async fn wait_ready(&mut self) -> Result<()> {
        let client = crate::client(1);
        let url = self.url("/obj/16/ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("exited during start-up: {status}");
            }
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("not answering {url} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A URL on its proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on its TLS listener.
    pub fn https_url(&self, path: &str) -> Result<String> {
        let addr = self.tls.context("started without TLS")?;
        Ok(format!("https://{addr}{path}"))
    }

    /// The process and every process it forked (nginx's workers, Varnish's
    /// child), found through `/proc/<pid>/task/*/children`.
    fn tree(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        let mut i = 0;
        while i < pids.len() {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", pids[i]));
            for task in tasks.into_iter().flatten().flatten() {
                let children = std::fs::read_to_string(task.path().join("children"));
                pids.extend(
                    children
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
            i += 1;
        }
        pids
    }

    /// Proportional set size of the whole process tree: resident memory with
    /// shared pages (nginx's key zone, Varnish's shared log) counted once.
    pub fn pss_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for pid in self.tree() {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
            let kib: u64 = rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no Pss line for pid {pid}"))?;
            total += kib * 1024;
        }
        Ok(total)
    }

    /// Run `load`, and what it cost this server.
    pub async fn measure<T>(
        &self,
        load: impl Future<Output = Result<T>>,
    ) -> Result<(T, ServerCost)> {
        let (cpu, started) = (self.cpu_time()?, Instant::now());
        let out = load.await?;
        let elapsed = started.elapsed();
        let cpu = self.cpu_time()?.saturating_sub(cpu);
        Ok((out, ServerCost { cpu, elapsed }))
    }

    /// CPU time (user and system) used so far by the whole process tree.
    pub fn cpu_time(&self) -> Result<Duration> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        anyhow::ensure!(ticks_per_second > 0, "no clock tick rate");
        let mut ticks = 0;
        for pid in self.tree() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("reading /proc/{pid}/stat"))?;
            // After the command name in parentheses: state is field 3 of
            // proc(5), utime 14 and stime 15.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            for i in [11, 12] {
                let field = fields
                    .get(i)
                    .with_context(|| format!("/proc/{pid}/stat: {stat}"))?;
                ticks += field.parse::<u64>()?;
            }
        }
        Ok(Duration::from_secs_f64(
            ticks as f64 / ticks_per_second as f64,
        ))
    }

    /// The main process id, for profiling.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGTERM (nginx's master and Varnish's manager stop their workers
    /// before exiting), then SIGKILL to the whole tree after 10 s.
    pub async fn stop(mut self) -> Result<()> {
        let tree = self.tree();
        signal(self.pid, libc::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            for pid in &tree {
                signal(*pid, libc::SIGKILL);
            }
            self.child.wait().await?;
        }
        Ok(())
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a pid that has
    // already gone makes it fail with ESRCH, which is what we want.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every contender's configuration, and stavka's and nginx's with a
    /// TLS listener, renders from the checked-in files with nothing left
    /// unfilled (a stale placeholder would only show as a
    /// server refusing to start, in a benchmark run CI does not make).
    #[test]
    fn every_configuration_renders_completely() {
        let work = std::env::temp_dir().join(format!("stavka-bench-test-{}", std::process::id()));
        let tools = Tools {
            configs: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs"),
            stavka: "stavka".into(),
            floor: "pingora-floor".into(),
            guests: work.clone(),
            work: work.clone(),
            cpus: "0".into(),
        };
        std::fs::create_dir_all(&work).unwrap();
        for guest in [TTL_RULES, "hls_prefetch.wasm"] {
            std::fs::write(work.join(guest), b"\0asm").unwrap();
        }
        let (addr, origin): (SocketAddr, SocketAddr) = (
            "127.0.0.1:8001".parse().unwrap(),
            "127.0.0.1:9001".parse().unwrap(),
        );
        let certificate = Certificate::generate(&work.join("certificate")).unwrap();
        let tls_addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let contenders = <Contender as clap::ValueEnum>::value_variants();
        let with_tls = [Contender::Stavka, Contender::Nginx];
        let runs = contenders.iter().map(|c| (*c, None)).chain(
            with_tls
                .iter()
                .map(|c| (*c, Some((tls_addr, &certificate)))),
        );
        for (contender, tls) in runs {
            let dir = work.join(format!("{contender:?}-{}", tls.is_some()));
            std::fs::create_dir_all(&dir).unwrap();
            let (_, args) = match contender {
                Contender::PingoraFloor => {
                    let (_, args) = tools.floor(addr, origin);
                    assert_eq!(args, ["127.0.0.1:8001", "127.0.0.1:9001"]);
                    continue;
                }
                Contender::Nginx => tools.nginx(&dir, addr, origin, tls),
                Contender::Varnish => tools.varnish(&dir, addr, origin),
                _ => tools.stavka(contender, &dir, addr, addr, origin, tls),
            }
            .unwrap();
            let file = args
                .iter()
                .rev()
                .find(|a| a.starts_with(&*dir.to_string_lossy()));
            let text = std::fs::read_to_string(file.expect("a config file argument")).unwrap();
            assert!(text.contains("9001"), "{contender:?} names the origin");
            assert_eq!(
                contender.policy().is_some(),
                text.contains("policy = \"p\""),
                "{contender:?}"
            );
            assert_eq!(
                contender == Contender::StavkaSlice,
                text.contains("[slice]"),
                "{contender:?}"
            );
            assert_eq!(
                contender.prefetch().is_some(),
                text.lines().any(|l| l == "[site.prefetch]"),
                "{contender:?}"
            );
            assert_eq!(tls.is_some(), text.contains("8443"), "{contender:?}");
            assert_eq!(
                tls.is_some(),
                text.contains(&*certificate.key.to_string_lossy()),
                "{contender:?}"
            );
        }
        std::fs::remove_dir_all(&work).unwrap();
    }
}
