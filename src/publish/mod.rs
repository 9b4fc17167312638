//! Publish: merges the staged snapshots, in as-of order, into the SCD2 tables `elev`,
//! `elevforhold` and `skole` (one Delta MERGE commit per changed table, run id in the commit
//! metadata), records the snapshots in `leveranse` and rewrites `elevliste_vgs`.
//!
//! Identity (DESIGN §3.1): (kildesystem, system_id) already known → its id; else the
//! fødselsnummer already known → its id; else a UUID v5 of kommunenummer, kildesystem and the
//! source key, so rebuilding from raw gives the same ids.

pub mod identity;
mod rewrite;
pub mod scd2;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::take_record_batch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use tracing::info;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metrics::Metric;
use crate::quality::rules;
use crate::run::RunContext;
use crate::schema::{self, Table};
use crate::standardize::{stage_table, SnapshotKey, StagedData};
use identity::{Identity, NAMESPACE};
use scd2::{Scd2, Scope, SnapshotRow};

#[derive(Debug, Default)]
pub struct PublishOutcome {
    pub snapshots: usize,
    pub inserted: BTreeMap<&'static str, usize>,
    pub closed: BTreeMap<&'static str, usize>,
    pub versions: BTreeMap<String, i64>,
    pub elevliste_rows: usize,
    pub metrics: Vec<Metric>,
}

/// Staged rows of one table, with the rows of each snapshot.
struct StagedTable {
    batch: RecordBatch,
    rows: HashMap<SnapshotKey, Vec<u32>>,
}

async fn read_staged(ctx: &RunContext, t: &Table) -> Result<Vec<RecordBatch>> {
    let stage = stage_table(t);
    let session = crate::delta::session(&ctx.pipeline, &[stage.name]).await?;
    if !crate::delta::has_table(&session, stage.name) {
        return Ok(Vec::new());
    }
    crate::delta::query(&session, &format!("SELECT * FROM {}", stage.name)).await
}

impl StagedTable {
    fn new(t: &Table, batches: &[RecordBatch]) -> Result<StagedTable> {
        let schema = stage_table(t).arrow_schema();
        let batches = batches
            .iter()
            .map(|b| crate::delta::conform(b, &schema))
            .collect::<Result<Vec<_>>>()?;
        let batch = crate::delta::concat(&schema, &batches)?;
        let k = crate::delta::strings(&batch, "stg_kildesystem")?;
        let o = crate::delta::strings(&batch, "stg_omfang")?;
        let t = crate::delta::micros(&batch, "stg_as_of")?;
        let mut rows: HashMap<SnapshotKey, Vec<u32>> = HashMap::new();
        for i in 0..batch.num_rows() {
            let key = (k.value(i).to_string(), opt(&o, i), t.value(i));
            rows.entry(key).or_default().push(i as u32);
        }
        Ok(StagedTable { batch, rows })
    }
}

/// The staged snapshots: handed over by `run`, or read from the staging tables.
async fn staged_data(ctx: &RunContext, given: Option<StagedData>) -> Result<StagedData> {
    if let Some(s) = given {
        return Ok(s);
    }
    Ok(StagedData {
        snapshots: staged_snapshots(ctx).await?,
        elev: read_staged(ctx, &schema::ELEV).await?,
        elevforhold: read_staged(ctx, &schema::ELEVFORHOLD).await?,
        skole: read_staged(ctx, &schema::SKOLE).await?,
    })
}

