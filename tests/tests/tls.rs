//! HTTPS at the edge: certificates chosen by SNI (exact, wildcard, default),
//! HTTP/2 by ALPN and h2c served from the cache, certificates rotated under
//! load without a failed request, a bad certificate refused while the old
//! one serves, HTTP→HTTPS redirects and HSTS, and origins over verified
//! TLS. Certificates are made in the test with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use stavka_e2e::{free_addr, Load, Origin, Stavka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

/// A certificate and key in PEM.
struct Issued {
    cert: String,
    key: String,
}

/// The certificates' notAfter: past today (2026-11-30), a year or so on.
const NOT_AFTER: (i32, u8, u8) = (2027, 12, 31);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A leaf for `names`, valid until `(year, month, day)`.
    fn issue_until(&self, names: &[&str], (y, m, d): (i32, u8, u8)) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A leaf for `names`, valid until [`NOT_AFTER`].
    fn issue(&self, names: &[&str]) -> Issued {
        self.issue_until(names, NOT_AFTER)
    }
}

/// Write `issued` as `dir/name.pem` and `dir/name.key` by renaming complete
/// files into place, as certificate tools do.
fn write(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    for (path, text) in [(&key, &issued.key), (&cert, &issued.cert)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (cert, key)
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Accepts any server certificate: the tests compare what was presented.
#[derive(Debug)]
struct Anything;

impl rustls::client::danger::ServerCertVerifier for Anything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that takes any server certificate.
fn trusting_anything() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything))
        .with_no_client_auth()
}

/// The leaf certificate the server at `addr` presents to a client sending
/// `sni` (`None`: no SNI, as for a client that dials an IP address), and
/// the ALPN protocol it chose when offered `h2` and `http/1.1`.
async fn presented(addr: SocketAddr, sni: Option<&str>) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut config = trusting_anything();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake with SNI {sni:?}: {e}"));
    let (_, session) = tls.get_ref();
    (
        session.peer_certificates().unwrap()[0].to_vec(),
        session.alpn_protocol().map(<[u8]>::to_vec),
    )
}

/// How many of `clients` returning clients resume: each makes a whole
/// HTTP/1.1 request (so it has read the server's session tickets), and
/// only once all have does each come back. More clients than a session
/// cache holds show whether resumption survives real numbers of them.
async fn returning_clients_resumed(addr: SocketAddr, sni: &str, clients: usize) -> usize {
    async fn visit(
        connector: &tokio_rustls::TlsConnector,
        addr: SocketAddr,
        sni: &str,
    ) -> Option<rustls::HandshakeKind> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let kind = tls.get_ref().1.handshake_kind();
        let request = format!("GET /page HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        kind
    }
    // Each client has its own session store.
    let connectors: Vec<_> = (0..clients)
        .map(|_| tokio_rustls::TlsConnector::from(Arc::new(trusting_anything())))
        .collect();
    for connector in &connectors {
        assert_eq!(
            visit(connector, addr, sni).await,
            Some(rustls::HandshakeKind::Full)
        );
    }
    let mut resumed = 0;
    for connector in &connectors {
        if visit(connector, addr, sni).await == Some(rustls::HandshakeKind::Resumed) {
            resumed += 1;
        }
    }
    resumed
}

/// A client that trusts `ca` and dials `names` at `addr`.
fn https_client(ca: &Ca, names: &[&str], addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    for name in names {
        builder = builder.resolve(name, addr);
    }
    builder
}

fn cached_origin_routes() -> Router {
    Router::new().route(
        "/page",
        get(|| async { ([("cache-control", "max-age=600")], "page body") }),
    )
}

/// The TOML of a site in front of `origin`.
fn site(name: &str, hosts: &[&str], origin: SocketAddr, extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        "[[site]]\nname = \"{name}\"\nhosts = [{}]\norigin = {{ address = \"{origin}\" }}\n{extra}\n",
        hosts.join(", ")
    )
}

