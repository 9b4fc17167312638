//! One snapshot's validated rows as Arrow batches in the staging tables' schema, built by
//! column name from the FINT rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Int32Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use chrono::NaiveDate;

use super::snapshots::Snapshot;
use crate::error::Result;
use crate::fint::{EfRow, ElevRow, SkoleRow};

fn date_days(d: Option<NaiveDate>) -> Option<i32> {
    d.map(|d| (d - NaiveDate::default()).num_days() as i32)
}

/// One snapshot's validated rows as a batch in a staging table's schema. `column` gives the
/// values of each column by name (`None` for a column it does not know); the snapshot columns
/// are filled here. The columns are made on every core when there are rows enough.
fn stage_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: usize,
    column: impl Fn(&str) -> Option<ArrayRef> + Sync,
) -> Result<RecordBatch> {
    let fields: &[arrow::datatypes::FieldRef] = schema.fields();
    let make = |f: &arrow::datatypes::FieldRef| -> Result<ArrayRef> {
        Ok(match f.name().as_str() {
            "stg_kildesystem" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                snap.kildesystem.as_str(),
                rows,
            ))),
            "stg_omfang" => Arc::new(StringArray::from_iter(std::iter::repeat_n(
                snap.omfang.as_deref(),
                rows,
            ))),
            "stg_as_of" => Arc::new(
                TimestampMicrosecondArray::from(vec![snap.as_of; rows]).with_timezone("UTC"),
            ),
            // Assigned by publish.
            "id" | "elev_id" => arrow::array::new_null_array(f.data_type(), rows),
            name => column(name).ok_or_else(|| {
                crate::error::Error::Internal(format!("no staged values for column `{name}`"))
            })?,
        })
    };
    let arrays = match rows >= crate::par::ROWS_PER_THREAD {
        true => crate::par::map(fields, make),
        false => fields.iter().map(make).collect(),
    };
    Ok(RecordBatch::try_new(
        schema.clone(),
        arrays.into_iter().collect::<Result<_>>()?,
    )?)
}

/// How a staged column's values are read from a FINT row.
pub enum Get<T> {
    Text(for<'r> fn(&'r T) -> Option<&'r str>),
    Date(fn(&T) -> Option<NaiveDate>),
    Int(fn(&T) -> Option<i32>),
    Bool(fn(&T) -> Option<bool>),
}

impl<T> Get<T> {
    /// The column of these rows.
    pub fn array<'r>(&self, rows: impl Iterator<Item = &'r T> + Clone) -> ArrayRef
    where
        T: 'r,
    {
        match self {
            Get::Text(f) => {
                // The values' bytes are counted first: the column's buffer is made once at its
                // size instead of doubling (and copied) as a million values arrive.
                let bytes = rows.clone().filter_map(f).map(str::len).sum();
                let mut b = StringBuilder::with_capacity(rows.size_hint().0, bytes);
                for r in rows {
                    b.append_option(f(r));
                }
                Arc::new(b.finish())
            }
            Get::Date(f) => Arc::new(Date32Array::from_iter(rows.map(|r| date_days(f(r))))),
            Get::Int(f) => Arc::new(Int32Array::from_iter(rows.map(f))),
            Get::Bool(f) => Arc::new(BooleanArray::from_iter(rows.map(f))),
        }
    }

    /// Appends a row's value to `out` for hashing: each value with its length, null apart
    /// from every value. Returns whether it is null.
    pub fn feed(&self, row: &T, out: &mut Vec<u8>) -> bool {
        let mut put = |v: Option<&[u8]>| match v {
            None => {
                out.push(0);
                true
            }
            Some(b) => {
                out.push(1);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
                false
            }
        };
        match self {
            Get::Text(f) => put(f(row).map(str::as_bytes)),
            Get::Date(f) => put(date_days(f(row))
                .map(i32::to_le_bytes)
                .as_ref()
                .map(|b| &b[..])),
            Get::Int(f) => put(f(row).map(i32::to_le_bytes).as_ref().map(|b| &b[..])),
            Get::Bool(f) => put(f(row).map(|b| [b as u8]).as_ref().map(|b| &b[..])),
        }
    }
}

