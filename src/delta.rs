//! Delta Lake access: opening and creating the tables defined in `schema`, appending,
//! overwriting, SQL reads, and moving polars frames into arrow-rs through the Arrow C Data
//! Interface. Not here: SCD2 logic (publish/scd2.rs).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::schema::Table;

/// Builds an unloaded table handle on the shared object store for `url`.
/// Delta's default log store for the cloud schemes. Commits are put-if-absent (object_store's
/// `PutMode::Create`: `If-None-Match: *` on S3, the equivalents on Azure and GCS), so two
/// writers can never both commit a version — what delta-rs's own cloud crates register too.
#[derive(Debug)]
struct CloudLogStore;

impl deltalake::logstore::LogStoreFactory for CloudLogStore {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers [`CloudLogStore`] for every cloud scheme elevflyt opens (once per process).
fn register_cloud_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let factories = deltalake::logstore::logstore_factories();
        for scheme in ["s3", "s3a", "az", "abfs", "abfss", "azure", "gs"] {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                factories.insert(url, Arc::new(CloudLogStore));
            }
        }
    });
}

fn builder(url: &Url) -> Result<DeltaTableBuilder> {
    register_cloud_log_stores();
    let store = crate::storage::store_for(url)?;
    let mut root = url.clone();
    root.set_path("/");
    Ok(DeltaTableBuilder::from_url(url.clone())?.with_storage_backend(store, root))
}

/// Whether a Delta log exists at `url`.
pub async fn exists(url: &Url) -> Result<bool> {
    use futures::StreamExt;
    use object_store::ObjectStore;
    let store = crate::storage::store_for(url)?;
    let mut log = url.clone();
    log.set_path(&format!("{}/_delta_log/", url.path().trim_end_matches('/')));
    if url.scheme() == "file" && !url.to_file_path().map(|p| p.exists()).unwrap_or(false) {
        return Ok(false);
    }
    let prefix = crate::storage::object_path(&log)?;
    let mut listing = store.list(Some(&prefix));
    Ok(matches!(listing.next().await, Some(Ok(_))))
}

/// Opens the table at `url` if it exists.
pub async fn try_open(url: &Url) -> Result<Option<DeltaTable>> {
    if !exists(url).await? {
        return Ok(None);
    }
    let mut table = builder(url)?.build()?;
    table.load().await?;
    Ok(Some(table))
}

/// At most this many commits are read to tell that a table's data did not change since a
/// version (`data_unchanged_since`); beyond them it is taken to have changed.
const UNCHANGED_WALK: u64 = 64;

