//! Input formats as components: each format is one module (a folder here) holding both of its
//! halves — `parse` (a file's text → raw records, for ingest) and `flatten` (a snapshot's raw
//! records → FINT rows, for standardize) — its sample-data writer and its tests, behind the one
//! trait [`Format`]. The pipeline file's `format = "…"` is looked up in [`REGISTRY`] by name.
//!
//! Adding a format is one module plus one line in [`REGISTRY`] (docs/ARCHITECTURE.md, "Adding
//! an input format"). Not here: storage, lineage and skipping files already read (ingest), or
//! validation of the rows a format produces (standardize and quality).

pub mod asof;
pub mod csv;
pub mod fint;
pub mod json;
#[cfg(test)]
pub mod lines;
pub mod oneroster_csv;
pub mod oneroster_json;
pub mod oneroster_rest;
pub mod vigo_csv;

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::Result;
use crate::fint::Staged;
use crate::generate::Population;

/// One input format. Implementations are unit structs registered in [`REGISTRY`].
pub trait Format: Sync + Send {
    /// The name the pipeline file uses (`format = "oneroster-json"`).
    fn name(&self) -> &'static str;

    /// One line for `--help` and `elevflyt validate`.
    fn description(&self) -> &'static str;

    /// Ingest: the records of one file, kept as delivered. `need_modified`: the file's as-of time
    /// must come from its records (no date in its name nor on the command line), so the format
    /// must find the newest modification time it carries.
    fn parse<'a>(&self, file: &str, text: &'a str, need_modified: bool) -> Result<ParsedFile<'a>>;

    /// Standardize: the FINT rows of one snapshot, from its raw records in file and record order.
    /// Records the format cannot read are skipped here; validation reports on what is produced.
    fn flatten<'a>(
        &self,
        snapshot: &SnapshotInput<'a>,
        records: &mut dyn Iterator<Item = RawRec<'a>>,
        out: &mut Staged<'a>,
    );

    /// The parts a complete snapshot of this format has (the OneRoster collections). A snapshot
    /// whose files lack one is held back until it arrives (docs/ARCHITECTURE.md, "Guards
    /// against a bad delivery"). Empty: every file is a complete snapshot of its scope.
    fn required_parts(&self) -> &'static [&'static str] {
        &[]
    }

    /// The records standardize may carry forward unchanged, without reading them, and the
    /// records those are read against (docs/ARCHITECTURE.md, "Carried records"). `None` (the
    /// default): every record is read every day.
    fn carried_records(&self) -> Option<&'static CarriedRecords> {
        None
    }

    /// A format read from a REST API: what to pull and how it pages (ingest's `pull` does the
    /// HTTP). `None`: the format is read from files only.
    fn api(&self) -> Option<&'static Api> {
        None
    }

    /// A format whose files are not text (a zip): its records, read from the bytes. `None`
    /// (the default): the file is decoded as text and given to [`Format::parse`].
    fn parse_bytes(
        &self,
        _file: &str,
        _bytes: &[u8],
        _need_modified: bool,
    ) -> Option<Result<ParsedFile<'static>>> {
        None
    }

    /// `elevflyt generate`: writes one snapshot of a synthetic population as this format's
    /// files under `out` and returns their paths.
    fn write_sample(
        &self,
        out: &Path,
        date: NaiveDate,
        population: &Population<'_>,
    ) -> Result<Vec<String>>;
}

impl std::fmt::Debug for dyn Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every format elevflyt reads, by name. One line per format.
pub static REGISTRY: &[&dyn Format] = &[
    &oneroster_json::OneRosterJson,
    &oneroster_rest::OneRosterRest,
    &oneroster_csv::OneRosterCsv,
    &fint::Fint,
    &vigo_csv::VigoCsv,
    #[cfg(test)]
    &lines::Lines,
];

/// The format of that name.
pub fn lookup(name: &str) -> Option<&'static dyn Format> {
    REGISTRY.iter().copied().find(|f| f.name() == name)
}

