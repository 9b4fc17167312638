//! What a publish measures, for `kvalitet`: the row-count change of current pupils (rule
//! `radendring`, checked before anything is committed) and the published state. The rows
//! themselves are made in `crate::metrics`.

use arrow::array::Array;
use deltalake::datafusion::prelude::SessionContext;

use super::staged::opt;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::metrics::{PublishMetrics, RowChange, TableState};
use crate::quality::{rules, Severity};
use crate::schema;
use polars::prelude::*;

/// The change in the number of current pupils against what is stored (rule `radendring`): a
/// sudden drop is more often a broken export than pupils leaving. A `fail` severity above the
/// threshold stops the run before anything is committed.
pub fn row_count_change(
    ctx: &RunContext,
    before: usize,
    after: usize,
) -> Result<Option<RowChange>> {
    if before == 0 {
        return Ok(None);
    }
    let change = after as f64 / before as f64 - 1.0;
    let limit = checker_threshold(ctx, rules::RADENDRING);
    let severity = checker_severity(ctx, rules::RADENDRING);
    let alarm = change.abs() > limit;
    if alarm {
        tracing::warn!(
            before,
            after,
            change = format!("{:+.1} %", change * 100.0),
            "the number of current pupils changed more than the threshold"
        );
        if severity == Severity::Fail {
            return Err(Error::RuleFailed(format!(
                "fail-regel broten: {} (gjeldande elevar {before} → {after}, {:+.1} %, terskel {:.0} %); ingen datatabell er endra",
                rules::RADENDRING, change * 100.0, limit * 100.0
            )));
        }
    }
    Ok(Some(RowChange {
        before,
        after,
        change,
        alarm,
        severity,
    }))
}

pub(super) fn checker_threshold(ctx: &RunContext, rule: &str) -> f64 {
    ctx.pipeline
        .file
        .quality
        .threshold_override(rule)
        .or(rules::find(rule).and_then(|r| r.threshold))
        .unwrap_or(0.0)
}

pub(super) fn checker_severity(ctx: &RunContext, rule: &str) -> Severity {
    ctx.pipeline
        .file
        .quality
        .severity_override(rule)
        .or(rules::find(rule).map(|r| r.default))
        .unwrap_or(Severity::Warn)
}

/// Current rows of an SCD2 table (0 without the table).
pub async fn current_count(session: &SessionContext, table: &str) -> Result<usize> {
    count_where(session, table, "is_current").await
}

async fn count_where(session: &SessionContext, table: &str, condition: &str) -> Result<usize> {
    if !crate::delta::has_table(session, table) {
        return Ok(0);
    }
    let b = crate::delta::query(
        session,
        &format!("SELECT count(*) AS n FROM {table} WHERE {condition}"),
    )
    .await?;
    let n = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64)?;
    Ok(n.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .map(|a| a.value(0) as usize)
        .unwrap_or(0))
}

/// What the published state measures: rows per table, unique keys, freshness per source,
/// pupils per class and trinn (the row-count change is set by the caller).
pub async fn table_metrics(ctx: &RunContext) -> Result<PublishMetrics> {
    let session = crate::delta::session(&ctx.pipeline, &schema::SCD2_NAMES).await?;
    let mut m = PublishMetrics::default();
    for t in schema::SCD2_TABLES {
        if crate::delta::has_table(&session, t.name) {
            m.tables.push(row_counts(&session, t).await?);
        }
    }
    m.freshness = freshness(ctx).await?;
    if crate::delta::has_table(&session, "elevforhold") {
        m.pupils = pupils_per_class(&session).await?;
    }
    Ok(m)
}

/// Rows in a table, current rows, and current rows beyond the first with the same key.
async fn row_counts(session: &SessionContext, t: &schema::Table) -> Result<TableState> {
    let (name, key) = (t.name, t.scd2_key()?);
    let n = count_where(session, name, "true").await?;
    // The current rows are the keys' rows: counted from them, not by a scan of their own.
    let keys = crate::delta::query(
        session,
        &format!("SELECT {key} FROM {name} WHERE is_current"),
    )
    .await?;
    let c = crate::delta::row_count(&keys);
    let d = duplicates(&keys, key)?;
    Ok(TableState {
        table: name,
        rows: n as f64,
        current: c as f64,
        key,
        duplicates: d,
    })
}

