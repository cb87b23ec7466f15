//! Which certificate answers a TLS client: each site's for the names in its
//! `hosts` (exact and `*.` wildcards, by the client's SNI), and the `[tls]`
//! default (or the default site's) for every other name and for clients
//! that send none. The table is swapped whole when a certificate is
//! reloaded, so a handshake reads one consistent table without a lock and
//! connections already up keep the certificate they were given.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificate::{self, CertError, Certificate};
use crate::config::{normalize_host_pattern, CertFiles, Config, ConfigError, ConfigErrors};
use crate::events::{EventKind, EventLog};
use crate::host_table::HostTable;

/// The name of the `[tls]` default certificate in metrics, events and
/// `/stats`; a site's certificate goes by the site's name.
pub const DEFAULT_NAME: &str = "default";

/// One configured certificate: where it comes from and which names it
/// answers for.
#[derive(Debug)]
struct Binding {
    /// The site's name, or [`DEFAULT_NAME`].
    name: String,
    /// The configuration field it came from, for start-up errors.
    field: String,
    files: CertFiles,
    /// Normalized host patterns.
    hosts: Vec<String>,
    /// Whether it answers names no pattern covers.
    default: bool,
}

/// What is known of a binding now.
#[derive(Debug, Clone)]
struct Current {
    certificate: Certificate,
    /// The last reload's refusal, while the previous certificate serves.
    error: Option<String>,
}

/// A certificate's state, for `/stats` and the dashboard.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CertificateStatus {
    /// The site's name, or `default`.
    pub name: String,
    /// The names it answers for (`*` for the default).
    pub hosts: Vec<String>,
    /// The chain file.
    pub cert_file: String,
    /// The serving leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// Seconds until then (negative once expired).
    pub expires_in_seconds: i64,
    /// Why the newest files were refused, while the previous certificate
    /// serves.
    pub last_error: Option<String>,
}

/// A configured certificate and the one serving for it.
#[derive(Debug)]
struct Entry {
    binding: Binding,
    serving: Current,
}

/// Certificates loaded for a configuration, checked and ready for
/// [`Certificates::install`].
#[derive(Debug)]
pub struct Prepared(Vec<Entry>);

