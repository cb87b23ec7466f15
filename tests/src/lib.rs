//! End-to-end test support: a real origin server with counters, and the real
//! `stavka` binary started from a configuration file on ephemeral loopback
//! ports. Every test owns its origin and its proxy, so tests run in parallel.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::Router;

/// An origin server for one test, counting every request it receives by path.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// Request headers of the last request per path, to check what the proxy sent.
    last_headers: Arc<Mutex<HashMap<String, http::HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Serve `routes` on an ephemeral loopback port.
    pub async fn start(routes: Router) -> Origin {
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let last_headers: Arc<Mutex<HashMap<String, http::HeaderMap>>> = Arc::default();
        let (c, h) = (counts.clone(), last_headers.clone());
        let app = routes.layer(middleware::from_fn(move |req: Request, next: Next| {
            let (c, h) = (c.clone(), h.clone());
            async move {
                let path = req.uri().path().to_owned();
                *c.lock().unwrap().entry(path.clone()).or_default() += 1;
                h.lock().unwrap().insert(path, req.headers().clone());
                next.run(req).await
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Origin {
            addr,
            counts,
            last_headers,
            task,
        }
    }

    /// How many requests for `path` reached the origin.
    pub fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests that reached any path starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        let counts = self.counts.lock().unwrap();
        counts
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// The headers of the last request for `path`.
    pub fn last_headers(&self, path: &str) -> Option<http::HeaderMap> {
        self.last_headers.lock().unwrap().get(path).cloned()
    }

    /// Stop serving: new connections are refused from now on.
    pub async fn stop(&self) {
        self.task.abort();
        // Wait until the listener is gone so the next connect is refused.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "origin did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Build the `stavka` binary once per test process (a no-op when it is up to
/// date) and return its path, so a test never runs a stale binary.
pub fn stavka_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("STAVKA_BIN") {
            return PathBuf::from(path);
        }
        cargo(&["build", "--quiet", "--workspace", "--bins"]);
        target_dir().join("debug").join("stavka")
    })
}

/// Run cargo from a test, as `./x` would. `cargo test` sets per-crate
/// variables for this process; build scripts that track them (ring's does)
/// would see a change and rebuild half the dependency tree, so they go.
fn cargo(args: &[&str]) {
    cargo_in(&workspace_root(), args, &[]);
}

/// Run cargo with `args` in `dir`, with `env` set, as [`cargo`] does in the
/// workspace; panics if it fails.
pub fn cargo_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &std::path::Path)]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(dir);
    for (name, value) in env {
        command.env(name, value);
    }
    for (name, _) in std::env::vars() {
        let per_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ];
        if per_crate.iter().any(|p| name.starts_with(p)) {
            command.env_remove(name);
        }
    }
    let status = command.status().expect("run cargo");
    assert!(status.success(), "cargo {args:?} failed");
}

/// The target directory this test runs from: `<target>/debug/deps/<test>`.
/// The cargo target directory the tests run from.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Build the guests in `examples-guests/` once per test process and return
/// the directory holding their `.wasm` files.
pub fn guests_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        cargo(&[
            "build",
            "--quiet",
            "--manifest-path",
            "examples-guests/Cargo.toml",
            "--target",
            "wasm32-wasip2",
            "--release",
        ]);
        target_dir().join("wasm32-wasip2").join("release")
    })
}

