//! The systemd notification protocol (`sd_notify`), without libsystemd:
//! one datagram to the socket in `$NOTIFY_SOCKET`. With `Type=notify` and
//! `NotifyAccess=all`, a process started by `stavka upgrade` tells systemd
//! it is the service's main process now, so `systemctl reload` replaces
//! the binary without systemd losing track of it.

use std::os::unix::net::UnixDatagram;

/// Tell systemd this process serves and is the service's main process.
/// Without `$NOTIFY_SOCKET` (not under systemd) it does nothing; a failure
/// to send is logged, never fatal.
pub fn notify_ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    if let Err(e) = send(&socket, message.as_bytes()) {
        tracing::warn!(error = %e, socket = ?socket, "cannot notify systemd");
    }
}

fn send(socket: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<usize> {
    let sender = UnixDatagram::unbound()?;
    let path = socket.as_encoded_bytes();
    // `@name` is a socket in the abstract namespace.
    if let Some(name) = path.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sender.send_to_addr(message, &addr)
    } else {
        sender.send_to(message, socket)
    }
}