/// Every configured certificate, the SNI table, and their metrics.
pub struct Certificates {
    entries: Mutex<Vec<Entry>>,
    table: ArcSwap<HostTable<Arc<CertifiedKey>>>,
    loads: IntCounterVec,
    expiry: GaugeVec,
    events: Arc<EventLog>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// The certificates `config` names, with the field each comes from.
fn bindings(config: &Config) -> Vec<Binding> {
    let mut out = Vec::new();
    let tls_default = config.tls.default_cert();
    if let Some(files) = &tls_default {
        out.push(Binding {
            name: DEFAULT_NAME.to_owned(),
            field: "tls.cert".to_owned(),
            files: files.clone(),
            hosts: Vec::new(),
            default: true,
        });
    }
    for (i, site) in config.sites.iter().enumerate() {
        let Some(files) = &site.tls else { continue };
        out.push(Binding {
            name: site.name.clone(),
            field: format!("site[{i}].tls.cert"),
            files: files.clone(),
            hosts: site
                .hosts
                .iter()
                .filter_map(|h| normalize_host_pattern(h).ok())
                .collect(),
            // Without a `[tls]` default, the default site's certificate
            // answers names no site covers.
            default: site.default && tls_default.is_none(),
        });
    }
    out
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Certificates {
    /// Load every certificate `config` names, registering the metrics in
    /// `registry`. `None` when there is no TLS listener. Every certificate
    /// must load: a refused one is an error naming its field.
    pub fn load(
        config: &Config,
        registry: &Registry,
        events: Arc<EventLog>,
    ) -> Result<Option<Arc<Certificates>>, ConfigErrors> {
        if config.listen.tls.is_none() {
            return Ok(None);
        }
        let prepared = Certificates::prepare(config)?;
        let loads = IntCounterVec::new(
            Opts::new(
                "stavka_tls_certificate_loads_total",
                "Certificate loads, by certificate (site name or default) and result (loaded, rejected); a rejected file leaves the previous certificate serving.",
            ),
            &["certificate", "result"],
        )
        .expect("valid metric");
        let expiry = GaugeVec::new(
            Opts::new(
                "stavka_tls_certificate_expiry_seconds",
                "Seconds until the serving certificate's notAfter (negative once expired), by certificate.",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        let certificates = Arc::new(Certificates {
            entries: Mutex::new(Vec::new()),
            table: ArcSwap::from_pointee(HostTable::default()),
            loads: loads.clone(),
            expiry: expiry.clone(),
            events,
        });
        certificates.install(prepared);
        registry.register(Box::new(loads)).expect("unique metric");
        registry
            .register(Box::new(Expiry(certificates.clone())))
            .expect("unique metric");
        Ok(Some(certificates))
    }

    /// Load every certificate `config` names, without serving any: a
    /// reload checks all of them before it changes anything. Each refusal
    /// names its field.
    pub fn prepare(config: &Config) -> Result<Prepared, ConfigErrors> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for binding in bindings(config) {
            match certificate::load(&binding.files) {
                Ok(certificate) => entries.push(Entry {
                    binding,
                    serving: Current {
                        certificate,
                        error: None,
                    },
                }),
                Err(e) => errors.push(ConfigError {
                    path: binding.field,
                    message: e.to_string(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Prepared(entries))
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Serve `prepared` from the next handshake on, replacing every
    /// certificate (a reload may add, drop or rebind them).
    pub fn install(&self, Prepared(entries): Prepared) {
        let mut current = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for e in &entries {
            self.loads
                .with_label_values(&[&e.binding.name, "loaded"])
                .inc();
        }
        *current = entries;
        self.table.store(Arc::new(table(&current)));
    }

    /// The directories holding certificate files, for the watcher.
    pub fn dirs(&self) -> std::collections::BTreeSet<std::path::PathBuf> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .flat_map(|e| [&e.binding.files.cert, &e.binding.files.key])
            .map(|f| {
                f.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .to_owned()
            })
            .collect()
    }

    /// Read again every certificate whose files changed. A good one is
    /// swapped in for new handshakes; a bad one is logged, counted and
    /// told to the event log, and the previous one keeps serving.
    pub fn reload_changed(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut swapped = false;
        for Entry {
            binding: b,
            serving,
        } in entries.iter_mut()
        {
            let changed = certificate::fingerprint(&b.files).and_then(|content| {
                if content == serving.certificate.content {
                    Ok(None)
                } else {
                    certificate::load(&b.files).map(Some)
                }
            });
            match changed {
                // Unchanged, or back to what serves.
                Ok(None) => serving.error = None,
                Ok(Some(certificate)) => {
                    tracing::info!(certificate = b.name, file = %b.files.cert.display(), not_after = certificate.not_after, "TLS certificate loaded");
                    self.loads.with_label_values(&[&b.name, "loaded"]).inc();
                    self.events.record(
                        EventKind::CertificateLoaded,
                        &b.name,
                        format!(
                            "{}: expires in {} days",
                            b.files.cert.display(),
                            (certificate.not_after - now()) / 86_400
                        ),
                    );
                    *serving = Current {
                        certificate,
                        error: None,
                    };
                    swapped = true;
                }
                Err(e) => self.refuse(b, serving, e),
            }
        }
        if swapped {
            self.table.store(Arc::new(table(&entries)));
        }
    }

    /// Keep `serving` and say why the new files were refused (once per
    /// distinct reason: a watcher may see the same bad file several times).
    fn refuse(&self, b: &Binding, serving: &mut Current, error: CertError) {
        let message = error.to_string();
        if serving.error.as_deref() == Some(message.as_str()) {
            return;
        }
        tracing::error!(certificate = b.name, %error, "TLS certificate rejected; the previous one keeps serving");
        self.loads.with_label_values(&[&b.name, "rejected"]).inc();
        self.events
            .record(EventKind::CertificateRejected, &b.name, &message);
        serving.error = Some(message);
    }

    /// Each certificate's state.
    pub fn status(&self) -> Vec<CertificateStatus> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = now();
        entries
            .iter()
            .map(
                |Entry {
                     binding: b,
                     serving: c,
                 }| CertificateStatus {
                    name: b.name.clone(),
                    hosts: if b.default {
                        b.hosts.iter().cloned().chain(["*".to_owned()]).collect()
                    } else {
                        b.hosts.clone()
                    },
                    cert_file: b.files.cert.display().to_string(),
                    not_after: c.certificate.not_after,
                    expires_in_seconds: c.certificate.not_after - now,
                    last_error: c.error.clone(),
                },
            )
            .collect()
    }
}

/// The SNI table for the certificates serving now.
fn table(entries: &[Entry]) -> HostTable<Arc<CertifiedKey>> {
    let mut table = HostTable::default();
    for Entry { binding, serving } in entries {
        for pattern in &binding.hosts {
            table.insert(pattern, serving.certificate.key.clone());
        }
        if binding.default {
            table.set_default(serving.certificate.key.clone());
        }
    }
    table
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().lookup(hello.server_name()).cloned()
    }
}

/// `stavka_tls_certificate_expiry_seconds`, computed when scraped so it
/// counts down between reloads.
struct Expiry(Arc<Certificates>);

impl Collector for Expiry {
    fn desc(&self) -> Vec<&Desc> {
        self.0.expiry.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Certificates a reload dropped are dropped here too.
        self.0.expiry.reset();
        for status in self.0.status() {
            self.0
                .expiry
                .with_label_values(&[&status.name])
                .set(status.expires_in_seconds as f64);
        }
        self.0.expiry.collect()
    }
}
