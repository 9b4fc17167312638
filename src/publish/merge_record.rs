//! What makes the streamed rewrite read, to every reader, as the MERGE it replaces: the Change
//! Data Feed file a MERGE writes (`update_preimage`, `update_postimage`, `insert`), the MERGE's
//! operation metrics, and the commit recorded as a MERGE under the table's claim.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, AddCDCFile};
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::schema::Table;

/// What a delta-rs MERGE reports in `operationMetrics`.
pub struct MergeMetrics {
    pub source_rows: usize,
    pub inserted: usize,
    pub updated: usize,
    pub copied: usize,
    pub written: usize,
    pub files_scanned: usize,
    pub files_skipped: usize,
    pub files_added: usize,
    pub files_removed: usize,
    pub ms: u64,
}

impl MergeMetrics {
    pub fn json(&self) -> serde_json::Value {
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

/// Writes the Change Data Feed file of the commit: the closed versions before and after
/// (`update_preimage`, `update_postimage`) and the new versions (`insert`), as a MERGE does.
pub async fn change_data(
    table: &DeltaTable,
    schema: &SchemaRef,
    changes: &[(Vec<RecordBatch>, &str)],
) -> Result<Action> {
    change_data_in(table, schema, changes, None).await
}

/// [`change_data`] for one partition of a partitioned table: `schema` and the rows without the
/// partition column, whose value the action carries (as Delta keeps it for data files).
pub async fn change_data_in(
    table: &DeltaTable,
    schema: &SchemaRef,
    changes: &[(Vec<RecordBatch>, &str)],
    partition: Option<(&str, Option<&str>)>,
) -> Result<Action> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| (**f).clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, true));
    let cdc_schema = Arc::new(Schema::new(fields));
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, cdc_schema.clone(), Some(props))?;
    let mut rows = 0;
    for (batches, kind) in changes {
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(StringArray::from(vec![*kind; b.num_rows()])));
            w.write(&RecordBatch::try_new(cdc_schema.clone(), cols)?)?;
            rows += b.num_rows();
        }
    }
    w.close()?;
    let folder = match partition {
        Some((column, Some(value))) => format!("_change_data/{column}={value}/"),
        Some((column, None)) => format!("_change_data/{column}=__HIVE_DEFAULT_PARTITION__/"),
        None => "_change_data/".to_string(),
    };
    let path = format!(
        "{folder}cdc-00000-{}.c000.snappy.parquet",
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
        partition_values: partition
            .map(|(c, v)| [(c.to_string(), v.map(str::to_string))].into())
            .unwrap_or_default(),
        data_change: false,
        // The rows in the file, for a reader that counts what it hands out (`utlevering`).
        tags: Some([("numRecords".to_string(), Some(rows.to_string()))].into()),
    }))
}

/// Commits as a MERGE that read the whole table, claiming the table for this run (two runs that
/// read the same version cannot both commit).
pub async fn commit_actions(
    t: &Table,
    table: &DeltaTable,
    actions: Vec<Action>,
    props: CommitProperties,
) -> Result<i64> {
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(format!(
            "t.{k} = s.{k} AND t.valid_from = s.valid_from",
            k = t.scd2_key()?
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
        .map_err(|e| match crate::delta::is_conflict(&e) {
            true => Error::ConcurrentRun(t.name.to_string()),
            false => e.into(),
        })?;
    Ok(done.version() as i64)
}