/// The run id in the newest commit of a table.
async fn last_run_id(ctx: &RunContext, table: &str) -> Result<Option<String>> {
    use futures::TryStreamExt;
    let Some(t) = crate::delta::try_open(&ctx.pipeline.table_url(table)).await? else {
        return Ok(None);
    };
    let infos: Vec<_> = t.history(Some(1)).try_collect().await?;
    Ok(infos
        .first()
        .and_then(|c| c.info.get("elevflyt_run_id"))
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// The snapshots the last standardize staged, once it is sure that standardize finished: every
/// staging table carries the run id of the same standardize.
async fn staged_snapshots(ctx: &RunContext) -> Result<HashSet<SnapshotKey>> {
    let t = &schema::STAGE_SNAPSHOTS;
    let session = crate::delta::session(&ctx.pipeline, &[t.name]).await?;
    let mut out = HashSet::new();
    if !crate::delta::has_table(&session, t.name) {
        return Ok(out);
    }
    let run = last_run_id(ctx, t.name).await?;
    for table in [&schema::ELEV, &schema::ELEVFORHOLD, &schema::SKOLE] {
        if last_run_id(ctx, &table.stage_name()).await? != run {
            return Err(Error::Other(
                "the staging tables come from different standardize runs (a standardize was interrupted, \
                 or another run standardized at the same time); run `elevflyt standardize` (or `run`) again"
                    .into(),
            ));
        }
    }
    for b in crate::delta::query(&session, &format!("SELECT * FROM {}", t.name)).await? {
        let k = crate::delta::strings(&b, "stg_kildesystem")?;
        let o = crate::delta::strings(&b, "stg_omfang")?;
        let a = crate::delta::micros(&b, "stg_as_of")?;
        for i in 0..b.num_rows() {
            out.insert((k.value(i).to_string(), opt(&o, i), a.value(i)));
        }
    }
    Ok(out)
}

impl StagedTable {
    fn snapshot(&self, key: &SnapshotKey) -> Result<RecordBatch> {
        rows_of(
            &self.batch,
            self.rows.get(key).map(Vec::as_slice).unwrap_or_default(),
        )
    }
}

/// The given rows of a batch, in that order; the batch itself (not a copy) when they are all
/// of its rows in order, as in a run with one snapshot or a first load.
fn rows_of(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    if rows.len() == batch.num_rows() && rows.iter().enumerate().all(|(i, r)| i as u32 == *r) {
        return Ok(batch.clone());
    }
    Ok(take_record_batch(
        batch,
        &UInt32Array::from_iter_values(rows.iter().copied()),
    )?)
}

/// The result of a spawned task; a task that panicked or was cancelled is an internal error.
async fn joined<T>(task: tokio::task::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    task.await
        .map_err(|e| Error::Other(format!("internal: {what}: {e}")))?
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    opt_str(a, i).map(str::to_string)
}

fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// Loads the current rows (key, hash, valid_from, scope) of an SCD2 table, except those of
/// sources whose history is rebuilt in this run.
async fn load_current(
    ctx: &SessionContext,
    t: &Table,
    engine: &mut Scd2,
    rebuilt: &HashSet<String>,
) -> Result<()> {
    if !crate::delta::has_table(ctx, t.name) {
        return Ok(());
    }
    let (school, parent) = match t.name {
        "elevforhold" => ("skolenummer", "elev_id"),
        _ => ("NULL", "NULL"),
    };
    let sql = format!(
        "SELECT {key} AS k, rad_hash, valid_from, kildesystem, {school} AS s, {parent} AS p FROM {name} WHERE is_current{skip}",
        key = t.key,
        name = t.name,
        skip = not_in_sources(rebuilt),
    );
    crate::delta::for_each_batch(ctx, &sql, |b| {
        let k = crate::delta::strings(b, "k")?;
        let h = crate::delta::strings(b, "rad_hash")?;
        let v = crate::delta::micros(b, "valid_from")?;
        let ks = crate::delta::strings(b, "kildesystem")?;
        let s = crate::delta::strings(b, "s")?;
        let p = crate::delta::strings(b, "p")?;
        engine.state.reserve(b.num_rows());
        for i in 0..b.num_rows() {
            engine.load_current(
                k.value(i),
                scd2::parse_hash(h.value(i)),
                v.value(i),
                opt_str(&ks, i),
                opt_str(&s, i),
                opt_str(&p, i),
            );
        }
        Ok(())
    })
    .await
}

/// ` AND kildesystem NOT IN (...)` for a set of source names (validated lower-case identifiers).
fn not_in_sources(sources: &HashSet<String>) -> String {
    if sources.is_empty() {
        return String::new();
    }
    let list = sources
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(" AND (kildesystem IS NULL OR kildesystem NOT IN ({list}))")
}

/// Sources whose pending snapshots do not simply follow the stored history: a late snapshot
/// (older than history already stored for the source), or a publish that was interrupted after
/// some tables were committed. Their history is rebuilt from all their snapshots, in as-of order.
pub async fn rebuild_sources(ctx: &RunContext, pending: &[SnapshotKey]) -> Result<HashSet<String>> {
    let mut oldest: HashMap<&str, i64> = HashMap::new();
    for (k, _, t) in pending {
        let e = oldest.entry(k.as_str()).or_insert(*t);
        *e = (*e).min(*t);
    }
    let session = crate::delta::session(&ctx.pipeline, &["elev", "elevforhold", "skole"]).await?;
    let mut newest: HashMap<String, i64> = HashMap::new();
    for t in ["elev", "elevforhold", "skole"] {
        if !crate::delta::has_table(&session, t) {
            continue;
        }
        let sql = format!(
            "SELECT kildesystem, max(greatest(valid_from, coalesce(valid_to, valid_from))) AS t FROM {t} GROUP BY kildesystem"
        );
        for b in crate::delta::query(&session, &sql).await? {
            let k = crate::delta::strings(&b, "kildesystem")?;
            let m = crate::delta::micros(&b, "t")?;
            for i in 0..b.num_rows() {
                if let Some(k) = opt(&k, i) {
                    let e = newest.entry(k).or_insert(i64::MIN);
                    *e = (*e).max(m.value(i));
                }
            }
        }
    }
    // Snapshots that changed nothing leave no trace in the history: count the published ones.
    for (k, _, t) in crate::standardize::published(ctx).await? {
        let e = newest.entry(k).or_insert(i64::MIN);
        *e = (*e).max(t);
    }
    Ok(oldest
        .into_iter()
        .filter(|(k, t)| newest.get(*k).is_some_and(|n| t <= n))
        .map(|(k, _)| k.to_string())
        .collect())
}

fn replace_column(batch: &RecordBatch, name: &str, values: ArrayRef) -> Result<RecordBatch> {
    let idx = batch
        .schema()
        .index_of(name)
        .map_err(|_| Error::Other(format!("internal: no column {name}")))?;
    let mut cols = batch.columns().to_vec();
    cols[idx] = values;
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

/// What the MERGE does with one source row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Insert a new version.
    Insert,
    /// Rewrite a stored version with the same key and valid_from (rebuilt history).
    Replace,
}

/// A stored version of a rebuilt source.
struct StoredVersion {
    key: String,
    valid_from: i64,
    valid_to: Option<i64>,
    hash: scd2::RowHash,
}

/// Per-table engine plus the prepared (id-filled) snapshot batches it refers to.
struct TableRun {
    table: &'static Table,
    engine: Scd2,
    batches: Vec<RecordBatch>,
    /// Sources whose history is rebuilt in this run.
    rebuilt: HashSet<String>,
    /// Operation per live insert (index into `engine.inserts`, ascending); inserts not listed
    /// are unchanged versions of a rebuilt source and are not written.
    ops: Vec<(usize, Op)>,
    /// Stored versions (key, valid_from) of rebuilt sources that no longer exist.
    deletes: Vec<(String, i64)>,
    /// The table version the current rows were read from (0: no table yet).
    read_version: u64,
}

impl TableRun {
    fn new(table: &'static Table, rebuilt: &HashSet<String>) -> Self {
        TableRun {
            table,
            engine: Scd2::default(),
            batches: Vec::new(),
            rebuilt: rebuilt.clone(),
            ops: Vec::new(),
            deletes: Vec::new(),
            read_version: 0,
        }
    }

    /// Applies a prepared snapshot batch; returns keys closed for absence.
    fn apply(&mut self, batch: RecordBatch, as_of: i64, scope: Scope<'_>) -> Result<Vec<Arc<str>>> {
        let hashes = scd2::row_hashes(self.table, &batch)?;
        let keys = crate::delta::strings(&batch, self.table.key)?;
        let ks = crate::delta::strings(&batch, "kildesystem")?;
        let school = crate::delta::strings(&batch, "skolenummer").ok();
        let parent = crate::delta::strings(&batch, "elev_id").ok();
        let rows: Vec<SnapshotRow> = (0..batch.num_rows())
            .map(|i| SnapshotRow {
                key: keys.value(i),
                hash: hashes[i],
                kildesystem: opt_str(&ks, i),
                skolenummer: school.as_ref().and_then(|s| opt_str(s, i)),
                parent: parent.as_ref().and_then(|p| opt_str(p, i)),
            })
            .collect();
        self.engine.apply(self.batches.len(), as_of, &rows, scope);
        self.batches.push(batch);
        Ok(std::mem::take(&mut self.engine.last_absent))
    }

    /// Decides what to write. Versions of ordinary sources are inserted. For rebuilt sources the
    /// new history is compared with the stored one: identical versions are kept as they are
    /// (with their transaction_time), changed ones replaced, vanished ones deleted.
    async fn reconcile(&mut self, session: &SessionContext) -> Result<()> {
        let mut stored: HashMap<(String, i64), StoredVersion> = HashMap::new();
        if !self.rebuilt.is_empty() && crate::delta::has_table(session, self.table.name) {
            let list = self
                .rebuilt
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {k} AS k, valid_from, valid_to, rad_hash FROM {t} WHERE kildesystem IN ({list})",
                k = self.table.key,
                t = self.table.name
            );
            for b in crate::delta::query(session, &sql).await? {
                let k = crate::delta::strings(&b, "k")?;
                let f = crate::delta::micros(&b, "valid_from")?;
                let to = crate::delta::micros(&b, "valid_to")?;
                let h = crate::delta::strings(&b, "rad_hash")?;
                for i in 0..b.num_rows() {
                    let v = StoredVersion {
                        key: k.value(i).to_string(),
                        valid_from: f.value(i),
                        valid_to: (!to.is_null(i)).then(|| to.value(i)),
                        hash: scd2::parse_hash(h.value(i)),
                    };
                    stored.insert((v.key.clone(), v.valid_from), v);
                }
            }
        }
        self.ops.clear();
        for (idx, ins) in self.engine.inserts.iter().enumerate() {
            if ins.removed {
                continue;
            }
            let rebuilt = ins
                .kildesystem
                .as_ref()
                .is_some_and(|k| self.rebuilt.contains(&**k));
            if !rebuilt {
                self.ops.push((idx, Op::Insert));
                continue;
            }
            match stored.remove(&(ins.key.to_string(), ins.valid_from)) {
                Some(v) if v.valid_to == ins.valid_to && v.hash == ins.hash => {}
                Some(_) => self.ops.push((idx, Op::Replace)),
                None => self.ops.push((idx, Op::Insert)),
            }
        }
        self.deletes = stored
            .into_values()
            .map(|v| (v.key, v.valid_from))
            .collect();
        Ok(())
    }

    fn has_changes(&self) -> bool {
        !self.engine.closes.is_empty() || !self.ops.is_empty() || !self.deletes.is_empty()
    }

    /// Number of versions this run closes (stored ones and new ones that end within the run).
    fn closed(&self) -> usize {
        self.engine.closes.len()
            + self
                .ops
                .iter()
                .filter(|(i, _)| self.engine.inserts[*i].valid_to.is_some())
                .count()
    }

    /// The MERGE source: `_op` is `close` (end a stored version), `insert`, `replace` or
    /// `delete`.
    fn merge_source(&self, transaction_time: i64) -> Result<Vec<RecordBatch>> {
        let t = self.table;
        let schema = Arc::new(arrow::datatypes::Schema::new(
            t.columns
                .iter()
                .map(|c| arrow::datatypes::Field::new(c.name, c.ty.arrow(), true))
                .chain([arrow::datatypes::Field::new(
                    "_op",
                    arrow::datatypes::DataType::Utf8,
                    false,
                )])
                .collect::<Vec<_>>(),
        ));
        let mut parts = Vec::new();
        // New versions, taken from the prepared batches.
        let mut by_batch: BTreeMap<usize, Vec<(&scd2::Insert, Op)>> = BTreeMap::new();
        for (idx, op) in &self.ops {
            let ins = &self.engine.inserts[*idx];
            by_batch.entry(ins.batch).or_default().push((ins, *op));
        }
        for (b, inserts) in by_batch {
            let idx: Vec<u32> = inserts.iter().map(|(i, _)| i.row as u32).collect();
            let rows = rows_of(&self.batches[b], &idx)?;
            let n = inserts.len();
            let mut cols: Vec<ArrayRef> = Vec::new();
            for c in t.columns {
                cols.push(match c.name {
                    schema::VALID_FROM => ts(inserts.iter().map(|(i, _)| Some(i.valid_from))),
                    schema::VALID_TO => ts(inserts.iter().map(|(i, _)| i.valid_to)),
                    schema::IS_CURRENT => Arc::new(BooleanArray::from(
                        inserts
                            .iter()
                            .map(|(i, _)| i.valid_to.is_none())
                            .collect::<Vec<_>>(),
                    )),
                    schema::TRANSACTION_TIME => ts((0..n).map(|_| Some(transaction_time))),
                    schema::ROW_HASH => {
                        let mut hashes = arrow::array::StringBuilder::with_capacity(n, n * 32);
                        for (i, _) in &inserts {
                            scd2::write_hex(&mut hashes, i.hash)
                                .map_err(|e| Error::Other(format!("internal: {e}")))?;
                            hashes.append_value("");
                        }
                        Arc::new(hashes.finish())
                    }
                    name => rows.column_by_name(name).cloned().ok_or_else(|| {
                        Error::Other(format!("internal: staged rows lack {name}"))
                    })?,
                });
            }
            cols.push(Arc::new(StringArray::from(
                inserts
                    .iter()
                    .map(|(_, op)| {
                        if *op == Op::Replace {
                            "replace"
                        } else {
                            "insert"
                        }
                    })
                    .collect::<Vec<_>>(),
            )));
            // Staged columns are nullable and may differ in type (e.g. from polars): cast.
            let cols = cols
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            parts.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        // Closes and deletes of stored versions: only key, valid_from (and valid_to) matter.
        let keyed: Vec<(&str, i64, Option<i64>, &str)> = self
            .engine
            .closes
            .iter()
            .map(|c| (&*c.key, c.valid_from, Some(c.valid_to), "close"))
            .chain(
                self.deletes
                    .iter()
                    .map(|(k, f)| (k.as_str(), *f, None, "delete")),
            )
            .collect();
        if !keyed.is_empty() {
            let n = keyed.len();
            let cols: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    name if name == t.key => Arc::new(StringArray::from(
                        keyed.iter().map(|c| c.0).collect::<Vec<_>>(),
                    )) as ArrayRef,
                    schema::VALID_FROM => ts(keyed.iter().map(|c| Some(c.1))),
                    schema::VALID_TO => ts(keyed.iter().map(|c| c.2)),
                    "_op" => Arc::new(StringArray::from(
                        keyed.iter().map(|c| c.3).collect::<Vec<_>>(),
                    )),
                    _ => arrow::array::new_null_array(f.data_type(), n),
                })
                .collect();
            parts.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        Ok(parts)
    }

    /// Checks the SCD2 invariants on what this run will write; a violation names the key and
    /// stops the run before anything is committed.
    fn check(&self) -> Result<()> {
        match self.engine.violation() {
            Some(v) => Err(Error::Other(format!(
                "SCD2 invariant broken in {}: {v}; nothing was committed",
                self.table.name
            ))),
            None => Ok(()),
        }
    }

    /// What to commit: the rows to append or the MERGE source. `None` when nothing changes.
    fn prepare(&self, ctx: &RunContext, transaction_time: i64) -> Result<Option<Commit>> {
        if !self.has_changes() || ctx.dry_run {
            return Ok(None);
        }
        let mut source = self.merge_source(transaction_time)?;
        // Only new versions (a first load, or new keys): nothing stored changes, so the rows are
        // appended.
        let append = self.engine.closes.is_empty()
            && self.deletes.is_empty()
            && self.ops.iter().all(|(_, op)| *op == Op::Insert);
        if append {
            for part in source.iter_mut() {
                part.remove_column(part.num_columns() - 1);
            }
        }
        // Stored versions are only closed (no rebuilt history to replace or delete): the files
        // with current rows are rewritten without a MERGE join.
        let close_only =
            self.deletes.is_empty() && self.ops.iter().all(|(_, op)| *op == Op::Insert);
        Ok(Some(Commit {
            table: self.table,
            source,
            append,
            close_only,
            read_version: self.read_version,
        }))
    }
}

/// One table's commit, prepared: it owns what it writes, so that tables commit at the same time.
struct Commit {
    table: &'static Table,
    source: Vec<RecordBatch>,
    append: bool,
    /// Whether stored versions are only closed, none replaced or deleted.
    close_only: bool,
    /// The table version the current rows were read from.
    read_version: u64,
}

impl Commit {
    async fn run(self, ctx: RunContext) -> Result<Option<i64>> {
        let t = self.table;
        if self.append {
            // On top of the version the current rows were read from, so that a run that
            // committed in between makes this one stop instead of adding its versions twice.
            let rows = crate::delta::row_count(&self.source);
            let version = crate::delta::write_claimed(
                &ctx.pipeline,
                t,
                self.source,
                self.read_version,
                &ctx.run_id,
                "publish",
            )
            .await
            .map_err(|e| match e {
                Error::Conflict(table) => Error::Other(format!(
                    "another run committed to `{table}` at the same time, so this run stopped before writing it; \
                     run again (it continues where the other left off)"
                )),
                e => e,
            })?;
            info!(table = t.name, inserted = rows, "appended new versions");
            return Ok(version);
        }
        if self.close_only {
            let changes = close_and_insert(t, &self.source)?;
            if let Some(v) = rewrite::commit(&ctx, t, self.read_version, changes).await? {
                return Ok(Some(v));
            }
        }
        let table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
        let df = SessionContext::new().read_batches(self.source)?;
        let predicate = format!("t.{k} = s.{k} AND t.valid_from = s.valid_from", k = t.key);
        let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
        let (table, metrics) = table
            .merge(df, predicate)
            .with_source_alias("s")
            .with_target_alias("t")
            .when_matched_update(|u| {
                u.predicate("s._op = 'close'")
                    .update("valid_to", "s.valid_to")
                    .update("is_current", "false")
            })?
            .when_matched_update(|mut u| {
                u = u.predicate("s._op = 'replace'");
                for c in &cols {
                    u = u.update(*c, format!("s.{c}"));
                }
                u
            })?
            .when_matched_delete(|d| d.predicate("s._op = 'delete'"))?
            .when_not_matched_insert(|mut i| {
                i = i.predicate("s._op = 'insert'");
                for c in &cols {
                    i = i.set(*c, format!("s.{c}"));
                }
                i
            })?
            .with_commit_properties(crate::delta::commit_props(&ctx.run_id, "publish"))
            .await
            .map_err(|e| concurrent_hint(t.name, e))?;
        info!(
            table = t.name,
            inserted = metrics.num_target_rows_inserted,
            updated = metrics.num_target_rows_updated,
            deleted = metrics.num_target_rows_deleted,
            files_added = metrics.num_target_files_added,
            ms = metrics.execution_time_ms,
            "merged"
        );
        Ok(table.version().map(|v| v as i64))
    }
}

/// The MERGE source as stored versions to close and new versions to insert.
fn close_and_insert(t: &Table, source: &[RecordBatch]) -> Result<rewrite::Changes> {
    let mut changes = rewrite::Changes {
        closes: Vec::new(),
        inserts: Vec::new(),
    };
    for part in source {
        let op = crate::delta::strings(part, "_op")?;
        if part.num_rows() > 0 && op.value(0) == "insert" {
            let mut part = part.clone();
            part.remove_column(part.num_columns() - 1);
            changes.inserts.push(part);
            continue;
        }
        let keys = crate::delta::strings(part, t.key)?;
        let from = crate::delta::micros(part, schema::VALID_FROM)?;
        let to = crate::delta::micros(part, schema::VALID_TO)?;
        for i in 0..part.num_rows() {
            if op.value(i) != "close" {
                return Err(Error::Other(format!(
                    "internal: `{}` in a close-only commit",
                    op.value(i)
                )));
            }
            changes
                .closes
                .push((keys.value(i).to_string(), from.value(i), to.value(i)));
        }
    }
    Ok(changes)
}

/// A commit conflict means another run wrote the same table at the same time.
fn concurrent_hint(table: &str, e: deltalake::DeltaTableError) -> Error {
    let text = e.to_string();
    if crate::delta::is_conflict(&e) {
        Error::Other(format!(
            "another run committed to `{table}` at the same time, so this run stopped before writing it; \
             run again (it continues where the other left off): {text}"
        ))
    } else {
        e.into()
    }
}

fn ts(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values.collect::<Vec<_>>()).with_timezone("UTC"))
}