/// The staged columns of elev, by name (the snapshot columns and ids are not here).
pub fn elev_column<'a>(name: &str) -> Option<Get<ElevRow<'a>>> {
    Some(Get::Text(match name {
        "system_id" => |e| e.system_id.as_deref(),
        "kildesystem" => |e| Some(e.r.kildesystem),
        "fodselsnummer" => |e| e.fodselsnummer.as_deref(),
        "feidenavn" => |e| e.feidenavn.as_deref(),
        "kommunenummer" => |e| e.kommunenummer.as_deref(),
        "fornavn" => |e| e.fornavn.as_deref(),
        "mellomnavn" => |e| e.mellomnavn.as_deref(),
        "etternavn" => |e| e.etternavn.as_deref(),
        "fodselsdato" => return Some(Get::Date(|e| e.fodselsdato)),
        "kjonn" => |e| e.kjonn.as_deref(),
        "epostadresse" => |e| e.epostadresse.as_deref(),
        "mobiltelefonnummer" => |e| e.mobiltelefonnummer.as_deref(),
        "bostedsadresse" => |e| e.bostedsadresse.as_deref(),
        "postnummer" => |e| e.postnummer.as_deref(),
        "poststed" => |e| e.poststed.as_deref(),
        "stg_kilde_nokkel" => |e| e.kilde_nokkel.as_deref(),
        _ => return None,
    }))
}

/// The staged columns of elevforhold, by name.
pub fn elevforhold_column<'a>(name: &str) -> Option<Get<EfRow<'a>>> {
    Some(Get::Text(match name {
        "system_id" => |e| e.system_id.as_deref(),
        "kildesystem" => |e| Some(e.r.kildesystem),
        "skolenummer" => |e| e.skolenummer.as_deref(),
        "klasse" => |e| e.klasse.as_deref(),
        "trinn" => return Some(Get::Int(|e| e.trinn)),
        "skolear" => |e| e.skolear.as_deref(),
        "hovedskole" => return Some(Get::Bool(|e| e.hovedskole)),
        "startdato" => return Some(Get::Date(|e| e.startdato)),
        "sluttdato" => return Some(Get::Date(|e| e.sluttdato)),
        "stg_kilde_nokkel" => |e| e.elev_kilde_nokkel.as_deref(),
        _ => return None,
    }))
}

/// Per business column of a table, how many of some rows have no value in it (the ids, assigned
/// by publish, have none): what the completeness metrics count of rows not staged. `columns` are
/// the staged columns a null mask has a bit for (bit `j`: `columns[j]` is null), `masks` the
/// rows' masks.
pub fn null_counts(
    table: &crate::schema::Table,
    columns: &[&str],
    masks: impl Iterator<Item = u64>,
) -> Vec<(&'static str, usize)> {
    let mut bits = NullBits::default();
    masks.for_each(|m| bits.add(m));
    bits.counts(table, columns)
}

/// Null masks counted as they come (by a caller that reads them with something else): rows, and
/// rows per bit.
#[derive(Debug, Clone, Copy)]
pub struct NullBits {
    rows: usize,
    per_bit: [usize; 64],
}

impl Default for NullBits {
    fn default() -> Self {
        NullBits {
            rows: 0,
            per_bit: [0; 64],
        }
    }
}

impl NullBits {
    /// One row's mask.
    pub fn add(&mut self, mut mask: u64) {
        self.rows += 1;
        while mask != 0 {
            self.per_bit[mask.trailing_zeros() as usize] += 1;
            mask &= mask - 1;
        }
    }

    /// The rows counted.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Per business column of `table`, as [`null_counts`] says.
    pub fn counts(
        &self,
        table: &crate::schema::Table,
        columns: &[&str],
    ) -> Vec<(&'static str, usize)> {
        table
            .business_columns()
            .map(|c| {
                let nulls = columns
                    .iter()
                    .position(|n| *n == c.name)
                    .map_or(self.rows, |j| self.per_bit[j]);
                (c.name, nulls)
            })
            .collect()
    }
}

pub fn elev_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[ElevRow<'_>],
) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| {
        Some(elev_column(name)?.array(rows.iter()))
    })
}

pub fn elevforhold_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[EfRow<'_>],
) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| {
        Some(elevforhold_column(name)?.array(rows.iter()))
    })
}

