//! The `stavka` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stavka::config::{Config, ConfigErrors};

/// A Wasm-programmable HTTP caching reverse proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file; without it every default applies.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Take the listening sockets over from a running stavka instead of
    /// binding them: it hands them over when it gets SIGQUIT (through
    /// `server.upgrade_sock`), then drains and exits.
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print every error with its field path.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Run the proxy in front of a built-in demo origin and print what to try.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo admin API listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// The directory the example policies were built into
        /// (target/wasm32-wasip2/release); adds a site for each.
        #[arg(long)]
        guests: Option<PathBuf>,
    },
    /// Talk to a running proxy's admin API: purge, inspect, stats, policies,
    /// kv, top.
    Ctl(stavka::ctl::Args),
    /// Work on policy modules.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Replace the running stavka with this binary without dropping a
    /// connection (what `systemctl reload` runs).
    Upgrade {
        /// The running process (systemd passes $MAINPID).
        #[arg(long)]
        pid: u32,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Start a policy crate (NAME/ in the current directory): Cargo.toml,
    /// src/lib.rs with two hooks, a sidecar and a README with the build and
    /// install commands.
    New {
        /// The module's name: letters, digits, '-' and '_', starting with a
        /// letter.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Depend on the SDK at this path (this repository's guest-sdk/, or
        /// an unpacked package) instead of the published stavka-policy.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a built module through the host's runtime on a request (and a
    /// response) and print what each hook decided.
    Try(stavka::policy_trial::Trial),
}

/// Exit status for an invalid configuration.
const EXIT_BAD_CONFIG: u8 = 2;

fn report(file: &std::path::Path, errors: &ConfigErrors) -> ExitCode {
    eprintln!("stavka: invalid configuration in {}:", file.display());
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// `check-config`'s second half: compile every module a site names. A
/// missing or broken module of a fail-closed site is an error (the site
/// would answer 503); of a fail-open site, a warning.
fn check_policies(file: &std::path::Path, config: &Config) -> ExitCode {
    let findings = match stavka::policy::preflight::check_config(config) {
        Ok(findings) => findings,
        Err(e) => {
            eprintln!("stavka: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    for finding in &findings {
        let level = if finding.closed { "error" } else { "warning" };
        eprintln!("stavka: {level}: {finding}");
    }
    if findings.iter().any(|f| f.closed) {
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    println!("{}: ok", file.display());
    ExitCode::SUCCESS
}

/// jemalloc, not glibc's malloc: under a stream of fills glibc's `malloc`
/// and `free` grew to 22% of the CPU as the catalog's write buffers were
/// filled and flushed, and fills slowed with every object stored
/// (docs/benchmarks.md, *The allocator*).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Upgrade { pid }) => {
            let Some(file) = cli.config.as_deref() else {
                eprintln!("stavka: upgrade needs --config, the file the running process uses");
                return ExitCode::from(EXIT_BAD_CONFIG);
            };
            let config = match Config::load(file) {
                Ok(config) => config,
                Err(errors) => return report(file, &errors),
            };
            stavka::upgrade::run(file, &config, pid, config.server.shutdown_timeout)
        }
        Some(Command::CheckConfig { file }) => {
            let checked = Config::load(&file).and_then(|config| {
                stavka::server::load_certificates(&config, &stavka::metrics::Metrics::new())
                    .map(|_| config)
            });
            return match checked {
                Ok(config) => check_policies(&file, &config),
                Err(errors) => report(&file, &errors),
            };
        }
        Some(Command::Demo {
            listen,
            admin,
            guests,
        }) => {
            stavka::telemetry::init(&Default::default());
            stavka::demo::run(listen, admin, guests.as_deref())
        }
        Some(Command::Ctl(args)) => stavka::ctl::run(args, cli.config.as_deref()),
        Some(Command::Policy(PolicyCommand::New { name, dir, sdk })) => {
            let sdk = sdk.map_or(
                stavka::scaffold::Sdk::Published(stavka::scaffold::SDK_VERSION),
                stavka::scaffold::Sdk::Path,
            );
            stavka::scaffold::new_policy(&dir, &name, &sdk).map(|made| {
                println!(
                    "created {}: cd there and run `cargo build --release` (see its README)",
                    made.display()
                );
            })
        }
        Some(Command::Policy(PolicyCommand::Try(trial))) => {
            // Guest log lines and failures go to stderr, the report to
            // stdout; there are no requests to log.
            stavka::telemetry::init(&stavka::config::Log {
                access_log: false,
                ..Default::default()
            });
            stavka::policy_trial::run(&trial).map(|report| print!("{report}"))
        }
        None => {
            let config = match &cli.config {
                Some(file) => match Config::load(file) {
                    Ok(config) => config,
                    Err(errors) => return report(file, &errors),
                },
                None => Config::default(),
            };
            stavka::telemetry::init(&config.log);
            stavka::server::run(config, cli.config.clone(), cli.upgrade)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A problem found only when the server starts (a certificate that
        // does not load) is reported like any other configuration error.
        Err(e) => match e.downcast::<ConfigErrors>() {
            Ok(errors) => {
                let file = cli
                    .config
                    .as_deref()
                    .unwrap_or(std::path::Path::new("(defaults)"));
                report(file, &errors)
            }
            Err(e) => {
                eprintln!("stavka: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