/// The registered names, for messages: `oneroster-json, vigo-csv`.
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The format of that name, or a message listing the ones there are.
pub fn find(name: &str) -> std::result::Result<&'static dyn Format, String> {
    lookup(name).ok_or_else(|| format!("unknown format `{name}` (formats: {})", names()))
}

/// How a format's collections are pulled from its REST API: paths below the location (the
/// base URL) and the paging parameters. The HTTP (OAuth2, retries, limits) is ingest's
/// (`ingest::pull`, docs/ARCHITECTURE.md "Pulling from an API").
#[derive(Debug)]
pub struct Api {
    /// (part, path below the base URL, an older path tried when the first answers 404).
    pub collections: &'static [(&'static str, &'static str, Option<&'static str>)],
    /// The page-size parameter (`size` in FINT, `limit` in OneRoster).
    pub size_param: &'static str,
    pub offset_param: &'static str,
    /// The "changed since" parameter (FINT's `sinceTimeStamp`, epoch milliseconds).
    pub since_param: Option<&'static str>,
    pub default_page_size: u32,
    /// What the location (the base URL) must end with, one of these (`/utdanning`,
    /// `/ims/oneroster/v1p1`).
    pub base_paths: &'static [&'static str],
    /// The largest page elevflyt asks for, whatever the pipeline file says.
    pub max_page_size: u32,
}

/// Leading digits of a class name: `10A` → 10.
pub fn trinn_from_name(name: &str) -> Option<i32> {
    let d: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
    d.parse().ok()
}

/// Entity of the marker record each file gets (record number 0).
pub const FILE_MARKER: &str = "_fil";

/// One record of a source file, as delivered.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub entitet: &'static str,
    /// Record number in the file: the line for CSV, the element (from 1) for JSON.
    pub rad: i64,
    /// The record as a JSON object (borrowed from the file's text when it is JSON already).
    pub post: std::borrow::Cow<'a, str>,
}

/// What [`Format::parse`] makes of one file.
#[derive(Debug, Default)]
pub struct ParsedFile<'a> {
    pub records: Vec<Record<'a>>,
    /// Newest `dateLastModified` in the file, when the format has one.
    pub newest_modified: Option<DateTime<Utc>>,
    /// Scope for deletions: the school for per-school files.
    pub omfang: Option<String>,
    /// The parts of a snapshot this file holds, even when empty (`users`, `orgs`, …).
    pub parts: Vec<&'static str>,
    /// The parts that are changes only (a OneRoster CSV `delta` file): ingest lays them over
    /// the source's previous snapshot of that part.
    pub delta: Vec<&'static str>,
}

/// Which records of a format carry forward (see [`Format::carried_records`]): each record of
/// `entity` yields at most one elevforhold row from its own text and the records of `context`
/// (all of them hashed together: one changed class reads every such record again), and nothing
/// else; each record of `pupils` at most one elev row from its own text alone, whose source key
/// is its system id.
#[derive(Debug)]
pub struct CarriedRecords {
    pub entity: &'static str,
    pub context: &'static [&'static str],
    pub pupils: Option<&'static str>,
}

/// A raw record of a snapshot, borrowed from the raw table's columns.
#[derive(Debug, Clone, Copy)]
pub struct RawRec<'a> {
    pub kjelde: &'a str,
    pub entitet: &'a str,
    pub rad: i64,
    pub post: &'a str,
}

/// The snapshot [`Format::flatten`] works on, besides its records.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotInput<'a> {
    /// The source's name (`kildesystem`).
    pub kildesystem: &'a str,
    /// The school a per-school file covers.
    pub omfang: Option<&'a str>,
    /// Microseconds since the epoch, UTC.
    pub as_of: i64,
    /// The pipeline's kommunenummer, for records that do not name their own.
    pub kommunenummer: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_found_by_their_pipeline_file_name() {
        for f in REGISTRY {
            assert_eq!(lookup(f.name()).map(|g| g.name()), Some(f.name()));
        }
        assert_eq!(
            names(),
            "oneroster-json, oneroster-rest, oneroster-csv, fint, vigo-csv, lines"
        );
        let err = find("csv").err().unwrap_or_default();
        assert!(err.contains("`csv`") && err.contains("vigo-csv"), "{err}");
    }
}
