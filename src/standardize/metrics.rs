//! What a standardize measured, for `kvalitet`: rows in, out and dropped per table, each rule's
//! result, completeness per column, invalid fødselsnummer and duplicates. The rows themselves
//! are made in `crate::metrics`.

use arrow::array::{Array, RecordBatch};

use super::carry::CarriedNulls;
use super::StandardizeOutcome;
use crate::metrics::{RuleResult, StandardizeMetrics, TableRows};
use crate::quality::{rules, Checker};
use crate::schema;

/// The measurements of a standardize; `staged` are the rows kept, per table.
pub fn measure(
    o: &StandardizeOutcome,
    checker: &Checker,
    staged: &[(&schema::Table, Vec<RecordBatch>); 3],
    carried: &CarriedNulls,
) -> StandardizeMetrics {
    let tables = staged
        .iter()
        .map(|(t, batches)| {
            // Rows carried forward are not in the batches: their counts are added.
            let (carried_rows, carried_nulls) = carried
                .get(t.name)
                .map_or((0, &[][..]), |(n, c)| (*n, c.as_slice()));
            let height = crate::delta::row_count(batches) + carried_rows;
            let completeness = match height {
                0 => Vec::new(),
                _ => t
                    .business_columns()
                    .map(|c| {
                        let nulls: usize = batches
                            .iter()
                            .filter_map(|b| b.column_by_name(c.name))
                            .map(|a| a.null_count())
                            .sum::<usize>()
                            + carried_nulls
                                .iter()
                                .find(|(n, _)| *n == c.name)
                                .map_or(0, |(_, k)| *k);
                        (c.name, height - nulls, nulls)
                    })
                    .collect(),
            };
            TableRows {
                table: t.name,
                rows_in: o.rows_in.get(t.name).copied().unwrap_or(0),
                rows_out: o.rows_out.get(t.name).copied().unwrap_or(0),
                completeness,
            }
        })
        .collect();
    // The row-count change is measured by publish, against the stored tables.
    let rules = rules::RULES
        .iter()
        .filter(|r| r.name != rules::RADENDRING)
        .map(|r| RuleResult {
            rule: r.name,
            table: r.table,
            checked: o.rows_in.get(r.table).copied().unwrap_or(0),
            failed: checker.failed.get(r.name).copied().unwrap_or(0),
            severity: checker.severity(r.name),
        })
        .collect();
    StandardizeMetrics {
        tables,
        rules,
        invalid_fnr: checker.invalid_fnr(),
        duplicates: checker.failed.get(rules::DUPLIKAT).copied().unwrap_or(0),
    }
}
