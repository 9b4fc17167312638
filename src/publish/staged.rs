//! The staged snapshots as publish reads them: the rows of each table indexed by snapshot, and
//! the small batch helpers the other publish steps share.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::compute::take_record_batch;

use crate::error::{Error, Result};
use crate::ledger::{stage_table, SnapshotKey};
use crate::schema::Table;

/// Staged rows of one table, with the rows of each snapshot.
pub struct StagedTable {
    batch: RecordBatch,
    rows: HashMap<SnapshotKey, Vec<u32>>,
}

impl StagedTable {
    pub fn new(t: &Table, batches: &[RecordBatch]) -> Result<StagedTable> {
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

impl StagedTable {
    /// The rows of one snapshot.
    pub fn snapshot(&self, key: &SnapshotKey) -> Result<RecordBatch> {
        rows_of(
            &self.batch,
            self.rows.get(key).map(Vec::as_slice).unwrap_or_default(),
        )
    }
}

/// The given rows of a batch, in that order; the batch itself (not a copy) when they are all
/// of its rows in order, as in a run with one snapshot or a first load.
pub fn rows_of(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    if rows.len() == batch.num_rows() && rows.iter().enumerate().all(|(i, r)| i as u32 == *r) {
        return Ok(batch.clone());
    }
    Ok(take_record_batch(
        batch,
        &UInt32Array::from_iter_values(rows.iter().copied()),
    )?)
}

/// The batch with one column's values replaced.
pub fn replace_column(batch: &RecordBatch, name: &str, values: ArrayRef) -> Result<RecordBatch> {
    let idx = batch
        .schema()
        .index_of(name)
        .map_err(|_| Error::Internal(format!("no column {name}")))?;
    let mut cols = batch.columns().to_vec();
    cols[idx] = values;
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

pub fn opt(a: &StringArray, i: usize) -> Option<String> {
    opt_str(a, i).map(str::to_string)
}

pub fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// A UTC timestamp column.
pub use crate::delta::timestamps as ts;
