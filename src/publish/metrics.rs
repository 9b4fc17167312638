//! The `kvalitet` rows of a publish: the row-count change of current pupils (rule
//! `radendring`, checked before anything is committed) and the metrics over the published state.

use arrow::array::Array;
use deltalake::datafusion::prelude::SessionContext;

use super::staged::opt;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::metrics::Metric;
use crate::quality::{rules, Severity};
use crate::schema;

/// The change in the number of current pupils against what is stored (rule `radendring`): a
/// sudden drop is more often a broken export than pupils leaving. A `fail` severity above the
/// threshold stops the run before anything is committed.
pub fn row_count_change(ctx: &RunContext, before: usize, after: usize) -> Result<Option<Metric>> {
    if before == 0 {
        return Ok(None);
    }
    let change = after as f64 / before as f64 - 1.0;
    let limit = checker_threshold(ctx, rules::RADENDRING);
    let sev = checker_severity(ctx, rules::RADENDRING);
    let alarm = change.abs() > limit;
    if alarm {
        tracing::warn!(
            before,
            after,
            change = format!("{:+.1} %", change * 100.0),
            "the number of current pupils changed more than the threshold"
        );
        if sev == Severity::Fail {
            return Err(Error::RuleFailed(format!(
                "fail-regel broten: {} (gjeldande elevar {before} → {after}, {:+.1} %, terskel {:.0} %); ingen datatabell er endra",
                rules::RADENDRING, change * 100.0, limit * 100.0
            )));
        }
    }
    Ok(Some(Metric {
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
    }))
}

fn checker_threshold(ctx: &RunContext, rule: &str) -> f64 {
    ctx.pipeline
        .file
        .quality
        .threshold_override(rule)
        .or(rules::find(rule).and_then(|r| r.threshold))
        .unwrap_or(0.0)
}

fn checker_severity(ctx: &RunContext, rule: &str) -> Severity {
    ctx.pipeline
        .file
        .quality
        .severity_override(rule)
        .or(rules::find(rule).map(|r| r.default))
        .unwrap_or(Severity::Warn)
}

pub async fn current_count(session: &SessionContext, table: &str) -> Result<usize> {
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

/// Metrics over the published current state: rows per table, unique keys, freshness per
/// source, pupils per class and trinn.
pub async fn table_metrics(ctx: &RunContext) -> Result<Vec<Metric>> {
    let session = crate::delta::session(&ctx.pipeline, &schema::SCD2_NAMES).await?;
    let mut m = Vec::new();
    for t in schema::SCD2_NAMES {
        if crate::delta::has_table(&session, t) {
            m.extend(row_counts(&session, t).await?);
        }
    }
    m.extend(freshness(ctx).await?);
    if crate::delta::has_table(&session, "elevforhold") {
        m.extend(pupils_per_class(&session).await?);
    }
    Ok(m)
}

/// Rows in a table, current rows, and the share of current rows with a unique key.
async fn row_counts(session: &SessionContext, t: &str) -> Result<Vec<Metric>> {
    let mut m = Vec::new();
    let b = crate::delta::query(
        session,
        &format!("SELECT count(*) AS n, sum(CASE WHEN is_current THEN 1 ELSE 0 END) AS c FROM {t}"),
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
        m.push(Metric::value(
            t,
            crate::metrics::name::RADER_TOTALT,
            None,
            n,
        ));
        m.push(Metric::value(
            t,
            crate::metrics::name::RADER_GJELDANDE,
            None,
            c,
        ));
        let key = if t == "skole" { "skolenummer" } else { "id" };
        let dup = crate::delta::query(
            session,
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
            regel_eller_metrikk: crate::metrics::name::UNIK_NOKKEL.into(),
            kolonne: Some(key.into()),
            verdi: Some(if c > 0.0 { (c - d as f64) / c } else { 1.0 }),
            bestatt: Some(c as i64 - d),
            feila: Some(d),
            status: if d == 0 { "ok".into() } else { "fail".into() },
        });
    }
    Ok(m)
}

/// Freshness: age of the newest published snapshot per source.
async fn freshness(ctx: &RunContext) -> Result<Vec<Metric>> {
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
                m.push(Metric::value(
                    "leveranse",
                    crate::metrics::name::FERSKLEIK_DAGAR,
                    Some(k.value(i).to_string()),
                    days,
                ));
            }
        }
    }
    Ok(m)
}

/// Pupils per class, school and trinn among the current elevforhold (with polars).
async fn pupils_per_class(session: &SessionContext) -> Result<Vec<Metric>> {
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
    use polars::prelude::{Column, DataFrame};
    let df = DataFrame::new_infer_height(vec![
        Column::new("skolenummer".into(), s),
        Column::new("klasse".into(), k),
        Column::new("trinn".into(), tr),
    ])?;
    crate::metrics::pupils_per_class(&df)
}
