//! The daily SCD2 commit without a MERGE join: the stored current versions to close are known
//! by key and `valid_from`, so only the files that hold current rows are read (a file's
//! statistics say whether it has any: `valid_to` has nulls), the files among them with a version
//! to close are written again and the new versions are added, in one commit with the Change
//! Data Feed files a MERGE would write.
//!
//! Rows that stay current are written to files of their own, closed versions to others; so the
//! next run reads and rewrites the current rows only, however long the history grows.
//!
//! Not here: deciding what to close (scd2.rs), rebuilt history with replaced or deleted
//! versions (a Delta MERGE in mod.rs).

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, AddCDCFile};
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use rustc_hash::FxHashMap;
use tracing::info;

use crate::error::{Error, Result};
use crate::run::RunContext;
use crate::schema::{self, Table};

/// What one run changes in an SCD2 table: stored current versions to close, new versions.
pub struct Changes {
    /// (key, valid_from of the stored current version, its new valid_to).
    pub closes: Vec<(String, i64, i64)>,
    /// New versions, in the table's columns.
    pub inserts: Vec<RecordBatch>,
}

/// A stored file that holds current rows.
struct Stored {
    remove: deltalake::kernel::Remove,
    path: object_store::path::Path,
}

/// What became of one stored file.
#[derive(Default)]
struct Rewritten {
    /// Rows that stay current, and closed versions (old ones and those closed now).
    current: Vec<RecordBatch>,
    history: Vec<RecordBatch>,
    /// The versions closed now, before and after.
    before: Vec<RecordBatch>,
    after: Vec<RecordBatch>,
    closed: usize,
    /// The new versions.
    inserts: Vec<RecordBatch>,
}

/// Commits `changes` on top of `read_version` of the table. `Ok(None)` when the table cannot be
/// rewritten this way (deletion vectors, partitions): the caller merges instead.
pub async fn commit(
    ctx: &RunContext,
    t: &'static Table,
    read_version: u64,
    changes: Changes,
) -> Result<Option<i64>> {
    let started = std::time::Instant::now();
    let mut table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
    table.load_version(read_version).await?;
    let Some((stored, files_skipped)) = files_with_current_rows(&table).await? else {
        return Ok(None);
    };
    let files_scanned = stored.len();
    let schema = t.arrow_schema();
    let closes: FxHashMap<&str, (i64, i64)> = changes
        .closes
        .iter()
        .map(|(k, from, to)| (k.as_str(), (*from, *to)))
        .collect();
    let files = read_files(&table, &stored, &schema).await?;
    let mut out = Rewritten::default();
    let mut removes = Vec::new();
    for (f, batches) in stored.into_iter().zip(files) {
        if split_file(t, &batches, &closes, &mut out)? {
            removes.push(Action::Remove(f.remove));
        }
    }
    if out.closed != closes.len() {
        return Err(Error::Other(format!(
            "{}: {} of the {} current versions to close were not found in the table (was it \
             changed by hand?); nothing was committed",
            t.name,
            closes.len() - out.closed,
            closes.len()
        )));
    }
    for b in changes.inserts {
        let b = crate::delta::conform(&b, &schema)?;
        let open = crate::delta::micros(&b, schema::VALID_TO)?;
        let is_open = BooleanArray::from_iter((0..b.num_rows()).map(|i| Some(open.is_null(i))));
        out.current.push(filter_record_batch(&b, &is_open)?);
        out.history
            .push(filter_record_batch(&b, &arrow::compute::not(&is_open)?)?);
        out.inserts.push(b);
    }
    let inserted: usize = out.inserts.iter().map(RecordBatch::num_rows).sum();
    let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    let written = rows(&out.current) + rows(&out.history);
    let mut actions = removes;
    let files_removed = actions.len();
    actions.extend(crate::delta::write_files(&table, t, out.current).await?);
    actions.extend(crate::delta::write_files(&table, t, out.history).await?);
    let files_added = actions.len() - files_removed;
    let changes = [
        (out.before, "update_preimage"),
        (out.after, "update_postimage"),
        (out.inserts, "insert"),
    ];
    actions.push(change_data(&table, &schema, &changes).await?);
    // The operation metrics a MERGE records, so that `history` reads the same either way.
    let metrics = MergeMetrics {
        source_rows: closes.len() + inserted,
        inserted,
        updated: out.closed,
        copied: written - inserted - out.closed,
        written,
        files_scanned,
        files_skipped,
        files_added,
        files_removed,
        ms: started.elapsed().as_millis() as u64,
    }
    .json();
    let mut metadata = crate::delta::commit_metadata(&ctx.run_id, "publish");
    metadata.push(("operationMetrics".into(), metrics));
    metadata.push(("readVersion".into(), serde_json::json!(read_version)));
    let props = CommitProperties::default()
        .with_metadata(metadata)
        .with_application_transaction(crate::delta::claim(t, read_version));
    let version = commit_actions(t, &table, actions, props).await?;
    info!(
        table = t.name,
        inserted,
        updated = out.closed,
        files_removed,
        files_added,
        "closed and inserted versions"
    );
    Ok(Some(version))
}

