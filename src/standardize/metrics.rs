//! The `kvalitet` rows of a standardize: rows in, out and dropped per table, each rule's result,
//! completeness per column, invalid fødselsnummer and duplicates.

use arrow::array::{Array, RecordBatch};

use super::StandardizeOutcome;
use crate::error::Result;
use crate::metrics::Metric;
use crate::quality::Checker;
use crate::schema;

/// Metrics of a standardize: rows in/out/dropped, rule results, completeness, pupils per class.
pub fn standardize_metrics(
    o: &StandardizeOutcome,
    checker: &Checker,
    staged: &[(&schema::Table, Vec<RecordBatch>); 3],
) -> Result<Vec<Metric>> {
    let mut m = Vec::new();
    for (t, batches) in staged {
        let height = crate::delta::row_count(batches);
        let rows_in = o.rows_in.get(t.name).copied().unwrap_or(0) as f64;
        let rows_out = o.rows_out.get(t.name).copied().unwrap_or(0) as f64;
        m.push(Metric::value(
            t.name,
            crate::metrics::name::RADER_INN,
            None,
            rows_in,
        ));
        m.push(Metric::value(
            t.name,
            crate::metrics::name::RADER_UT,
            None,
            rows_out,
        ));
        m.push(Metric::value(
            t.name,
            crate::metrics::name::RADER_FORKASTA,
            None,
            rows_in - rows_out,
        ));
        if height > 0 {
            for c in t.business_columns() {
                let nulls: usize = batches
                    .iter()
                    .filter_map(|b| b.column_by_name(c.name))
                    .map(|a| a.null_count())
                    .sum();
                let filled = height - nulls;
                m.push(Metric {
                    tabell: t.name.into(),
                    regel_eller_metrikk: crate::metrics::name::KOMPLETTHET.into(),
                    kolonne: Some(c.name.into()),
                    verdi: Some(filled as f64 / height as f64),
                    bestatt: Some(filled as i64),
                    feila: Some(nulls as i64),
                    status: "ok".into(),
                });
            }
        }
    }
    // The row-count change is measured by publish, against the stored tables.
    for r in crate::quality::rules::RULES
        .iter()
        .filter(|r| r.name != crate::quality::rules::RADENDRING)
    {
        let failed = checker.failed.get(r.name).copied().unwrap_or(0) as i64;
        let checked = o.rows_in.get(r.table).copied().unwrap_or(0) as i64;
        let sev = checker.severity(r.name);
        m.push(Metric {
            tabell: r.table.into(),
            regel_eller_metrikk: r.name.into(),
            kolonne: None,
            verdi: Some(failed as f64),
            bestatt: Some((checked - failed).max(0)),
            feila: Some(failed),
            status: if failed == 0 {
                "ok".into()
            } else {
                sev.as_str().into()
            },
        });
    }
    let invalid_fnr = [
        crate::quality::rules::FNR_UGYLDIG,
        crate::quality::rules::FNR_MANGLAR_NULL,
        crate::quality::rules::FNR_SYNTETISK,
    ]
    .iter()
    .map(|r| checker.failed.get(r).copied().unwrap_or(0))
    .sum::<u64>();
    m.push(Metric::value(
        "elev",
        crate::metrics::name::UGYLDIGE_FODSELSNUMMER,
        Some("fodselsnummer".into()),
        invalid_fnr as f64,
    ));
    m.push(Metric::value(
        "elev",
        crate::quality::rules::DUPLIKAT,
        None,
        checker
            .failed
            .get(crate::quality::rules::DUPLIKAT)
            .copied()
            .unwrap_or(0) as f64,
    ));
    Ok(m)
}
