//! Latency samples and their summaries (nearest-rank percentiles), and the
//! server's resource use read from /proc. Pure arithmetic apart from /proc.

use std::time::Duration;

use crate::BoxError;

/// Latencies, sorted once.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Samples(latencies)
    }

    /// Both sets of samples as one.
    pub fn merged(&self, other: &Samples) -> Samples {
        Samples::new(self.0.iter().chain(&other.0).copied().collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile, `q` in 0..=1; zero when there are no samples.
    pub fn percentile(&self, q: f64) -> Duration {
        let n = self.0.len();
        if n == 0 {
            return Duration::ZERO;
        }
        // ceil(q * n) as a 1-based rank, clamped into 1..=n.
        let rank = (q * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.percentile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a / b`, or `None` when `b` is zero (no meaningful ratio).
pub fn ratio(a: Duration, b: Duration) -> Option<f64> {
    (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64())
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the
/// machine, so a child can time events that this process started.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// A process's CPU time, resident memory and writes at one moment, or (from
/// [`Usage::since`]) over a span of time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Bytes the process caused to be written to storage (proc(5) `write_bytes`).
    pub disk_write_bytes: u64,
    /// write-family system calls, sockets included (proc(5) `syscw`).
    pub write_calls: u64,
}

impl Usage {
    /// What was spent between `before` and `self`; the RSS is `self`'s.
    pub fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            rss_bytes: self.rss_bytes,
            disk_write_bytes: self
                .disk_write_bytes
                .saturating_sub(before.disk_write_bytes),
            write_calls: self.write_calls.saturating_sub(before.write_calls),
        }
    }
}

/// Reads /proc/<pid>/{stat,status,io}; `clk_tck` converts CPU ticks to seconds.
pub fn usage(pid: u32, clk_tck: f64) -> Result<Usage, BoxError> {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}"));
    let (stat, status, io) = (read("stat")?, read("status")?, read("io")?);
    Ok(Usage {
        cpu_seconds: cpu_ticks(&stat)? as f64 / clk_tck,
        rss_bytes: field(&status, "VmRSS:")? * 1024,
        disk_write_bytes: field(&io, "write_bytes:")?,
        write_calls: field(&io, "syscw:")?,
    })
}

/// utime + stime (fields 14 and 15 of proc(5)'s stat), in clock ticks.
fn cpu_ticks(stat: &str) -> Result<u64, BoxError> {
    // The command name (field 2) may hold spaces; fields after it follow its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field k is at index k - 3.
    let field = |k: usize| -> Result<u64, BoxError> {
        let v = fields.get(k - 3).ok_or("short /proc/<pid>/stat")?;
        Ok(v.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// The number on the line starting with `name` ("VmRSS:   123 kB" gives 123).
fn field(text: &str, name: &str) -> Result<u64, BoxError> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .ok_or_else(|| format!("no {name} in /proc"))?;
    let number = line.trim().trim_end_matches("kB").trim();
    Ok(number.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_samples(v: &[u64]) -> Samples {
        Samples::new(v.iter().map(|&m| Duration::from_millis(m)).collect())
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = ms_samples(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.max(), Duration::from_millis(100));
        assert_eq!(ms_samples(&[7]).p99(), Duration::from_millis(7));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
    }

    #[test]
    fn parses_proc_files() {
        let stat = "42 (vnet (x) y) S 1 42 42 0 -1 4194304 100 0 0 0 250 17 0 0 20 0 3";
        assert_eq!(cpu_ticks(stat).expect("stat"), 267);
        let status = "Name:\tvnet\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(field(status, "VmRSS:").expect("status"), 12345);
        let io = "syscw: 7\nread_bytes: 0\nwrite_bytes: 8192\n";
        assert_eq!(field(io, "write_bytes:").expect("io"), 8192);
        assert_eq!(field(io, "syscw:").expect("io"), 7);
    }
}
