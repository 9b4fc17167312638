//! Quality metrics (`kvalitet`) and the run log (`kjoring`): the catalogue of metric names, what
//! each stage measured as typed values, and the one place those become `kvalitet` rows — built
//! from the values the stages return, not recomputed elsewhere.

use std::sync::Arc;

use arrow::array::{Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};

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

/// What ingest measured.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct IngestMetrics {
    pub files_read: usize,
    pub files_skipped: usize,
    pub records: usize,
}

/// What standardize measured, about the new snapshots only.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StandardizeMetrics {
    /// Per table, in the order elev, elevforhold, skole.
    pub tables: Vec<TableRows>,
    /// Per quality rule checked by standardize (all but `radendring`).
    pub rules: Vec<RuleResult>,
    /// Records that broke one of the fødselsnummer rules.
    pub invalid_fnr: u64,
    /// Records left out as duplicates.
    pub duplicates: u64,
}

/// Rows of one table through standardize.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TableRows {
    pub table: &'static str,
    pub rows_in: usize,
    pub rows_out: usize,
    /// Per business column, when any row was staged: rows with a value and without.
    pub completeness: Vec<(&'static str, usize, usize)>,
}

/// One rule's result: records checked and failed, and its configured severity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleResult {
    pub rule: &'static str,
    pub table: &'static str,
    pub checked: usize,
    pub failed: u64,
    pub severity: crate::quality::Severity,
}

/// What publish measured.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PublishMetrics {
    /// Current pupils before and after, with the rule `radendring`'s verdict.
    pub row_change: Option<RowChange>,
    /// Per SCD2 table as published.
    pub tables: Vec<TableState>,
    /// Days since each source's newest published snapshot.
    pub freshness: Vec<(String, f64)>,
    /// Current pupils per class, school and trinn: (metric, group, pupils).
    pub pupils: Vec<(&'static str, Option<String>, f64)>,
}

/// The change in current pupils (rule `radendring`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowChange {
    pub before: usize,
    pub after: usize,
    /// after / before − 1.
    pub change: f64,
    /// Whether the change is above the threshold.
    pub alarm: bool,
    pub severity: crate::quality::Severity,
}

/// One published table's rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableState {
    pub table: &'static str,
    pub rows: f64,
    pub current: f64,
    pub key: &'static str,
    /// Current rows beyond the first with the same key.
    pub duplicates: i64,
}

/// The `kvalitet` rows: every stage's measurements turned into rows here, in one place.
pub fn kvalitet_rows(
    ingest: Option<&IngestMetrics>,
    standardize: Option<&StandardizeMetrics>,
    publish: Option<&PublishMetrics>,
) -> Vec<Metric> {
    let mut m = Vec::new();
    if let Some(i) = ingest {
        m.push(Metric::value(
            "raw",
            name::FILER_LESNE,
            None,
            i.files_read as f64,
        ));
        m.push(Metric::value(
            "raw",
            name::FILER_HOPPA_OVER,
            None,
            i.files_skipped as f64,
        ));
        m.push(Metric::value(
            "raw",
            name::RADER_INN,
            None,
            i.records as f64,
        ));
    }
    if let Some(s) = standardize {
        standardize_rows(s, &mut m);
    }
    if let Some(p) = publish {
        publish_rows(p, &mut m);
    }
    m
}

fn counted(
    tabell: &str,
    name: &str,
    kolonne: Option<String>,
    verdi: f64,
    ok: i64,
    bad: i64,
    status: &str,
) -> Metric {
    Metric {
        tabell: tabell.into(),
        regel_eller_metrikk: name.into(),
        kolonne,
        verdi: Some(verdi),
        bestatt: Some(ok),
        feila: Some(bad),
        status: status.into(),
    }
}

fn standardize_rows(s: &StandardizeMetrics, m: &mut Vec<Metric>) {
    for t in &s.tables {
        let (rows_in, rows_out) = (t.rows_in as f64, t.rows_out as f64);
        m.push(Metric::value(t.table, name::RADER_INN, None, rows_in));
        m.push(Metric::value(t.table, name::RADER_UT, None, rows_out));
        m.push(Metric::value(
            t.table,
            name::RADER_FORKASTA,
            None,
            rows_in - rows_out,
        ));
        for &(column, filled, nulls) in &t.completeness {
            let share = filled as f64 / (filled + nulls) as f64;
            let column = Some(column.to_string());
            m.push(counted(
                t.table,
                name::KOMPLETTHET,
                column,
                share,
                filled as i64,
                nulls as i64,
                "ok",
            ));
        }
    }
    for r in &s.rules {
        let failed = r.failed as i64;
        let status = if failed == 0 {
            "ok"
        } else {
            r.severity.as_str()
        };
        let passed = (r.checked as i64 - failed).max(0);
        m.push(counted(
            r.table,
            r.rule,
            None,
            failed as f64,
            passed,
            failed,
            status,
        ));
    }
    let fnr = Some("fodselsnummer".to_string());
    m.push(Metric::value(
        "elev",
        name::UGYLDIGE_FODSELSNUMMER,
        fnr,
        s.invalid_fnr as f64,
    ));
    m.push(Metric::value(
        "elev",
        crate::quality::rules::DUPLIKAT,
        None,
        s.duplicates as f64,
    ));
}

fn publish_rows(p: &PublishMetrics, m: &mut Vec<Metric>) {
    if let Some(c) = &p.row_change {
        let status = if c.alarm { c.severity.as_str() } else { "ok" };
        let (before, after) = (c.before, c.after);
        let label = Some(format!("{before} → {after}"));
        let rule = crate::quality::rules::RADENDRING;
        m.push(counted(
            "elev",
            rule,
            label,
            c.change,
            !c.alarm as i64,
            c.alarm as i64,
            status,
        ));
    }
    for t in &p.tables {
        m.push(Metric::value(t.table, name::RADER_TOTALT, None, t.rows));
        m.push(Metric::value(
            t.table,
            name::RADER_GJELDANDE,
            None,
            t.current,
        ));
        let (c, d) = (t.current, t.duplicates);
        let share = if c > 0.0 { (c - d as f64) / c } else { 1.0 };
        let status = if d == 0 { "ok" } else { "fail" };
        m.push(counted(
            t.table,
            name::UNIK_NOKKEL,
            Some(t.key.into()),
            share,
            c as i64 - d,
            d,
            status,
        ));
    }
    for (source, days) in &p.freshness {
        m.push(Metric::value(
            "leveranse",
            name::FERSKLEIK_DAGAR,
            Some(source.clone()),
            *days,
        ));
    }
    for (metric, group, n) in &p.pupils {
        m.push(Metric::value("elevforhold", metric, group.clone(), *n));
    }
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
