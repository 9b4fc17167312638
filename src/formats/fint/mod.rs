//! `fint`: the FINT `utdanning` API (Novari; HAL JSON). The collections `elev`, `person`,
//! `elevforhold`, `klasse` (v3: `basisgruppe`), `klassemedlemskap` (v3:
//! `basisgruppemedlemskap`) and `skole`, each a `{"_embedded": {"_entries": […]}}` page.
//!
//! The pages come from the API (`location = "https://…/utdanning"`: ingest pulls them, see
//! `ingest::pull`) or from a folder of saved pages; either way each page is a raw "file".
//!
//! - `parse`: a page → its entries, sliced out of the text as received.
//! - `flatten`: a snapshot's entries → `elev`, `elevforhold` and `skole` rows, resolving the
//!   `_links` between the resources.
//! - `sample`: the synthetic collections `elevflyt generate` writes (and the test server
//!   serves).

mod flatten;
mod parse;
mod sample;

use std::path::Path;

use chrono::NaiveDate;

use super::{Api, Format, ParsedFile, RawRec, SnapshotInput};
use crate::error::Result;
use crate::fint::Staged;
use crate::generate::Population;

pub struct Fint;

/// The collections a pull reads, below the base URL (`…/utdanning`), with the v3 path tried
/// when the v4 one is not there (404).
const COLLECTIONS: &[(&str, &str, Option<&str>)] = &[
    ("skole", "utdanningsprogram/skole", None),
    ("klasse", "elev/klasse", Some("elev/basisgruppe")),
    (
        "klassemedlemskap",
        "elev/klassemedlemskap",
        Some("elev/basisgruppemedlemskap"),
    ),
    ("person", "elev/person", None),
    ("elev", "elev/elev", None),
    ("elevforhold", "elev/elevforhold", None),
];

static API: Api = Api {
    collections: COLLECTIONS,
    size_param: "size",
    offset_param: "offset",
    since_param: Some("sinceTimeStamp"),
    default_page_size: 1000,
    base_paths: &["/utdanning"],
    max_page_size: 10_000,
};

impl Format for Fint {
    fn name(&self) -> &'static str {
        "fint"
    }

    fn description(&self) -> &'static str {
        "the FINT utdanning API (HAL JSON pages of elev, person, elevforhold, klasse, klassemedlemskap, skole), pulled with OAuth2 or read from saved pages"
    }

    fn parse<'a>(&self, file: &str, text: &'a str, _need_modified: bool) -> Result<ParsedFile<'a>> {
        parse::parse(file, text)
    }

    /// Without any one of them pupils would lose their person, school or class.
    fn required_parts(&self) -> &'static [&'static str] {
        parse::REQUIRED
    }

    fn api(&self) -> Option<&'static Api> {
        Some(&API)
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
