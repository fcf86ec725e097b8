//! Process measurements from /proc and getrusage, and finding the server by its port.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::process::Command;

/// CPU time (user + system) and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu(&stat).map(|ticks| ticks as f64 / clock_ticks())
}

/// utime + stime in clock ticks: fields 14 and 15, counted after the `(comm)` field, whose
/// name may itself hold spaces and parentheses.
fn parse_stat_cpu(stat: &str) -> Result<u64> {
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    if f.len() < 13 {
        bail!("short stat line");
    }
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&status)
}

fn parse_vmrss(status: &str) -> Result<u64> {
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v
                .split_whitespace()
                .next()
                .context("empty VmRSS")?
                .parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmRSS line")
}

/// The process and its live children (nginx's workers, for Nchan), summed: what the server
/// costs, whatever its process model.
pub fn sample(pid: u32) -> Result<Sample> {
    let mut s = Sample {
        cpu_seconds: cpu_seconds(pid)?,
        rss_bytes: rss_bytes(pid)?,
    };
    for child in children(pid) {
        // A child may exit between the listing and the read.
        if let (Ok(cpu), Ok(rss)) = (cpu_seconds(child), rss_bytes(child)) {
            s.cpu_seconds += cpu;
            s.rss_bytes += rss;
        }
    }
    Ok(s)
}

/// Pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| parse_stat_ppid(&stat))
                == Some(pid)
        })
        .collect()
}

/// Field 4 (ppid), counted after the `(comm)` field.
fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pid listening on TCP `port`, from `ss -ltnpH 'sport = :PORT'`.
pub fn pid_by_port(port: u16) -> Result<u32> {
    let out = Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .context("running ss (iproute2)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ss_pid(&text).with_context(|| format!("no process found listening on port {port}"))
}

fn parse_ss_pid(text: &str) -> Option<u32> {
    let at = text.find("pid=")?;
    let digits: String = text[at + 4..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn timeval_seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut r) != 0 {
            return 0.0;
        }
        timeval_seconds(r.ru_utime) + timeval_seconds(r.ru_stime)
    }
}

/// CPU seconds of this process.
pub fn self_cpu_seconds() -> f64 {
    rusage(libc::RUSAGE_SELF)
}

/// CPU seconds of this process's children that have been waited for.
pub fn children_cpu_seconds() -> f64 {
    rusage(libc::RUSAGE_CHILDREN)
}

/// Raises the soft open-files limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit write into / read from the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
        r.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(stat).unwrap(), 300);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        cpu_seconds(pid).unwrap();
    }

    #[test]
    fn ppid_with_odd_comm() {
        let stat = "1234 (a (b) c) S 77 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ppid(stat), Some(77));
    }

    #[test]
    fn vmrss() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t   2048 kB\n").unwrap(),
            2048 * 1024
        );
    }

    #[test]
    fn ss_output() {
        let line = "LISTEN 0 4096 0.0.0.0:4000 0.0.0.0:* users:((\"corebridge\",pid=4242,fd=9),(\"corebridge\",pid=4242,fd=10))\n";
        assert_eq!(parse_ss_pid(line), Some(4242));
        assert_eq!(parse_ss_pid(""), None);
    }
}