/// Publishes the staged snapshots: `staged` from a standardize in the same run, or `None` to
/// read the staging tables (a separate `elevflyt publish`).
pub async fn run(ctx: &RunContext, staged: Option<StagedData>) -> Result<PublishOutcome> {
    let mut out = PublishOutcome::default();
    let mut steps = crate::run::Steps::new("publish");
    let done = crate::standardize::published(ctx).await?;
    let data = staged_data(ctx, staged).await?;
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
    steps.step("staged data");
    let staged_elev = StagedTable::new(&schema::ELEV, &data.elev)?;
    let staged_ef = StagedTable::new(&schema::ELEVFORHOLD, &data.elevforhold)?;
    let staged_skole = StagedTable::new(&schema::SKOLE, &data.skole)?;
    let staged = data.snapshots;
    let pending: Vec<SnapshotKey> = staged
        .iter()
        .filter(|k| !done.contains(*k))
        .cloned()
        .collect();
    steps.step("index staged rows");
    let rebuilt = rebuild_sources(ctx, &pending).await?;
    steps.step("rebuild check");
    // Snapshots to apply: the pending ones, and every staged one of a rebuilt source.
    let mut snapshots: Vec<SnapshotKey> = staged
        .into_iter()
        .filter(|k| !done.contains(k) || rebuilt.contains(&k.0))
        .collect();
    snapshots.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
    out.snapshots = pending.len();
    if pending.is_empty() {
        info!("no new snapshots to publish");
        // A run stopped between its merges and the county list: finish the list.
        if !ctx.dry_run && elevliste_stale(ctx).await? {
            let (rows, version) = write_elevliste(ctx).await?;
            out.elevliste_rows = rows;
            if let Some(v) = version {
                out.versions.insert("elevliste_vgs".into(), v);
            }
        }
        return Ok(out);
    }
    if !rebuilt.is_empty() {
        info!(sources = ?rebuilt, "rebuilding history from every snapshot, in as-of order");
    }

    // The versions read below are at least these: a commit on top of them conflicts with any
    // run that committed since.
    let mut read_versions = HashMap::new();
    for t in ["elev", "elevforhold", "skole"] {
        let v = crate::delta::try_open(&ctx.pipeline.table_url(t))
            .await?
            .and_then(|t| t.version())
            .unwrap_or(0);
        read_versions.insert(t, v);
    }
    let session = crate::delta::session(
        &ctx.pipeline,
        &["elev", "elevforhold", "skole", "elevliste_vgs", "elev_id"],
    )
    .await?;
    steps.step("read versions and session");
    let mut elev = TableRun::new(&schema::ELEV, &rebuilt);
    let mut ef = TableRun::new(&schema::ELEVFORHOLD, &rebuilt);
    let mut skole = TableRun::new(&schema::SKOLE, &rebuilt);
    for run in [&mut elev, &mut ef, &mut skole] {
        run.read_version = read_versions[run.table.name];
    }
    // The identity map and the current elevforhold are loaded on other tasks (other cores)
    // while the current elev rows load here.
    let identity_task = tokio::spawn({
        let (pipeline, session) = (ctx.pipeline.clone(), session.clone());
        async move { Identity::load(&pipeline, &session).await }
    });
    let ef_task = tokio::spawn({
        let (session, rebuilt) = (session.clone(), rebuilt.clone());
        let mut engine = std::mem::take(&mut ef.engine);
        async move {
            load_current(&session, &schema::ELEVFORHOLD, &mut engine, &rebuilt)
                .await
                .map(|()| engine)
        }
    });
    let loaded = async {
        load_current(&session, &schema::ELEV, &mut elev.engine, &rebuilt).await?;
        load_current(&session, &schema::SKOLE, &mut skole.engine, &rebuilt).await?;
        // Without rebuilt sources, the current rows just loaded are all of them.
        if rebuilt.is_empty() {
            Ok(elev.engine.state.len())
        } else {
            current_count(&session, "elev").await
        }
    }
    .await;
    // Every task is awaited before an error is returned.
    let identity = joined(identity_task, "loading the identity map").await;
    let ef_engine = joined(ef_task, "loading elevforhold").await;
    let stored_current = loaded?;
    let mut identity = identity?;
    ef.engine = ef_engine?;
    let kommune = ctx.pipeline.kommunenummer().to_string();
    steps.step("load identity and current rows");

    for key in &snapshots {
        let (kildesystem, omfang, as_of) = key;
        let scope = || match omfang {
            Some(s) => Scope::School(kildesystem, s),
            None => Scope::Source(kildesystem),
        };
        let b = staged_skole.snapshot(key)?;
        skole.apply(
            b,
            *as_of,
            if omfang.is_some() {
                Scope::None
            } else {
                scope()
            },
        )?;

        // elev: resolve ids
        let staged = staged_elev.snapshot(key)?;
        let sys = crate::delta::strings(&staged, "system_id")?;
        let fnr = crate::delta::strings(&staged, "fodselsnummer")?;
        let src = crate::delta::strings(&staged, "stg_kilde_nokkel")?;
        let n = staged.num_rows();
        let mut pupil_of_source_key: rustc_hash::FxHashMap<&str, u32> =
            rustc_hash::FxHashMap::default();
        pupil_of_source_key.reserve(n);
        let mut ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
        // The ids of pupils not met before: on a first load (every pupil is new) hashed
        // beforehand on every core, otherwise only for the few that are new.
        let mut new_ids: Option<Vec<Option<Arc<str>>>> = identity.is_empty().then(|| {
            crate::par::chunks(n, |rows| {
                rows.map(|i| {
                    Some(Identity::new_id(
                        &kommune,
                        kildesystem,
                        opt_str(&src, i).unwrap_or_default(),
                    ))
                })
                .collect()
            })
        });
        for i in 0..n {
            let source_key = opt_str(&src, i).unwrap_or_default();
            let pupil = identity.resolve(
                kildesystem,
                opt_str(&sys, i),
                opt_str(&fnr, i),
                || {
                    new_ids
                        .as_mut()
                        .and_then(|ids| ids[i].take())
                        .unwrap_or_else(|| Identity::new_id(&kommune, kildesystem, source_key))
                },
                *as_of,
            );
            ids.append_value(identity.id(pupil));
            pupil_of_source_key.insert(source_key, pupil);
        }
        let b = replace_column(&staged, "id", Arc::new(ids.finish()))?;
        steps.step("elev ids");
        // elev versions on one core, elevforhold ids and versions on the other (they need the
        // pupils' ids, not their versions). Per-school lists do not cover a pupil's other
        // schools: pupils are closed below, when they have no open elevforhold left.
        let elev_scope = if omfang.is_some() {
            Scope::None
        } else {
            scope()
        };
        let ef_batch = staged_ef.snapshot(key)?;
        let (elev_done, ef_done) = crate::par::both(
            || elev.apply(b, *as_of, elev_scope),
            || {
                let identity = &identity;
                let elev_of = |k: &str| pupil_of_source_key.get(k).map(|&n| identity.id(n));
                let b = elevforhold_ids(&ef_batch, kildesystem, elev_of)?;
                ef.apply(b, *as_of, scope())
            },
        );
        elev_done?;
        let closed_ef = ef_done?;
        if omfang.is_some() {
            // A pupil who left this school and has no other open elevforhold in this source
            // has left the source.
            let open: HashSet<&str> = ef
                .engine
                .state
                .values()
                .filter(|c| c.kildesystem.as_deref() == Some(kildesystem.as_str()))
                .filter_map(|c| c.parent.as_deref())
                .collect();
            let leaving: Vec<String> = closed_ef
                .iter()
                .filter_map(|k| ef_parent(&ef, k))
                .filter(|p| !open.contains(p.as_str()))
                .collect();
            for p in leaving {
                elev.engine.close_key(&p, *as_of);
            }
        }
    }

    steps.step("elev and elevforhold versions");
    // Invariants first, for every table: a violation stops the run before any commit.
    // elevforhold (its own and that every row points to a known pupil) beside the others.
    let (others, ef_checked) = crate::par::both(
        || skole.check().and_then(|()| elev.check()),
        || -> Result<()> {
            ef.check()?;
            let parents = ef
                .batches
                .iter()
                .map(|b| crate::delta::strings(b, "elev_id"))
                .collect::<Result<Vec<_>>>()?;
            match ef
                .engine
                .live_inserts()
                .find(|i| !identity.knows(parents[i.batch].value(i.row)))
            {
                Some(orphan) => Err(Error::Other(format!(
                    "SCD2 invariant broken in elevforhold: key {} points to no elev; nothing was committed",
                    orphan.key
                ))),
                None => Ok(()),
            }
        },
    );
    others?;
    ef_checked?;
    for run in [&mut skole, &mut elev, &mut ef] {
        run.reconcile(&session).await?;
    }

    steps.step("check and reconcile");
    // Row-count change of current pupils against what is stored: a sudden drop is more often a
    // broken export than pupils leaving.
    let before = stored_current;
    let after = elev.engine.state.len();
    if before > 0 {
        let change = after as f64 / before as f64 - 1.0;
        let limit = checker_threshold(ctx, rules::RADENDRING);
        let sev = checker_severity(ctx, rules::RADENDRING);
        let alarm = change.abs() > limit;
        out.metrics.push(Metric {
            tabell: "elev".into(),
            regel_eller_metrikk: rules::RADENDRING.into(),
            kolonne: Some(format!("{before} → {after}")),
            verdi: Some(change),
            bestatt: Some(!alarm as i64),
            feila: Some(alarm as i64),
            status: if alarm {
                sev.as_str().into()
            } else {
                "ok".into()
            },
        });
        if alarm {
            tracing::warn!(
                before,
                after,
                change = format!("{:+.1} %", change * 100.0),
                "the number of current pupils changed more than the threshold"
            );
            if sev == crate::quality::Severity::Fail {
                return Err(Error::RuleFailed(format!(
                    "fail-regel broten: {} (gjeldande elevar {before} → {after}, {:+.1} %, terskel {:.0} %); ingen datatabell er endra",
                    rules::RADENDRING, change * 100.0, limit * 100.0
                )));
            }
        }
    }
    let transaction_time = chrono::Utc::now().timestamp_micros();
    let mut changed = false;
    // skole first; then elev and elevforhold at the same time (separate tables, and a publish
    // interrupted between them is finished by the next run either way).
    let skole_version = match skole.prepare(ctx, transaction_time)? {
        Some(c) => c.run(ctx.clone()).await?,
        None => None,
    };
    steps.step("skole");
    crate::run::crash_point("after-merge-skole");
    let (elev_version, ef_version) = {
        let (elev_commit, ef_commit) = crate::par::both(
            || elev.prepare(ctx, transaction_time),
            || ef.prepare(ctx, transaction_time),
        );
        let (elev_commit, ef_commit) = (elev_commit?, ef_commit?);
        steps.step("prepare elev and elevforhold");
        let elev_task = elev_commit.map(|c| tokio::spawn(c.run(ctx.clone())));
        let ef_version = match ef_commit {
            Some(c) => c.run(ctx.clone()).await,
            None => Ok(None),
        };
        // Both are awaited before an error is returned: nothing is left writing.
        let elev_version = match elev_task {
            Some(task) => joined(task, "elev commit").await,
            None => Ok(None),
        };
        (elev_version?, ef_version?)
    };
    steps.step("elev and elevforhold");
    for (run, version) in [
        (&skole, skole_version),
        (&elev, elev_version),
        (&ef, ef_version),
    ] {
        out.inserted.insert(run.table.name, run.ops.len());
        out.closed.insert(run.table.name, run.closed());
        if let Some(v) = version {
            out.versions.insert(run.table.name.to_string(), v);
            changed = true;
        }
        if run.table.name != "skole" {
            crate::run::crash_point(&format!("after-merge-{}", run.table.name));
        }
    }
    // Committed: the staged rows are no longer needed. They are a few large Arrow buffers,
    // cheap to free (unlike the engines' and the identity map's millions of small ones, left
    // to the end), and `elev_id` and the county list reuse the memory.
    for run in [&mut elev, &mut ef, &mut skole] {
        run.batches = Vec::new();
    }
    drop((staged_elev, staged_ef, staged_skole));
    drop((data.elev, data.elevforhold, data.skole));
    if ctx.dry_run {
        return Ok(out);
    }
    // The table metrics only read what is committed: computed meanwhile, on the other core.
    let metrics = tokio::spawn({
        let ctx = ctx.clone();
        async move { publish_metrics(&ctx).await }
    });
    if let Some(v) = identity.write(ctx).await? {
        out.versions.insert("elev_id".into(), v);
    }
    steps.step("elev_id");
    crate::run::crash_point("after-elev-id");
    write_leveranse(ctx, &pending).await?;
    steps.step("leveranse");
    crate::run::crash_point("after-leveranse");
    if changed || elevliste_stale(ctx).await? {
        let (rows, version) = write_elevliste(ctx).await?;
        out.elevliste_rows = rows;
        if let Some(v) = version {
            out.versions.insert("elevliste_vgs".into(), v);
        }
    }
    steps.step("elevliste_vgs");
    crate::run::crash_point("after-elevliste");
    out.metrics.extend(joined(metrics, "table metrics").await?);
    steps.step("metrics");
    // Millions of small allocations: freed on another thread while the run finishes.
    crate::par::drop_aside((identity, [elev, ef, skole]));
    Ok(out)
}

