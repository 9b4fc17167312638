//! Publish: applies the staged snapshots, in as-of order, to the SCD2 tables `elev`,
//! `elevforhold` and `skole` (one commit per changed table, run id in the commit metadata),
//! writes the identity map `elev_id`, records the snapshots in `leveranse` and rewrites
//! `elevliste_vgs`. [`run`] reads as its steps; each step is a file here:
//!
//! - `load.rs`: the versions decided from, the identity map and the current rows;
//! - `apply.rs`: one snapshot applied to the engines (`scd2.rs`), ids from `identity.rs`;
//! - `plan.rs`: per table, rebuilt history reconciled and the commit chosen;
//! - `commit.rs`: the commit as an operation resolving to `(version, metrics)`
//!   (`rewrite.rs` is its streamed strategy);
//! - `elevliste.rs`, `metrics.rs`: the county list and the `kvalitet` rows.
//!
//! Identity (docs/ARCHITECTURE.md, "Identity"): (kildesystem, system_id) already known → its id;
//! else the fødselsnummer already known → its id; else a UUID v5 of kommunenummer, kildesystem
//! and the source key, so rebuilding from raw gives the same ids.

mod apply;
mod commit;
mod elevliste;
mod guard;
pub mod identity;
mod load;
mod merge_record;
mod metrics;
mod plan;
mod rewrite;
mod row_hash;
pub mod scd2;
mod staged;
mod state;

use std::collections::{BTreeMap, HashSet};

use arrow::array::RecordBatch;
use tracing::info;

use crate::context::{crash_point, RunContext, Steps};
use crate::error::Result;
use crate::ledger::{self, SnapshotKey, StagedData};
use crate::metrics::PublishMetrics;
use crate::par::joined;
use crate::schema;
use apply::{StagedTables, Tables};
pub use commit::{CommitMetrics, Strategy};
pub use elevliste::ELEVLISTE_SQL;
pub use load::{preload, CarryIndex, Preloaded};
use staged::StagedTable;

/// What a publish did.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    pub snapshots: usize,
    pub inserted: BTreeMap<&'static str, usize>,
    pub closed: BTreeMap<&'static str, usize>,
    pub versions: BTreeMap<String, i64>,
    /// Per SCD2 table committed: the strategy and what the commit did.
    pub commits: BTreeMap<&'static str, CommitMetrics>,
    pub elevliste_rows: usize,
    pub metrics: PublishMetrics,
    /// Where the current rows were read from: `state file`, or `tables (why not the file)`.
    pub current_from: String,
    /// Rows standardize carried forward unchanged (pupils and elevforhold).
    pub carried: usize,
}