/// `count(*) - count(DISTINCT key)` of the rows in `batches` (a missing key counts as one
/// beyond the first, as in SQL), counted on the keys' 128-bit hashes in a sorted vector rather
/// than in a set of the key texts: a million current pupils are 16 MB sorted, not a hash table
/// of copied strings (a collision is as likely as guessing a random UUID twice,
/// docs/ARCHITECTURE.md "Identity").
fn duplicates(batches: &[arrow::array::RecordBatch], key: &str) -> Result<i64> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut hashes = Vec::with_capacity(rows);
    for b in batches {
        let keys = crate::delta::text(b, key)?;
        hashes.extend(
            (0..b.num_rows())
                .filter_map(|i| keys.opt(i))
                .map(|k| xxhash_rust::xxh3::xxh3_128(k.as_bytes())),
        );
    }
    crate::sort::by_hash(&mut hashes, |h| (h >> 64) as u64, Ord::cmp);
    hashes.dedup();
    Ok((rows - hashes.len()) as i64)
}

/// Freshness: age of the newest published snapshot per source.
async fn freshness(ctx: &RunContext) -> Result<Vec<(String, f64)>> {
    let mut m = Vec::new();
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
                m.push((k.value(i).to_string(), days));
            }
        }
    }
    Ok(m)
}

/// Pupils per class, school and trinn among the current elevforhold (with polars).
async fn pupils_per_class(
    session: &SessionContext,
) -> Result<Vec<(&'static str, Option<String>, f64)>> {
    let batches = crate::delta::query(
        session,
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
    let df = DataFrame::new_infer_height(vec![
        Column::new("skolenummer".into(), s),
        Column::new("klasse".into(), k),
        Column::new("trinn".into(), tr),
    ])?;
    per_group(&df)
}

/// Pupils per (skolenummer, klasse), per school and per trinn among the given elevforhold rows,
/// with polars.
fn per_group(ef: &DataFrame) -> Result<Vec<(&'static str, Option<String>, f64)>> {
    let mut m = Vec::new();
    if ef.height() == 0 {
        return Ok(m);
    }
    for (metric, by) in [
        (
            crate::metrics::name::ELEVAR_PER_KLASSE,
            &["skolenummer", "klasse"][..],
        ),
        (crate::metrics::name::ELEVAR_PER_SKULE, &["skolenummer"][..]),
        (crate::metrics::name::ELEVAR_PER_TRINN, &["trinn"][..]),
    ] {
        for (label, n) in counts(ef, by)? {
            m.push((metric, label, n));
        }
    }
    Ok(m)
}

/// Rows per group of the `by` columns, in their order. A group's label is its value (`None`
/// when null), or its values joined by `/` with `-` for a null.
fn counts(df: &DataFrame, by: &[&str]) -> Result<Vec<(Option<String>, f64)>> {
    let grouped = df
        .clone()
        .lazy()
        .group_by(by.iter().map(|c| col(*c)).collect::<Vec<_>>())
        .agg([len().alias("antall")])
        .sort(by.to_vec(), Default::default())
        .collect()?;
    let keys = by
        .iter()
        .map(|c| grouped.column(c)?.cast(&DataType::String))
        .collect::<PolarsResult<Vec<_>>>()?;
    let keys = keys
        .iter()
        .map(|k| k.str())
        .collect::<PolarsResult<Vec<_>>>()?;
    let n = grouped.column("antall")?.cast(&DataType::Int64)?;
    let n = n.i64()?;
    Ok((0..grouped.height())
        .map(|i| {
            let label = match keys.as_slice() {
                [one] => one.get(i).map(str::to_string),
                many => Some(
                    many.iter()
                        .map(|k| k.get(i).unwrap_or("-"))
                        .collect::<Vec<_>>()
                        .join("/"),
                ),
            };
            (label, n.get(i).unwrap_or(0) as f64)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch, StringArray, StringViewArray};

    use super::duplicates;

    fn batch(keys: ArrayRef) -> RecordBatch {
        RecordBatch::try_from_iter([("id", keys)]).unwrap()
    }

    #[test]
    fn duplicates_count_as_sql_counts_them() {
        // count(*) = 6, count(DISTINCT id) = 3 (a, b, c; the null is not counted).
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            Some("c"),
            Some("b"),
        ]));
        assert_eq!(duplicates(&[batch(text)], "id").unwrap(), 3);
        // The same key in two batches, as string views.
        let view = |k: &str| -> ArrayRef { Arc::new(StringViewArray::from(vec![k])) };
        let two = [batch(view("x")), batch(view("x")), batch(view("y"))];
        assert_eq!(duplicates(&two, "id").unwrap(), 1);
        assert_eq!(duplicates(&[], "id").unwrap(), 0);
        let unique: ArrayRef = Arc::new(StringArray::from(vec!["p", "q", "r"]));
        assert_eq!(duplicates(&[batch(unique)], "id").unwrap(), 0);
        assert!(duplicates(&two, "other").is_err());
    }
}