fn tls_files(cert: &Path, key: &Path) -> String {
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn sni_picks_each_sites_certificate_and_h2_by_alpn_is_served_from_cache() {
    let origin = Origin::start(cached_origin_routes()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("stavka test CA");
    let (a, wild, fallback) = (
        ca.issue(&["a.test"]),
        ca.issue(&["*.wild.test"]),
        ca.issue(&["default.test"]),
    );
    let (a_cert, a_key) = write(dir.path(), "a", &a);
    let (w_cert, w_key) = write(dir.path(), "wild", &wild);
    let (d_cert, d_key) = write(dir.path(), "default", &fallback);
    let tls = free_addr();
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{}\n{}",
        d_cert.display(),
        d_key.display(),
        site("a", &["a.test"], origin.addr, &tls_files(&a_cert, &a_key)),
        site(
            "wild",
            &["*.wild.test"],
            origin.addr,
            &tls_files(&w_cert, &w_key)
        ),
    );
    let stavka = Stavka::start_listening(&format!("tls = \"{tls}\""), &config, &[]).await;

    // Each name gets its site's certificate; any other name, and a client
    // that sends none, the default; h2 is chosen when offered.
    for (sni, expected) in [
        (Some("a.test"), &a),
        (Some("A.TEST"), &a),
        (Some("x.wild.test"), &wild),
        (Some("deep.x.wild.test"), &wild),
        (Some("other.test"), &fallback),
        (None, &fallback),
    ] {
        let (leaf, alpn) = presented(tls, sni).await;
        assert_eq!(leaf, der(&expected.cert), "certificate for SNI {sni:?}");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN for {sni:?}");
    }

    // Returning clients resume their sessions (TLS 1.3 tickets), more of
    // them than rustls' default session cache (256) would hold.
    assert_eq!(returning_clients_resumed(tls, "a.test", 300).await, 300);

    // HTTPS over HTTP/2: a miss, then a hit from the same cache.
    let client = https_client(&ca, &["a.test"], tls).build().unwrap();
    let url = format!("https://a.test:{}/page", tls.port());
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.version(), http::Version::HTTP_2);
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), "page body");
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.version(), http::Version::HTTP_2);
    let status = second.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(status.contains("hit"), "{status}");
    assert_eq!(second.text().await.unwrap(), "page body");
    // HTTP/1.1 over TLS too, from the same cache.
    let h1 = https_client(&ca, &["a.test"], tls)
        .http1_only()
        .build()
        .unwrap();
    let third = h1.get(&url).send().await.unwrap();
    assert_eq!(third.version(), http::Version::HTTP_11);
    assert!(third.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("hit"));
    assert_eq!(
        origin.count("/page"),
        1,
        "one origin fetch for every client"
    );

    // Each certificate's expiry is reported.
    let stats = stavka.admin_json("/stats").await;
    let certs = stats["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3, "{stats}");
    for c in certs {
        let days = c["expires_in_seconds"].as_i64().unwrap() / 86_400;
        assert!((300..800).contains(&days), "{c}");
        assert!(c["last_error"].is_null(), "{c}");
    }
    let expiry = "stavka_tls_certificate_expiry_seconds{certificate=\"wild\"}";
    assert!(stavka.metric(expiry).await.is_some(), "{expiry}");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_on_the_plain_listener() {
    let origin = Origin::start(cached_origin_routes()).await;
    let stavka =
        Stavka::start_listening("h2c = true", &stavka_e2e::default_site(&origin, None), &[]).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for expected in ["miss", "hit"] {
        let resp = client.get(stavka.url("/page")).send().await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let status = resp.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(status.contains(expected), "{status}");
    }
    // HTTP/1.1 clients are still served on the same listener.
    assert_eq!(stavka.get("/page").await.status, 200);
    assert_eq!(origin.count("/page"), 1);
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request_and_a_bad_one_is_refused() {
    let origin = Origin::start(cached_origin_routes()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("rotation CA");
    let old = ca.issue_until(&["r.test"], (2027, 6, 30));
    let (cert, key) = write(dir.path(), "r", &old);
    let tls = free_addr();
    let config = site(
        "r",
        &["r.test"],
        origin.addr,
        &format!("default = true\n{}", tls_files(&cert, &key)),
    );
    let stavka = Stavka::start_listening(&format!("tls = \"{tls}\""), &config, &[]).await;
    assert_eq!(presented(tls, Some("r.test")).await.0, der(&old.cert));

    // 50 clients loop, half on fresh connections (a handshake each).
    let url = format!("https://r.test:{}/page", tls.port());
    let requests = (0..50)
        .map(|i| {
            let mut builder = https_client(&ca, &["r.test"], tls);
            if i % 2 == 0 {
                builder = builder.pool_max_idle_per_host(0).http1_only();
            }
            builder.build().unwrap().get(&url)
        })
        .collect();
    let load = Load::start(requests, |status, body| {
        status == 200 && body == "page body"
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rotate: a new key and certificate, renamed into place.
    let new = ca.issue(&["r.test"]);
    write(dir.path(), "r", &new);
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(tls, Some("r.test")).await.0 != der(&new.cert) {
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_after = load.served();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken chain is refused; the new certificate keeps serving.
    std::fs::write(
        dir.path().join("r.tmp"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    std::fs::rename(dir.path().join("r.tmp"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let stats = stavka.admin_json("/stats").await;
        if let Some(error) = stats["certificates"][0]["last_error"].as_str() {
            break error.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the bad certificate was never refused: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refusal.contains("r.pem"), "{refusal}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presented(tls, Some("r.test")).await.0, der(&new.cert));

    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "failed requests during rotation");
    assert!(ok > seen_after, "requests were served after the swap");

    let events = stavka.admin_json("/events").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "r")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["certificate-loaded", "certificate-rejected"],
        "{events}"
    );
    let rejected = "stavka_tls_certificate_loads_total{certificate=\"r\",result=\"rejected\"}";
    assert_eq!(stavka.metric(rejected).await, Some(1.0));
}

#[tokio::test]
async fn plain_http_is_redirected_with_308_and_https_answers_carry_hsts() {
    let origin = Origin::start(cached_origin_routes()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("redirect CA");
    let (cert, key) = write(dir.path(), "s", &ca.issue(&["secure.test", "plain.test"]));
    let tls = free_addr();
    let hsts = "hsts = { max_age = \"365d\", include_subdomains = true }\n";
    let config = format!(
        "{}\n{}",
        site(
            "secure",
            &["secure.test"],
            origin.addr,
            &format!(
                "default = true\nhttps_redirect = true\n{hsts}{}",
                tls_files(&cert, &key)
            )
        ),
        site("plain", &["plain.test"], origin.addr, hsts),
    );
    let stavka = Stavka::start_listening(&format!("tls = \"{tls}\""), &config, &[]).await;

    // RFC 9110 §15.4.9: 308 keeps the method; the URL keeps path and query.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = stavka_e2e::client()
            .request(method.clone(), stavka.url("/page?q=1"))
            .header("host", "secure.test")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 308, "{method}");
        assert_eq!(
            resp.headers()["location"],
            format!("https://secure.test:{}/page?q=1", tls.port()).as_str()
        );
        assert!(resp.headers().get("strict-transport-security").is_none());
        assert!(resp.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("detail=https-redirect"));
    }
    assert_eq!(origin.count("/page"), 0);

    // Over HTTPS: served, with HSTS.
    let client = https_client(&ca, &["secure.test", "plain.test"], tls)
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://secure.test:{}/page", tls.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    // RFC 6797 §7.2: never over plain HTTP, even for a site that sets it.
    let plain = stavka_e2e::client()
        .get(stavka.url("/page"))
        .header("host", "plain.test")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("strict-transport-security").is_none());
    let over_tls = client
        .get(format!("https://plain.test:{}/page", tls.port()))
        .send()
        .await
        .unwrap();
    assert!(over_tls
        .headers()
        .get("strict-transport-security")
        .is_some());
}

/// An origin that speaks HTTPS with `issued`, answering every request with
/// a small cacheable 200.
async fn tls_origin(issued: &Issued) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "over tls";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn origins_over_tls_are_verified_against_their_ca_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, stranger) = (Ca::new("origin CA"), Ca::new("some other CA"));
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("stranger.pem"), &stranger.pem).unwrap();
    let origin = tls_origin(&ca.issue(&["origin.test"])).await;
    let tls_site = |name: &str, extra: &str| {
        format!(
            "[[site]]\nname = \"{name}\"\nhosts = [\"{name}.test\"]\norigin = {{ address = \"{origin}\", tls = true, sni = \"origin.test\"{extra} }}\n"
        )
    };
    let config = [
        tls_site(
            "trusted",
            &format!(", ca_file = \"{}\"", dir.path().join("ca.pem").display()),
        ),
        tls_site(
            "untrusted",
            &format!(
                ", ca_file = \"{}\"",
                dir.path().join("stranger.pem").display()
            ),
        ),
        tls_site("unchecked", ", tls_verify = false"),
    ]
    .join("\n");
    let stavka = Stavka::start(&config).await;
    let get = |host: &'static str| {
        let url = stavka.url("/x");
        async move {
            stavka_e2e::client()
                .get(url)
                .header("host", host)
                .send()
                .await
                .unwrap()
        }
    };
    let trusted = get("trusted.test").await;
    assert_eq!(trusted.status(), 200);
    assert_eq!(trusted.text().await.unwrap(), "over tls");
    // A certificate the site's CA did not sign: 502, nothing forwarded.
    let untrusted = get("untrusted.test").await;
    assert_eq!(untrusted.status(), 502);
    let unchecked = get("unchecked.test").await;
    assert_eq!(unchecked.status(), 200);
}

#[tokio::test]
async fn a_certificate_that_does_not_load_is_a_configuration_error_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("check CA");
    let good = ca.issue(&["good.test"]);
    let other = ca.issue(&["other.test"]);
    let (cert, _) = write(dir.path(), "good", &good);
    // The key of another certificate.
    let (_, wrong_key) = write(dir.path(), "other", &other);
    let config = format!(
        "[listen]\ntls = \"{}\"\n\n[[site]]\nname = \"s\"\nhosts = [\"good.test\"]\norigin = {{ address = \"127.0.0.1:1\" }}\n{}",
        free_addr(),
        tls_files(&cert, &wrong_key)
    );
    let file = dir.path().join("stavka.toml");
    std::fs::write(&file, config).unwrap();
    let (code, stderr) = stavka_e2e::check_config(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("site[0].tls.cert"), "{stderr}");
    // Starting with it fails the same way (in the temporary directory: the
    // default store directory is relative).
    let out = std::process::Command::new(stavka_e2e::stavka_bin())
        .arg("--config")
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("site[0].tls.cert"), "{stderr}");

    // TLS settings without a TLS listener are refused too.
    let config = "[[site]]\nname = \"s\"\nhosts = [\"a.test\"]\norigin = { address = \"127.0.0.1:1\" }\nhttps_redirect = true\n";
    std::fs::write(&file, config).unwrap();
    let (code, stderr) = stavka_e2e::check_config(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("site[0].https_redirect: needs listen.tls"),
        "{stderr}"
    );
}

