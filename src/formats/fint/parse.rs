//! A FINT page (`{"_embedded": {"_entries": […]}, "total_items": N, …}`) or a single resource
//! → its entries, kept as received. Which collection a page holds comes from its name (the URL
//! it was pulled from, or a saved file `elev-2026-09-01.json`), else from its `self` link.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::formats::{ParsedFile, Record};

/// The collections, by the name elevflyt gives them; the v3 names are read as the v4 ones.
const COLLECTIONS: &[(&str, &str)] = &[
    ("elev", "elev"),
    ("person", "person"),
    ("elevforhold", "elevforhold"),
    ("klasse", "klasse"),
    ("basisgruppe", "klasse"),
    ("klassemedlemskap", "klassemedlemskap"),
    ("basisgruppemedlemskap", "klassemedlemskap"),
    ("skole", "skole"),
];

/// The collections a complete snapshot has.
pub const REQUIRED: &[&str] = &[
    "elev",
    "person",
    "elevforhold",
    "klasse",
    "klassemedlemskap",
    "skole",
];

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(rename = "_embedded", borrow, default)]
    embedded: Option<Embedded<'a>>,
    #[serde(rename = "_links", borrow, default)]
    links: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Embedded<'a> {
    #[serde(rename = "_entries", borrow, default)]
    entries: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct SelfLinks {
    #[serde(rename = "self", default)]
    this: Vec<Href>,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

/// The collection a path names: its last segment (`…/utdanning/elev/elev?size=…` → `elev`,
/// `basisgruppe-2026-09-01.json` → `klasse`).
pub fn collection_of(path: &str) -> Option<&'static str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let stem = last.split('.').next().unwrap_or(last);
    // A saved page may carry a date or a page number after the name: `elev-2026-09-01`.
    let stem = stem.split(['-', '_']).next().unwrap_or(stem);
    COLLECTIONS
        .iter()
        .find(|(name, _)| stem.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

/// The entries of one page (see [`crate::formats::Format::parse`]).
pub fn parse<'a>(file: &str, text: &'a str) -> Result<ParsedFile<'a>> {
    let page: Page<'a> = serde_json::from_str(text).map_err(|e| {
        Error::input(
            file,
            Some(e.line() as u64),
            format!("not a FINT page (HAL JSON): {e}"),
        )
    })?;
    let self_href = || {
        page.links
            .and_then(|l| serde_json::from_str::<SelfLinks>(l.get()).ok())
            .and_then(|l| l.this.into_iter().next())
            .map(|h| h.href)
    };
    let (entries, single): (Vec<&'a RawValue>, bool) = match page.embedded {
        Some(e) => (e.entries, false),
        // One resource on its own (`GET …/elev/systemid/E-1`).
        None if page.links.is_some() => (Vec::new(), true),
        None => {
            return Err(Error::input(
                file,
                None,
                "not a FINT page: expected `_embedded._entries` (a collection) or `_links` (one resource)",
            ))
        }
    };
    let collection = collection_of(file)
        .or_else(|| {
            let href = self_href()?;
            // A single resource's self link ends in `/{field}/{value}`.
            let path = if single {
                href.rsplitn(3, '/').nth(2).map(str::to_string)?
            } else {
                href
            };
            collection_of(&path)
        })
        .ok_or_else(|| {
            Error::input(
                file,
                None,
                "which FINT collection this page holds is not in its name or its `self` link (expected elev, person, elevforhold, klasse, klassemedlemskap or skole)",
            )
        })?;
    let mut records = Vec::with_capacity(entries.len());
    if single {
        records.push(Record {
            entitet: collection,
            rad: 1,
            post: std::borrow::Cow::Borrowed(text.trim()),
        });
    }
    for (i, entry) in entries.iter().enumerate() {
        let raw = entry.get();
        if !raw.starts_with('{') {
            return Err(Error::input(
                file,
                None,
                format!(
                    "`_embedded._entries` must hold JSON objects (entry {})",
                    i + 1
                ),
            ));
        }
        records.push(Record {
            entitet: collection,
            rad: i as i64 + 1,
            post: std::borrow::Cow::Borrowed(raw),
        });
    }
    Ok(ParsedFile {
        records,
        newest_modified: None,
        omfang: None,
        delta: Vec::new(),
        parts: vec![collection],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_split_into_its_entries_and_named_by_its_url_or_self_link() {
        let page = r#"{"_embedded":{"_entries":[{"systemId":{"identifikatorverdi":"E1"},"_links":{}},
            {"systemId":{"identifikatorverdi":"E2"}}]},"_links":{"self":[{"href":"https://x/utdanning/elev/basisgruppe"}]},"total_items":2}"#;
        let p = parse(
            "http://127.0.0.1:1/utdanning/elev/elev?size=2&offset=0",
            page,
        )
        .unwrap();
        assert_eq!(p.parts, vec!["elev"]);
        assert_eq!(p.records.len(), 2);
        assert!(p.records[1].post.contains("E2"));
        // The name says nothing: the self link does (v3 name read as v4).
        let p = parse("side-3.json", page).unwrap();
        assert_eq!(p.parts, vec!["klasse"]);
        assert_eq!(
            collection_of("klassemedlemskap-2026-09-01.json"),
            Some("klassemedlemskap")
        );
        assert_eq!(
            collection_of("utdanning/utdanningsprogram/skole"),
            Some("skole")
        );
        let err = parse("x.json", r#"{"users":[]}"#).unwrap_err().to_string();
        assert!(err.contains("not a FINT page"), "{err}");
        let err = parse("x.json", "{\"_embedded\":").unwrap_err().to_string();
        assert!(err.contains("HAL JSON"), "{err}");
        let one = r#"{"systemId":{"identifikatorverdi":"S1"},"_links":{"self":[{"href":"https://x/utdanning/utdanningsprogram/skole/systemid/S1"}]}}"#;
        let p = parse("ein.json", one).unwrap();
        assert_eq!((p.parts[0], p.records.len()), ("skole", 1));
    }
}
