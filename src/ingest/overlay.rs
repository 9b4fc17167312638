//! Deliveries of changes only (a OneRoster CSV zip whose manifest says `file.users = delta`):
//! the records of such a part are laid over the source's previous snapshot of that part, so that
//! every snapshot in raw is whole and standardize never needs to know. A previous record whose
//! `sourcedId` the delta does not name is carried into the new snapshot with its own lineage
//! (the file, sha256 and record number it came from); one the delta names is replaced (a
//! `tobedeleted` row ends it). A delta with no earlier snapshot of its part is refused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};

use crate::error::{Error, Result};
use crate::schema::Table;

/// A record of an earlier snapshot, with where it came from.
#[derive(Debug, Clone)]
pub struct Carried {
    kjelde: String,
    sha256: String,
    omfang: Option<String>,
    rad: i64,
    post: String,
}

/// The newest snapshot of each part seen so far in this run (as-of µs, records).
pub type Seen = HashMap<String, (i64, Vec<Carried>)>;

#[derive(serde::Deserialize)]
struct Key<'a> {
    #[serde(rename = "sourcedId", borrow, default)]
    sourced_id: Option<std::borrow::Cow<'a, str>>,
}

fn key(post: &str) -> Option<String> {
    serde_json::from_str::<Key>(post)
        .ok()?
        .sourced_id
        .map(|s| s.into_owned())
}

/// The records of `part` in a raw batch.
pub fn of_batch(batch: &RecordBatch, part: &str) -> Result<Vec<Carried>> {
    let entitet = crate::delta::text(batch, "entitet")?;
    let kjelde = crate::delta::text(batch, "kjelde")?;
    let sha = crate::delta::text(batch, "sha256")?;
    let omfang = crate::delta::text(batch, "omfang")?;
    let post = crate::delta::text(batch, "post")?;
    let rad = arrow::compute::cast(
        batch
            .column_by_name("rad")
            .ok_or_else(|| Error::Internal("raw batch without `rad`".into()))?,
        &arrow::datatypes::DataType::Int64,
    )?;
    let rad = rad
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::Internal("`rad` is not a number".into()))?;
    Ok((0..batch.num_rows())
        .filter(|&i| entitet.value(i) == part)
        .map(|i| Carried {
            kjelde: kjelde.value(i).to_string(),
            sha256: sha.value(i).to_string(),
            omfang: omfang.opt(i).map(str::to_string),
            rad: rad.value(i),
            post: post.value(i).to_string(),
        })
        .collect())
}

/// The records of `part` in the newest snapshot of the stored raw table before `before` (µs).
pub async fn stored(
    table: Option<&deltalake::DeltaTable>,
    part: &str,
    before: i64,
) -> Result<Option<(i64, Vec<Carried>)>> {
    let Some(table) = table else {
        return Ok(None);
    };
    let session = deltalake::datafusion::prelude::SessionContext::new();
    crate::delta::register(&session, "raw", table).await?;
    let part_sql = part.replace('\'', "''");
    let newest = crate::delta::query(
        &session,
        &format!(
            "SELECT max(as_of) AS t FROM raw WHERE entitet = '{part_sql}' AND as_of < to_timestamp_micros({before})"
        ),
    )
    .await?;
    let Some(t) = newest
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| crate::delta::micros(b, "t").ok())
        .and_then(|t| {
            use arrow::array::Array;
            (!t.is_null(0)).then(|| t.value(0))
        })
    else {
        return Ok(None);
    };
    let mut rows = Vec::new();
    for b in crate::delta::query(
        &session,
        &format!(
            "SELECT kjelde, sha256, omfang, entitet, rad, post FROM raw WHERE entitet = '{part_sql}' AND as_of = to_timestamp_micros({t})"
        ),
    )
    .await?
    {
        rows.extend(of_batch(&b, part)?);
    }
    Ok(Some((t, rows)))
}

/// `batch` (one file's raw rows, as-of `t`) with the `previous` records of `part` that its delta
/// does not name appended.
pub fn lay_over(
    table: &Table,
    batch: RecordBatch,
    part: &str,
    previous: &[Carried],
) -> Result<RecordBatch> {
    let entitet = crate::delta::text(&batch, "entitet")?;
    let post = crate::delta::text(&batch, "post")?;
    let named: HashSet<String> = (0..batch.num_rows())
        .filter(|&i| entitet.value(i) == part)
        .filter_map(|i| key(post.value(i)))
        .collect();
    let carried: Vec<&Carried> = previous
        .iter()
        .filter(|c| key(&c.post).is_none_or(|k| !named.contains(&k)))
        .collect();
    if carried.is_empty() {
        return Ok(batch);
    }
    let n = carried.len();
    let first = |name: &str| -> Result<ArrayRef> {
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| Error::Internal(format!("raw batch without `{name}`")))?;
        Ok(arrow::compute::take(
            col,
            &arrow::array::UInt32Array::from(vec![0u32; n]),
            None,
        )?)
    };
    let text = |f: &dyn Fn(&Carried) -> Option<&str>| -> ArrayRef {
        Arc::new(carried.iter().map(|c| f(c)).collect::<StringArray>())
    };
    let extra = table.batch(vec![
        ("run_id", first("run_id")?),
        ("kildesystem", first("kildesystem")?),
        ("kjelde", text(&|c| Some(&c.kjelde))),
        ("sha256", text(&|c| Some(&c.sha256))),
        ("as_of", first("as_of")?),
        ("omfang", text(&|c| c.omfang.as_deref())),
        ("entitet", Arc::new(StringArray::from(vec![part; n]))),
        (
            "rad",
            Arc::new(carried.iter().map(|c| c.rad).collect::<Int64Array>()),
        ),
        ("post", text(&|c| Some(&c.post))),
        ("lastet", first("lastet")?),
    ])?;
    // The file's records may be views of its bytes (`Table::batch`): both in the table's
    // layout, to be one batch.
    let schema = table.arrow_schema();
    let batch = crate::delta::conform(&batch, &schema)?;
    let extra = crate::delta::conform(&extra, &schema)?;
    crate::delta::concat(&schema, &[batch, extra])
}
