//! TLS termination: hits over HTTPS, HTTP/1.1 and h2 (from h2load), and
//! TLS 1.3 handshakes per second, full and resumed (from a rustls client
//! in this process), each with the server's CPU time per request or
//! handshake; then how many of a crowd of returning clients resume. stavka
//! and nginx present the same certificate, generated for each run. Varnish
//! does not terminate TLS and does not take part.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind};

use crate::h2load::{self, Alpn, Length, Shape};
use crate::origin::Origin;
use crate::server::{Running, ServerCost};

/// The hit object's size.
pub const SIZE: usize = 1024;
/// Streams per connection in the multiplexed h2 load.
pub const H2_STREAMS: usize = 8;
/// How long each handshake measurement runs.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(3);
/// Clients making handshakes, each a thread with its own tickets making
/// one connection at a time: enough to keep one server core busy while
/// others wait on the network.
pub const HANDSHAKE_CLIENTS: usize = 4;
/// Clients that each connect once and come back once, for how many
/// sessions a server can resume.
pub const RETURNING_CLIENTS: usize = 1000;
/// The name in the certificate, sent as SNI by the handshake client.
const NAME: &str = "localhost";

/// The loads measured, in the order the report shows them: HTTP/1.1 and h2
/// with one request in flight per connection on `connections`
/// connections, then h2 with [`H2_STREAMS`] streams on each of an eighth
/// as many (the same requests in flight).
pub fn shapes(connections: usize) -> [Shape; 3] {
    let one = |alpn| Shape {
        alpn,
        connections,
        streams: 1,
    };
    [
        one(Alpn::Http1),
        one(Alpn::H2),
        Shape {
            alpn: Alpn::H2,
            connections: (connections / H2_STREAMS).max(1),
            streams: H2_STREAMS,
        },
    ]
}

/// A self-signed ECDSA P-256 certificate for `localhost` and `127.0.0.1`,
/// as PEM files every TLS contender is given.
pub struct Certificate {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certificate {
    /// Generate one into `dir` (created if missing).
    pub fn generate(dir: &Path) -> Result<Certificate> {
        std::fs::create_dir_all(dir)?;
        let made = rcgen::generate_simple_self_signed([NAME.to_owned(), "127.0.0.1".to_owned()])?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem())?;
        std::fs::write(&key, made.key_pair.serialize_pem())?;
        Ok(Certificate {
            cert,
            key,
            der: made.cert.der().clone(),
        })
    }
}

/// One round of the scenario against one server.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Hit load for each of [`shapes`], in that order.
    pub loads: Vec<Hits>,
    /// Full handshakes: a client that does not resume.
    pub full: Handshakes,
    /// Resumed handshakes: clients that offer a ticket from an earlier
    /// connection.
    pub resumed: Handshakes,
    /// Of [`RETURNING_CLIENTS`] clients that each came back once, how many
    /// resumed.
    pub returned_resumed: usize,
}

impl Tls {
    /// The resumed handshakes if `resumed`, else the full ones.
    pub fn handshakes(&self, resumed: bool) -> &Handshakes {
        if resumed {
            &self.resumed
        } else {
            &self.full
        }
    }
}

/// A measured hit load.
#[derive(Debug, Clone)]
pub struct Hits {
    /// What h2load saw.
    pub load: h2load::Load,
    /// The server's CPU time meanwhile.
    pub cost: ServerCost,
}

impl Hits {
    /// Server CPU time per request.
    pub fn cpu_each(&self) -> Duration {
        self.cost.each(self.load.succeeded)
    }
}

/// A run of back-to-back TLS 1.3 handshakes.
#[derive(Debug, Clone)]
pub struct Handshakes {
    /// Handshakes completed.
    pub count: u64,
    /// Of those, how many the client saw resumed.
    pub resumed: u64,
    /// The server's CPU time, from the first connection to the last one
    /// closed.
    pub cost: ServerCost,
    /// Version, cipher suite and key exchange, as the client saw them,
    /// e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384 X25519`.
    pub tls: String,
}

impl Handshakes {
    /// Handshakes per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.cost.elapsed.as_secs_f64()
    }

    /// Server CPU time per handshake.
    pub fn cpu_each(&self) -> Duration {
        self.cost.each(self.count)
    }
}

/// The scenario against `server`, started with `certificate` (see
/// `Tools::start_tls`): a 1 KiB object stored under the fresh name `name`,
/// each of [`shapes`] for [`crate::hit::WARMUP`] unmeasured and then for
/// `duration`, then full and resumed handshakes for [`HANDSHAKE_TIME`]
/// each, then [`RETURNING_CLIENTS`] clients coming back.
pub async fn run(
    origin: &Origin,
    server: &Running,
    certificate: &Certificate,
    name: &str,
    connections: usize,
    duration: Duration,
) -> Result<Tls> {
    let path = format!("/obj/{SIZE}/{name}");
    let url = server.https_url(&path)?;
    let one = Shape {
        alpn: Alpn::Http1,
        connections: 1,
        streams: 1,
    };
    // Stored over HTTPS, as nginx keys its cache by scheme: two requests
    // on one connection, the second a hit.
    let stored = h2load::run(&url, one, Length::Requests(2)).await?;
    ensure!(
        stored.succeeded == 2 && stored.data_bytes == 2 * SIZE as u64,
        "{url}: {} responses of {} bytes in all, expected 2 of {SIZE}",
        stored.succeeded,
        stored.data_bytes
    );
    let mut loads = Vec::new();
    for shape in shapes(connections) {
        h2load::run(&url, shape, Length::Time(crate::hit::WARMUP)).await?;
        let (load, cost) = server
            .measure(h2load::run(&url, shape, Length::Time(duration)))
            .await?;
        loads.push(Hits { load, cost });
    }
    let fetched = origin.record(&path).requests;
    ensure!(
        fetched == 1,
        "{}: {path} reached the origin {fetched} times; hits were not hits",
        server.contender.as_str()
    );
    let full = handshakes(server, certificate, false).await?;
    let resumed = handshakes(server, certificate, true).await?;
    let returned_resumed = returning(server, certificate).await?;
    Ok(Tls {
        loads,
        full,
        resumed,
        returned_resumed,
    })
}

