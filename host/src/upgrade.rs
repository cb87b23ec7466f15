//! `stavka upgrade`: replace a running stavka with this binary without
//! dropping a connection — what `systemctl reload` runs
//! (`packaging/stavka.service`). It starts `stavka --config FILE --upgrade`
//! detached, waits for it to listen on `server.upgrade_sock`, sends the
//! running process SIGQUIT (it hands its listening sockets over, keeps
//! serving a few seconds beside the new one, then drains and exits), and
//! returns once the old process is gone and the new one still runs. The
//! new process tells systemd it is the main process now.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;

/// How long the new process may take to start listening for the sockets.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Upgrade the process `old` running `config` (read from `file`) to this
/// binary; `drain` is how long it may take to exit once it has handed over.
/// Prints the new process's id.
pub fn run(file: &Path, config: &Config, old: u32, drain: Duration) -> anyhow::Result<()> {
    let sock = &config.server.upgrade_sock;
    // A socket file left by an upgrade that failed half way would look
    // like the new process listening.
    let _ = std::fs::remove_file(sock);
    let binary = std::env::current_exe().context("finding this binary")?;
    let mut new = Command::new(&binary);
    new.arg("--config")
        .arg(file)
        .arg("--upgrade")
        .stdin(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut new, 0);
    let mut new = new
        .spawn()
        .with_context(|| format!("starting {} --upgrade", binary.display()))?;
    let deadline = Instant::now() + START_LIMIT;
    while !sock.exists() {
        if let Some(status) = new.try_wait()? {
            bail!("the new process exited ({status}) before taking over");
        }
        if Instant::now() > deadline {
            let _ = new.kill();
            bail!(
                "the new process did not listen on {} within {START_LIMIT:?}",
                sock.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let quit = Command::new("kill")
        .args(["-QUIT", &old.to_string()])
        .status()
        .context("sending SIGQUIT")?;
    if !quit.success() {
        let _ = new.kill();
        bail!("cannot signal process {old}: is it running?");
    }
    // The old process hands over, serves beside the new one for pingora's
    // 5 s close timeout, then drains.
    let deadline = Instant::now() + drain + Duration::from_secs(10);
    while Path::new(&format!("/proc/{old}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(status) = new.try_wait()? {
        bail!("the new process exited ({status}) after taking over");
    }
    println!(
        "upgraded: process {old} handed over to process {}",
        new.id()
    );
    Ok(())
}