/// The compiled guest `name` (`counter`, `ttl-rules`, ...).
pub fn guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Ports [`free_addr`] picks from: below Linux's ephemeral range (32768 and
/// up by default), which outgoing connections take their local ports from.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A free loopback address for a server a test starts, bound and released.
/// A port from the ephemeral range could be taken by any outgoing
/// connection (of this or another test process) before the server binds
/// it, and the server would fail to start; so the port is a random one
/// below that range, checked free by binding it. Concurrent test processes
/// pick the same one only by a rare chance; this process never hands out
/// a port twice (a server's proxy and admin ports once came out equal,
/// and it refused to start).
pub fn free_addr() -> SocketAddr {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    for attempt in 0..100u64 {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u64(attempt);
        let port = TEST_PORTS.start + (random.finish() % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            given.push(port);
            return listener.local_addr().unwrap();
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A default site in front of `origin`, decided by module `policy` if given.
pub fn default_site(origin: &Origin, policy: Option<&str>) -> String {
    default_site_at(origin.addr, policy)
}

/// A default site in front of the origin at `addr`, decided by module
/// `policy` if given.
pub fn default_site_at(addr: SocketAddr, policy: Option<&str>) -> String {
    let policy = policy
        .map(|p| format!("policy = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "[[site]]\nname = \"test\"\nhosts = [\"test.example\"]\ndefault = true\n{policy}origin = {{ address = \"{addr}\" }}\n"
    )
}

/// Write `bytes` as `dir/name.wasm` (and a non-empty `sidecar` as
/// `dir/name.toml`) by renaming complete files into place.
pub fn install(dir: &std::path::Path, name: &str, bytes: &[u8], sidecar: &str) {
    let put = |file: String, data: &[u8]| {
        let staging = dir.join(format!(".{file}.tmp"));
        std::fs::write(&staging, data).unwrap();
        std::fs::rename(&staging, dir.join(file)).unwrap();
    };
    if !sidecar.is_empty() {
        put(format!("{name}.toml"), sidecar.as_bytes());
    }
    put(format!("{name}.wasm"), bytes);
}

/// Where a process started from `config` writes its standard output (the
/// access log, in the combined format), kept across restarts.
fn stdout_path(config: &std::path::Path) -> PathBuf {
    config.with_file_name("stdout.log")
}

fn spawn(config: &std::path::Path) -> Child {
    spawn_with(config, &[])
}

fn spawn_with(config: &std::path::Path, args: &[&str]) -> Child {
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stdout_path(config))
        .expect("open stdout.log");
    Command::new(stavka_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("STAVKA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(stdout)
        .spawn()
        .expect("start stavka")
}

/// A running `stavka` process, killed when dropped.
pub struct Stavka {
    /// The proxy listener.
    pub proxy: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The watched policy directory.
    pub policy_dir: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Stavka {
    /// Start stavka with `extra` TOML appended to generated `[listen]` and
    /// `[policy]` settings, and wait until `/readyz` says ready.
    pub async fn start(extra: &str) -> Stavka {
        Stavka::start_with_modules(extra, &[]).await
    }

    /// Like [`Stavka::start`], with policy modules installed first:
    /// `(module name, guest, sidecar TOML)`.
    pub async fn start_with_modules(extra: &str, modules: &[(&str, &str, &str)]) -> Stavka {
        Stavka::start_listening("", extra, modules).await
    }

    /// Like [`Stavka::start_with_modules`], with `listen` TOML lines (such
    /// as `tls = "127.0.0.1:8443"`) added to the generated `[listen]`.
    pub async fn start_listening(
        listen: &str,
        extra: &str,
        modules: &[(&str, &str, &str)],
    ) -> Stavka {
        let proxy = free_addr();
        let admin = free_addr();
        let dir = tempfile::tempdir().unwrap();
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir_all(&policy_dir).unwrap();
        for (name, guest_name, sidecar) in modules {
            install(&policy_dir, name, &guest(guest_name), sidecar);
        }
        // Each test stores in its own directory; a test's own `[store]`
        // table gets the directory added to it. Without the free-space floor
        // unless the test sets one: how full the test machine's disk is must
        // not decide whether an object is stored.
        let mut store_dir = format!("dir = \"{}\"\n", dir.path().join("cache").display());
        if !extra.contains("min_free_percent") {
            store_dir.push_str("min_free_percent = 0\n");
        }
        let extra = if extra.contains("[store]\n") {
            extra.replacen("[store]\n", &format!("[store]\n{store_dir}"), 1)
        } else {
            format!("{extra}\n[store]\n{store_dir}")
        };
        let config = format!(
            "[listen]\nproxy = \"{proxy}\"\nadmin = \"{admin}\"\n{listen}\n\n[policy]\ndir = \"{}\"\ndebounce = \"50ms\"\n\n{extra}\n",
            policy_dir.display()
        );
        let path = dir.path().join("stavka.toml");
        std::fs::write(&path, config).unwrap();
        let mut stavka = Stavka {
            proxy,
            admin,
            policy_dir,
            child: spawn(&path),
            _dir: dir,
        };
        stavka.wait_ready().await;
        stavka
    }

    /// Kill the process (SIGKILL: no chance to clean up) and start it again
    /// with the same configuration and directories, waiting until its
    /// store has walked its files (before that, objects not yet reached
    /// are misses).
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self._dir.path().join("stavka.toml"));
        self.wait_ready().await;
        self.wait_recovered().await;
    }

    /// Stop the process cleanly (SIGTERM: it drains and saves its index)
    /// and start it again with the same configuration and directories.
    pub async fn restart_cleanly(&mut self) {
        self.terminate();
        let exited = self.wait_exit(Duration::from_secs(30)).await;
        assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
        self.child = spawn(&self._dir.path().join("stavka.toml"));
        self.wait_ready().await;
    }

    /// What `/readyz` lists as degraded.
    pub async fn degraded(&self) -> Vec<String> {
        let ready = self.admin_json("/readyz").await;
        ready["degraded"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait (at most 30 s) until the store is no longer recovering objects
    /// from its files.
    pub async fn wait_recovered(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .degraded()
            .await
            .iter()
            .any(|d| d.contains("recovering"))
        {
            assert!(Instant::now() < deadline, "store not recovered within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Start stavka with one default site in front of `origin`.
    pub async fn in_front_of(origin: &Origin, extra: &str) -> Stavka {
        Stavka::start(&format!("{extra}\n{}", default_site(origin, None))).await
    }

    /// Start stavka with one default site in front of `origin` decided by
    /// the guest `guest_name`, installed as module `p` with `sidecar`.
    pub async fn with_policy(origin: &Origin, guest_name: &str, sidecar: &str) -> Stavka {
        Stavka::start_with_modules(
            &default_site(origin, Some("p")),
            &[("p", guest_name, sidecar)],
        )
        .await
    }

    /// Replace (or add) module `name` while running, as an operator would:
    /// written beside, then renamed into place.
    pub fn install(&self, name: &str, guest_name: &str, sidecar: &str) {
        install(&self.policy_dir, name, &guest(guest_name), sidecar);
    }

    /// Set a key in module `module`'s key-value store through the admin API.
    pub async fn kv_set(&self, module: &str, key: &str, value: &str) {
        let resp = client()
            .put(self.admin_url(&format!("/policies/{module}/kv/{key}")))
            .body(value.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/readyz", self.admin);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("stavka exited during start-up: {status}");
            }
            if let Ok(resp) = client().get(&url).send().await {
                if resp.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "stavka not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A URL on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The status `/healthz` answers (200 while the process serves).
    pub async fn health(&self) -> u16 {
        client()
            .get(self.admin_url("/healthz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// GET `path` through the proxy.
    pub async fn get(&self, path: &str) -> Fetched {
        Fetched::from(client().get(self.url(path)).send().await.expect("request")).await
    }

    /// GET `path` through the proxy with `Host: host`.
    pub async fn get_host(&self, host: &str, path: &str) -> Fetched {
        let request = client().get(self.url(path)).header("host", host);
        Fetched::from(request.send().await.expect("request")).await
    }

    /// The value of one sample in `/metrics` once it reads `want`, or what
    /// it reads after 5 s: a request is counted when pingora logs it, just
    /// after its client has the response.
    pub async fn metric_reaching(&self, sample: &str, want: f64) -> Option<f64> {
        let mut last = None;
        for _ in 0..100 {
            last = self.metric(sample).await;
            if last == Some(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last
    }

    /// The value of one sample in `/metrics`, e.g.
    /// `stavka_requests_total{cache_status="hit",site="test"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// POST `body` to the admin `/purge` and return its JSON answer.
    pub async fn purge(&self, body: serde_json::Value) -> serde_json::Value {
        let resp = client()
            .post(self.admin_url("/purge"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "purge {body}");
        resp.json().await.unwrap()
    }

    /// The admin `/inspect` answer for `url`.
    pub async fn inspect(&self, url: &str) -> serde_json::Value {
        let at =
            reqwest::Url::parse_with_params(&self.admin_url("/inspect"), [("url", url)]).unwrap();
        let resp = client().get(at).send().await.unwrap();
        assert_eq!(resp.status(), 200, "inspect {url}");
        resp.json().await.unwrap()
    }

    /// GET an admin path and return its JSON answer.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let resp = client().get(self.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    /// A zero-downtime binary upgrade, as `systemctl reload` does it: start
    /// a second process on the same configuration with `--upgrade`, wait for
    /// it to listen on `upgrade_sock`, then SIGQUIT this one, which hands its
    /// listening sockets over and drains. Waits up to `limit` for the old
    /// process to exit, keeps the new one, and returns the old one's status.
    pub async fn upgrade(
        &mut self,
        upgrade_sock: &std::path::Path,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let new = spawn_with(&self.config_path(), &["--upgrade"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !upgrade_sock.exists() {
            assert!(
                Instant::now() < deadline,
                "the new process never listened on {upgrade_sock:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal("QUIT");
        let mut old = std::mem::replace(&mut self.child, new);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = old.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = old.kill();
        let _ = old.wait();
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM: graceful shutdown.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send the signal `name` (`HUP`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Wait for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Stavka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never uses a proxy from the environment, follows no
/// redirects and does not decompress. A new one per call: a client's
/// connection pool belongs to the runtime it was first used on, and each
/// test has its own runtime.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A whole response, read.
#[derive(Debug)]
pub struct Fetched {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl Fetched {
    /// Read a response to the end.
    pub async fn from(resp: reqwest::Response) -> Fetched {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("read body");
        Fetched {
            status,
            headers,
            body,
        }
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `Cache-Status` field.
    pub fn cache_status(&self) -> &str {
        self.header("cache-status")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An origin handler answering `body` with fixed headers.
pub fn fixed(
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> axum::routing::MethodRouter {
    axum::routing::get(move || async move {
        let mut resp = axum::response::IntoResponse::into_response(body);
        for (k, v) in headers {
            resp.headers_mut().append(*k, v.parse().unwrap());
        }
        resp
    })
}

/// Poll `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `stavka check-config` on `path`: its exit code and standard error.
pub fn check_config(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(stavka_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run stavka check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Send `request` as raw bytes on a new connection to `addr` and read what
/// comes back until the server closes the connection or `limit` passes:
/// for requests no well-behaved client library would send (no Host, bad
/// bytes, pipelining).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` over HTTP/`version` ("1.1", "1.0") to the default test site
/// on a raw connection, with `headers` (each line ending in CRLF) added:
/// everything the proxy sent back, interim responses included, which no
/// client library shows.
pub async fn raw_get(addr: SocketAddr, path: &str, version: &str, headers: &str) -> String {
    let request = format!(
        "GET {path} HTTP/{version}\r\nhost: test.example\r\n{headers}connection: close\r\n\r\n"
    );
    raw_exchange(addr, request.as_bytes(), Duration::from_secs(10)).await
}

/// An origin that answers every request with bytes the test wrote by hand:
/// for responses no server library would send (connection-specific fields,
/// interim responses, a body cut short). Counts requests; the connection is
/// closed after each answer.
pub struct RawOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawOrigin {
    /// Listen on an ephemeral loopback port and answer each request with
    /// `answer`, written in `chunks` separated by `pause`.
    pub async fn start(answer: Vec<Vec<u8>>, pause: Duration) -> RawOrigin {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    for (i, chunk) in answer.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(pause).await;
                        }
                        if stream.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawOrigin {
            addr,
            requests,
            task,
        }
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A default site in front of this origin.
    pub fn site(&self) -> String {
        default_site_at(self.addr, None)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stavka {
    /// The store directory the harness configured for this process, for
    /// tests that change what is under it while it runs.
    pub fn store_dir(&self) -> PathBuf {
        self._dir.path().join("cache")
    }

    /// The configuration file the process was started from, for tools that
    /// read it too (`stavka --config FILE ctl ...`) and for reloads.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("stavka.toml")
    }

    /// Edit the configuration file the process started from with `edit`
    /// and ask for a reload (`POST /config/reload`), as an operator would;
    /// the API's answer.
    pub async fn reload_with(&self, edit: impl FnOnce(String) -> String) -> reqwest::Response {
        let config = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), edit(config)).unwrap();
        client()
            .post(self.admin_url("/config/reload"))
            .send()
            .await
            .unwrap()
    }

    /// Every line the process has written to standard output so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        let path = stdout_path(&self._dir.path().join("stavka.toml"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Build the test guest `tests/guests/{name}` — a crate of its own
/// workspace, so the examples' workspace does not carry it — into the
/// shared target directory, and return the component.
pub fn test_guest(name: &str) -> Vec<u8> {
    let manifest = format!("tests/guests/{name}/Cargo.toml");
    let target = target_dir();
    cargo(&[
        "build",
        "--quiet",
        "--manifest-path",
        &manifest,
        "--target",
        "wasm32-wasip2",
        "--release",
        "--target-dir",
        &target.display().to_string(),
    ]);
    let path = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Clients looping on requests until stopped, counting right and wrong
/// answers: the load under which a reload, a certificate rotation or a
/// binary upgrade must fail nothing. Each failure is printed with when it
/// happened.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    served: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// One task per request, each sending it again and again (so a
    /// request without a streamed body); `right(status, body)` judges
    /// each answer.
    pub fn start(requests: Vec<reqwest::RequestBuilder>, right: fn(u16, &str) -> bool) -> Load {
        use std::sync::atomic::Ordering;
        let load = Load {
            stop: Arc::default(),
            served: Arc::default(),
            failed: Arc::default(),
            tasks: Vec::new(),
        };
        let started = Instant::now();
        let tasks = requests
            .into_iter()
            .map(|request| {
                let (stop, served, failed) =
                    (load.stop.clone(), load.served.clone(), load.failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let sent = request
                            .try_clone()
                            .expect("a request without a streamed body");
                        let answer = match sent.send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                r.text().await.map(|body| (status, body))
                            }
                            Err(e) => Err(e),
                        };
                        let ok = match &answer {
                            Ok((status, body)) => right(*status, body),
                            Err(_) => false,
                        };
                        if !ok {
                            eprintln!("wrong answer at {:?}: {answer:?}", started.elapsed());
                        }
                        let counter = if ok { &served } else { &failed };
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    /// Right answers so far.
    pub fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop every client and wait for it; returns the right and the wrong
    /// answers.
    pub async fn stop(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load client panicked");
        }
        (
            self.served.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// A `redis-server` of a test's own on a free loopback port (Debian's;
/// `./x test` installs it), killed on drop. Nothing is persisted: a
/// restart comes back empty, on the same port.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one and wait until it answers `PING`.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_addr().port(),
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (./x test installs Debian's redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not start: {}",
                self.port,
                std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Run `redis-cli` against it: its trimmed output, `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port (empty).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
