//! Processes: spawn pinned to CPUs, stop by PID, and read what the kernel counts
//! for them (`/proc/PID/stat` utime/stime, RSS, `/proc/stat` per-core busy time).
//!
//! Only processes this harness started are ever signalled, always by PID.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Clock ticks per second, the unit of utime/stime and of /proc/stat.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Raises the soft open-file limit to the hard one; children inherit it.
/// 10,000 idle connections need ~10,000 descriptors on each side.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Pins the calling thread (and what it later execs) to `cpus`.
pub fn pin_current(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET is bounds-checked by us below.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cpu out of range",
                ));
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns `cmd` pinned to `cpus` (the affinity is set in the child before exec, so
/// even a program that never pins itself stays on its side of the machine).
pub fn spawn_pinned(cmd: &mut Command, cpus: &[usize]) -> io::Result<Child> {
    let cpus = cpus.to_vec();
    // SAFETY: the closure only calls async-signal-safe functions (sched_setaffinity).
    unsafe {
        cmd.pre_exec(move || pin_current(&cpus));
    }
    cmd.spawn()
}

/// Sends `sig` to one PID we started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; the PID is one of our children.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status if it exited.
pub fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    signal(child.id(), libc::SIGKILL);
    child.wait().ok()
}

/// One line of `/proc/PID/stat`, the fields we use.
#[derive(Clone, Debug, Default)]
pub struct Stat {
    pub ppid: u32,
    pub flags: u64,
    pub utime: u64,
    pub stime: u64,
    pub comm: String,
}

const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    pub fn is_kthread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses `/proc/PID/stat`; the command name may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn read_stat(pid: u32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    // Fields after ")": state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9)
    // minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15).
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: field(4)? as u32,
        flags: field(9)?,
        utime: field(14)?,
        stime: field(15)?,
        comm,
    })
}

/// All processes now: PID -> stat.
pub fn all_procs() -> HashMap<u32, Stat> {
    let mut out = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some(st) = read_stat(pid) {
                    out.insert(pid, st);
                }
            }
        }
    }
    out
}

/// `root` and all its descendants (nginx's master has its worker as a child, and
/// the worker does the work).
pub fn tree(root: u32, procs: &HashMap<u32, Stat>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for (pid, st) in procs {
            if st.ppid == p && !out.contains(pid) {
                out.push(*pid);
            }
        }
        i += 1;
    }
    out
}

/// CPU ticks (user, system) of a set of PIDs.
pub fn cpu_ticks(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|p| read_stat(*p))
        .fold((0, 0), |(u, s), st| (u + st.utime, s + st.stime))
}

/// Resident set size and its high-water mark (VmRSS, VmHWM), bytes, summed over PIDs.
pub fn rss(pids: &[u32]) -> (u64, u64) {
    let mut rss = 0;
    let mut hwm = 0;
    for p in pids {
        if let Ok(s) = fs::read_to_string(format!("/proc/{p}/status")) {
            for line in s.lines() {
                let kb = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024
                };
                if line.starts_with("VmRSS:") {
                    rss += kb(line);
                } else if line.starts_with("VmHWM:") {
                    hwm += kb(line);
                }
            }
        }
    }
    (rss, hwm)
}

/// Per-core (busy, total) ticks from `/proc/stat`, indexed by CPU number.
pub fn core_ticks() -> Vec<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_core_ticks(&s)
}

fn parse_core_ticks(s: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(idx) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest is inside user).
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        if out.len() <= idx {
            out.resize(idx + 1, (0, 0));
        }
        out[idx] = (total.saturating_sub(idle), total);
    }
    out
}

/// Busy share of each core between two `core_ticks` snapshots.
pub fn busy_share(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1);
            if total == 0 {
                0.0
            } else {
                a.0.saturating_sub(b.0) as f64 / total as f64
            }
        })
        .collect()
}

