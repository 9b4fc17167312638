//! `vigo-csv`: the legacy semicolon elevliste, one file per school
//! (`kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn`). Every pupil is in
//! trinn 10; a file is a full snapshot of its school only.
//!
//! - `parse`: a file (UTF-8 or Windows-1252, CRLF or LF, quoted fields) → one record per line.
//! - `flatten`: a school's list → `elev`, `elevforhold` and one `skole` row.
//! - `sample`: the synthetic lists `elevflyt generate` writes.

mod flatten;
mod parse;
mod sample;

use std::path::Path;

use chrono::NaiveDate;

use super::{Format, ParsedFile, RawRec, SnapshotInput};
use crate::error::Result;
use crate::fint::Staged;
use crate::generate::Population;

pub struct VigoCsv;

impl Format for VigoCsv {
    fn name(&self) -> &'static str {
        "vigo-csv"
    }

    fn description(&self) -> &'static str {
        "the legacy semicolon elevliste from Vigo, one file per school"
    }

    fn parse<'a>(&self, file: &str, text: &'a str, _need_modified: bool) -> Result<ParsedFile<'a>> {
        parse::parse(file, text)
    }

    fn flatten<'a>(
        &self,
        snapshot: &SnapshotInput<'a>,
        records: &mut dyn Iterator<Item = RawRec<'a>>,
        out: &mut Staged<'a>,
    ) {
        flatten::flatten(snapshot, records, out)
    }

    fn write_sample(
        &self,
        out: &Path,
        date: NaiveDate,
        population: &Population<'_>,
    ) -> Result<Vec<String>> {
        sample::write(out, date, population)
    }
}
