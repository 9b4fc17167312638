//! Operating the tables: history, Change Data Feed, invariant checks, maintenance (optimize,
//! vacuum, checkpoint) and time travel. Not here: writing data (the stages).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use deltalake::datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::config::Pipeline;
use crate::error::{Error, Result};

/// Every table name a pipeline can have, for registering in SQL sessions.
pub fn table_names(p: &Pipeline) -> Vec<String> {
    let mut names: Vec<String> = crate::schema::PUBLISHED
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    names.extend(p.file.sources.iter().map(|s| format!("raw_{}", s.name)));
    names.push(crate::schema::LEVERANSE.name.into());
    names
}

async fn open_existing(p: &Pipeline, table: &str) -> Result<deltalake::DeltaTable> {
    crate::delta::try_open(&p.table_url(table))
        .await?
        .ok_or_else(|| {
            Error::Usage(format!(
                "table `{table}` does not exist (yet) in {}",
                p.table_url(table)
            ))
        })
}

/// A session with every table of the pipeline as of a Delta version or a commit time
/// (transaction time). With a version, tables that do not have it are left out; with a time,
/// tables created later are left out.
pub async fn session_at(
    p: &Pipeline,
    version: Option<i64>,
    timestamp: Option<DateTime<Utc>>,
) -> Result<SessionContext> {
    let names = table_names(p);
    if version.is_none() && timestamp.is_none() {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        return crate::delta::session(p, &refs).await;
    }
    let ctx = SessionContext::new();
    crate::sqlfn::register(&ctx);
    for name in &names {
        let url = p.table_url(name);
        if !crate::delta::exists(&url).await? {
            continue;
        }
        match crate::delta::open_at(&url, version, timestamp).await {
            // Before its first commit a table did not exist.
            Ok(t) if timestamp.is_some_and(|ts| commit_time(&t).is_some_and(|c| c > ts)) => {}
            Ok(t) => crate::delta::register(&ctx, name, &t).await?,
            Err(e) => {
                tracing::debug!(table = %name, error = %e, "not registered at that version/time")
            }
        }
    }
    Ok(ctx)
}

/// Commit time of the loaded version of a table.
fn commit_time(t: &deltalake::DeltaTable) -> Option<DateTime<Utc>> {
    let v = t.version()?;
    let ts = t.snapshot().ok()?.version_timestamp(v)?;
    DateTime::from_timestamp_millis(ts)
}

