//! Replacing the running binary without refusing a connection, the way
//! nginx's USR2 does: the running process starts the new binary and hands it
//! its listening sockets. Both accept from the very same sockets (one accept
//! queue each, shared), so no connection waits on a socket nobody will
//! accept from; once the new process serves, it tells the old one to drain
//! and exit (SIGTERM).
//!
//! Sockets travel as inherited file descriptors in the systemd
//! socket-activation layout (`LISTEN_FDS`, from fd 3), so systemd socket
//! activation works too: a socket systemd passes is used for the listener
//! whose address it is bound to.

use command_fds::{CommandFdExt, FdMapping};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

/// The configured address of each passed socket, in fd order (`admin` for
/// the admin API's), so that listeners configured with port 0 find theirs.
const ADDRS_VAR: &str = "PORTICO_LISTEN_ADDRS";
/// The pid of the process to tell once the new one serves.
const PREDECESSOR_VAR: &str = "PORTICO_UPGRADE_FROM";

/// Sockets this process was started with, not yet taken by a listener.
static INHERITED: Mutex<Vec<(String, TcpListener)>> = Mutex::new(Vec::new());
/// The binary and arguments this process was started with.
static COMMAND_LINE: OnceLock<(std::path::PathBuf, Vec<std::ffi::OsString>)> = OnceLock::new();

/// Takes the sockets passed by a predecessor (or systemd). Call first thing
/// in `main`, before any thread starts: it reads and clears the environment.
pub fn adopt_from_env() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = COMMAND_LINE.set((exe, std::env::args_os().skip(1).collect()));
    }
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<String> = std::env::var(ADDRS_VAR)
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut inherited = lock();
    for index in 0..fds.len() {
        match fds.take_tcp_listener(index) {
            Ok(Some(listener)) => {
                let name = match names.get(index) {
                    Some(name) => name.clone(),
                    None => listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                };
                inherited.push((name, listener));
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(index, %error, "an inherited file descriptor is not a TCP listener"),
        }
    }
}

/// The inherited socket for a listener configured at `addr` (or `admin`).
pub fn take(name: &str, addr: SocketAddr) -> Option<TcpListener> {
    let mut inherited = lock();
    let position = inherited.iter().position(|(n, socket)| {
        n == name || (addr.port() != 0 && socket.local_addr().is_ok_and(|local| local == addr))
    })?;
    let (_, socket) = inherited.remove(position);
    Some(socket)
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(String, TcpListener)>> {
    INHERITED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the binary at the path this process was started from (the new
/// one, once it has been replaced) with the same arguments, passing it
/// `sockets` (name and a duplicate of each listening socket's descriptor).
pub fn spawn_successor(sockets: Vec<(String, OwnedFd)>) -> std::io::Result<std::process::Child> {
    let Some((exe, args)) = COMMAND_LINE.get() else {
        return Err(std::io::Error::other("the binary's path is unknown"));
    };
    let names: Vec<String> = sockets.iter().map(|(name, _)| name.clone()).collect();
    let mappings = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (_, fd))| FdMapping {
            parent_fd: fd,
            child_fd: 3 + i as i32,
        })
        .collect();
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .env("LISTEN_FDS", names.len().to_string())
        .env(ADDRS_VAR, names.join(","))
        .env(PREDECESSOR_VAR, std::process::id().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    command
        .fd_mappings(mappings)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    command.spawn()
}

/// Duplicates a socket's descriptor, for [`spawn_successor`].
pub fn duplicate(socket: &impl AsFd) -> std::io::Result<OwnedFd> {
    socket.as_fd().try_clone_to_owned()
}

/// In a process started by an upgrade, tells the old process to drain and
/// exit, now that this one serves.
pub fn retire_predecessor() {
    let Some(pid) = std::env::var(PREDECESSOR_VAR).ok().and_then(|p| p.parse::<i32>().ok()) else {
        return;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM) {
        Ok(()) => tracing::info!(old_pid = pid, "upgrade: serving; the old process drains and exits"),
        Err(error) => tracing::warn!(old_pid = pid, %error, "upgrade: the old process could not be told to exit"),
    }
}
