//! Start-up probes and process plumbing that need the C library directly: the io_uring probe,
//! the signal mask and `sigwait`, and listening sockets with the options glommio's own `bind`
//! lacks. One of the two modules allowed `unsafe` (the other is `conn/socket.rs`); each block
//! states what makes it sound.
#![allow(unsafe_code)]

use super::StartError;
use glommio::net::TcpListener;

/// io_uring can be refused by the kernel (`kernel.io_uring_disabled`), by a seccomp profile
/// (Docker's default blocks it) or be missing (kernel < 5.1). glommio would fail later with a
/// bare errno, so probe with a one-entry ring and say what to change.
pub fn check_io_uring() -> Result<(), StartError> {
    #[repr(C)]
    struct Params([u32; 30]);
    let mut p = Params([0; 30]);
    // SAFETY: io_uring_setup reads/writes exactly one io_uring_params (120 bytes) at the pointer.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut p as *mut Params) };
    if fd >= 0 {
        // SAFETY: fd was just returned by the kernel and is owned here.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    let why = match (err.raw_os_error(), disabled.as_deref()) {
        (_, Some(v)) if v != "0" => format!(
            "{err}; kernel.io_uring_disabled = {v}. Fix: `sysctl -w kernel.io_uring_disabled=0` \
             (and persist it in /etc/sysctl.d/), or with value 1 run as a member of the group in \
             kernel.io_uring_group"
        ),
        (Some(libc::ENOSYS), _) => format!(
            "{err}; the kernel lacks io_uring (needs Linux >= 5.8) or a seccomp filter removes it. \
             Fix: a newer kernel; in Docker run with `--security-opt seccomp=unconfined` or a \
             profile that allows io_uring_setup, io_uring_enter and io_uring_register"
        ),
        (Some(libc::EPERM), _) => format!(
            "{err}; a seccomp profile or LSM forbids io_uring (Docker's default profile does). \
             Fix: run the container with `--security-opt seccomp=unconfined` or a profile that \
             allows io_uring_setup, io_uring_enter and io_uring_register"
        ),
        (Some(libc::ENOMEM), _) => format!(
            "{err}; the locked-memory limit is too small. Fix: raise LimitMEMLOCK (systemd) or \
             `ulimit -l`, or lower runtime.io_memory in the tuning file"
        ),
        _ => err.to_string(),
    };
    Err(StartError::IoUring(why))
}

/// SIGTERM/SIGINT (and SIGHUP, the certificate reload) are blocked in every thread (shards
/// inherit the mask from here) and taken by one thread with `sigwait`, which sets the shutdown
/// flag the shards watch. No handler
/// runs inside an executor.
pub(super) fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local, zero-initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

pub(super) fn wait_for_signal(set: libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` holds signals blocked in all threads; sigwait writes the one received.
    unsafe { libc::sigwait(&set, &mut sig) };
    sig
}

/// A listening socket shared by all shards through SO_REUSEPORT. SO_REUSEADDR too (glommio's
/// own `bind` omits it): without it a restart fails with "address in use" for as long as
/// connections the server closed linger in TIME_WAIT.
pub(super) fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::IntoRawFd;
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; reconnect storms need a deep queue.
    sk.listen(4096)?;
    // SAFETY: the fd is a bound, listening TCP socket whose ownership moves to the listener.
    Ok(unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(sk.into_raw_fd()) })
}

/// Returns free heap memory to the kernel when at least `min_free` bytes sit free in the
/// allocator. glibc keeps freed memory in its arenas (one per shard thread) and gives back only
/// the top of each heap by itself, so the memory of many closed connections, or of a few large
/// requests, would otherwise stay resident for the life of the process. Pages already given
/// back cost nothing the next time. Returns whether it trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn trim_heap(min_free: usize) -> bool {
    // SAFETY: mallinfo2 reads the allocator's statistics under its own locks; no pointers are
    // involved.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free < min_free {
        return false;
    }
    // SAFETY: malloc_trim releases whole free pages of every arena under the arenas' locks; it
    // does not touch memory that is in use.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn trim_heap(_min_free: usize) -> bool {
    false
}
