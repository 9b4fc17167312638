//! `oneroster-json`: OneRoster 1.1/1.2 REST JSON envelopes as Vigilo exports them (`users`,
//! `orgs`, `classes`, `enrollments`, `academicSessions`; single-object envelopes too).
//!
//! - `parse`: a file → its records, sliced out of the text as delivered.
//! - `flatten`: a snapshot's records → `elev`, `elevforhold` and `skole` rows.
//! - `sample`: the synthetic export `elevflyt generate` writes.

mod flatten;
mod parse;
mod sample;

use std::path::Path;

use chrono::NaiveDate;

use super::{Format, ParsedFile, RawRec, SnapshotInput};
use crate::error::Result;
use crate::fint::Staged;
use crate::generate::Population;

pub struct OneRosterJson;

impl Format for OneRosterJson {
    fn name(&self) -> &'static str {
        "oneroster-json"
    }

    fn description(&self) -> &'static str {
        "OneRoster 1.1/1.2 REST JSON envelopes (users, orgs, classes, enrollments, academicSessions), as Vigilo exports them"
    }

    fn parse<'a>(&self, file: &str, text: &'a str, need_modified: bool) -> Result<ParsedFile<'a>> {
        parse::parse(file, text, need_modified)
    }

    /// A snapshot is every collection Vigilo exports: without `orgs` every school and
    /// enrollment would close, without `users` every pupil.
    fn required_parts(&self) -> &'static [&'static str] {
        parse::REQUIRED
    }

    /// An enrollment is one elevforhold, read from its own text and the classes, schools and
    /// terms (never from the users): it carries forward while they are unchanged. A student is
    /// one elev row read from its own text, keyed by its `sourcedId`.
    fn carried_records(&self) -> Option<&'static crate::formats::CarriedRecords> {
        Some(&crate::formats::CarriedRecords {
            entity: "enrollments",
            context: &["orgs", "classes", "academicSessions"],
            pupils: Some("users"),
        })
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