/// A snapshot's elevforhold rows whose pupil is known, with the pupil's id (`elev_id`, from the
/// source key) and their own (UUID v5 of kildesystem, elev_id and skolenummer, hashed on every
/// core).
fn elevforhold_ids<'i>(
    b: &RecordBatch,
    kildesystem: &str,
    elev_of: impl Fn(&str) -> Option<&'i str> + Sync,
) -> Result<RecordBatch> {
    let src = crate::delta::strings(b, "stg_kilde_nokkel")?;
    let skolenr = crate::delta::strings(b, "skolenummer")?;
    let found: Vec<(u32, &'i str, Uuid)> = crate::par::chunks(b.num_rows(), |rows| {
        let mut name = String::new();
        rows.filter_map(|i| {
            let elev_id = opt_str(&src, i).and_then(&elev_of)?;
            name.clear();
            {
                use std::fmt::Write;
                let _ = write!(
                    name,
                    "elevforhold|{kildesystem}|{elev_id}|{}",
                    skolenr.value(i)
                );
            }
            Some((i as u32, elev_id, Uuid::new_v5(&NAMESPACE, name.as_bytes())))
        })
        .collect()
    });
    let n = found.len();
    let keep: Vec<u32> = found.iter().map(|f| f.0).collect();
    let mut elev_ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
    let mut ef_ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
    let mut buf = Uuid::encode_buffer();
    for (_, elev_id, id) in &found {
        elev_ids.append_value(elev_id);
        ef_ids.append_value(id.hyphenated().encode_lower(&mut buf));
    }
    let b = rows_of(b, &keep)?;
    let b = replace_column(&b, "elev_id", Arc::new(elev_ids.finish()))?;
    replace_column(&b, "id", Arc::new(ef_ids.finish()))
}

