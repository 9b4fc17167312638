//! Vigo elevliste → FINT rows. Each line is a pupil in trinn 10 at the file's school; the school
//! itself becomes a skole row (number, kommune, fylke only: the list carries no name).

use chrono::{Datelike, TimeZone, Utc};
use serde_json::Value;

use crate::fint::{EfRow, ElevRow, Origin, SkoleRow, Staged, Str, Text};
use crate::formats::{RawRec, SnapshotInput};

fn field<'a>(v: &Value, key: &str) -> Text<'a> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Str::owned(s.to_string()))
}

/// Digits only: spreadsheets put spaces inside numbers.
fn digits(s: Text<'_>) -> Text<'_> {
    s.map(|s| Str::owned(s.chars().filter(|c| !c.is_whitespace()).collect()))
}

/// "fornavn [mellomnavn …] etternavn" → (fornavn, mellomnavn, etternavn).
pub fn split_name<'a>(full: &str) -> (Text<'a>, Text<'a>, Text<'a>) {
    let parts: Vec<&str> = full.split_whitespace().collect();
    let owned = |s: &str| Some(Str::owned(s.to_string()));
    match parts.len() {
        0 => (None, None, None),
        1 => (owned(parts[0]), None, None),
        n => (
            owned(parts[0]),
            (n > 2).then(|| Str::owned(parts[1..n - 1].join(" "))),
            owned(parts[n - 1]),
        ),
    }
}

/// School year of a date: from August it is the year that starts, e.g. 20262027.
pub fn skolear_for(as_of_micros: i64) -> String {
    let t = Utc
        .timestamp_micros(as_of_micros)
        .single()
        .unwrap_or_default();
    let start = if t.month() >= 8 {
        t.year()
    } else {
        t.year() - 1
    };
    format!("{}{}", start, start + 1)
}

/// The FINT rows of one snapshot (see [`crate::formats::Format::flatten`]).
pub fn flatten<'a>(
    snap: &SnapshotInput<'a>,
    records: &mut dyn Iterator<Item = RawRec<'a>>,
    out: &mut Staged<'a>,
) {
    let skolear = skolear_for(snap.as_of);
    let mut school: Option<SkoleRow> = None;
    for rec in records.filter(|r| r.entitet == "elevliste") {
        let Ok(v) = serde_json::from_str::<Value>(rec.post) else {
            continue;
        };
        // As typed: validation strips spaces and tells the school (rule fnr_formatert).
        let fnr = field(&v, "fodselsnummer");
        let skolenummer =
            digits(field(&v, "skolenummer")).or_else(|| snap.omfang.map(Str::borrowed));
        let kommune = digits(field(&v, "kommunenummer"));
        let fylke = digits(field(&v, "fylkesnummer")).or_else(|| {
            kommune
                .as_ref()
                .and_then(|k| k.get(..2).map(|f| Str::owned(f.to_string())))
        });
        let klasse = field(&v, "klasse");
        let (fornavn, mellomnavn, etternavn) =
            split_name(&field(&v, "elev_namn").unwrap_or_default());
        let r = Origin {
            kildesystem: snap.kildesystem,
            kjelde: rec.kjelde,
            rad: rec.rad,
            skolenummer: skolenummer.clone(),
            system_id: None,
        };
        // The school row comes from a row at the list's own school (a row at another school
        // is a deviation, not a school).
        if school.is_none() && (snap.omfang.is_none() || skolenummer.as_deref() == snap.omfang) {
            if let Some(nr) = skolenummer.clone() {
                school = Some(SkoleRow {
                    r: r.clone(),
                    skolenummer: nr,
                    organisasjonsnummer: None,
                    navn: None,
                    kommunenummer: kommune.clone(),
                    fylkesnummer: fylke.clone(),
                    eierform: None,
                });
            }
        }
        out.elev.push(ElevRow {
            kilde_nokkel: digits(fnr.clone()),
            fodselsnummer: fnr.clone(),
            kommunenummer: kommune,
            fornavn,
            mellomnavn,
            etternavn,
            fnr_required: true,
            ..ElevRow::from(r.clone())
        });
        out.elevforhold.push(EfRow {
            r,
            elev_kilde_nokkel: digits(fnr),
            system_id: None,
            skolenummer,
            trinn: Some(10),
            klasse,
            skolear: Some(Str::owned(skolear.clone())),
            hovedskole: Some(true),
            startdato: None,
            sluttdato: None,
        });
    }
    out.skole.extend(school);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_school_year() {
        assert_eq!(
            split_name("Kari Anne Berit Nordmann"),
            (
                Some("Kari".into()),
                Some("Anne Berit".into()),
                Some("Nordmann".into())
            )
        );
        assert_eq!(
            split_name(" Ola  Nordmann "),
            (Some("Ola".into()), None, Some("Nordmann".into()))
        );
        let nov = Utc
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .timestamp_micros();
        let mar = Utc
            .with_ymd_and_hms(2027, 3, 1, 0, 0, 0)
            .unwrap()
            .timestamp_micros();
        assert_eq!(skolear_for(nov), "20262027");
        assert_eq!(skolear_for(mar), "20262027");
    }
}
