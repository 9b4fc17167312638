//! `oneroster-rest`: a OneRoster 1.1 or 1.2 REST API (`location =
//! "https://…/ims/oneroster/v1p1"` or `…/ims/oneroster/rostering/v1p2`), pulled with OAuth2
//! client credentials and `limit`/`offset` paging. Each page is a OneRoster JSON envelope
//! (`{"users": […]}`), so the pages are read and flattened exactly as `oneroster-json` files
//! are: the same pupils give the same rows.

use std::path::Path;

use chrono::NaiveDate;

use super::oneroster_json::OneRosterJson;
use super::{Api, Format, ParsedFile, RawRec, SnapshotInput};
use crate::error::Result;
use crate::fint::Staged;
use crate::generate::Population;

pub struct OneRosterRest;

static API: Api = Api {
    collections: &[
        ("orgs", "orgs", None),
        ("academicSessions", "academicSessions", None),
        ("classes", "classes", None),
        ("users", "users", None),
        ("enrollments", "enrollments", None),
    ],
    size_param: "limit",
    offset_param: "offset",
    since_param: None,
    default_page_size: 1000,
    base_paths: &["/ims/oneroster/v1p1", "/ims/oneroster/rostering/v1p2"],
    max_page_size: 10_000,
};

impl Format for OneRosterRest {
    fn name(&self) -> &'static str {
        "oneroster-rest"
    }

    fn description(&self) -> &'static str {
        "a OneRoster 1.1/1.2 REST API (orgs, academicSessions, classes, users, enrollments), pulled with OAuth2 client credentials"
    }

    fn parse<'a>(&self, file: &str, text: &'a str, need_modified: bool) -> Result<ParsedFile<'a>> {
        OneRosterJson.parse(file, text, need_modified)
    }

    fn required_parts(&self) -> &'static [&'static str] {
        OneRosterJson.required_parts()
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
        OneRosterJson.flatten(snapshot, records, out)
    }

    /// The collections the API serves (the test server pages them): the OneRoster JSON files.
    fn write_sample(
        &self,
        out: &Path,
        date: NaiveDate,
        population: &Population<'_>,
    ) -> Result<Vec<String>> {
        OneRosterJson.write_sample(out, date, population)
    }
}
