//! One snapshot's validated rows as Arrow batches in the staging tables' schema, built by
//! column name from the FINT rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Int32Array, RecordBatch, StringArray,
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
/// are filled here.
fn stage_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: usize,
    column: impl Fn(&str) -> Option<ArrayRef>,
) -> Result<RecordBatch> {
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let array: ArrayRef = match f.name().as_str() {
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
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

fn texts<'r, T>(rows: &'r [T], f: impl Fn(&'r T) -> Option<&'r str>) -> Option<ArrayRef> {
    Some(Arc::new(StringArray::from_iter(rows.iter().map(f))))
}

fn dates<T>(rows: &[T], f: impl Fn(&T) -> Option<NaiveDate>) -> Option<ArrayRef> {
    Some(Arc::new(Date32Array::from_iter(
        rows.iter().map(|r| date_days(f(r))),
    )))
}

pub fn elev_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[ElevRow<'_>],
) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| match name {
        "system_id" => texts(rows, |e| e.system_id.as_deref()),
        "kildesystem" => texts(rows, |e| Some(e.r.kildesystem)),
        "fodselsnummer" => texts(rows, |e| e.fodselsnummer.as_deref()),
        "feidenavn" => texts(rows, |e| e.feidenavn.as_deref()),
        "kommunenummer" => texts(rows, |e| e.kommunenummer.as_deref()),
        "fornavn" => texts(rows, |e| e.fornavn.as_deref()),
        "mellomnavn" => texts(rows, |e| e.mellomnavn.as_deref()),
        "etternavn" => texts(rows, |e| e.etternavn.as_deref()),
        "fodselsdato" => dates(rows, |e| e.fodselsdato),
        "kjonn" => texts(rows, |e| e.kjonn.as_deref()),
        "epostadresse" => texts(rows, |e| e.epostadresse.as_deref()),
        "mobiltelefonnummer" => texts(rows, |e| e.mobiltelefonnummer.as_deref()),
        "bostedsadresse" => texts(rows, |e| e.bostedsadresse.as_deref()),
        "postnummer" => texts(rows, |e| e.postnummer.as_deref()),
        "poststed" => texts(rows, |e| e.poststed.as_deref()),
        "stg_kilde_nokkel" => texts(rows, |e| e.kilde_nokkel.as_deref()),
        _ => None,
    })
}

pub fn elevforhold_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[EfRow<'_>],
) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| match name {
        "system_id" => texts(rows, |e| e.system_id.as_deref()),
        "kildesystem" => texts(rows, |e| Some(e.r.kildesystem)),
        "skolenummer" => texts(rows, |e| e.skolenummer.as_deref()),
        "klasse" => texts(rows, |e| e.klasse.as_deref()),
        "trinn" => Some(Arc::new(Int32Array::from_iter(
            rows.iter().map(|e| e.trinn),
        ))),
        "skolear" => texts(rows, |e| e.skolear.as_deref()),
        "hovedskole" => Some(Arc::new(BooleanArray::from_iter(
            rows.iter().map(|e| e.hovedskole),
        ))),
        "startdato" => dates(rows, |e| e.startdato),
        "sluttdato" => dates(rows, |e| e.sluttdato),
        "stg_kilde_nokkel" => texts(rows, |e| e.elev_kilde_nokkel.as_deref()),
        _ => None,
    })
}

pub fn skole_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[SkoleRow<'_>],
) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| match name {
        "skolenummer" => texts(rows, |s| Some(s.skolenummer.as_ref())),
        "organisasjonsnummer" => texts(rows, |s| s.organisasjonsnummer.as_deref()),
        "navn" => texts(rows, |s| s.navn.as_deref()),
        "kommunenummer" => texts(rows, |s| s.kommunenummer.as_deref()),
        "fylkesnummer" => texts(rows, |s| s.fylkesnummer.as_deref()),
        "eierform" => texts(rows, |s| s.eierform.as_deref()),
        "kildesystem" => texts(rows, |s| Some(s.r.kildesystem)),
        "stg_kilde_nokkel" => Some(arrow::array::new_null_array(&DataType::Utf8, rows.len())),
        _ => None,
    })
}
