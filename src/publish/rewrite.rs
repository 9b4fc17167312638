//! The daily SCD2 commit without a MERGE join: the stored current versions to close are known
//! by key and `valid_from`, so only the files that hold current rows are read (a file's
//! statistics say whether it has any: `valid_to` has nulls), the files among them with a version
//! to close are written again and the new versions are added, in one commit with the Change
//! Data Feed files a MERGE would write.
//!
//! Rows that stay current are written to files of their own, closed versions to others; so the
//! next run reads and rewrites the current rows only, however long the history grows. Each file
//! is streamed: decoded a batch at a time, its current rows encoded into the new file as they
//! come, so memory holds a file's bytes and one batch, not the file decoded.
//!
//! Not here: deciding what to close (scd2.rs), rebuilt history with replaced or deleted
//! versions (a Delta MERGE in commit.rs).

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Action;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use rustc_hash::FxHashMap;
use tracing::info;

use super::merge_record::{self, MergeMetrics};
use crate::context::RunContext;
use crate::error::{Error, Result};
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
    /// Rows in the file (from its statistics; 0 when it has none).
    rows: i64,
}

/// What became of one stored file with current rows.
struct Rewritten {
    stored: Stored,
    /// The new file: the rows that stay current (and, for one file, the new current versions).
    writer: RecordBatchWriter,
    current: usize,
    /// Whether the file changes: it holds a version to close or takes new versions.
    changed: bool,
    closed: Closed,
}

/// The closed versions found in stored files.
#[derive(Default)]
struct Closed {
    /// Closed versions: those the files held already and those closed now.
    history: Vec<RecordBatch>,
    /// The versions closed now, before and after.
    before: Vec<RecordBatch>,
    after: Vec<RecordBatch>,
    count: usize,
}

/// The stored current versions to close: key → (valid_from, new valid_to).
type Closes = FxHashMap<String, (i64, i64)>;

/// Commits `changes` on top of `read_version` of the table. `Ok(None)` when the table cannot be
/// rewritten this way (deletion vectors, partitions): the caller merges instead.
pub async fn commit(
    ctx: &RunContext,
    t: &'static Table,
    read_version: u64,
    changes: Changes,
) -> Result<Option<(Option<i64>, MergeMetrics)>> {
    let started = std::time::Instant::now();
    let mut table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
    table.load_version(read_version).await?;
    let Some((stored, files_skipped)) = files_with_current_rows(&table).await? else {
        return Ok(None);
    };
    let files_scanned = stored.len();
    let schema = t.arrow_schema();
    let to_close = changes.closes.len();
    let closes: Arc<Closes> = Arc::new(
        changes
            .closes
            .into_iter()
            .map(|(k, from, to)| (k, (from, to)))
            .collect(),
    );
    // The new versions: those still open join the rows that stay current, closed ones the
    // history.
    let (mut new_current, mut history, mut inserts) = (Vec::new(), Vec::new(), Vec::new());
    for b in changes.inserts {
        let b = crate::delta::conform(&b, &schema)?;
        let open = crate::delta::micros(&b, schema::VALID_TO)?;
        let is_open = BooleanArray::from_iter((0..b.num_rows()).map(|i| Some(open.is_null(i))));
        new_current.push(filter_record_batch(&b, &is_open)?);
        history.push(filter_record_batch(&b, &arrow::compute::not(&is_open)?)?);
        inserts.push(b);
    }
    let inserted: usize = inserts.iter().map(RecordBatch::num_rows).sum();

    let files = rewrite_files(&table, t, stored, &mut new_current, &closes, &schema).await?;
    let (mut removes, mut writers, mut before, mut after) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut closed, mut current) = (0, 0);
    // An unchanged file (nothing to close, no new versions) is left as it is: its copy and
    // the closed versions it held are dropped unwritten.
    for r in files.into_iter().filter(|r| r.changed) {
        closed += r.closed.count;
        history.extend(r.closed.history);
        before.extend(r.closed.before);
        after.extend(r.closed.after);
        removes.push(Action::Remove(r.stored.remove));
        writers.push(r.writer);
        current += r.current;
    }
    if closed != to_close {
        return Err(Error::Invariant {
            table: t.name.into(),
            detail: format!(
                "{} of the {} current versions to close were not found in the table (was it changed by hand?)",
                to_close - closed,
                to_close
            ),
        });
    }
    let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    let written = current + rows(&new_current) + rows(&history);
    let mut actions = removes;
    let files_removed = actions.len();
    actions.extend(finish(writers).await?);
    // No file had current rows: the new current versions get files of their own.
    actions.extend(crate::delta::write_files(&table, t, new_current).await?);
    actions.extend(crate::delta::write_files(&table, t, history).await?);
    let files_added = actions.len() - files_removed;
    let changes = [
        (before, "update_preimage"),
        (after, "update_postimage"),
        (inserts, "insert"),
    ];
    actions.push(merge_record::change_data(&table, &schema, &changes).await?);
    // The operation metrics a MERGE records, so that `history` reads the same either way.
    let metrics = merge_record::MergeMetrics {
        source_rows: to_close + inserted,
        inserted,
        updated: closed,
        copied: written - inserted - closed,
        written,
        files_scanned,
        files_skipped,
        files_added,
        files_removed,
        ms: started.elapsed().as_millis() as u64,
    };
    let mut metadata = crate::delta::commit_metadata(&ctx.run_id, "publish");
    metadata.push(("operationMetrics".into(), metrics.json()));
    metadata.push(("readVersion".into(), serde_json::json!(read_version)));
    let props = CommitProperties::default()
        .with_metadata(metadata)
        .with_application_transaction(crate::delta::claim(t, read_version));
    let version = merge_record::commit_actions(t, &table, actions, props).await?;
    info!(
        table = t.name,
        inserted,
        updated = closed,
        files_removed,
        files_added,
        "closed and inserted versions"
    );
    Ok(Some((Some(version), metrics)))
}