/// CPU used between two snapshots by processes outside `ours` (seconds), with the
/// busiest of them named, and kernel threads counted apart (ksoftirqd does loopback
/// work for the run itself).
pub struct Others {
    pub user_procs_s: f64,
    pub kthreads_s: f64,
    pub top: Vec<(String, f64)>,
}

pub fn others(before: &HashMap<u32, Stat>, after: &HashMap<u32, Stat>, ours: &[u32]) -> Others {
    let tck = clk_tck();
    let mut user_procs = 0u64;
    let mut kth = 0u64;
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for (pid, a) in after {
        if ours.contains(pid) {
            continue;
        }
        let prev = before
            .get(pid)
            .filter(|b| b.comm == a.comm)
            .map(|b| b.utime + b.stime)
            .unwrap_or(0);
        let d = (a.utime + a.stime).saturating_sub(prev);
        if d == 0 {
            continue;
        }
        if a.is_kthread() {
            kth += d;
        } else {
            user_procs += d;
            *by_name.entry(a.comm.clone()).or_default() += d;
        }
    }
    let mut top: Vec<(String, f64)> = by_name
        .into_iter()
        .map(|(n, t)| (n, t as f64 / tck))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(3);
    Others {
        user_procs_s: user_procs as f64 / tck,
        kthreads_s: kth as f64 / tck,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let s = "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 57 31 0 0 20 0 1 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "a b) c");
        assert_eq!(st.ppid, 1);
        assert_eq!(st.utime, 57);
        assert_eq!(st.stime, 31);
        assert!(!st.is_kthread());
    }

    #[test]
    fn proc_stat_cores() {
        let s = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 30 10 0 0 0 0 0\nintr 1\n";
        let v = parse_core_ticks(s);
        assert_eq!(v, vec![(10, 50), (10, 50)]);
        let after = vec![(20, 60), (10, 60)];
        assert_eq!(busy_share(&v, &after), vec![1.0, 0.0]);
    }

    #[test]
    fn reads_self() {
        let me = std::process::id();
        assert!(read_stat(me).is_some());
        assert!(rss(&[me]).0 > 0);
    }
}

/// Distinct TCP connections whose server side is one of `ports`, in any state but
/// LISTEN, from `/proc/net/tcp` and `tcp6`. Each run's upstreams listen on fresh
/// ports and a closed connection stays in TIME_WAIT for 60 s, longer than a run, so
/// read at the end of a run this counts every upstream connection the proxy opened
/// in it, for every proxy alike.
pub fn tcp_conns_to(ports: &[u16]) -> usize {
    let mut clients = std::collections::HashSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = fs::read_to_string(f) else {
            continue;
        };
        collect_clients(&s, ports, &mut clients);
    }
    clients.len()
}

fn collect_clients(s: &str, ports: &[u16], out: &mut std::collections::HashSet<String>) {
    for line in s.lines().skip(1) {
        let mut it = line.split_whitespace();
        let (Some(_), Some(local), Some(remote), Some(state)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if state == "0A" {
            continue; // LISTEN
        }
        let port = |a: &str| {
            a.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        // Key by the client endpoint so both ends of one connection count once.
        if port(remote).is_some_and(|p| ports.contains(&p)) {
            out.insert(format!("{local}>{remote}"));
        } else if port(local).is_some_and(|p| ports.contains(&p)) {
            out.insert(format!("{remote}>{local}"));
        }
    }
}

#[cfg(test)]
mod tcp_tests {
    use super::*;

    #[test]
    fn counts_each_connection_once() {
        // 0x2329 = 9001. Listener, one established pair (both ends), one TIME_WAIT.
        let s = "  sl  local_address rem_address   st\n\
                 0: 0100007F:2329 00000000:0000 0A\n\
                 1: 0100007F:2329 0100007F:C000 01\n\
                 2: 0100007F:C000 0100007F:2329 01\n\
                 3: 0100007F:C001 0100007F:2329 06\n\
                 4: 0100007F:1F90 0100007F:C002 01\n";
        let mut set = std::collections::HashSet::new();
        collect_clients(s, &[9001], &mut set);
        assert_eq!(set.len(), 2);
    }
}