/// Publishes the staged snapshots: `staged` from a standardize in the same run, or `None` to
/// read the staging tables (a separate `elevflyt publish`). `preloaded`: the current state
/// standardize carried unchanged rows forward against (docs/ARCHITECTURE.md, "Carried rows").
pub async fn run(
    ctx: &RunContext,
    staged: Option<StagedData>,
    preloaded: Option<Preloaded>,
) -> Result<PublishOutcome> {
    let mut out = PublishOutcome::default();
    let mut steps = Steps::new("publish");
    let done = ledger::published(ctx).await?;
    let mut data = ledger::staged_data(ctx, staged).await?;
    log_staged_memory(&data);
    steps.step("staged data");
    let staged = StagedTables {
        skole: StagedTable::new(&schema::SKOLE, &data.skole)?,
        elev: StagedTable::new(&schema::ELEV, &data.elev)?,
        elevforhold: StagedTable::new(&schema::ELEVFORHOLD, &data.elevforhold)?,
    };
    let pending: Vec<SnapshotKey> = data
        .snapshots
        .iter()
        .filter(|k| !done.contains(*k))
        .cloned()
        .collect();
    steps.step("index staged rows");
    let rebuilt = ledger::rebuild_sources(ctx, &pending, &done).await?;
    steps.step("rebuild check");
    let snapshots = in_as_of_order(&data.snapshots, &done, &rebuilt);
    out.snapshots = pending.len();
    if pending.is_empty() {
        info!("no new snapshots to publish");
        // A run stopped between its commits and the county list: finish the list.
        if !ctx.dry_run && elevliste::is_stale(ctx).await? {
            county_list(ctx, &mut out).await?;
        }
        return Ok(out);
    }
    if !rebuilt.is_empty() {
        info!(sources = ?rebuilt, "rebuilding history from every snapshot, in as-of order");
    }

    let load::Loaded {
        mut tables,
        mut identity,
        stored_current,
        session,
        labels,
        current_from,
        preloaded,
        identity_preloaded,
        memo,
        base,
    } = load::load(ctx, &rebuilt, preloaded).await?;
    out.current_from = current_from;
    // Rows carried forward are only present against the state they were decided on.
    let carried: usize = data.carry.values().map(|c| c.carried()).sum();
    let carried_rebuilt = data
        .carry
        .iter()
        .any(|(k, c)| c.carried() > 0 && rebuilt.contains(&k.0));
    let unread_pupils = data.carry.values().any(|c| !c.elev_unread.is_empty());
    if (carried > 0 && !preloaded) || carried_rebuilt || (unread_pupils && !identity_preloaded) {
        // The tables moved on since standardize read their state (another run published; or
        // `elev_id`, in which it found the pupils it carried unread), or a source carried
        // forward is now rebuilt from every snapshot.
        return Err(crate::error::Error::ConcurrentRun("elev".into()));
    }
    out.carried = carried;
    steps.step("load identity and current rows");
    let kommune = ctx.pipeline.kommunenummer();
    // Summaries of the records to carry unread on the next day (docs/ARCHITECTURE.md, "Carried
    // records"): their staged rows get their ids as they are applied.
    let mut made = Vec::new();
    for key in &snapshots {
        let mut m = data.carry.get_mut(key).and_then(|c| c.records.take());
        let carry = data.carry.get(key);
        apply::snapshot(
            &mut tables,
            &mut identity,
            &staged,
            carry,
            m.as_mut(),
            key,
            kommune,
        )?;
        // The staged rows' own lists of summaries are spent once their ids are given (a first
        // load's are 64 bytes a row, 128 MB at a million pupils): let go before the commit.
        made.extend(m.map(|m| (m.records, m.kept)));
    }
    steps.step("elev and elevforhold versions");
    apply::check(&tables, &identity)?;
    guard::check_tables(ctx, &tables, &done)?;
    for run in tables.all_mut() {
        run.reconcile(&session).await?;
    }
    steps.step("check and reconcile");
    let current = tables.elev.engine.state.len();
    out.metrics.row_change = metrics::row_count_change(ctx, stored_current, current)?;
    let changed = commit_tables(ctx, &mut tables, &mut out, &mut steps).await?;
    // Committed: the staged rows are no longer needed. They are a few large Arrow buffers,
    // cheap to free (unlike the engines' and the identity map's millions of small ones, left
    // to the end), and `elev_id` and the county list reuse the memory.
    for run in tables.all_mut() {
        run.batches = Vec::new();
    }
    // The summaries are kept with the state they belong to; none after a rebuild (whose state
    // is written whole).
    let (made, base) = match rebuilt.is_empty() {
        true => (made, base),
        false => (Vec::new(), None),
    };
    drop((staged, data));
    if ctx.dry_run {
        return Ok(out);
    }
    // The state file is made and written on the side (docs/ARCHITECTURE.md, "The current
    // state"): nothing after it reads it, and a run stopped before it is written only sends the
    // next run to the tables. It is awaited before the run returns, also when a later step
    // fails, so that no write outlives the run.
    let labels = state_labels(ctx, &tables, labels, &out).await;
    // A day's state is written as the change since the state it was read from, while that
    // change is small; else whole, made part by part and written as the parts come, two at most
    // waiting: the file is never held whole (a third of a gigabyte at a million pupils).
    let (sent, mut parts) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let (chosen, change) = tokio::sync::oneshot::channel::<Option<Vec<u8>>>();
    let made = tokio::task::spawn_blocking(move || {
        // Merged (two sorts of millions of summaries) here, off the path of `elev_id` and the
        // county list: only the state file reads them.
        // The records carried unread are places in the memo they were found in, held until here.
        let records = crate::carried::Next::merge(made, Some(&memo));
        let [skole, elev, elevforhold] = tables.all();
        let engines = [&skole.engine, &elev.engine, &elevforhold.engine];
        let change = (base.as_ref()).and_then(|b| state::change(engines, labels, b, &records));
        let whole = change.is_none();
        let _ = chosen.send(change);
        if whole {
            // A part the writer no longer takes (it failed) is dropped; it says why itself.
            state::encode_each(engines, labels, &records, &mut |p| {
                let _ = sent.blocking_send(p);
            });
        }
        drop(sent);
        // Millions of small allocations: freed on another thread while the file is written.
        crate::par::drop_aside(tables);
    });
    let stored = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let written = async {
                if let Ok(Some(change)) = change.await {
                    let put = state::put_change(&ctx, change).await;
                    let _ = made.await;
                    return put.map(|()| "change");
                }
                state::put_each(&ctx, &mut parts, async { made.await.is_ok() }).await?;
                // The change beside the old base is of no use now.
                state::drop_change(&ctx).await?;
                Ok("whole")
            };
            Ok::<_, crate::error::Error>(written.await)
        }
    });
    let rest = finish(ctx, &identity, &pending, changed, &mut out, &mut steps).await;
    let stored = joined(stored, "current state").await;
    crate::par::drop_aside(identity);
    rest?;
    // A state that cannot be written is only a slower next run (it reads the tables).
    match stored? {
        Ok(written) => tracing::debug!(written, "current state"),
        Err(e) => {
            tracing::warn!(error = %e, "the current state could not be written; the next run reads the tables")
        }
    }
    steps.step("current state written");
    Ok(out)
}

