//! Carried rows (docs/ARCHITECTURE.md, "Carried rows"): every validated elev and elevforhold
//! row gets a hash of what is staged of it (its source, scope, source key and every staged
//! field); a row whose hash made the current version of its key is not staged again but
//! carried forward by its id, and publish marks it present without hashing, identifying or
//! comparing it. Validation has already run over every row, so duplicates, references and
//! deviations are decided exactly as without carrying.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use xxhash_rust::xxh3::Xxh3;

use super::records::Plan;
use super::snapshots::Snapshot;
use super::stage::{self, Get, NullBits};
use crate::error::Result;
use crate::fint::{EfRow, ElevRow, Staged};
use crate::ledger::SnapshotCarry;
use crate::publish::CarryIndex;
use crate::schema;

/// Changed when what publish makes of a staged row changes while the staged row does not (the
/// elevflyt version is hashed too: a new release stages every row once).
const CARRY_FORMAT: &[u8] = b"elevflyt-carry-1";

/// Completeness counts of rows carried forward (not in the staged batches): per table, the
/// rows and the nulls per business column.
pub type CarriedNulls = BTreeMap<&'static str, (usize, Vec<(&'static str, usize)>)>;

/// The seed of every row's hash of this snapshot and table.
fn seed(snap: &Snapshot, table: &str) -> u64 {
    let mut h = Xxh3::new();
    for part in [
        CARRY_FORMAT,
        env!("CARGO_PKG_VERSION").as_bytes(),
        table.as_bytes(),
        snap.kildesystem.as_bytes(),
        snap.omfang.as_deref().unwrap_or("\u{0}").as_bytes(),
    ] {
        h.update(&(part.len() as u32).to_le_bytes());
        h.update(part);
    }
    h.digest()
}

/// What [`hash_and_find`] found of every row.
struct Hashed {
    /// The staged-row hash.
    hashes: Vec<u64>,
    /// The id of the current version that hash made, when looked up and found.
    found: Vec<Option<[u64; 2]>>,
    /// Which staged columns are null (bit `j`: `columns[j]`), for the completeness counts.
    nulls: Vec<u64>,
    columns: Vec<&'static str>,
}

/// The staged-row hash of every row and, with `find`, the id of the current version that hash
/// made when the row has a key; on every core, in one pass over the rows (a hash is never 0:
/// that is "not known").
fn hash_and_find<T: Sync>(
    seed: u64,
    table: &schema::Table,
    rows: &[T],
    column: impl Fn(&str) -> Option<Get<T>>,
    keyed: impl Fn(&T) -> bool + Sync,
    find: Option<impl Fn(u64) -> Option<[u64; 2]> + Sync>,
) -> Result<Hashed> {
    let (columns, gets): (Vec<&'static str>, Vec<Get<T>>) = staged_columns(table)
        .into_iter()
        .filter_map(|n| Some((n, column(n)?)))
        .unzip();
    if gets.len() > 64 {
        return Err(crate::error::Error::Internal(format!(
            "{} has more staged columns than a null mask holds",
            table.name
        )));
    }
    let rows: Vec<(u64, Option<[u64; 2]>, u64)> = crate::par::chunks(rows.len(), |part| {
        let mut buf = Vec::with_capacity(512);
        part.map(|i| {
            let row = &rows[i];
            buf.clear();
            let mut nulls = 0u64;
            for (j, g) in gets.iter().enumerate() {
                nulls |= (g.feed(row, &mut buf) as u64) << j;
            }
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(&buf, seed).max(1);
            let id = find.as_ref().filter(|_| keyed(row)).and_then(|f| f(h));
            (h, id, nulls)
        })
        .collect()
    });
    let mut out = Hashed {
        hashes: Vec::with_capacity(rows.len()),
        found: Vec::with_capacity(rows.len()),
        nulls: Vec::with_capacity(rows.len()),
        columns,
    };
    for (h, id, nulls) in rows {
        out.hashes.push(h);
        out.found.push(id);
        out.nulls.push(nulls);
    }
    Ok(out)
}

/// The names of a table's staged columns.
fn staged_columns(table: &schema::Table) -> Vec<&'static str> {
    crate::ledger::stage_table(table)
        .columns
        .iter()
        .map(|c| c.name)
        .collect()
}

