//! The run context every stage gets (run id, clock, options), and the machinery every stage
//! shares without depending on the others: timing of steps and the crash points of the
//! crash-safety tests. A leaf: it knows the pipeline file and nothing of the stages.

use chrono::{DateTime, TimeZone, Utc};

use crate::config::Pipeline;

#[derive(Debug, Clone)]
pub struct RunContext {
    pub pipeline: Pipeline,
    pub run_id: String,
    pub started: DateTime<Utc>,
    pub as_of_override: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// `--accept-mass-change`: publish a snapshot the mass-change guard would stop
    /// (docs/ARCHITECTURE.md, "Guards against a bad delivery").
    pub accept_mass_change: bool,
    /// `--until`: only files dated (in their names) at or before this time are ingested; later
    /// ones wait for a later run (a backlog loaded one day at a time).
    pub until: Option<DateTime<Utc>>,
}

impl RunContext {
    pub fn new(pipeline: Pipeline) -> Self {
        RunContext {
            pipeline,
            run_id: uuid::Uuid::new_v4().to_string(),
            started: Utc::now(),
            as_of_override: None,
            dry_run: false,
            accept_mass_change: false,
            until: None,
        }
    }
}

/// Test hook for crash-safety tests: when `ELEVFLYT_CRASH_AT` names this point, the process
/// aborts here, as if killed. Points: after-raw, after-avvik, after-stage, after-merge-skole,
/// after-merge-elev, after-merge-elevforhold, after-elev-id, after-leveranse, after-elevliste,
/// and `after-create-<table>` (a table created, nothing written to it yet); after-parse (a
/// source's files parsed) and before-raw-commit (raw's files written, not committed).
///
/// And for tests of what happens meanwhile: when `ELEVFLYT_PAUSE_AT` is `<point>:<path>`, the
/// run writes `<path>.paused` here and waits (up to two minutes) until `<path>` exists.
pub fn crash_point(name: &str) {
    if std::env::var("ELEVFLYT_CRASH_AT").is_ok_and(|p| p == name) {
        eprintln!("ELEVFLYT_CRASH_AT={name}: aborting");
        std::process::abort();
    }
    if let Some(go) = std::env::var("ELEVFLYT_PAUSE_AT").ok().and_then(|p| {
        Some(p.split_once(':')?.1.to_string()).filter(|_| p.starts_with(&format!("{name}:")))
    }) {
        let _ = std::fs::write(format!("{go}.paused"), b"");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !std::path::Path::new(&go).exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Times the steps of a stage: each `step` logs (at debug) how long it took since the last one.
/// `--log-level debug` (or `RUST_LOG=elevflyt=debug`) shows where a run spends its time; at
/// other levels nothing is measured (no `getrusage`, no read of `/proc`).
pub struct Steps {
    stage: &'static str,
    last: std::time::Instant,
    last_usage: Usage,
}

impl Steps {
    pub fn new(stage: &'static str) -> Self {
        Steps {
            stage,
            last: std::time::Instant::now(),
            last_usage: match logged() {
                true => usage(),
                false => Usage::default(),
            },
        }
    }

    /// Logs (at debug) the wall time and the process's CPU time (all threads, user + system)
    /// since the previous step: `cpu_ms` near `ms` means one busy core, near twice `ms` two.
    /// `sys_ms` is the kernel's part of it and `faults` the pages the kernel had to map meanwhile
    /// (minor faults: most of them fresh pages it zeroed first, docs/PERFORMANCE.md).
    pub fn step(&mut self, name: &str) {
        if !logged() {
            return;
        }
        let now = std::time::Instant::now();
        let u = usage();
        let resident = resident_mb();
        let was = &self.last_usage;
        tracing::debug!(
            stage = self.stage,
            step = name,
            ms = (now - self.last).as_millis() as u64,
            cpu_ms = (u.user + u.sys).saturating_sub(was.user + was.sys) / 1000,
            rss_mb = resident.0,
            anon_mb = resident.1,
            peak_mb = u.peak_mb,
            sys_ms = u.sys.saturating_sub(was.sys) / 1000,
            faults = u.faults.saturating_sub(was.faults),
            "step"
        );
        self.last = now;
        self.last_usage = u;
    }
}

/// Whether the step log is on (debug for this module).
fn logged() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// The process's resident memory now, all of it and the part that is not mapped files (the
/// heap, where the pipeline's own structures are; mapped exports and tables are the rest), in
/// MB; zeros where unavailable.
fn resident_mb() -> (u64, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    // Pages: total size, resident, resident and shared (file-backed), ...
    let pages: Vec<u64> = (statm.split_whitespace().take(3))
        .filter_map(|f| f.parse().ok())
        .collect();
    let mb = |p: u64| p * 4096 / (1024 * 1024);
    match pages[..] {
        [_, resident, shared] => (mb(resident), mb(resident.saturating_sub(shared))),
        _ => (0, 0),
    }
}

/// What the process has used so far: CPU time in user space and in the kernel (µs), minor page
/// faults, and its peak resident memory (MB).
#[derive(Default)]
struct Usage {
    user: u64,
    sys: u64,
    faults: u64,
    peak_mb: u64,
}

/// The process's [`Usage`] so far; zeros where unavailable.
fn usage() -> Usage {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return Usage::default();
        }
        u
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Usage {
        user: micros(usage.ru_utime),
        sys: micros(usage.ru_stime),
        faults: usage.ru_minflt as u64,
        peak_mb: usage.ru_maxrss as u64 / 1024,
    }
}

pub fn fmt_micros(t: i64) -> String {
    Utc.timestamp_micros(t)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// Makes `attempt` again after a lost commit race with another run (`is_conflict`), up to five
/// times with a growing pause; any other error, or a sixth conflict, is returned. `attempt` gets
/// the number of the try (0 first) so that it can refresh what it read.
pub async fn retry_on_conflict<T, E>(
    what: &str,
    is_conflict: impl Fn(&E) -> bool,
    mut attempt: impl AsyncFnMut(u32) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    const TRIES: u32 = 5;
    let mut n = 0;
    loop {
        match attempt(n).await {
            Err(e) if n < TRIES && is_conflict(&e) => {
                n += 1;
                tracing::warn!(
                    table = what,
                    attempt = n,
                    "another run committed at the same time; trying again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50 * n as u64)).await;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_has_a_heap_part_no_larger_than_itself() {
        // 64 MB written on the heap are resident, and not a mapped file.
        let block = vec![1u8; 64 << 20];
        let (resident, heap) = super::resident_mb();
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        assert!(
            heap >= 64 && heap <= resident,
            "resident {resident} MB, heap {heap} MB"
        );
    }
}