/// Whether no commit of the table at `url` after version `since` up to version `upto` changed
/// its data (docs/ARCHITECTURE.md, "The current state"): each holds only `commitInfo`, `txn`,
/// and `add`/`remove` actions with `dataChange` false — what OPTIMIZE, Z-ordering and VACUUM
/// write, here (`elevflyt maintain`) or in Spark or Databricks. The Delta protocol has such an
/// `add` hold only rows its `remove`s in the same commit held. A commit gone from the log, or
/// more than 64 of them, counts as a change.
pub async fn data_unchanged_since(url: &Url, since: u64, upto: u64) -> Result<bool> {
    if upto < since || upto - since > UNCHANGED_WALK {
        return Ok(false);
    }
    let log = builder(url)?.build()?.log_store();
    for version in since + 1..=upto {
        match log.read_commit_entry(version).await? {
            Some(commit) if changes_no_data(&commit) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The value under `key` in the `commitInfo` of the table's newest commit that has it, looking
/// past commits that change no data (an OPTIMIZE or VACUUM of the table, here or in Spark) but
/// not past one that does, nor further than 64 commits or one gone from the log (`None`).
pub async fn committed_value(table: &DeltaTable, key: &str) -> Result<Option<serde_json::Value>> {
    let Some(newest) = table.version() else {
        return Ok(None);
    };
    let log = table.log_store();
    for version in (newest.saturating_sub(UNCHANGED_WALK)..=newest).rev() {
        let Some(commit) = log.read_commit_entry(version).await? else {
            return Ok(None);
        };
        if let Some(v) = commit_info_value(&commit, key) {
            return Ok(Some(v));
        }
        if !changes_no_data(&commit) {
            return Ok(None);
        }
    }
    Ok(None)
}

/// The value under `key` in a commit's `commitInfo` action, if it has one.
fn commit_info_value(commit: &[u8], key: &str) -> Option<serde_json::Value> {
    commit
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .find_map(|mut action| action.get_mut("commitInfo")?.get_mut(key).map(|v| v.take()))
}

/// Whether a commit's actions (one JSON object a line) change no data.
fn changes_no_data(commit: &[u8]) -> bool {
    use serde_json::Value;
    let lines = commit.split(|b| *b == b'\n');
    lines
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .all(|line| match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(actions)) => {
                actions.iter().all(|(kind, action)| match kind.as_str() {
                    "commitInfo" | "txn" => true,
                    "add" | "remove" => action.get("dataChange") == Some(&Value::Bool(false)),
                    _ => false,
                })
            }
            _ => false,
        })
}

/// Opens the table at `url` at a version or a commit time.
pub async fn open_at(
    url: &Url,
    version: Option<i64>,
    timestamp: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<DeltaTable> {
    let mut b = builder(url)?;
    if let Some(v) = version {
        b = b.with_version(v as u64);
    }
    if let Some(t) = timestamp {
        b = b.with_timestamp(t);
    }
    Ok(b.load().await?)
}

/// Opens a pipeline table, creating it (schema with comments, description, properties) when
/// missing.
pub async fn open_or_create(p: &Pipeline, t: &Table) -> Result<DeltaTable> {
    let url = p.table_url(t.name);
    if let Some(table) = try_open(&url).await? {
        return Ok(table);
    }
    if url.scheme() == "file" {
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::Other(format!("cannot create {}: {e}", path.display())))?;
        }
    }
    let table = builder(&url)?.build()?;
    let mut config: HashMap<String, Option<String>> = HashMap::new();
    // A checkpoint every 10 commits (Delta's default is 100): every run opens its tables, and
    // without a checkpoint opening replays every commit since the last one, which grows with
    // each daily run.
    config.insert("delta.checkpointInterval".into(), Some("10".into()));
    if t.change_data_feed() {
        config.insert("delta.enableChangeDataFeed".into(), Some("true".into()));
    }
    // No file statistics of personal columns in the Delta log (docs/ARCHITECTURE.md, "Privacy").
    if let Some(columns) = t.stats_columns() {
        config.insert("delta.dataSkippingStatsColumns".into(), Some(columns));
    }
    let created = table
        .create()
        .with_table_name(t.name)
        .with_comment(t.description)
        .with_columns(t.delta_fields())
        .with_partition_columns(t.partition_by.iter().copied())
        .with_configuration(config)
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => {
            crate::context::crash_point(&format!("after-create-{}", t_name(&url)));
            Ok(t)
        }
        // Another run created it between our check and our create: open theirs.
        Err(e) => try_open(&url).await?.ok_or(e.into()),
    }
}

fn t_name(url: &Url) -> &str {
    url.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
}

/// Commit properties carrying the run id (visible in `DESCRIBE HISTORY` / `history()`).
pub fn commit_props(run_id: &str, stage: &str) -> CommitProperties {
    CommitProperties::default().with_metadata(commit_metadata(run_id, stage))
}

/// The commit metadata of `commit_props`, for commits that add their own.
pub fn commit_metadata(run_id: &str, stage: &str) -> Vec<(String, serde_json::Value)> {
    vec![
        ("elevflyt_run_id".to_string(), serde_json::json!(run_id)),
        ("elevflyt_stage".to_string(), serde_json::json!(stage)),
        (
            "elevflyt_version".to_string(),
            serde_json::json!(env!("CARGO_PKG_VERSION")),
        ),
    ]
}