pub fn skole_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[SkoleRow<'_>],
) -> Result<RecordBatch> {
    let text = |f: for<'r> fn(&'r SkoleRow<'_>) -> Option<&'r str>| Get::Text(f).array(rows.iter());
    stage_batch(schema, snap, rows.len(), |name| match name {
        "skolenummer" => Some(text(|s| Some(s.skolenummer.as_ref()))),
        "organisasjonsnummer" => Some(text(|s| s.organisasjonsnummer.as_deref())),
        "navn" => Some(text(|s| s.navn.as_deref())),
        "kommunenummer" => Some(text(|s| s.kommunenummer.as_deref())),
        "fylkesnummer" => Some(text(|s| s.fylkesnummer.as_deref())),
        "eierform" => Some(text(|s| s.eierform.as_deref())),
        "kildesystem" => Some(text(|s| Some(s.r.kildesystem))),
        "stg_kilde_nokkel" => Some(arrow::array::new_null_array(&DataType::Utf8, rows.len())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fint::{Origin, Str};

    fn origin(rad: usize) -> Origin<'static> {
        Origin {
            kildesystem: "vigilo",
            kjelde: "users.json",
            rad: rad as i64,
            skolenummer: None,
            system_id: None,
        }
    }

    /// A batch of rows enough to be made on every core (a column a core) is the batch its two
    /// halves, each made on one core, make together: the same columns, in the same order, with
    /// the same values and nulls.
    #[test]
    fn a_batch_made_on_every_core_is_the_batch_made_on_one() {
        let n = crate::par::ROWS_PER_THREAD + 1_000;
        let half = n / 2;
        assert!(half < crate::par::ROWS_PER_THREAD);
        let snap = Snapshot::empty("vigilo", 1_768_435_200_000_000);
        let day = |i: usize| NaiveDate::from_ymd_opt(2010, 1, 1 + (i % 28) as u32);
        let elev: Vec<ElevRow<'_>> = (0..n)
            .map(|i| ElevRow {
                kilde_nokkel: Some(Str::owned(format!("k{i}"))),
                fornavn: (i % 5 != 0).then(|| Str::owned(format!("Navn{i}"))),
                etternavn: Some(Str::borrowed("Nord")),
                fodselsdato: (i % 3 != 0).then(|| day(i)).flatten(),
                ..ElevRow::from(origin(i))
            })
            .collect();
        let ef: Vec<EfRow<'_>> = (0..n)
            .map(|i| EfRow {
                r: origin(i),
                elev_kilde_nokkel: Some(Str::owned(format!("k{i}"))),
                system_id: Some(Str::owned(format!("e{i}"))),
                skolenummer: Some(Str::borrowed("46591")),
                klasse: (i % 7 != 0).then_some(Str::borrowed("10A")),
                trinn: (i % 4 != 0).then_some(10),
                skolear: Some(Str::borrowed("2025/2026")),
                hovedskole: (i % 2 == 0).then_some(true),
                startdato: day(i),
                sluttdato: None,
            })
            .collect();
        let elev_schema = crate::ledger::stage_table(&crate::schema::ELEV).arrow_schema();
        let whole = elev_batch(&elev_schema, &snap, &elev).unwrap();
        let halves = [
            elev_batch(&elev_schema, &snap, &elev[..half]).unwrap(),
            elev_batch(&elev_schema, &snap, &elev[half..]).unwrap(),
        ];
        assert_eq!(whole.num_rows(), n);
        assert_eq!(
            whole,
            arrow::compute::concat_batches(&elev_schema, &halves).unwrap()
        );
        let ef_schema = crate::ledger::stage_table(&crate::schema::ELEVFORHOLD).arrow_schema();
        let whole = elevforhold_batch(&ef_schema, &snap, &ef).unwrap();
        let halves = [
            elevforhold_batch(&ef_schema, &snap, &ef[..half]).unwrap(),
            elevforhold_batch(&ef_schema, &snap, &ef[half..]).unwrap(),
        ];
        assert_eq!(whole.num_rows(), n);
        assert_eq!(
            whole,
            arrow::compute::concat_batches(&ef_schema, &halves).unwrap()
        );
    }
}