/// What follows the commit besides the state file: the rows of `elev_id`, `leveranse`, the
/// county list and the table metrics.
async fn finish(
    ctx: &RunContext,
    identity: &identity::Identity,
    pending: &[SnapshotKey],
    changed: bool,
    out: &mut PublishOutcome,
    steps: &mut Steps,
) -> Result<()> {
    let elev_id = identity.batch(ctx)?;
    steps.step("elev_id rows");
    // The table metrics only read what is committed: computed meanwhile, on the other core.
    let table_metrics = tokio::spawn({
        let ctx = ctx.clone();
        async move { metrics::table_metrics(&ctx).await }
    });
    if let Some(batch) = elev_id {
        if let Some(v) = identity::write_batch(ctx, batch).await? {
            out.versions.insert("elev_id".into(), v);
        }
    }
    steps.step("write elev_id");
    crash_point("after-elev-id");
    if let Some(v) = ledger::record_published(ctx, pending).await? {
        out.versions.insert("leveranse".into(), v);
    }
    steps.step("leveranse");
    crash_point("after-leveranse");
    if changed || elevliste::is_stale(ctx).await? {
        county_list(ctx, out).await?;
    }
    steps.step("elevliste_vgs");
    crash_point("after-elevliste");
    out.metrics = PublishMetrics {
        row_change: out.metrics.row_change.take(),
        ..joined(table_metrics, "table metrics").await?
    };
    steps.step("metrics");
    Ok(())
}

/// The snapshots to apply, in as-of order: the pending ones, and every staged one of a rebuilt
/// source.
fn in_as_of_order(
    staged: &HashSet<SnapshotKey>,
    done: &HashSet<SnapshotKey>,
    rebuilt: &HashSet<String>,
) -> Vec<SnapshotKey> {
    let mut snapshots: Vec<SnapshotKey> = staged
        .iter()
        .filter(|k| !done.contains(*k) || rebuilt.contains(&k.0))
        .cloned()
        .collect();
    snapshots.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
    snapshots
}

/// Commits each table that changed, parents first: skole, then elev, then elevforhold
/// (docs/ARCHITECTURE.md, "Crash safety"). A run killed between two commits leaves a prefix
/// of them, and every prefix is consistent: an enrollment never points at a pupil or school
/// not yet committed. The two large tables are prepared at the same time. Returns whether any
/// table changed.
async fn commit_tables(
    ctx: &RunContext,
    t: &mut Tables,
    out: &mut PublishOutcome,
    steps: &mut Steps,
) -> Result<bool> {
    let transaction_time = chrono::Utc::now().timestamp_micros();
    let skole = match t.skole.prepare(ctx, transaction_time)? {
        Some(c) => Some(c.await?),
        None => None,
    };
    steps.step("skole");
    crash_point("after-merge-skole");
    let (elev_commit, ef_commit) = crate::par::both(
        || t.elev.prepare(ctx, transaction_time),
        || t.elevforhold.prepare(ctx, transaction_time),
    );
    let (elev_commit, ef_commit) = (elev_commit?, ef_commit?);
    steps.step("prepare elev and elevforhold");
    let elev = match elev_commit {
        Some(c) => Some(c.await?),
        None => None,
    };
    crash_point("after-merge-elev");
    let ef = match ef_commit {
        Some(c) => Some(c.await?),
        None => None,
    };
    steps.step("elev and elevforhold");
    crash_point("after-merge-elevforhold");
    let mut changed = false;
    for (run, commit) in t.all().into_iter().zip([skole, elev, ef]) {
        let name = run.table.name;
        out.inserted.insert(name, run.ops.len());
        out.closed.insert(name, run.closed());
        if let Some((version, metrics)) = commit {
            if let Some(v) = version {
                out.versions.insert(name.to_string(), v);
                changed = true;
            }
            out.commits.insert(name, metrics);
        }
    }
    Ok(changed)
}

/// The labels the state file gets: the versions this run committed (a table made by this run
/// with its id read from the version it committed), the versions read for the others.
async fn state_labels(
    ctx: &RunContext,
    tables: &Tables,
    read: [state::Label; 3],
    out: &PublishOutcome,
) -> [state::Label; 3] {
    let mut labels = read;
    for (label, run) in labels.iter_mut().zip(tables.all()) {
        let Some(&v) = out.versions.get(run.table.name) else {
            continue;
        };
        *label = match label {
            Some((_, id)) => Some((v as u64, *id)),
            // Made by this run: its id is read from the version it committed.
            None => crate::delta::open_at(&ctx.pipeline.table_url(run.table.name), Some(v), None)
                .await
                .ok()
                .and_then(|t| state::label(Some(&t))),
        };
    }
    labels
}

/// Rewrites `elevliste_vgs` and records what it wrote.
async fn county_list(ctx: &RunContext, out: &mut PublishOutcome) -> Result<()> {
    let (rows, version) = elevliste::write(ctx).await?;
    out.elevliste_rows = rows;
    if let Some(v) = version {
        out.versions.insert("elevliste_vgs".into(), v);
    }
    Ok(())
}

fn log_staged_memory(data: &StagedData) {
    let mb = |b: &[RecordBatch]| {
        b.iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            >> 20
    };
    tracing::debug!(
        elev_mb = mb(&data.elev),
        elevforhold_mb = mb(&data.elevforhold),
        "staged rows in memory"
    );
}