/// Casts `batch` to the table's schema (e.g. LargeUtf8 from polars to Utf8) and sets the
/// table's field metadata.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let c = batch
            .column_by_name(f.name())
            .ok_or_else(|| Error::Internal(format!("batch lacks column `{}`", f.name())))?;
        cols.push(if c.data_type() == f.data_type() {
            c.clone()
        } else {
            cast(c, f.data_type())?
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Checks that batches can be cast to a table's schema — every column there, of a type that
/// casts — before anything is written; [`write_files`] casts them a slice at a time.
fn check_conform(batches: &[RecordBatch], t: &Table) -> Result<()> {
    let schema = t.arrow_schema();
    for b in batches {
        for f in schema.fields() {
            let c = b
                .column_by_name(f.name())
                .ok_or_else(|| Error::Internal(format!("batch lacks column `{}`", f.name())))?;
            if !arrow::compute::can_cast_types(c.data_type(), f.data_type()) {
                return Err(Error::Internal(format!(
                    "column `{}` of type {} cannot be written as {}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                )));
            }
        }
    }
    Ok(())
}

/// Appends one batch of a run's rows to a table (see [`write()`]).
pub async fn append(
    ctx: &crate::context::RunContext,
    t: &Table,
    batch: RecordBatch,
    stage: &str,
) -> Result<Option<i64>> {
    write(
        &ctx.pipeline,
        t,
        vec![batch],
        SaveMode::Append,
        &ctx.run_id,
        stage,
    )
    .await
}

/// Appends (or overwrites) rows; returns the new table version. Writes nothing for no rows.
pub async fn write(
    p: &Pipeline,
    t: &Table,
    batches: Vec<RecordBatch>,
    mode: SaveMode,
    run_id: &str,
    stage: &str,
) -> Result<Option<i64>> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 && mode == SaveMode::Append {
        return Ok(None);
    }
    check_conform(&batches, t)?;
    // Appends and whole-table overwrites do not depend on what they read, so a commit that lost
    // a race with another run is simply made again on top of the winner. The files are written
    // once; only the commit is made again. An overwrite claims the table: two overwrites from
    // one version (say, of a table just created, with no file to remove) would otherwise both
    // land, the second adding its rows to the first's instead of replacing them.
    let mut table = open_or_create(p, t).await?;
    let adds = write_files(&table, t, batches).await?;
    let version = crate::context::retry_on_conflict(t.name, is_conflict, async |attempt| {
        if attempt > 0 {
            table.update_state().await?;
        }
        let claimed = (mode == SaveMode::Overwrite).then(|| claim(t, table.version().unwrap_or(0)));
        commit_files(&table, adds.clone(), mode, (run_id, stage), claimed).await
    })
    .await?;
    Ok(Some(version))
}

/// A UTC timestamp column (microseconds) of a table.
pub fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        arrow::array::TimestampMicrosecondArray::from(values.collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

/// Rows per Parquet file below which a write is not split over cores.
const ROWS_PER_PART: usize = 100_000;

/// Writes rows as Parquet files of the table, on all cores (one file per core for a large
/// write: delta-rs encodes one write on one core), without committing them. Returns their
/// `add` actions.
pub async fn write_files(
    table: &DeltaTable,
    t: &Table,
    batches: Vec<RecordBatch>,
) -> Result<Vec<deltalake::kernel::Action>> {
    use deltalake::writer::DeltaWriter;
    // No empty files.
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    let rows = row_count(&batches);
    if rows == 0 {
        return Ok(Vec::new());
    }
    let parts = crate::par::cores().min(rows / ROWS_PER_PART).max(1);
    let schema = t.arrow_schema();
    let mut tasks = tokio::task::JoinSet::new();
    for part in split_rows(batches, parts) {
        let mut writer = file_writer(table, t)?;
        let schema = schema.clone();
        tasks.spawn(async move {
            // Cast to the table's schema a slice at a time: rows given as string views (ingest's
            // records, views of the file read) are copied into the written layout only while
            // their slice is written, never all at once.
            for b in part {
                for at in (0..b.num_rows()).step_by(CAST_ROWS) {
                    let slice = b.slice(at, CAST_ROWS.min(b.num_rows() - at));
                    let slice = conform(&slice, &schema)
                        .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
                    writer.write(slice).await?;
                }
            }
            writer.flush().await
        });
    }
    added_files(tasks).await
}

/// Rows cast to a table's schema at a time by [`write_files`].
const CAST_ROWS: usize = 65_536;

/// Writers that finish new files of a table, each on a task of its own: the `add` actions of
/// all the files they wrote.
pub async fn added_files(
    mut tasks: tokio::task::JoinSet<
        std::result::Result<Vec<deltalake::kernel::Add>, deltalake::DeltaTableError>,
    >,
) -> Result<Vec<deltalake::kernel::Action>> {
    let mut adds = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let part = done.map_err(|e| Error::Internal(format!("Parquet writer: {e}")))??;
        adds.extend(part.into_iter().map(deltalake::kernel::Action::Add));
    }
    Ok(adds)
}

/// A writer of one new data file of the table (Parquet encoded as rows are written; the file is
/// put in the table's folder by `flush`, and committed by the caller).
pub fn file_writer(table: &DeltaTable, t: &Table) -> Result<deltalake::writer::RecordBatchWriter> {
    Ok(deltalake::writer::RecordBatchWriter::for_table(table)?
        .with_writer_properties(writer_properties(t)))
}

/// `batches` as `parts` runs of about equal row counts (slices, not copies), in order.
fn split_rows(batches: Vec<RecordBatch>, parts: usize) -> Vec<Vec<RecordBatch>> {
    let size = row_count(&batches).div_ceil(parts.max(1)).max(1);
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut filled = 0;
    for b in batches {
        let mut offset = 0;
        while offset < b.num_rows() {
            if filled == size {
                out.push(Vec::new());
                filled = 0;
            }
            let n = (size - filled).min(b.num_rows() - offset);
            if let Some(last) = out.last_mut() {
                last.push(b.slice(offset, n));
            }
            offset += n;
            filled += n;
        }
    }
    out
}

/// The data files of the loaded version of `table`.
pub async fn file_views(
    table: &DeltaTable,
) -> std::result::Result<Vec<deltalake::kernel::LogicalFileView>, deltalake::DeltaTableError> {
    use futures::TryStreamExt;
    table
        .snapshot()?
        .snapshot()
        .file_views(&table.log_store(), None)
        .try_collect()
        .await
}

/// The claim a commit on top of `read_version` makes on a table: of two runs that read the same
/// version, one commits and the other gets a conflict.
pub fn claim(t: &Table, read_version: u64) -> deltalake::kernel::Transaction {
    deltalake::kernel::Transaction::new(format!("elevflyt-{}", t.name), read_version as i64 + 1)
}

/// Commits written files on top of the loaded version of `table`: an append, or an overwrite
/// that removes every file of that version. The commit carries the run id and stage, the
/// operation metrics Spark records for a WRITE (files, rows and bytes written; `history` shows
/// them), and the claim when there is one.
async fn commit_files(
    table: &DeltaTable,
    mut actions: Vec<deltalake::kernel::Action>,
    mode: SaveMode,
    (run_id, stage): (&str, &str),
    claim: Option<deltalake::kernel::Transaction>,
) -> std::result::Result<i64, deltalake::DeltaTableError> {
    let mut metadata = commit_metadata(run_id, stage);
    metadata.push(("operationMetrics".into(), write_metrics(&actions)));
    let mut props = CommitProperties::default().with_metadata(metadata);
    if let Some(claim) = claim {
        props = props.with_application_transaction(claim);
    }
    use deltalake::kernel::transaction::CommitBuilder;
    use deltalake::protocol::DeltaOperation;
    let snapshot = table.snapshot()?;
    if mode == SaveMode::Overwrite {
        actions.extend(
            file_views(table)
                .await?
                .iter()
                .map(|f| deltalake::kernel::Action::Remove(f.remove_action(true))),
        );
    }
    let partition_by: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let operation = DeltaOperation::Write {
        mode,
        partition_by: (!partition_by.is_empty()).then_some(partition_by),
        predicate: None,
    };
    let done = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    Ok(done.version() as i64)
}

/// A WRITE's `operationMetrics` as Spark names them, from the files it adds.
fn write_metrics(actions: &[deltalake::kernel::Action]) -> serde_json::Value {
    let (mut files, mut rows, mut bytes) = (0u64, 0u64, 0i64);
    for a in actions {
        if let deltalake::kernel::Action::Add(add) = a {
            files += 1;
            bytes += add.size;
            rows += add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s["numRecords"].as_u64())
                .unwrap_or(0);
        }
    }
    serde_json::json!({
        "numFiles": files.to_string(),
        "numOutputRows": rows.to_string(),
        "numOutputBytes": bytes.to_string(),
    })
}

/// Rows per Parquet row group: a writer holds one row group encoded before it goes to the
/// file, so a file of a million rows is not held whole in memory while it is written.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Columns whose values are one per pupil or per row (ids, numbers, addresses, the row hash, a
/// record as delivered in raw's `post`, its number in the file): a dictionary of them would be as
/// long as the column, so the writer gives up on it after a megabyte of each row group — having
/// hashed and copied every value of that megabyte into it.
const NO_DICTIONARY: [&str; 11] = [
    "post",
    "rad",
    "id",
    "elev_id",
    "system_id",
    "fodselsnummer",
    "feidenavn",
    "epostadresse",
    "mobiltelefonnummer",
    "bostedsadresse",
    crate::schema::ROW_HASH,
];

/// Columns of random hex digits (the ids elevflyt makes, UUIDs as text, and the row hash): Snappy
/// finds nothing to shorten in them but the values' length prefixes (a tenth of their size), at
/// the cost of a quarter of a commit's CPU time. They are stored uncompressed, with the lengths
/// apart from the bytes (`DELTA_LENGTH_BYTE_ARRAY`: the equal lengths delta-coded to almost
/// nothing), which is as small as Snappy made them.
const NO_COMPRESSION: [&str; 3] = ["id", "elev_id", crate::schema::ROW_HASH];

/// Record numbers (`rad`: counting up through a file, in raw and `avvik`): stored as the
/// differences between them (`DELTA_BINARY_PACKED`, a bit or two per row) instead of eight bytes
/// each.
const COUNTING: [&str; 1] = ["rad"];

/// Parquet settings: snappy, as delta-rs writes by default, and row groups of `ROW_GROUP_ROWS`.
/// The columns of [`NO_DICTIONARY`] are unique per pupil or row: no dictionary attempt, and
/// those of [`NO_COMPRESSION`] are not compressed (docs/PERFORMANCE.md, "twelfth session" and
/// "thirteenth session"). Personal columns get no min/max statistics (docs/ARCHITECTURE.md,
/// "Privacy").
pub(crate) fn writer_properties(t: &Table) -> parquet::file::properties::WriterProperties {
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for c in t.columns.iter().filter(|c| NO_DICTIONARY.contains(&c.name)) {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c.name), false);
    }
    for c in t
        .columns
        .iter()
        .filter(|c| NO_COMPRESSION.contains(&c.name))
    {
        let c = ColumnPath::from(c.name);
        b = b
            .set_column_compression(c.clone(), parquet::basic::Compression::UNCOMPRESSED)
            .set_column_encoding(c, parquet::basic::Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    for c in t.columns.iter().filter(|c| COUNTING.contains(&c.name)) {
        let c = ColumnPath::from(c.name);
        b = b.set_column_encoding(c, parquet::basic::Encoding::DELTA_BINARY_PACKED);
    }
    for c in t.personal_columns() {
        b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
    }
    b.build()
}

/// Appends rows under a claim on the table (a Delta application transaction named after it), so
/// that of two runs appending at once one commits and the other gets `Error::Conflict` and can
/// decide again what to append.
pub async fn write_claimed(
    p: &Pipeline,
    t: &Table,
    batches: Vec<RecordBatch>,
    read_version: u64,
    run_id: &str,
    stage: &str,
) -> Result<(Option<i64>, usize)> {
    write_claimed_groups(p, t, vec![batches], read_version, (run_id, stage), &|| {
        Ok(())
    })
    .await
}

/// [`write_claimed`] with the rows in groups, each group in files of its own (all in one
/// commit): rows that a query looks for apart from the rest (raw's file markers) are then
/// found by the files' statistics without reading the other files. `before_commit` runs after
/// the files are written and before the commit; its error stops the commit.
pub async fn write_claimed_groups(
    p: &Pipeline,
    t: &Table,
    groups: Vec<Vec<RecordBatch>>,
    read_version: u64,
    (run_id, stage): (&str, &str),
    before_commit: &(dyn Fn() -> Result<()> + Sync),
) -> Result<(Option<i64>, usize)> {
    for g in &groups {
        check_conform(g, t)?;
    }
    let mut table = open_or_create(p, t).await?;
    // Commit on top of the version the caller decided from (0: the table did not exist).
    table.load_version(read_version).await?;
    let claim = claim(t, table.version().unwrap_or(0));
    let mut adds = Vec::new();
    for batches in groups {
        adds.extend(write_files(&table, t, batches).await?);
    }
    let files = adds.len();
    before_commit()?;
    match commit_files(&table, adds, SaveMode::Append, (run_id, stage), Some(claim)).await {
        Ok(v) => Ok((Some(v), files)),
        Err(e) if is_conflict(&e) => Err(Error::Conflict(t.name.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error is a lost commit race with another writer: the version was taken, the
/// conflict checker found a conflicting commit, or a table's first commit was already written.
pub fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError as T;
    use deltalake::DeltaTableError as E;
    let taken = |s: &object_store::Error| matches!(s, object_store::Error::AlreadyExists { .. });
    match e {
        E::VersionAlreadyExists(_) => true,
        E::ObjectStore { source } => taken(source),
        E::Transaction { source } => match source {
            T::VersionAlreadyExists(_) | T::CommitConflict(_) | T::MaxCommitAttempts(_) => true,
            T::ObjectStore { source } => taken(source),
            _ => false,
        },
        _ => false,
    }
}

/// A DataFusion session with the given tables of the pipeline registered under their names.
/// Tables that do not exist yet are left out.
pub async fn session(p: &Pipeline, tables: &[&str]) -> Result<SessionContext> {
    let mut opened = Vec::new();
    for name in tables {
        if let Some(t) = try_open(&p.table_url(name)).await? {
            opened.push((*name, t));
        }
    }
    session_of(&opened).await
}

/// A session with these opened tables registered under their names, at their loaded versions.
pub async fn session_of(tables: &[(&str, DeltaTable)]) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    crate::sqlfn::register(&ctx);
    for (name, t) in tables {
        register(&ctx, name, t).await?;
    }
    Ok(ctx)
}

pub async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Runs a query and collects the result.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Runs a query and hands its batches to `f` one at a time, as they are read (the result is
/// never held whole).
pub async fn for_each_batch(
    ctx: &SessionContext,
    sql: &str,
    mut f: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    use futures::StreamExt;
    let mut stream = ctx.sql(sql).await?.execute_stream().await?;
    while let Some(b) = stream.next().await {
        f(&b?)?;
    }
    Ok(())
}

/// Whether a table exists in the session.
pub fn has_table(ctx: &SessionContext, name: &str) -> bool {
    ctx.table_exist(name).unwrap_or(false)
}

/// Total rows in a set of batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Concatenates batches into one (or an empty batch of `schema`).
pub fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    Ok(arrow::compute::concat_batches(schema, batches)?)
}

/// A string column as `StringArray`, whatever string encoding the reader produced
/// (Utf8, LargeUtf8 or Utf8View).
pub fn strings(batch: &RecordBatch, name: &str) -> Result<arrow::array::StringArray> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("column `{name}` missing")))?;
    let c = cast(c, &arrow::datatypes::DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("column `{name}` is not text")))
}

/// A text column read without copying, whichever string layout the reader produced
/// (DataFusion reads Parquet strings as views).
#[derive(Debug, Clone)]
pub enum TextCol {
    Utf8(arrow::array::StringArray),
    View(arrow::array::StringViewArray),
}

impl TextCol {
    pub fn value(&self, i: usize) -> &str {
        match self {
            TextCol::Utf8(a) => a.value(i),
            TextCol::View(a) => a.value(i),
        }
    }

    /// Whether rows `i` and `j` hold the same text: for string views first by the views
    /// themselves (equal views are equal texts, and a file's name and digest repeat as one view
    /// on each of its records), else by the bytes.
    pub fn same(&self, i: usize, j: usize) -> bool {
        match self {
            TextCol::Utf8(a) => a.value(i) == a.value(j),
            TextCol::View(a) => a.views()[i] == a.views()[j] || a.value(i) == a.value(j),
        }
    }

    pub fn opt(&self, i: usize) -> Option<&str> {
        use arrow::array::Array;
        let null = match self {
            TextCol::Utf8(a) => a.is_null(i),
            TextCol::View(a) => a.is_null(i),
        };
        (!null).then(|| self.value(i))
    }
}

/// A text column of `batch` without copying it (other types are cast to text).
pub fn text(batch: &RecordBatch, name: &str) -> Result<TextCol> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("column `{name}` missing")))?;
    if let Some(v) = c.as_any().downcast_ref::<arrow::array::StringViewArray>() {
        return Ok(TextCol::View(v.clone()));
    }
    Ok(TextCol::Utf8(strings(batch, name)?))
}

