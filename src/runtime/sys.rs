//! Process plumbing that needs the C library directly: CPU affinity, the shard's CPU clock,
//! the signal mask and `sigwait`, heap trimming, and listening sockets with the options
//! `std`'s own `bind` lacks. One of the two modules allowed `unsafe` (the other is `conn/socket.rs`); each block
//! states what makes it sound.
#![allow(unsafe_code)]

use super::rt::TcpListener;

/// The CPUs this process may run on (its affinity mask, which a cgroup or `taskset` narrows),
/// in ascending order; empty if the kernel does not say.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zero-initialised cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (a shard) to one CPU.
pub(super) fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zero-initialised cpu_set_t with one CPU set, passed with its size, for the
    // calling thread (pid 0).
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPU time the calling thread (a shard) has used, user and system: the shard's busy time.
pub(super) fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec at the pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

/// A listening socket shared by all shards through SO_REUSEPORT. SO_REUSEADDR too: without it a restart fails with "address in use" for as long as
/// connections the server closed linger in TIME_WAIT.
pub(super) fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; reconnect storms need a deep queue.
    sk.listen(4096)?;
    TcpListener::from_std(sk.into())
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