/// One row per Delta version, newest first: time, operation, run id and metrics.
pub async fn history(p: &Pipeline, table: &str) -> Result<Vec<RecordBatch>> {
    let t = open_existing(p, table).await?;
    let latest = t.version().unwrap_or(0) as i64;
    let infos: Vec<_> = t.history(None).try_collect().await?;
    let mut version = Vec::new();
    let mut time = Vec::new();
    let mut op = Vec::new();
    let mut run = Vec::new();
    let mut stage = Vec::new();
    let mut metrics = Vec::new();
    for (i, c) in infos.iter().enumerate() {
        version.push(
            c.read_version
                .map(|v| v as i64 + 1)
                .unwrap_or(latest - i as i64),
        );
        time.push(
            c.timestamp
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        op.push(c.operation.clone());
        let info = |k: &str| c.info.get(k).and_then(|v| v.as_str()).map(str::to_string);
        run.push(info("elevflyt_run_id"));
        stage.push(info("elevflyt_stage"));
        metrics.push(c.info.get("operationMetrics").map(|m| m.to_string()));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("timestamp", DataType::Utf8, true),
        Field::new("operation", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("stage", DataType::Utf8, true),
        Field::new("operation_metrics", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(version)),
        Arc::new(StringArray::from(time)),
        Arc::new(StringArray::from(op)),
        Arc::new(StringArray::from(run)),
        Arc::new(StringArray::from(stage)),
        Arc::new(StringArray::from(metrics)),
    ];
    Ok(vec![RecordBatch::try_new(schema, cols)?])
}

/// The Change Data Feed between two versions (inclusive): every column plus `_change_type`
/// (insert, update_preimage, update_postimage, delete), `_commit_version`, `_commit_timestamp`.
pub async fn changes(
    p: &Pipeline,
    table: &str,
    from: i64,
    to: Option<i64>,
) -> Result<Vec<RecordBatch>> {
    let t = open_existing(p, table).await?;
    if from < 0 || to.is_some_and(|to| to < from) {
        return Err(Error::Usage(format!(
            "--from {from} --to {to:?}: not a range of versions"
        )));
    }
    let mut cdf = t.clone().scan_cdf().with_starting_version(from as u64);
    if let Some(to) = to {
        cdf = cdf.with_ending_version(to as u64);
    }
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    let plan = cdf.build(&ctx.state(), None).await?;
    let batches = deltalake::datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
    // Sorted for reading: by version, then change type, then the row.
    let tmp = SessionContext::new();
    if batches.is_empty() {
        return Ok(batches);
    }
    tmp.register_batch(
        "cdf",
        arrow::compute::concat_batches(&batches[0].schema(), &batches)?,
    )?;
    crate::delta::query(
        &tmp,
        "SELECT * FROM cdf ORDER BY _commit_version, _change_type",
    )
    .await
}

/// A violated invariant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    pub table: String,
    pub invariant: String,
    pub key: String,
}

/// Checks the SCD2 invariants over the stored tables (docs/ARCHITECTURE.md, "History (SCD2)"): at most one current row per
/// key, no overlapping intervals, valid_from < valid_to, is_current = (valid_to IS NULL), and
/// every elevforhold points to an elev.
pub async fn check(p: &Pipeline) -> Result<Vec<Violation>> {
    check_session(&crate::delta::session(p, &crate::schema::SCD2_NAMES).await?).await
}

pub async fn check_session(ctx: &SessionContext) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    for table in crate::schema::SCD2_TABLES {
        let (t, k) = (table.name, table.scd2_key()?);
        if !crate::delta::has_table(ctx, t) {
            continue;
        }
        let checks = [
            ("at most one current row per key",
             format!("SELECT {k} AS k FROM {t} WHERE is_current GROUP BY {k} HAVING count(*) > 1")),
            ("valid_from < valid_to",
             format!("SELECT {k} AS k FROM {t} WHERE valid_to IS NOT NULL AND valid_to <= valid_from")),
            ("is_current = (valid_to IS NULL)",
             format!("SELECT {k} AS k FROM {t} WHERE is_current <> (valid_to IS NULL)")),
            ("intervals do not overlap",
             format!("SELECT DISTINCT a.{k} AS k FROM {t} a JOIN {t} b ON a.{k} = b.{k} \
                      AND a.valid_from < b.valid_from AND (a.valid_to IS NULL OR a.valid_to > b.valid_from)")),
            ("one version per key and valid_from",
             format!("SELECT {k} AS k FROM {t} GROUP BY {k}, valid_from HAVING count(*) > 1")),
        ];
        for (name, sql) in checks {
            for b in crate::delta::query(ctx, &format!("{sql} LIMIT 100")).await? {
                let keys = crate::delta::strings(&b, "k")?;
                out.extend(keys.iter().flatten().map(|key| Violation {
                    table: t.into(),
                    invariant: name.into(),
                    key: key.into(),
                }));
            }
        }
    }
    if crate::delta::has_table(ctx, "elevforhold") && crate::delta::has_table(ctx, "elev") {
        let sql = "SELECT DISTINCT ef.id AS k FROM elevforhold ef LEFT JOIN (SELECT DISTINCT id FROM elev) e \
                   ON e.id = ef.elev_id WHERE e.id IS NULL LIMIT 100";
        for b in crate::delta::query(ctx, sql).await? {
            out.extend(
                crate::delta::strings(&b, "k")?
                    .iter()
                    .flatten()
                    .map(|key| Violation {
                        table: "elevforhold".into(),
                        invariant: "elev_id points to an elev".into(),
                        key: key.into(),
                    }),
            );
        }
    }
    Ok(out)
}

/// What maintenance did to one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Maintained {
    pub table: String,
    pub files_compacted: u64,
    pub files_written: u64,
    pub files_vacuumed: usize,
    pub version: i64,
}