/// A timestamp column as microseconds since the epoch (UTC).
pub fn micros(batch: &RecordBatch, name: &str) -> Result<arrow::array::TimestampMicrosecondArray> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("column `{name}` missing")))?;
    let c = cast(
        c,
        &arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
    )?;
    c.as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("column `{name}` is not a timestamp")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    /// What OPTIMIZE and VACUUM commit changes no data; an append, a MERGE's rewrite, a change
    /// of schema or protocol, or a line that is not an action, does.
    #[test]
    fn only_commits_that_move_rows_between_files_change_no_data() {
        let info = r#"{"commitInfo":{"timestamp":1,"operation":"OPTIMIZE"}}"#;
        let add =
            |change: bool| format!(r#"{{"add":{{"path":"a.parquet","dataChange":{change}}}}}"#);
        let remove =
            |change: bool| format!(r#"{{"remove":{{"path":"b.parquet","dataChange":{change}}}}}"#);
        let commit = |lines: &[&str]| lines.join("\n").into_bytes();
        let optimize = commit(&[info, &add(false), &remove(false), &remove(false)]);
        assert!(super::changes_no_data(&optimize));
        assert!(super::changes_no_data(
            br#"{"commitInfo":{"operation":"VACUUM END"}}
"#
        ));
        assert!(super::changes_no_data(&commit(&[
            info,
            r#"{"txn":{"appId":"x","version":3}}"#
        ])));
        for changes in [
            commit(&[info, &add(true)]),
            commit(&[info, &add(false), &remove(true)]),
            commit(&[info, r#"{"add":{"path":"a.parquet"}}"#]),
            commit(&[info, r#"{"metaData":{"id":"x"}}"#]),
            commit(&[info, r#"{"protocol":{"minReaderVersion":3}}"#]),
            commit(&[info, r#"{"cdc":{"path":"c.parquet","dataChange":false}}"#]),
            commit(&[info, "not json"]),
        ] {
            assert!(
                !super::changes_no_data(&changes),
                "{}",
                String::from_utf8_lossy(&changes)
            );
        }
    }

    /// A commit's own value is read from its `commitInfo`, not from another action's fields.
    #[test]
    fn a_commit_info_value_is_read_from_the_commit_info() {
        let commit = br#"{"add":{"path":"a.parquet","k":1}}
{"commitInfo":{"operation":"WRITE","k":{"elev":3}}}
"#;
        let v = super::commit_info_value(commit, "k");
        assert_eq!(v, Some(serde_json::json!({"elev": 3})));
        assert_eq!(super::commit_info_value(commit, "path"), None);
        assert_eq!(super::commit_info_value(b"not json", "k"), None);
    }

    /// Without delta-rs's cloud crates, an `s3://` table still gets Delta's default log store:
    /// it is created, its log is where Delta readers look, and it is not created twice.
    #[tokio::test]
    async fn cloud_tables_get_a_log_store_without_the_delta_rs_cloud_crates() {
        use object_store::{ObjectStore, ObjectStoreExt};
        super::register_cloud_log_stores();
        let url = url::Url::parse("s3://bucket/lake/t").unwrap();
        let mut root = url.clone();
        root.set_path("/");
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let table = |store: Arc<dyn ObjectStore>| {
            deltalake::DeltaTableBuilder::from_url(url.clone())
                .unwrap()
                .with_storage_backend(store, root.clone())
                .build()
                .unwrap()
        };
        let created = table(store.clone())
            .create()
            .with_columns(crate::schema::SKOLE.delta_fields())
            .await
            .unwrap();
        assert_eq!(created.version(), Some(0));
        let log = object_store::path::Path::from("lake/t/_delta_log/00000000000000000000.json");
        assert!(store.head(&log).await.is_ok());
        let again = table(store.clone())
            .create()
            .with_columns(crate::schema::SKOLE.delta_fields())
            .with_save_mode(deltalake::protocol::SaveMode::ErrorIfExists)
            .await;
        assert!(
            again.is_err(),
            "version 0 exists: a second create is refused"
        );
    }

    #[test]
    fn texts_are_the_same_by_view_or_by_bytes_and_only_then() {
        use arrow::array::{StringArray, StringViewBuilder};
        let long = "a file name longer than twelve bytes";
        let mut b = StringViewBuilder::new();
        let block = b.append_block(arrow::buffer::Buffer::from(long.as_bytes().to_vec()));
        let len = long.len() as u32;
        // SAFETY: `block` holds exactly `long`, valid UTF-8.
        unsafe {
            b.append_view_unchecked(block, 0, len);
            b.append_view_unchecked(block, 0, len);
        }
        // Rows 0 and 1 share one view; row 2 is the same text in a copy of its own; row 3 has
        // the same length and another text; rows 4 and 5 are short (inline) texts.
        b.append_value(long);
        b.append_value("a file name longer than twelve bytez");
        b.append_value("short");
        b.append_value("short");
        let views = super::TextCol::View(b.finish());
        let plain = super::TextCol::Utf8(StringArray::from(
            (0..6)
                .map(|i| views.value(i).to_string())
                .collect::<Vec<_>>(),
        ));
        for col in [&views, &plain] {
            for i in 0..6 {
                for j in 0..6 {
                    assert_eq!(
                        col.same(i, j),
                        col.value(i) == col.value(j),
                        "rows {i} and {j}"
                    );
                }
            }
        }
        assert!(views.same(0, 2) && !views.same(0, 3) && views.same(4, 5));
    }

    #[test]
    fn split_rows_keeps_every_row_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |r: std::ops::Range<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(r))],
            )
            .unwrap()
        };
        for parts in 1..5 {
            let input = vec![batch(0..7), batch(7..8), batch(8..20)];
            let out = super::split_rows(input, parts);
            assert_eq!(out.len(), parts.min(20));
            let sizes: Vec<usize> = out.iter().map(|p| super::row_count(p)).collect();
            let size = 20usize.div_ceil(parts);
            assert!(sizes.iter().all(|s| *s <= size), "{sizes:?}");
            let all: Vec<i64> = out
                .iter()
                .flatten()
                .flat_map(|b| {
                    let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(all, (0..20).collect::<Vec<_>>());
        }
    }

    #[test]
    fn columns_of_one_value_per_pupil_get_no_dictionary_and_repeated_ones_do() {
        use parquet::schema::types::ColumnPath;
        let dictionary = |t: &super::Table, c: &str| {
            super::writer_properties(t).dictionary_enabled(&ColumnPath::from(c))
        };
        let s = crate::schema::ELEV;
        assert!(
            !dictionary(&s, "id")
                && !dictionary(&s, "fodselsnummer")
                && !dictionary(&s, "rad_hash")
        );
        assert!(
            dictionary(&s, "kommunenummer")
                && dictionary(&s, "fornavn")
                && dictionary(&s, "kildesystem")
        );
        let ef = crate::schema::ELEVFORHOLD;
        assert!(
            !dictionary(&ef, "elev_id")
                && dictionary(&ef, "skolenummer")
                && dictionary(&ef, "klasse")
        );
        assert!(!dictionary(&crate::schema::ELEV_ID, "fodselsnummer"));
        let raw = crate::schema::raw_table("vigilo");
        assert!(!dictionary(&raw, "post") && !dictionary(&raw, "rad"));
        assert!(!dictionary(&crate::schema::AVVIK, "rad"));
        let props = super::writer_properties(&raw);
        assert_eq!(
            props.encoding(&ColumnPath::from("rad")),
            Some(parquet::basic::Encoding::DELTA_BINARY_PACKED)
        );
        assert_eq!(props.encoding(&ColumnPath::from("as_of")), None);
    }

    #[test]
    fn random_hex_columns_are_stored_uncompressed_with_their_lengths_apart_and_the_others_with_snappy(
    ) {
        use parquet::basic::Compression::{SNAPPY, UNCOMPRESSED};
        use parquet::schema::types::ColumnPath;
        let codec = |t: &super::Table, c: &str| {
            super::writer_properties(t).compression(&ColumnPath::from(c))
        };
        let (elev, ef) = (crate::schema::ELEV, crate::schema::ELEVFORHOLD);
        for (t, c) in [
            (&elev, "id"),
            (&elev, "rad_hash"),
            (&ef, "id"),
            (&ef, "elev_id"),
        ] {
            assert_eq!(codec(t, c), UNCOMPRESSED, "{}.{c}", t.name);
            let encoding = super::writer_properties(t).encoding(&ColumnPath::from(c));
            assert_eq!(
                encoding,
                Some(parquet::basic::Encoding::DELTA_LENGTH_BYTE_ARRAY),
                "{}.{c}",
                t.name
            );
        }
        assert_eq!(codec(&crate::schema::ELEV_ID, "id"), UNCOMPRESSED);
        for (t, c) in [
            (&elev, "fornavn"),
            (&elev, "fodselsnummer"),
            (&ef, "klasse"),
        ] {
            assert_eq!(codec(t, c), SNAPPY, "{}.{c}", t.name);
        }
        assert_eq!(codec(&crate::schema::raw_table("vigilo"), "post"), SNAPPY);
    }
}