/// The elev of a closed elevforhold: the engine removed it from the state, so look in the
/// closes (stored rows) — their parent is read back from the batches or the stored state.
fn ef_parent(ef: &TableRun, key: &str) -> Option<String> {
    ef.engine.parents_of_closed.get(key).map(|p| p.to_string())
}

async fn write_leveranse(ctx: &RunContext, snapshots: &[SnapshotKey]) -> Result<()> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let t = &schema::LEVERANSE;
    let now = chrono::Utc::now().timestamp_micros();
    let batch = RecordBatch::try_new(
        t.arrow_schema(),
        vec![
            Arc::new(StringArray::from(
                snapshots.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                snapshots.iter().map(|s| s.1.as_deref()).collect::<Vec<_>>(),
            )),
            ts(snapshots.iter().map(|s| Some(s.2))),
            Arc::new(StringArray::from(vec![
                ctx.run_id.as_str();
                snapshots.len()
            ])),
            ts(snapshots.iter().map(|_| Some(now))),
        ],
    )?;
    crate::delta::write(
        &ctx.pipeline,
        t,
        vec![batch],
        SaveMode::Append,
        &ctx.run_id,
        "publish",
    )
    .await?;
    Ok(())
}

/// Whether `elevliste_vgs` is missing or older than the newest commit of the tables it is made of.
async fn elevliste_stale(ctx: &RunContext) -> Result<bool> {
    let mut newest_source = None;
    for t in ["elev", "elevforhold", "skole"] {
        if let Some(table) = crate::delta::try_open(&ctx.pipeline.table_url(t)).await? {
            newest_source = newest_source.max(last_commit_time(&table));
        }
    }
    let Some(newest_source) = newest_source else {
        return Ok(false);
    };
    Ok(
        match crate::delta::try_open(&ctx.pipeline.table_url("elevliste_vgs")).await? {
            None => true,
            // Version 0 is the empty table a killed run created before writing the list.
            Some(list) => {
                list.version() == Some(0)
                    || last_commit_time(&list).is_none_or(|t| t < newest_source)
            }
        },
    )
}

