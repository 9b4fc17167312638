//! Running stages: the orchestration of ingest → standardize → publish, with `kvalitet` and
//! `kjoring` written from what the stages return — also when a `fail` rule stops the run or a
//! stage errors. The run context itself is `crate::context`.

use serde_json::json;
use tracing::{error, info};

pub use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::metrics::{IngestMetrics, PublishMetrics, RunLog, StandardizeMetrics};

/// What the stages that ran measured, turned into `kvalitet` rows at the end of the run (also
/// when a stage failed after measuring).
#[derive(Debug, Default)]
struct Measured {
    ingest: Option<IngestMetrics>,
    standardize: Option<StandardizeMetrics>,
    publish: Option<PublishMetrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    All,
    Ingest,
    Standardize,
    Publish,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::All => "run",
            Stage::Ingest => "ingest",
            Stage::Standardize => "standardize",
            Stage::Publish => "publish",
        }
    }
}

/// What a run did, for the summary printed at the end.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub run_id: String,
    pub status: String,
    pub files_read: Vec<String>,
    pub files_skipped: usize,
    /// The sources pulled from an API: pages, records, requests, retries, time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pulls: Vec<crate::ingest::pull::PullSummary>,
    pub raw_records: usize,
    pub snapshots_standardized: usize,
    pub avvik: usize,
    pub snapshots_published: usize,
    pub inserted: serde_json::Value,
    pub closed: serde_json::Value,
    pub delta_versions: serde_json::Value,
    pub elevliste_rows: usize,
    /// Per SCD2 table committed: the commit strategy and its operation metrics.
    pub commits: std::collections::BTreeMap<&'static str, crate::publish::CommitMetrics>,
    /// Where publish read the current rows from: `state file`, or `tables (…why…)`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub current_rows_from: String,
    /// Rows standardize carried forward unchanged, not staged again (pupils and elevforhold).
    pub carried: usize,
    /// Of those, pupils and elevforhold whose raw records were carried unread
    /// (docs/ARCHITECTURE.md, "Carried records").
    pub records_carried: usize,
    pub failed_rules: Vec<(String, u64)>,
    /// Incomplete snapshots held back until their missing files arrive.
    pub held_back: Vec<String>,
    /// Tables whose small files the run compacted after its commits (docs/ARCHITECTURE.md,
    /// "Compaction after a run").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compacted: Vec<crate::ops::Compacted>,
    /// Wall time per stage in seconds (`bookkeeping`: kvalitet and kjoring; `compaction`).
    pub stage_seconds: std::collections::BTreeMap<&'static str, f64>,
}

/// Runs one stage or all of them. A broken `fail` rule returns `Error::RuleFailed` after the
/// deviations, metrics and run log are written.
pub async fn execute(ctx: &RunContext, stage: Stage) -> Result<Summary> {
    // Storage first (also in a dry run: it says what the real run would meet). A warehouse that
    // cannot be reached has nowhere to log the run either: the error is the only message.
    check_storage(ctx, stage).await?;
    let mut summary = Summary {
        run_id: ctx.run_id.clone(),
        ..Default::default()
    };
    let mut measured = Measured::default();
    let mut versions = serde_json::Map::new();
    let result = run_stages(ctx, stage, &mut summary, &mut measured, &mut versions).await;
    // A full disk has no room for the run log either: said once, cleanly.
    let disk_full = || Error::DiskFull(ctx.pipeline.table_url("").to_string());
    if result.as_ref().is_err_and(Error::is_disk_full) {
        return Err(disk_full());
    }
    let bookkeeping = std::time::Instant::now();
    let mut log_failed: Option<(&str, Error)> = None;
    let (status, melding) = match &result {
        Ok(()) => ("ok", None),
        Err(Error::RuleFailed(m)) => ("fail", Some(m.clone())),
        Err(e) => ("error", Some(e.to_string())),
    };
    summary.status = status.into();
    summary.delta_versions = serde_json::Value::Object(versions.clone());
    if !ctx.dry_run {
        // Bookkeeping must not hide the original error.
        let metrics = crate::metrics::kvalitet_rows(
            measured.ingest.as_ref(),
            measured.standardize.as_ref(),
            measured.publish.as_ref(),
        );
        if !metrics.is_empty() {
            match crate::metrics::write_kvalitet(ctx, &metrics).await {
                Ok(Some(v)) => {
                    versions.insert("kvalitet".into(), json!(v));
                }
                Ok(None) => {}
                Err(e) => log_failed = Some(("kvalitet", e)),
            }
        }
        let log = RunLog {
            steg: stage.name().into(),
            status: status.into(),
            melding,
            input_files: summary.files_read.clone(),
            rows_per_table: json!({
                "raw": summary.raw_records,
                "inserted": summary.inserted,
                "closed": summary.closed,
                "avvik": summary.avvik,
                "elevliste_vgs": summary.elevliste_rows,
            }),
            delta_versions: serde_json::Value::Object(versions.clone()),
        };
        match crate::metrics::write_kjoring(ctx, &log).await {
            Ok(Some(v)) => {
                versions.insert("kjoring".into(), json!(v));
            }
            Ok(None) => {}
            Err(e) => log_failed = Some(("kjoring", e)),
        }
    }
    summary
        .stage_seconds
        .insert("bookkeeping", seconds(bookkeeping));
    // Housekeeping once the run's data and log are written: its failure is said (a warning and
    // the summary's entry), not the run's.
    let committed = matches!(&result, Ok(()) | Err(Error::RuleFailed(_)));
    if committed
        && log_failed.is_none()
        && !ctx.dry_run
        && ctx.pipeline.file.pipeline.compact_after_run
    {
        let t = std::time::Instant::now();
        summary.compacted =
            crate::ops::compact_after_run(&ctx.pipeline, &ctx.run_id, &versions).await;
        if !summary.compacted.is_empty() {
            summary.stage_seconds.insert("compaction", seconds(t));
        }
    }
    summary.delta_versions = serde_json::Value::Object(versions);
    if let (Err(_), Some((table, e))) = (&result, &log_failed) {
        // The run's own error is said at the end; this one is about its log.
        error!(error = %e, table, "could not write the run log");
    }
    result?;
    // The data is published, but a run that could not log itself is not "ok".
    if let Some((table, e)) = log_failed {
        if e.is_disk_full() {
            return Err(disk_full());
        }
        return Err(Error::Other(format!(
            "the run published its data, but could not write `{table}`: {e}"
        )));
    }
    Ok(summary)
}

