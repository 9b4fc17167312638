//! The mass-change guard (rule `masseendring`, docs/ARCHITECTURE.md, "Guards against a bad
//! delivery"): a new snapshot that would end most current rows of its scope — every pupil of a
//! source, every enrollment at a school — or empty a scope, or empty the county list, is far more
//! often a broken export (an empty `users` array, a list with only a header) than a real day.
//! By default such a snapshot stops the run before any table changes; `--accept-mass-change`
//! (or `masseendring = "warn"`) lets it through deliberately.

use std::collections::HashSet;

use tracing::warn;

use super::apply::Tables;
use super::metrics::{checker_severity, checker_threshold};
use super::plan::Shrink;
use crate::context::{fmt_micros, RunContext};
use crate::error::{Error, Result};
use crate::ledger::SnapshotKey;
use crate::quality::{rules::MASSEENDRING, Severity};

/// Below this many current rows in a scope only emptying it counts as a mass change (a small
/// school's list legitimately loses half of its few pupils).
const MIN_ROWS_FOR_SHARE: usize = 10;

/// Whether what a snapshot did is a mass change: it emptied its scope (it has no rows where
/// there were some), or ended more than `threshold` of a scope of at least
/// [`MIN_ROWS_FOR_SHARE`] rows.
pub fn is_mass_change(ended: usize, prior: usize, rows: usize, threshold: f64) -> bool {
    prior > 0
        && ((rows == 0 && ended == prior)
            || (prior >= MIN_ROWS_FOR_SHARE && ended as f64 > threshold * prior as f64))
}

/// What the guard found: one line per table and snapshot.
fn describe(table: &str, s: &Shrink) -> String {
    let (source, scope, as_of) = &s.snapshot;
    let scope = match scope {
        Some(school) => format!("skule {school} i {source}"),
        None => source.clone(),
    };
    format!(
        "{table}: leveransen {} for {scope} avsluttar {} av {} gjeldande rader ({:.0} %)",
        fmt_micros(*as_of),
        s.ended,
        s.prior,
        100.0 * s.ended as f64 / s.prior as f64
    )
}

/// Whether the guard stops mass changes in this run (severity `fail`, not accepted).
fn stops(ctx: &RunContext) -> bool {
    !ctx.accept_mass_change && checker_severity(ctx, MASSEENDRING) == Severity::Fail
}

fn refusal(found: &[String]) -> Error {
    Error::RuleFailed(format!(
        "fail-regel broten: {MASSEENDRING}: {}; ingen datatabell er endra. Er endringa rett \
         (t.d. ein skule som er lagd ned), køyr på nytt med --accept-mass-change, eller set \
         `{MASSEENDRING} = \"warn\"` under [quality]",
        found.join("; ")
    ))
}

/// Checks the snapshots new in this run (a rebuilt source's published ones were accepted when
/// they arrived) on every SCD2 table, before anything is committed.
pub fn check_tables(ctx: &RunContext, tables: &Tables, done: &HashSet<SnapshotKey>) -> Result<()> {
    let threshold = checker_threshold(ctx, MASSEENDRING);
    let found: Vec<String> = tables
        .all()
        .iter()
        .flat_map(|run| {
            run.shrinks
                .iter()
                .filter(|s| !done.contains(&s.snapshot))
                .filter(|s| is_mass_change(s.ended, s.prior, s.rows, threshold))
                .map(|s| describe(run.table.name, s))
        })
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    if stops(ctx) {
        return Err(refusal(&found));
    }
    warn!(changes = ?found, "mass change accepted ({MASSEENDRING})");
    Ok(())
}

/// Checks the county list about to replace `before` rows with `after`: emptied, or shrunk by
/// more than the threshold. The list is then left as it was (the county keeps reading the
/// previous version) and the run fails.
pub fn check_county_list(ctx: &RunContext, before: usize, after: usize) -> Result<()> {
    let threshold = checker_threshold(ctx, MASSEENDRING);
    if !is_mass_change(before.saturating_sub(after), before, after, threshold) {
        return Ok(());
    }
    let found = format!(
        "elevliste_vgs: lista til fylket ville gå frå {before} til {after} rader (ho er ikkje \
         skriven; fylket les førre versjon)"
    );
    if stops(ctx) {
        return Err(refusal(&[found]));
    }
    warn!(change = %found, "mass change accepted ({MASSEENDRING})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mass_change_is_an_emptied_scope_or_most_of_a_large_one() {
        assert!(
            is_mass_change(3, 3, 0, 0.5),
            "a small school's list emptied"
        );
        assert!(
            !is_mass_change(3, 3, 2, 0.5),
            "a small school's pupils all got new keys"
        );
        assert!(
            !is_mass_change(2, 3, 1, 0.5),
            "two of three pupils left a small school"
        );
        assert!(is_mass_change(11, 20, 9, 0.5));
        assert!(
            is_mass_change(20, 20, 20, 0.5),
            "every key of a large scope replaced"
        );
        assert!(!is_mass_change(10, 20, 10, 0.5));
        assert!(!is_mass_change(0, 0, 0, 0.5), "a first load ends nothing");
        assert!(!is_mass_change(40, 1000, 980, 0.5), "an ordinary day");
    }
}
