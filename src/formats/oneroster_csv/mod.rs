//! `oneroster-csv`: the OneRoster 1.1/1.2 CSV bulk zip (`manifest.csv` and one CSV per
//! collection). Each row is turned into the object the REST JSON has for it (GUIDRefs, lists,
//! `metadata.*` columns into `metadata`, 1.2 users with `roles` from `roles.csv` and
//! `primaryOrg`), so the zip is flattened exactly as `oneroster-json` is: the same pupils give
//! the same rows.
//!
//! - `parse`: a zip → its records (the manifest says which files are `bulk`, `delta` or
//!   `absent`).
//! - `sample`: the zip `elevflyt generate` writes.

mod parse;
mod sample;

use std::path::Path;

use chrono::NaiveDate;

use super::oneroster_json::OneRosterJson;
use super::{Format, ParsedFile, RawRec, SnapshotInput};
use crate::error::{Error, Result};
use crate::fint::Staged;
use crate::generate::Population;

pub struct OneRosterCsv;

impl Format for OneRosterCsv {
    fn name(&self) -> &'static str {
        "oneroster-csv"
    }

    fn description(&self) -> &'static str {
        "the OneRoster 1.1/1.2 CSV bulk zip (manifest.csv, orgs, users, classes, enrollments, academicSessions; bulk and delta files)"
    }

    fn parse<'a>(
        &self,
        file: &str,
        _text: &'a str,
        _need_modified: bool,
    ) -> Result<ParsedFile<'a>> {
        Err(Error::input(
            file,
            None,
            "a OneRoster CSV delivery is a zip file (with manifest.csv)",
        ))
    }

    fn parse_bytes(
        &self,
        file: &str,
        bytes: &[u8],
        need_modified: bool,
    ) -> Option<Result<ParsedFile<'static>>> {
        Some(parse::parse(file, bytes, need_modified))
    }

    fn required_parts(&self) -> &'static [&'static str] {
        OneRosterJson.required_parts()
    }

    fn flatten<'a>(
        &self,
        snapshot: &SnapshotInput<'a>,
        records: &mut dyn Iterator<Item = RawRec<'a>>,
        out: &mut Staged<'a>,
    ) {
        OneRosterJson.flatten(snapshot, records, out)
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