/// How `maintain` compacts a table whose files keep two kinds of rows apart, which a plain
/// OPTIMIZE would bin-pack together (docs/ARCHITECTURE.md, "Stages and the data between them"
/// and "Commit strategies"): a raw table's file markers apart from its records, an SCD2 table's
/// current rows apart from its closed versions.
struct Apart {
    /// The kind of rows a file holds by its statistics: `Some(true)` the first only,
    /// `Some(false)` the second only, `None` both or not known.
    file: fn(&serde_json::Value) -> Option<bool>,
    /// Which rows of a batch are of the first kind.
    rows: fn(&RecordBatch) -> Result<arrow::array::BooleanArray>,
    /// Whether the files of each kind are compacted (a kind that is not is left file by file).
    compact: [bool; 2],
}

/// A raw table: the files of markers (one per ingest) into one; the files of records, one per
/// ingest and as large as the export, as they are.
const RAW: Apart = Apart {
    file: |stats| {
        use crate::formats::FILE_MARKER;
        let bound = |which: &str| stats[which]["entitet"].as_str();
        match (bound("minValues")?, bound("maxValues")?) {
            (FILE_MARKER, FILE_MARKER) => Some(true),
            (min, max) if min > FILE_MARKER || max < FILE_MARKER => Some(false),
            _ => None,
        }
    },
    rows: |b| {
        let entitet = crate::delta::text(b, "entitet")?;
        Ok((0..b.num_rows())
            .map(|i| Some(entitet.opt(i) == Some(crate::formats::FILE_MARKER)))
            .collect())
    },
    compact: [true, false],
};

/// An SCD2 table: the files of closed versions (one a day) compacted; the files of current
/// rows, which every run rewrites on all cores, as they are.
const SCD2: Apart = Apart {
    file: |stats| {
        let open = stats["nullCount"][crate::schema::VALID_TO].as_i64()?;
        match (open, stats["numRecords"].as_i64()?) {
            (0, _) => Some(false),
            (open, rows) if open == rows => Some(true),
            _ => None,
        }
    },
    rows: |b| {
        let valid_to = (b.column_by_name(crate::schema::VALID_TO))
            .ok_or_else(|| Error::Internal("valid_to is missing".into()))?;
        Ok(arrow::compute::is_null(valid_to)?)
    },
    compact: [false, true],
};

/// Input files of one compacted file, at most this many bytes together.
const COMPACT_BYTES: u64 = 128 << 20;

/// Files read into one new file, each whole or only its rows of one kind.
struct Job {
    files: Vec<deltalake::kernel::LogicalFileView>,
    only: Option<bool>,
}