/// [`RETURNING_CLIENTS`] clients, each with its own tickets, connect one
/// after another; then each comes back once, in the same order. How many
/// came back to a resumed handshake: what the server's session cache or
/// tickets hold for a crowd, which [`handshakes`]' few clients do not show.
async fn returning(server: &Running, certificate: &Certificate) -> Result<usize> {
    let addr = server.tls.context("started without TLS")?;
    let configs = (0..RETURNING_CLIENTS)
        .map(|_| client_config(certificate, true))
        .collect::<Result<Vec<_>>>()?;
    tokio::task::spawn_blocking(move || {
        for config in &configs {
            handshake(addr, config)?;
        }
        let mut resumed = 0;
        for config in &configs {
            resumed += usize::from(handshake(addr, config)?.kind == HandshakeKind::Resumed);
        }
        Ok(resumed)
    })
    .await?
}

/// Handshakes against `server`'s TLS listener from [`HANDSHAKE_CLIENTS`]
/// threads for [`HANDSHAKE_TIME`], resuming or not.
async fn handshakes(
    server: &Running,
    certificate: &Certificate,
    resume: bool,
) -> Result<Handshakes> {
    let addr = server.tls.context("started without TLS")?;
    // Each thread a client of its own, with its own tickets: a resuming one
    // starts with those of one earlier connection, as one that has been
    // here. (Sharing one store, threads would race for its tickets: an
    // OpenSSL server sends one per resumption, so a thread would find none
    // now and then and make a full handshake.)
    let configs = (0..HANDSHAKE_CLIENTS)
        .map(|_| client_config(certificate, resume))
        .collect::<Result<Vec<_>>>()?;
    if resume {
        let configs = configs.clone();
        tokio::task::spawn_blocking(move || {
            configs
                .iter()
                .try_for_each(|config| handshake(addr, config).map(drop))
        })
        .await??;
    }
    let measured = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + HANDSHAKE_TIME;
        std::thread::scope(|s| {
            let threads: Vec<_> = configs
                .iter()
                .map(|config| s.spawn(move || client(addr, config, until)))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a handshake client panicked"))
                .collect::<Result<Vec<_>>>()
        })
    });
    let (tallies, cost) = server.measure(async { measured.await? }).await?;
    Ok(Handshakes {
        count: tallies.iter().map(|t| t.count).sum(),
        resumed: tallies.iter().map(|t| t.resumed).sum(),
        cost,
        tls: tallies.into_iter().find_map(|t| t.tls).unwrap_or_default(),
    })
}

/// What one client thread did.
struct Tally {
    count: u64,
    resumed: u64,
    tls: Option<String>,
}

/// Handshakes one after another until `until`.
fn client(addr: SocketAddr, config: &Arc<ClientConfig>, until: Instant) -> Result<Tally> {
    let mut tally = Tally {
        count: 0,
        resumed: 0,
        tls: None,
    };
    while Instant::now() < until {
        let done = handshake(addr, config)?;
        tally.count += 1;
        tally.resumed += u64::from(done.kind == HandshakeKind::Resumed);
        tally.tls.get_or_insert(done.tls);
    }
    Ok(tally)
}

/// A completed handshake.
struct Done {
    kind: HandshakeKind,
    tls: String,
}

/// One connection: the handshake, then a close_notify, reading until the
/// server closes. The read takes in the tickets a TLS 1.3 server sends
/// after the handshake, so the next connection can resume; and the
/// server has finished its side of the handshake before the next starts.
fn handshake(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Done> {
    let mut sock = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from(NAME)?;
    let mut conn = ClientConnection::new(config.clone(), name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).context("TLS handshake")?;
    }
    let kind = conn
        .handshake_kind()
        .context("no handshake kind after a handshake")?;
    // Named as h2load names them: `TLSv1.3 TLS13_AES_256_GCM_SHA384 X25519`.
    let version = conn.protocol_version().context("no version")?;
    let tls = format!(
        "{} {:?} {:?}",
        version.as_str().unwrap_or("?").replace('_', "."),
        conn.negotiated_cipher_suite().context("no suite")?.suite(),
        conn.negotiated_key_exchange_group()
            .context("no group")?
            .name()
    );
    conn.send_close_notify();
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            // A server may close without a close_notify of its own.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => return Err(e).context("reading until the server closes"),
        }
    }
    Ok(Done { kind, tls })
}

/// A TLS 1.3-only client (ring, as stavka) that trusts exactly
/// `certificate` and keeps tickets for resumption only if `resume`.
fn client_config(certificate: &Certificate, resume: bool) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Pinned {
        der: certificate.der.clone(),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(256)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Accepts the one certificate the run generated, byte for byte, and
/// does not check the handshake's signature: the client has one core, as
/// the server does, and an ECDSA verification per handshake would make
/// the client the limit of the full-handshake figure. The server still
/// signs every full handshake.
#[derive(Debug)]
struct Pinned {
    der: CertificateDer<'static>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}