/// What a delta-rs MERGE reports in `operationMetrics`.
struct MergeMetrics {
    source_rows: usize,
    inserted: usize,
    updated: usize,
    copied: usize,
    written: usize,
    files_scanned: usize,
    files_skipped: usize,
    files_added: usize,
    files_removed: usize,
    ms: u64,
}

impl MergeMetrics {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "num_source_rows": self.source_rows,
            "num_target_rows_inserted": self.inserted,
            "num_target_rows_updated": self.updated,
            "num_target_rows_deleted": 0,
            "num_target_rows_copied": self.copied,
            "num_output_rows": self.written,
            "num_target_files_scanned": self.files_scanned,
            "num_target_files_skipped_during_scan": self.files_skipped,
            "num_target_files_added": self.files_added,
            "num_target_files_removed": self.files_removed,
            "execution_time_ms": self.ms,
        })
    }
}

/// The rows of the given files, fetched and decoded on every core, in the files' order.
async fn read_files(
    table: &DeltaTable,
    stored: &[Stored],
    schema: &SchemaRef,
) -> Result<Vec<Vec<RecordBatch>>> {
    let store = table.object_store();
    let mut reads = tokio::task::JoinSet::new();
    for (i, f) in stored.iter().enumerate() {
        let (store, path, schema) = (store.clone(), f.path.clone(), schema.clone());
        reads.spawn(async move {
            let bytes = store.get(&path).await?.bytes().await?;
            let batches = tokio::task::spawn_blocking(move || read_parquet(bytes, &schema))
                .await
                .map_err(|e| Error::Other(format!("internal: reading a file: {e}")))??;
            Ok::<_, Error>((i, batches))
        });
    }
    let mut files: Vec<Vec<RecordBatch>> = vec![Vec::new(); stored.len()];
    while let Some(done) = reads.join_next().await {
        let (i, batches) =
            done.map_err(|e| Error::Other(format!("internal: reading a file: {e}")))??;
        files[i] = batches;
    }
    Ok(files)
}

/// The files of the loaded version that may hold current rows (their statistics do not say
/// `valid_to` is never null), and how many files do not. `None` when a file has a deletion
/// vector or the table is partitioned (the Change Data Feed file would need partition values).
async fn files_with_current_rows(table: &DeltaTable) -> Result<Option<(Vec<Stored>, usize)>> {
    if !table.snapshot()?.metadata().partition_columns().is_empty() {
        return Ok(None);
    }
    let views = crate::delta::file_views(table).await?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for f in views {
        if f.deletion_vector_descriptor().is_some() {
            return Ok(None);
        }
        let open_rows = f
            .stats()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| s["nullCount"][schema::VALID_TO].as_i64());
        if open_rows == Some(0) {
            skipped += 1;
            continue;
        }
        out.push(Stored {
            remove: f.remove_action(true),
            path: f.object_store_path(),
        });
    }
    Ok(Some((out, skipped)))
}

fn read_parquet(bytes: bytes::Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    reader.map(|b| crate::delta::conform(&b?, schema)).collect()
}