/// Compacts a table the way it is laid out (`Apart`): the files of a compacted kind bin-packed
/// into files of up to 128 MB, and a file holding both kinds (left by a plain OPTIMIZE, or an
/// earlier `elevflyt maintain`) split in two; with `small`, only the files below that size. One
/// commit that changes no data (an OPTIMIZE); returns the table, files removed and files written.
async fn compact_apart(
    table: deltalake::DeltaTable,
    t: &crate::schema::Table,
    apart: &Apart,
    small: Option<u64>,
    by: By<'_>,
) -> Result<(deltalake::DeltaTable, u64, u64)> {
    use deltalake::kernel::Action;
    let mut of_kind: [Vec<_>; 2] = Default::default();
    let mut mixed = Vec::new();
    let files = crate::delta::file_views(&table).await?;
    let wanted =
        |f: &deltalake::kernel::LogicalFileView| small.is_none_or(|s| (f.size() as u64) < s);
    for f in files.into_iter().filter(wanted) {
        let stats = f.stats().and_then(|s| serde_json::from_str(&s).ok());
        match stats.as_ref().and_then(apart.file) {
            Some(first) => of_kind[usize::from(!first)].push(f),
            None => mixed.push(f),
        }
    }
    let mut jobs = Vec::new();
    for (kind, files) in of_kind.into_iter().enumerate() {
        if apart.compact[kind] {
            jobs.extend(
                bins(files)
                    .into_iter()
                    .map(|files| Job { files, only: None }),
            );
        }
        if !mixed.is_empty() {
            let only = Some(kind == 0);
            jobs.push(Job {
                files: mixed.clone(),
                only,
            });
        }
    }
    if jobs.is_empty() {
        return Ok((table, 0, 0));
    }
    let mut removes = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        if job.only != Some(false) {
            removes.extend(
                job.files
                    .iter()
                    .map(|f| Action::Remove(f.remove_action(false))),
            );
        }
        let writer = crate::delta::file_writer(&table, t)?;
        let (store, schema, rows) = (table.object_store(), t.arrow_schema(), apart.rows);
        tasks.spawn(async move { write_job(job, store, schema, rows, writer).await });
    }
    let mut adds = Vec::new();
    let mut failed = None;
    while let Some(done) = tasks.join_next().await {
        match done.map_err(|e| Error::Internal(format!("compacting {}: {e}", t.name))) {
            Ok(Ok(written)) => adds.extend(written),
            Ok(Err(e)) | Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let (removed, written) = (removes.len() as u64, adds.len() as u64);
    // Rows moved, none added or removed: neither a reader of changes nor the state file's
    // check (`delta::data_unchanged_since`) sees a change.
    let mut actions = removes;
    actions.extend(adds.into_iter().map(|add| {
        Action::Add(deltalake::kernel::Add {
            data_change: false,
            ..add
        })
    }));
    let operation = deltalake::protocol::DeltaOperation::Optimize {
        predicate: None,
        target_size: COMPACT_BYTES as i64,
    };
    let props = crate::delta::commit_props(by.0, by.1);
    deltalake::kernel::transaction::CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    let mut table = table;
    table.load().await?;
    Ok((table, removed, written))
}

/// Files in groups of at most `COMPACT_BYTES` together, in their order; only groups of two or
/// more (a file alone is left as it is).
fn bins(
    files: Vec<deltalake::kernel::LogicalFileView>,
) -> Vec<Vec<deltalake::kernel::LogicalFileView>> {
    let mut bins: Vec<(u64, Vec<_>)> = Vec::new();
    for f in files {
        let size = f.size().max(0) as u64;
        match bins.last_mut() {
            Some((bytes, bin)) if *bytes + size <= COMPACT_BYTES => {
                *bytes += size;
                bin.push(f);
            }
            _ => bins.push((size, vec![f])),
        }
    }
    bins.into_iter()
        .filter(|(_, bin)| bin.len() > 1)
        .map(|(_, bin)| bin)
        .collect()
}

/// Streams a job's files into its writer, a batch at a time; the new file's `add`s.
async fn write_job(
    job: Job,
    store: Arc<dyn object_store::ObjectStore>,
    schema: arrow::datatypes::SchemaRef,
    rows: fn(&RecordBatch) -> Result<arrow::array::BooleanArray>,
    mut writer: deltalake::writer::RecordBatchWriter,
) -> Result<Vec<deltalake::kernel::Add>> {
    use deltalake::writer::DeltaWriter;
    use object_store::ObjectStoreExt;
    let mut any = false;
    for f in &job.files {
        let bytes = store.get(&f.object_store_path()).await?.bytes().await?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .with_batch_size(64 * 1024)
            .build()?;
        for b in reader {
            let mut b = crate::delta::conform(&b?, &schema)?;
            if let Some(first) = job.only {
                let mut keep = rows(&b)?;
                if !first {
                    keep = arrow::compute::not(&keep)?;
                }
                b = arrow::compute::filter_record_batch(&b, &keep)?;
            }
            if b.num_rows() > 0 {
                any = true;
                writer.write(b).await?;
            }
        }
    }
    match any {
        true => Ok(writer.flush().await?),
        false => Ok(Vec::new()),
    }
}

/// Compacts small files, removes files no version within `retention` needs, and writes a
/// checkpoint, for every table of the pipeline.
pub async fn maintain(p: &Pipeline, retention: chrono::Duration) -> Result<Vec<Maintained>> {
    let mut out = Vec::new();
    for name in maintained_names(p) {
        let Some(t) = crate::delta::try_open(&p.table_url(&name)).await? else {
            continue;
        };
        let (t, compacted, written) = compact(t, &name, None, ("maintain", "maintain")).await?;
        let (t, vac) = t
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await?;
        deltalake::checkpoints::create_checkpoint(&t, None).await?;
        out.push(Maintained {
            table: name,
            files_compacted: compacted,
            files_written: written,
            files_vacuumed: vac.files_deleted.len(),
            version: t.version().map(|v| v as i64).unwrap_or(0),
        });
    }
    Ok(out)
}

/// The tables `maintain` looks after: every table of the pipeline and the staging tables.
fn maintained_names(p: &Pipeline) -> Vec<String> {
    let mut names = table_names(p);
    names.extend(["stg_elev", "stg_elevforhold", "stg_skole", "stg_leveranse"].map(String::from));
    names
}

/// Who compacts, for the commit's metadata: (run id, stage).
type By<'a> = (&'a str, &'a str);

/// Compacts one table the way it is laid out; `small`: only files below that many bytes (the
/// compaction after a run, which leaves files it has made before as they are).
async fn compact(
    t: deltalake::DeltaTable,
    name: &str,
    small: Option<u64>,
    by: By<'_>,
) -> Result<(deltalake::DeltaTable, u64, u64)> {
    // A raw table's file markers stay in files of their own, and an SCD2 table's current rows
    // (`Apart`): bin-packed together, every run's marker queries would read every record ever
    // ingested, and its SCD2 commit every closed version.
    let scd2 = (crate::schema::PUBLISHED.iter())
        .find(|s| s.name == name && crate::schema::SCD2_NAMES.contains(&s.name));
    Ok(match (name.strip_prefix("raw_"), scd2) {
        (Some(source), _) => {
            compact_apart(t, &crate::schema::raw_table(source), &RAW, small, by).await?
        }
        (None, Some(table)) => compact_apart(t, table, &SCD2, small, by).await?,
        (None, None) => {
            let mut optimize = t
                .optimize()
                .with_type(deltalake::operations::optimize::OptimizeType::Compact)
                .with_commit_properties(crate::delta::commit_props(by.0, by.1));
            // OPTIMIZE takes the files below its target size: the small ones.
            if let Some(small) = small.and_then(std::num::NonZeroU64::new) {
                optimize = optimize.with_target_size(small);
            }
            let (t, opt) = optimize.await?;
            (t, opt.num_files_removed, opt.num_files_added)
        }
    })
}

/// A run's table is compacted when its next commit is a checkpoint: once every
/// `delta.checkpointInterval` (10) commits, so that the checkpoint holds the compacted files.
const COMPACT_EVERY: i64 = 10;

/// Files below this size are compacted after a run; larger ones (a compaction's own) are left.
const SMALL_BYTES: u64 = 16 << 20;

/// The compaction after a run (docs/ARCHITECTURE.md, "Compaction after a run"): of the tables
/// the run committed (`versions`: table → version), those whose next commit is a checkpoint
/// have their small files compacted as `maintain` does, without vacuum; the tables compacted
/// are returned, and those that could not be. Each table on its own:
/// one that cannot be compacted (a concurrent commit took its files) is said in its entry and
/// is compacted ten commits later, or by `maintain`.
pub async fn compact_after_run(
    p: &Pipeline,
    run_id: &str,
    versions: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Compacted> {
    let mut out = Vec::new();
    for name in maintained_names(p) {
        let due = versions
            .get(&name)
            .and_then(serde_json::Value::as_i64)
            .is_some_and(|v| (v + 2) % COMPACT_EVERY == 0);
        if !due {
            continue;
        }
        let compacted = async {
            let t = open_existing(p, &name).await?;
            let (t, compacted, written) =
                compact(t, &name, Some(SMALL_BYTES), (run_id, "compact")).await?;
            Ok::<_, Error>((compacted, written, t.version().map(|v| v as i64)))
        };
        out.push(match compacted.await {
            // Nothing small enough to compact (a table written whole each day).
            Ok((0, _, _)) => continue,
            Ok((files_compacted, files_written, version)) => Compacted {
                table: name,
                files_compacted,
                files_written,
                version,
                error: None,
            },
            Err(e) => {
                tracing::warn!(table = %name, error = %e, "could not compact the table after the run; `elevflyt maintain` will");
                Compacted {
                    table: name,
                    files_compacted: 0,
                    files_written: 0,
                    version: None,
                    error: Some(e.to_string()),
                }
            }
        });
    }
    out
}

/// What the compaction after a run did to one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compacted {
    pub table: String,
    pub files_compacted: u64,
    pub files_written: u64,
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