/// The warehouse and, when files are read, every source location can be reached with the
/// credentials in the environment.
async fn check_storage(ctx: &RunContext, stage: Stage) -> Result<()> {
    crate::storage::check_access(&ctx.pipeline.table_url(""), "warehouse").await?;
    if matches!(stage, Stage::All | Stage::Ingest) {
        for source in &ctx.pipeline.file.sources {
            let url = ctx.pipeline.source_location(source)?;
            // An API is checked by the pull itself (sign-in, first page).
            if matches!(url.scheme(), "http" | "https") {
                continue;
            }
            crate::storage::check_access(&url, &format!("source `{}`", source.name)).await?;
        }
    }
    Ok(())
}

fn seconds(since: std::time::Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

async fn run_stages(
    ctx: &RunContext,
    stage: Stage,
    summary: &mut Summary,
    measured: &mut Measured,
    versions: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    info!(pipeline = ctx.pipeline.name(), run_id = %ctx.run_id, stage = stage.name(), dry_run = ctx.dry_run, "starting");
    // The raw rows this run committed, handed to standardize instead of being read back.
    let mut committed = std::collections::HashMap::new();
    let mut watches = Vec::new();
    if matches!(stage, Stage::All | Stage::Ingest) {
        let t = std::time::Instant::now();
        let mut m = crate::ingest::run(ctx).await?;
        committed = std::mem::take(&mut m.committed);
        watches = std::mem::take(&mut m.watches);
        summary.stage_seconds.insert("ingest", seconds(t));
        summary.files_read = m.files_read.clone();
        summary.pulls = m.pulls.clone();
        summary.files_skipped = m.files_skipped;
        summary.raw_records = m.records;
        for (t, v) in &m.raw_versions {
            versions.insert(t.clone(), json!(v));
        }
        measured.ingest = Some(m.measured());
    }
    let mut staged = None;
    let mut preloaded = None;
    if matches!(stage, Stage::All | Stage::Standardize) {
        let t = std::time::Instant::now();
        // `run` hands the staged rows to publish in memory; the staging tables are the hand-off
        // between `standardize` and `publish` run on their own.
        let mut o = crate::standardize::run(
            ctx,
            stage == Stage::Standardize,
            (std::mem::take(&mut committed), std::mem::take(&mut watches)),
        )
        .await?;
        summary.stage_seconds.insert("standardize", seconds(t));
        staged = o.staged.take();
        preloaded = o.preloaded.take();
        summary.carried = o.carried;
        summary.records_carried = o.records_carried;
        summary.held_back = std::mem::take(&mut o.held_back);
        summary.snapshots_standardized = o.snapshots;
        summary.avvik = o.avvik;
        if let Some(v) = o.avvik_version {
            versions.insert("avvik".into(), json!(v));
        }
        measured.standardize = o.metrics.take();
        if !o.failures.is_empty() {
            summary.failed_rules = o
                .failures
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect();
            let list = o
                .failures
                .iter()
                .map(|(r, n)| format!("{r} ({n} postar)"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::RuleFailed(format!(
                "fail-reglar broten: {list}; ingen datatabell er endra (sjå avvik for run_id {})",
                ctx.run_id
            )));
        }
    }
    if matches!(stage, Stage::All | Stage::Publish) {
        let t = std::time::Instant::now();
        let o = crate::publish::run(ctx, staged, preloaded.take()).await?;
        summary.stage_seconds.insert("publish", seconds(t));
        summary.snapshots_published = o.snapshots;
        summary.inserted = json!(o.inserted);
        summary.closed = json!(o.closed);
        summary.elevliste_rows = o.elevliste_rows;
        summary.commits = o.commits.clone();
        summary.current_rows_from = o.current_from.clone();
        for (t, v) in &o.versions {
            versions.insert(t.clone(), json!(v));
        }
        measured.publish = Some(o.metrics);
    }
    // The complete snapshots are published; the run still fails, so that a scheduler sees it.
    if !summary.held_back.is_empty() {
        return Err(Error::Incomplete(format!(
            "ufullstendig leveranse halden tilbake (ingenting av ho er publisert): {}; \
             lever filene som manglar (med same dato i namnet), så vert ho publisert ved neste køyring",
            summary.held_back.join("; ")
        )));
    }
    info!(run_id = %ctx.run_id, "finished");
    Ok(())
}