/// Reads every file with current rows on a task of its own, batch by batch, encoding the rows
/// that stay current into its new file as they are decoded: a file is never held decoded as a
/// whole. The new current versions (`new_current`, taken) go into the smallest file's new file,
/// so the number of files of current rows stays the same from day to day.
async fn rewrite_files(
    table: &DeltaTable,
    t: &'static Table,
    stored: Vec<Stored>,
    new_current: &mut Vec<RecordBatch>,
    closes: &Arc<Closes>,
    schema: &SchemaRef,
) -> Result<Vec<Rewritten>> {
    let mut tasks = tokio::task::JoinSet::new();
    let smallest = (0..stored.len()).min_by_key(|&i| stored[i].rows);
    let n = stored.len();
    for (i, f) in stored.into_iter().enumerate() {
        let extra = if Some(i) == smallest {
            std::mem::take(new_current)
        } else {
            Vec::new()
        };
        let writer = crate::delta::file_writer(table, t)?;
        let (store, closes, schema) = (table.object_store(), closes.clone(), schema.clone());
        tasks.spawn(async move {
            rewrite_file(t, store, f, writer, extra, &closes, &schema)
                .await
                .map(|r| (i, r))
        });
    }
    // Every task is awaited before an error is returned.
    let mut files: Vec<Option<Rewritten>> = (0..n).map(|_| None).collect();
    let mut failed = None;
    while let Some(done) = tasks.join_next().await {
        match done.map_err(|e| Error::Internal(format!("rewriting a file: {e}"))) {
            Ok(Ok((i, r))) => files[i] = Some(r),
            Ok(Err(e)) | Err(e) => failed = failed.or(Some(e)),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(files.into_iter().flatten().collect()),
    }
}

/// Finishes the new files (the last rows encoded, the files put in the table's folder), on
/// every core; their `add` actions.
async fn finish(writers: Vec<RecordBatchWriter>) -> Result<Vec<Action>> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut w in writers {
        tasks.spawn(async move { w.flush().await });
    }
    crate::delta::added_files(tasks).await
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
        let stats = f
            .stats()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
        let open_rows = stats
            .as_ref()
            .and_then(|s| s["nullCount"][schema::VALID_TO].as_i64());
        if open_rows == Some(0) {
            skipped += 1;
            continue;
        }
        out.push(Stored {
            remove: f.remove_action(true),
            path: f.object_store_path(),
            rows: stats
                .and_then(|s| s["numRecords"].as_i64())
                .unwrap_or_default(),
        });
    }
    Ok(Some((out, skipped)))
}

/// Reads one stored file batch by batch, writing the rows that stay current to `writer` (and
/// then `extra`, the new current versions it takes) and keeping the closed versions.
async fn rewrite_file(
    t: &Table,
    store: Arc<dyn object_store::ObjectStore>,
    stored: Stored,
    mut writer: RecordBatchWriter,
    extra: Vec<RecordBatch>,
    closes: &Closes,
    schema: &SchemaRef,
) -> Result<Rewritten> {
    let bytes = store.get(&stored.path).await?.bytes().await?;
    // A mapped local file's pages are given back after each batch (docs/ARCHITECTURE.md,
    // "Reading local files"): the reader moves forward through each column's pages
    // and never reads a page behind it again, and the few it is in the middle of are read again
    // from the page cache. Two files at once held up to 110 MB of their pages at 1M.
    let release = crate::storage::pages_of(&bytes);
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?
            .with_batch_size(64 * 1024)
            .build()?;
    let mut closed = Closed::default();
    let mut current = 0;
    for b in reader {
        if let Some(release) = &release {
            release(&bytes);
        }
        let b = crate::delta::conform(&b?, schema)?;
        let stays = split_batch(t, &b, closes, &mut closed)?;
        if stays.num_rows() > 0 {
            current += stays.num_rows();
            writer.write(stays).await?;
        }
    }
    let changed = closed.count > 0 || extra.iter().any(|b| b.num_rows() > 0);
    for b in extra.into_iter().filter(|b| b.num_rows() > 0) {
        current += b.num_rows();
        writer.write(b).await?;
    }
    Ok(Rewritten {
        stored,
        writer,
        current,
        changed,
        closed,
    })
}