/// Splits the rows of one stored file into `out`; returns whether the file changes (has a
/// version to close). An unchanged file is left as it is.
fn split_file(
    t: &Table,
    batches: &[RecordBatch],
    closes: &FxHashMap<&str, (i64, i64)>,
    out: &mut Rewritten,
) -> Result<bool> {
    // Per batch: its `is_current` and the rows (with their new valid_to) to close.
    let mut found = Vec::with_capacity(batches.len());
    for b in batches {
        let keys = crate::delta::text(b, t.key)?;
        let from = crate::delta::micros(b, schema::VALID_FROM)?;
        let current = bools(b, schema::IS_CURRENT)?;
        let mut rows: Vec<(u32, i64)> = Vec::new();
        for i in 0..b.num_rows() {
            if !current.value(i) {
                continue;
            }
            if let Some((f, to)) = closes.get(keys.value(i)) {
                if *f == from.value(i) {
                    rows.push((i as u32, *to));
                }
            }
        }
        found.push((current, rows));
    }
    if found.iter().all(|(_, rows)| rows.is_empty()) {
        return Ok(false);
    }
    for (b, (current, rows)) in batches.iter().zip(found) {
        let mut closing = vec![false; b.num_rows()];
        for (i, _) in &rows {
            closing[*i as usize] = true;
        }
        let stays_current = BooleanArray::from_iter(
            (0..b.num_rows()).map(|i| Some(current.value(i) && !closing[i])),
        );
        let was_history =
            BooleanArray::from_iter((0..b.num_rows()).map(|i| Some(!current.value(i))));
        out.current.push(filter_record_batch(b, &stays_current)?);
        out.history.push(filter_record_batch(b, &was_history)?);
        let before = take_record_batch(
            b,
            &UInt32Array::from_iter_values(rows.iter().map(|(i, _)| *i)),
        )?;
        let n = rows.len();
        let after = super::replace_column(
            &super::replace_column(
                &before,
                schema::VALID_TO,
                super::ts(rows.iter().map(|(_, to)| Some(*to))),
            )?,
            schema::IS_CURRENT,
            Arc::new(BooleanArray::from(vec![false; n])),
        )?;
        out.history.push(after.clone());
        out.before.push(before);
        out.after.push(after);
        out.closed += n;
    }
    Ok(true)
}

fn bools(b: &RecordBatch, name: &str) -> Result<BooleanArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
        .cloned()
        .ok_or_else(|| Error::Other(format!("internal: column `{name}` is not a boolean")))
}

/// Writes the Change Data Feed file of the commit: the closed versions before and after
/// (`update_preimage`, `update_postimage`) and the new versions (`insert`), as a MERGE does.
async fn change_data(
    table: &DeltaTable,
    schema: &SchemaRef,
    changes: &[(Vec<RecordBatch>, &str)],
) -> Result<Action> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| (**f).clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, true));
    let cdc_schema = Arc::new(Schema::new(fields));
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, cdc_schema.clone(), Some(props))?;
    for (batches, kind) in changes {
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(StringArray::from(vec![*kind; b.num_rows()])));
            w.write(&RecordBatch::try_new(cdc_schema.clone(), cols)?)?;
        }
    }
    w.close()?;
    let path = format!(
        "_change_data/cdc-00000-{}.c000.snappy.parquet",
        uuid::Uuid::new_v4()
    );
    let size = buf.len() as i64;
    table
        .object_store()
        .put(&object_store::path::Path::from(path.as_str()), buf.into())
        .await?;
    Ok(Action::Cdc(AddCDCFile {
        path,
        size,
        partition_values: Default::default(),
        data_change: false,
        tags: None,
    }))
}

/// Commits as a MERGE that read the whole table, claiming the table for this run (two runs that
/// read the same version cannot both commit).
async fn commit_actions(
    t: &Table,
    table: &DeltaTable,
    actions: Vec<Action>,
    props: CommitProperties,
) -> Result<i64> {
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(format!(
            "t.{k} = s.{k} AND t.valid_from = s.valid_from",
            k = t.key
        )),
        matched_predicates: vec![MergePredicate {
            action_type: "update".into(),
            predicate: Some("s._op = 'close'".into()),
        }],
        not_matched_predicates: vec![MergePredicate {
            action_type: "insert".into(),
            predicate: Some("s._op = 'insert'".into()),
        }],
        not_matched_by_source_predicates: vec![],
    };
    let done = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await
        .map_err(|e| super::concurrent_hint(t.name, e))?;
    Ok(done.version() as i64)
}