/// Takes the carried rows (those with an id) out of `rows` and their hashes out of `hashes`, in
/// place; returns the carried rows' ids in row order.
fn remove_carried<T>(
    rows: &mut Vec<T>,
    hashes: &mut Vec<u64>,
    ids: &[Option<[u64; 2]>],
) -> Vec<[u64; 2]> {
    let kept = || ids.iter().map(Option::is_none);
    super::validate::retain_flagged(rows, kept());
    super::validate::retain_flagged(hashes, kept());
    ids.iter().flatten().copied().collect()
}

/// The rows with an id (those carried).
fn with_id<'r, T>(rows: &'r [T], ids: &[Option<[u64; 2]>]) -> Vec<&'r T> {
    rows.iter()
        .zip(ids)
        .filter_map(|(r, id)| id.map(|_| r))
        .collect()
}

/// The completeness counts of the carried rows (those with an id) of a table.
fn carried_nulls(table: &schema::Table, h: &Hashed) -> Vec<(&'static str, usize)> {
    let masks = (h.nulls.iter().zip(&h.found)).filter_map(|(m, id)| id.map(|_| *m));
    stage::null_counts(table, &h.columns, masks)
}

/// Hashes a snapshot's validated rows and, with an `index` of the current state, takes the
/// unchanged ones out of `staged`. Returns what publish needs of them, and the completeness
/// counts of the rows taken out.
/// With a `plan` of carried records, the summaries for the next day are made (`clean`: whether
/// a record has no deviation), then the records carried unread added (their ids and counts) as
/// the plan is let go of.
pub fn carry(
    snap: &Snapshot,
    staged: &mut Staged<'_>,
    index: Option<&CarryIndex<'_>>,
    nulls: &mut CarriedNulls,
    plan: Option<Plan<'_, '_>>,
    clean: &dyn Fn(&str, i64) -> bool,
) -> Result<SnapshotCarry> {
    // A kept row's key is unique in the snapshot: validation keeps only the first pupil with
    // a source key and the first elevforhold of a pupil at a school
    // (docs/ARCHITECTURE.md, "Quality rules and deviations"), so a hash that made a current
    // version is that version's row, unchanged.
    let mut steps = crate::context::Steps::new("carry");
    let (elev, ef) = crate::par::both(
        || {
            hash_and_find(
                seed(snap, schema::ELEV.name),
                &schema::ELEV,
                &staged.elev,
                stage::elev_column,
                |e: &ElevRow<'_>| e.kilde_nokkel.is_some(),
                index.map(|i| |h| i.elev(h)),
            )
        },
        || {
            hash_and_find(
                seed(snap, schema::ELEVFORHOLD.name),
                &schema::ELEVFORHOLD,
                &staged.elevforhold,
                stage::elevforhold_column,
                |e: &EfRow<'_>| e.elev_kilde_nokkel.is_some() && e.skolenummer.is_some(),
                index.map(|i| |h| i.elevforhold(h)),
            )
        },
    );
    let (mut elev, mut ef) = (elev?, ef?);
    steps.step("read rows hashed and found");
    let records = plan.as_ref().map(|p| {
        p.summaries(
            (&staged.elev, &elev.hashes, &elev.nulls, &elev.found),
            (&staged.elevforhold, &ef.hashes, &ef.nulls, &ef.found),
            clean,
        )
    });
    if index.is_none() {
        return Ok(SnapshotCarry {
            elev_hashes: elev.hashes,
            elevforhold_hashes: ef.hashes,
            records,
            ..Default::default()
        });
    }
    steps.step("summaries");
    // Records carried unread: their ids, and their counts from the null bits they were kept
    // with (counted on the same pass); a pupil's identifiers as identity last saw them.
    let (mut ef_bits, mut elev_bits) = (NullBits::default(), NullBits::default());
    let unread = plan.map_or_else(Default::default, |p| {
        p.into_ids((&mut ef_bits, &mut elev_bits))
    });
    let (unread_ids, unread_pupils) = (unread.enrollments, unread.pupils);
    steps.step("ids of records carried unread");
    // What is counted and resolved of the carried rows is read before they leave: the
    // completeness counts (from the null masks made with the hashes) and what identity
    // resolution needs of a carried pupil.
    for (table, h, unread) in [
        (&schema::ELEV, &elev, elev_bits),
        (&schema::ELEVFORHOLD, &ef, ef_bits),
    ] {
        let mut counts = carried_nulls(table, h);
        for (a, b) in counts.iter_mut().zip(unread.counts(table, &h.columns)) {
            a.1 += b.1;
        }
        let e = nulls.entry(table.name).or_insert_with(|| (0, Vec::new()));
        e.0 += h.found.iter().flatten().count() + unread.rows();
        if e.1.is_empty() {
            e.1 = counts;
        } else {
            for (a, b) in e.1.iter_mut().zip(counts) {
                a.1 += b.1;
            }
        }
    }
    let carried_elev = with_id(&staged.elev, &elev.found);
    let names = ["stg_kilde_nokkel", "system_id", "fodselsnummer"];
    let identity = names
        .iter()
        .map(|n| {
            stage::elev_column(n)
                .map(|g| g.array(carried_elev.iter().copied()))
                .ok_or_else(|| crate::error::Error::Internal(format!("no staged column {n}")))
        })
        .collect::<Result<Vec<_>>>()?;
    drop(carried_elev);
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let identity = Some(RecordBatch::try_new(schema, identity)?);
    steps.step("carried pupils' identifiers");
    // A million rows dropped in each table: one table on each core.
    let Staged {
        elev: elev_rows,
        elevforhold: ef_rows,
        ..
    } = staged;
    let (elev_ids, read_ids) = crate::par::both(
        || remove_carried(elev_rows, &mut elev.hashes, &elev.found),
        || remove_carried(ef_rows, &mut ef.hashes, &ef.found),
    );
    // The few rows read and carried join the many carried unread (not the other way round:
    // a copy of a million ids); publish does not ask in which order.
    let records_carried = unread_ids.len() + unread_pupils.len();
    let mut elevforhold_ids = unread_ids;
    elevforhold_ids.extend(read_ids);
    steps.step("carried rows taken out of the staged ones");
    Ok(SnapshotCarry {
        elev_hashes: elev.hashes,
        elevforhold_hashes: ef.hashes,
        elev: identity,
        elev_ids,
        elevforhold_ids,
        records,
        records_carried,
        elev_unread: unread_pupils,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fint::{Origin, Str};

    /// The completeness counts of carried rows, read from the null masks made with the hashes,
    /// are the nulls the staged columns of the same rows would hold.
    #[test]
    fn null_masks_count_what_the_staged_columns_would_hold() {
        let row = |i: i64, fornavn: Option<&'static str>, epost: Option<&'static str>| ElevRow {
            kilde_nokkel: Some(Str::owned(format!("k{i}"))),
            system_id: Some(Str::owned(format!("k{i}"))),
            fornavn: fornavn.map(Str::borrowed),
            etternavn: Some(Str::borrowed("Nord")),
            epostadresse: epost.map(Str::borrowed),
            ..ElevRow::from(Origin {
                kildesystem: "vigilo",
                kjelde: "users.json",
                rad: i,
                skolenummer: None,
                system_id: None,
            })
        };
        let rows = vec![
            row(1, Some("Kari"), None),
            row(2, None, None),
            row(3, Some("Ola"), Some("ola@skule.no")),
            row(4, None, Some("x@skule.no")),
        ];
        let find = |h: u64| h.is_multiple_of(2).then_some([h, h]);
        let h = hash_and_find(
            7,
            &schema::ELEV,
            &rows,
            stage::elev_column,
            |_: &ElevRow<'_>| true,
            Some(find),
        )
        .unwrap();
        let carried: Vec<&ElevRow<'_>> = with_id(&rows, &h.found);
        let expected: Vec<(&str, usize)> = schema::ELEV
            .business_columns()
            .map(|c| {
                let nulls = match stage::elev_column(c.name) {
                    Some(get) => get.array(carried.iter().copied()).null_count(),
                    None => carried.len(),
                };
                (c.name, nulls)
            })
            .collect();
        assert_eq!(carried_nulls(&schema::ELEV, &h), expected);
        // Every row's own mask against its own columns, whether carried or not.
        for (r, mask) in rows.iter().zip(&h.nulls) {
            for (j, name) in h.columns.iter().enumerate() {
                let get = stage::elev_column(name).unwrap();
                let null = get.array(std::iter::once(r)).null_count() == 1;
                assert_eq!(mask >> j & 1 == 1, null, "row {}, {name}", r.r.rad);
            }
        }
        assert_eq!(h.hashes.len(), 4);
        assert!(h.hashes.iter().all(|&x| x != 0));
    }
}