/// Splits one batch of a stored file: returns the rows that stay current; the rows already
/// closed and the versions closed now (before and after) go to `out`.
fn split_batch(
    t: &Table,
    b: &RecordBatch,
    closes: &Closes,
    out: &mut Closed,
) -> Result<RecordBatch> {
    let keys = crate::delta::text(b, t.scd2_key()?)?;
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
    if current.true_count() < b.num_rows() {
        out.history
            .push(filter_record_batch(b, &arrow::compute::not(&current)?)?);
    }
    if rows.is_empty() {
        return Ok(if current.true_count() == b.num_rows() {
            b.clone()
        } else {
            filter_record_batch(b, &current)?
        });
    }
    let mut closing = vec![false; b.num_rows()];
    for (i, _) in &rows {
        closing[*i as usize] = true;
    }
    let stays_current =
        BooleanArray::from_iter((0..b.num_rows()).map(|i| Some(current.value(i) && !closing[i])));
    let before = take_record_batch(
        b,
        &UInt32Array::from_iter_values(rows.iter().map(|(i, _)| *i)),
    )?;
    let n = rows.len();
    let after = super::staged::replace_column(
        &super::staged::replace_column(
            &before,
            schema::VALID_TO,
            super::staged::ts(rows.iter().map(|(_, to)| Some(*to))),
        )?,
        schema::IS_CURRENT,
        Arc::new(BooleanArray::from(vec![false; n])),
    )?;
    out.history.push(after.clone());
    out.before.push(before);
    out.after.push(after);
    out.count += n;
    Ok(filter_record_batch(b, &stays_current)?)
}

fn bools(b: &RecordBatch, name: &str) -> Result<BooleanArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
        .cloned()
        .ok_or_else(|| Error::Internal(format!("column `{name}` is not a boolean")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::DataType;

    /// A batch of `elev` with the given (key, valid_from, valid_to) rows; other columns filled
    /// with placeholders.
    fn elev_rows(rows: &[(&str, i64, Option<i64>)]) -> RecordBatch {
        let schema = schema::ELEV.arrow_schema();
        let n = rows.len();
        let ts = |v: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
        };
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "id" => {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef
                }
                schema::VALID_FROM => ts(rows.iter().map(|r| Some(r.1)).collect()),
                schema::VALID_TO => ts(rows.iter().map(|r| r.2).collect()),
                schema::IS_CURRENT => Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|r| Some(r.2.is_none())),
                )),
                _ if f.is_nullable() => arrow::array::new_null_array(f.data_type(), n),
                _ if f.data_type() == &DataType::Utf8 => Arc::new(StringArray::from(vec!["x"; n])),
                _ => {
                    arrow::compute::cast(&arrow::array::Int64Array::from(vec![0; n]), f.data_type())
                        .unwrap()
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn keys(b: &[RecordBatch]) -> Vec<(String, Option<i64>)> {
        b.iter()
            .flat_map(|b| {
                let k = crate::delta::text(b, "id").unwrap();
                let to = crate::delta::micros(b, schema::VALID_TO).unwrap();
                (0..b.num_rows())
                    .map(|i| {
                        (
                            k.value(i).to_string(),
                            (!to.is_null(i)).then(|| to.value(i)),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_batch_splits_into_rows_that_stay_current_history_and_closed_versions() {
        let b = elev_rows(&[
            ("a", 10, None),
            ("b", 10, Some(20)),
            ("b", 20, None),
            ("c", 10, None),
            // A version to close whose valid_from does not match stays current.
            ("d", 15, None),
        ]);
        let closes: Closes = [
            ("b".to_string(), (20, 30)),
            ("c".to_string(), (10, 30)),
            ("d".to_string(), (10, 30)),
        ]
        .into_iter()
        .collect();
        let mut closed = Closed::default();
        let stays = split_batch(&schema::ELEV, &b, &closes, &mut closed).unwrap();
        assert_eq!(keys(&[stays]), [("a".into(), None), ("d".into(), None)]);
        assert_eq!(closed.count, 2);
        assert_eq!(
            keys(&closed.before),
            [("b".into(), None), ("c".into(), None)]
        );
        assert_eq!(
            keys(&closed.after),
            [("b".into(), Some(30)), ("c".into(), Some(30))]
        );
        // The version closed earlier and the two closed now.
        assert_eq!(
            keys(&closed.history),
            [
                ("b".into(), Some(20)),
                ("b".into(), Some(30)),
                ("c".into(), Some(30))
            ]
        );
        let after_current = bools(&closed.after[0], schema::IS_CURRENT).unwrap();
        assert_eq!(after_current.true_count(), 0);

        // A batch with nothing to close passes through whole.
        let mut none = Closed::default();
        let b = elev_rows(&[("e", 10, None), ("f", 10, None)]);
        let stays = split_batch(&schema::ELEV, &b, &closes, &mut none).unwrap();
        assert_eq!(stays.num_rows(), 2);
        assert_eq!(none.count, 0);
        assert!(none.history.is_empty() && none.before.is_empty());
    }
}