fn last_commit_time(t: &deltalake::DeltaTable) -> Option<i64> {
    let v = t.version()?;
    t.snapshot().ok()?.version_timestamp(v)
}

/// Current 10th graders, from the current rows of the three SCD2 tables.
pub const ELEVLISTE_SQL: &str = "SELECT \
    COALESCE(s.fylkesnummer, substr(ef.skolenummer, 1, 2)) AS fylkesnummer, \
    COALESCE(s.kommunenummer, e.kommunenummer) AS kommunenummer, \
    ef.skolenummer, ef.klasse, e.fodselsnummer, \
    concat_ws(' ', e.fornavn, e.mellomnavn, e.etternavn) AS elev_namn \
    FROM elevforhold ef \
    JOIN elev e ON e.id = ef.elev_id AND e.is_current \
    LEFT JOIN skole s ON s.skolenummer = ef.skolenummer AND s.is_current \
    WHERE ef.is_current AND ef.trinn = 10 \
    ORDER BY ef.skolenummer, ef.klasse, e.etternavn, e.fornavn";

async fn write_elevliste(ctx: &RunContext) -> Result<(usize, Option<i64>)> {
    let session = crate::delta::session(&ctx.pipeline, &["elev", "elevforhold", "skole"]).await?;
    if !crate::delta::has_table(&session, "elev")
        || !crate::delta::has_table(&session, "elevforhold")
    {
        return Ok((0, None));
    }
    let sql = if crate::delta::has_table(&session, "skole") {
        ELEVLISTE_SQL.to_string()
    } else {
        ELEVLISTE_SQL.replace("LEFT JOIN skole s ON s.skolenummer = ef.skolenummer AND s.is_current", "LEFT JOIN (SELECT NULL AS skolenummer, NULL AS fylkesnummer, NULL AS kommunenummer) s ON false")
    };
    let batches = crate::delta::query(&session, &sql).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let t = &schema::ELEVLISTE_VGS;
    let schema = t.arrow_schema();
    let mut out = Vec::new();
    for b in &batches {
        let mut cols: Vec<ArrayRef> = Vec::new();
        for f in schema.fields() {
            cols.push(match f.name().as_str() {
                "lastet_tid" => ts((0..b.num_rows()).map(|_| Some(now))),
                name => Arc::new(crate::delta::strings(b, name)?),
            });
        }
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    let rows = crate::delta::row_count(&out);
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema.clone()));
    }
    let v = crate::delta::write(
        &ctx.pipeline,
        t,
        out,
        SaveMode::Overwrite,
        &ctx.run_id,
        "publish",
    )
    .await?;
    Ok((rows, v))
}