/// A configuration reload that points a site at other certificate files
/// (and adds a site with its own) publishes them with the rest of the
/// configuration: handshakes after it get the new certificates, while the
/// default certificate is unchanged.
#[tokio::test]
async fn a_configuration_reload_brings_new_certificate_files() {
    let origin = Origin::start(cached_origin_routes()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("stavka test CA");
    let (old, new, b, fallback) = (
        ca.issue(&["a.test"]),
        ca.issue(&["a.test"]),
        ca.issue(&["b.test"]),
        ca.issue(&["default.test"]),
    );
    let (old_cert, old_key) = write(dir.path(), "a-old", &old);
    let (new_cert, new_key) = write(dir.path(), "a-new", &new);
    let (b_cert, b_key) = write(dir.path(), "b", &b);
    let (d_cert, d_key) = write(dir.path(), "default", &fallback);
    let tls = free_addr();
    let defaults = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        d_cert.display(),
        d_key.display()
    );
    let before = format!(
        "{defaults}\n{}",
        site(
            "a",
            &["a.test"],
            origin.addr,
            &tls_files(&old_cert, &old_key)
        )
    );
    let stavka = Stavka::start_listening(&format!("tls = \"{tls}\""), &before, &[]).await;
    assert_eq!(presented(tls, Some("a.test")).await.0, der(&old.cert));
    assert_eq!(presented(tls, Some("b.test")).await.0, der(&fallback.cert));

    // The same file, with the site's certificate moved and a site added.
    let resp = stavka
        .reload_with(|config| {
            config
                .replace(
                    &old_cert.display().to_string(),
                    &new_cert.display().to_string(),
                )
                .replace(
                    &old_key.display().to_string(),
                    &new_key.display().to_string(),
                )
                + &site("b", &["b.test"], origin.addr, &tls_files(&b_cert, &b_key))
        })
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    assert_eq!(presented(tls, Some("a.test")).await.0, der(&new.cert));
    assert_eq!(presented(tls, Some("b.test")).await.0, der(&b.cert));
    assert_eq!(presented(tls, None).await.0, der(&fallback.cert));
    let client = https_client(&ca, &["b.test"], tls).build().unwrap();
    let page = client
        .get(format!("https://b.test:{}/page", tls.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}
