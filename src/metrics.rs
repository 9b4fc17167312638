//! Quality metrics (`kvalitet`), the deviation list (`avvik`) and the run log (`kjoring`):
//! built from the values each stage returns, not recomputed elsewhere.

use std::sync::Arc;

use arrow::array::{Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use polars::prelude::*;

use crate::context::RunContext;
use crate::error::Result;
use crate::schema;

/// The names of the metrics in `kvalitet` (`regel_eller_metrikk`) that are not quality rules
/// (those are `quality::rules`). One place, so a report or a test can find each by name.
pub mod name {
    /// raw: files read in this run.
    pub const FILER_LESNE: &str = "filer_lesne";
    /// raw: files skipped (already ingested, or unchanged by name, size and time).
    pub const FILER_HOPPA_OVER: &str = "filer_hoppa_over";
    /// rows in: raw records read, or rows a format produced for a table.
    pub const RADER_INN: &str = "rader_inn";
    /// rows kept after validation.
    pub const RADER_UT: &str = "rader_ut";
    /// rows dropped by `drop` rules.
    pub const RADER_FORKASTA: &str = "rader_forkasta";
    /// share of rows with a value in a column.
    pub const KOMPLETTHET: &str = "kompletthet";
    /// records with an invalid fødselsnummer (any fnr rule).
    pub const UGYLDIGE_FODSELSNUMMER: &str = "ugyldige_fodselsnummer";
    /// rows in a published table, every version.
    pub const RADER_TOTALT: &str = "rader_totalt";
    /// current rows in a published table.
    pub const RADER_GJELDANDE: &str = "rader_gjeldande";
    /// share of current rows with a unique key.
    pub const UNIK_NOKKEL: &str = "unik_nokkel";
    /// age in days of a source's newest published snapshot.
    pub const FERSKLEIK_DAGAR: &str = "ferskleik_dagar";
    /// current pupils per school and class.
    pub const ELEVAR_PER_KLASSE: &str = "elevar_per_klasse";
    /// current pupils per school.
    pub const ELEVAR_PER_SKULE: &str = "elevar_per_skule";
    /// current pupils per trinn.
    pub const ELEVAR_PER_TRINN: &str = "elevar_per_trinn";
}

/// One row of `kvalitet`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Metric {
    pub tabell: String,
    pub regel_eller_metrikk: String,
    pub kolonne: Option<String>,
    pub verdi: Option<f64>,
    pub bestatt: Option<i64>,
    pub feila: Option<i64>,
    pub status: String,
}

impl Metric {
    pub fn value(tabell: &str, name: &str, kolonne: Option<String>, verdi: f64) -> Metric {
        Metric {
            tabell: tabell.into(),
            regel_eller_metrikk: name.into(),
            kolonne,
            verdi: Some(verdi),
            bestatt: None,
            feila: None,
            status: "ok".into(),
        }
    }
}

/// Pupils per (skolenummer, klasse), per school and per trinn among the given elevforhold rows,
/// with polars.
pub fn pupils_per_class(ef: &DataFrame) -> Result<Vec<Metric>> {
    let mut m = Vec::new();
    if ef.height() == 0 {
        return Ok(m);
    }
    for (metric, by) in [
        (name::ELEVAR_PER_KLASSE, &["skolenummer", "klasse"][..]),
        (name::ELEVAR_PER_SKULE, &["skolenummer"][..]),
        (name::ELEVAR_PER_TRINN, &["trinn"][..]),
    ] {
        for (label, n) in counts(ef, by)? {
            m.push(Metric::value("elevforhold", metric, label, n));
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

pub async fn write_kvalitet(ctx: &RunContext, metrics: &[Metric]) -> Result<Option<i64>> {
    let t = &schema::KVALITET;
    let mut run_id = StringBuilder::new();
    let mut malt = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut tabell = StringBuilder::new();
    let mut regel = StringBuilder::new();
    let mut kolonne = StringBuilder::new();
    let mut verdi = Float64Builder::new();
    let mut bestatt = Int64Builder::new();
    let mut feila = Int64Builder::new();
    let mut status = StringBuilder::new();
    let now = chrono::Utc::now().timestamp_micros();
    for m in metrics {
        run_id.append_value(&ctx.run_id);
        malt.append_value(now);
        tabell.append_value(&m.tabell);
        regel.append_value(&m.regel_eller_metrikk);
        kolonne.append_option(m.kolonne.as_deref());
        verdi.append_option(m.verdi);
        bestatt.append_option(m.bestatt);
        feila.append_option(m.feila);
        status.append_value(&m.status);
    }
    let batch = t.batch(vec![
        ("run_id", Arc::new(run_id.finish())),
        ("malt", Arc::new(malt.finish())),
        ("tabell", Arc::new(tabell.finish())),
        ("regel_eller_metrikk", Arc::new(regel.finish())),
        ("kolonne", Arc::new(kolonne.finish())),
        ("verdi", Arc::new(verdi.finish())),
        ("bestatt", Arc::new(bestatt.finish())),
        ("feila", Arc::new(feila.finish())),
        ("status", Arc::new(status.finish())),
    ])?;
    crate::delta::append(ctx, t, batch, "metrics").await
}

/// One row of `kjoring`.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub steg: String,
    pub status: String,
    pub melding: Option<String>,
    pub input_files: Vec<String>,
    pub rows_per_table: serde_json::Value,
    pub delta_versions: serde_json::Value,
}

pub async fn write_kjoring(ctx: &RunContext, log: &RunLog) -> Result<Option<i64>> {
    let t = &schema::KJORING;
    let s = |v: &str| Arc::new(arrow::array::StringArray::from(vec![v])) as arrow::array::ArrayRef;
    let so = |v: Option<String>| {
        Arc::new(arrow::array::StringArray::from(vec![v])) as arrow::array::ArrayRef
    };
    let ts = |v: i64| {
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
            as arrow::array::ArrayRef
    };
    let batch = t.batch(vec![
        ("run_id", s(&ctx.run_id)),
        ("pipeline", s(ctx.pipeline.name())),
        ("steg", s(&log.steg)),
        ("started", ts(ctx.started.timestamp_micros())),
        ("finished", ts(chrono::Utc::now().timestamp_micros())),
        ("status", s(&log.status)),
        ("melding", so(log.melding.clone())),
        (
            "input_files",
            so(Some(
                serde_json::to_string(&log.input_files).unwrap_or_default(),
            )),
        ),
        ("rows_per_table", so(Some(log.rows_per_table.to_string()))),
        ("delta_versions", so(Some(log.delta_versions.to_string()))),
        ("elevflyt_version", s(env!("CARGO_PKG_VERSION"))),
    ])?;
    crate::delta::append(ctx, t, batch, "kjoring").await
}