/// Metrics over the published current state: rows per table, pupils per class and trinn.
fn checker_threshold(ctx: &RunContext, rule: &str) -> f64 {
    ctx.pipeline
        .file
        .quality
        .threshold_override(rule)
        .or(rules::find(rule).and_then(|r| r.threshold))
        .unwrap_or(0.0)
}

fn checker_severity(ctx: &RunContext, rule: &str) -> crate::quality::Severity {
    ctx.pipeline
        .file
        .quality
        .severity_override(rule)
        .or(rules::find(rule).map(|r| r.default))
        .unwrap_or(crate::quality::Severity::Warn)
}

async fn current_count(session: &SessionContext, table: &str) -> Result<usize> {
    if !crate::delta::has_table(session, table) {
        return Ok(0);
    }
    let b = crate::delta::query(
        session,
        &format!("SELECT count(*) AS n FROM {table} WHERE is_current"),
    )
    .await?;
    let n = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64)?;
    Ok(n.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .map(|a| a.value(0) as usize)
        .unwrap_or(0))
}

async fn publish_metrics(ctx: &RunContext) -> Result<Vec<Metric>> {
    let session = crate::delta::session(&ctx.pipeline, &["elev", "elevforhold", "skole"]).await?;
    let mut m = Vec::new();
    for t in ["elev", "elevforhold", "skole"] {
        if !crate::delta::has_table(&session, t) {
            continue;
        }
        let b = crate::delta::query(
            &session,
            &format!(
                "SELECT count(*) AS n, sum(CASE WHEN is_current THEN 1 ELSE 0 END) AS c FROM {t}"
            ),
        )
        .await?;
        if let Some(b) = b.first() {
            let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Float64)?;
            let c = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Float64)?;
            let n = n
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .map(|a| a.value(0))
                .unwrap_or(0.0);
            let c = c
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .map(|a| if a.is_null(0) { 0.0 } else { a.value(0) })
                .unwrap_or(0.0);
            m.push(Metric::value(t, "rader_totalt", None, n));
            m.push(Metric::value(t, "rader_gjeldande", None, c));
            let key = if t == "skole" { "skolenummer" } else { "id" };
            let dup = crate::delta::query(
                &session,
                &format!("SELECT count(*) - count(DISTINCT {key}) AS d FROM {t} WHERE is_current"),
            )
            .await?;
            let d = arrow::compute::cast(dup[0].column(0), &arrow::datatypes::DataType::Int64)?;
            let d = d
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
                .unwrap_or(0);
            m.push(Metric {
                tabell: t.into(),
                regel_eller_metrikk: "unik_nokkel".into(),
                kolonne: Some(key.into()),
                verdi: Some(if c > 0.0 { (c - d as f64) / c } else { 1.0 }),
                bestatt: Some(c as i64 - d),
                feila: Some(d),
                status: if d == 0 { "ok".into() } else { "fail".into() },
            });
        }
    }
    // Freshness: age of the newest published snapshot per source.
    let lev = crate::delta::session(&ctx.pipeline, &["leveranse"]).await?;
    if crate::delta::has_table(&lev, "leveranse") {
        for b in crate::delta::query(
            &lev,
            "SELECT kildesystem, max(as_of) AS t FROM leveranse GROUP BY kildesystem",
        )
        .await?
        {
            let k = crate::delta::strings(&b, "kildesystem")?;
            let t = crate::delta::micros(&b, "t")?;
            for i in 0..b.num_rows() {
                let days = (ctx.started.timestamp_micros() - t.value(i)) as f64 / 86_400e6;
                m.push(Metric::value(
                    "leveranse",
                    "ferskleik_dagar",
                    Some(k.value(i).to_string()),
                    days,
                ));
            }
        }
    }
    if crate::delta::has_table(&session, "elevforhold") {
        let batches = crate::delta::query(
            &session,
            "SELECT skolenummer, klasse, trinn FROM elevforhold WHERE is_current",
        )
        .await?;
        let mut s = Vec::new();
        let mut k = Vec::new();
        let mut tr = Vec::new();
        for b in &batches {
            let sk = crate::delta::strings(b, "skolenummer")?;
            let kl = crate::delta::strings(b, "klasse")?;
            let t = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Int32)?;
            let t = t
                .as_any()
                .downcast_ref::<arrow::array::Int32Array>()
                .cloned()
                .unwrap_or_else(|| arrow::array::Int32Array::new_null(b.num_rows()));
            for i in 0..b.num_rows() {
                s.push(opt(&sk, i));
                k.push(opt(&kl, i));
                tr.push((!t.is_null(i)).then(|| t.value(i)));
            }
        }
        use polars::prelude::{Column, DataFrame};
        let df = DataFrame::new_infer_height(vec![
            Column::new("skolenummer".into(), s),
            Column::new("klasse".into(), k),
            Column::new("trinn".into(), tr),
        ])?;
        m.extend(crate::metrics::pupils_per_class(&df)?);
    }
    Ok(m)
}
