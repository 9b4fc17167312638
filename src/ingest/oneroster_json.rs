//! `oneroster-json`: OneRoster 1.1/1.2 REST JSON envelopes as Vigilo exports them
//! (`{"users": [...]}`, `orgs`, `classes`, `enrollments`, `academicSessions`, single-object
//! envelopes such as `{"user": {...}}`). Records are kept as delivered; interpretation (including
//! the misspelled `identfier`) happens in standardize.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{InputFormat, ParsedFile, Record};
use crate::error::{Error, Result};

pub struct OneRosterJson;

/// Collection names and their single-object forms.
const ENTITIES: &[(&str, &str)] = &[
    ("users", "user"),
    ("orgs", "org"),
    ("classes", "class"),
    ("enrollments", "enrollment"),
    ("academicSessions", "academicSession"),
    ("courses", "course"),
    ("demographics", "demographic"),
];

#[derive(Deserialize)]
struct Stamp<'a> {
    #[serde(rename = "dateLastModified", borrow, default)]
    date_last_modified: Option<&'a str>,
}

impl InputFormat for OneRosterJson {
    fn parse(&self, file: &str, text: &str) -> Result<ParsedFile> {
        let envelope: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(text).map_err(|e| json_error(file, e))?;
        let mut records = Vec::new();
        let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
        for (key, value) in &envelope {
            let Some(entity) = ENTITIES
                .iter()
                .find(|(plural, single)| key == plural || key == single)
                .map(|(plural, _)| *plural)
            else {
                continue;
            };
            let items: Vec<&RawValue> = if value.get().trim_start().starts_with('[') {
                serde_json::from_str(value.get()).map_err(|e| json_error(file, e))?
            } else {
                vec![value.as_ref()]
            };
            for item in items {
                let stamp: Stamp = serde_json::from_str(item.get()).map_err(|_| {
                    Error::input(file, None, format!("`{key}` must hold JSON objects"))
                })?;
                if let Some(t) = stamp.date_last_modified.and_then(super::asof::parse_time) {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
                records.push(Record {
                    entitet: entity,
                    rad: records.len() as i64 + 1,
                    post: item.get().to_string(),
                });
            }
        }
        if records.is_empty()
            && !envelope
                .keys()
                .any(|k| ENTITIES.iter().any(|(p, s)| k == p || k == s))
        {
            return Err(Error::input(
                file,
                None,
                "not a OneRoster envelope: expected a key such as `users`, `orgs`, `classes`, `enrollments` or `academicSessions`",
            ));
        }
        Ok(ParsedFile {
            records,
            newest_modified: newest,
            omfang: None,
        })
    }
}

fn json_error(file: &str, e: serde_json::Error) -> Error {
    Error::Input {
        file: file.to_string(),
        line: Some(e.line() as u64),
        field: None,
        message: format!(
            "invalid JSON (column {}): {}",
            e.column(),
            e.classify_message()
        ),
    }
}

trait Classify {
    fn classify_message(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Eof => "file ends too early",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_newest_modification() {
        let text = r#"{"users":[{"sourcedId":"u1","dateLastModified":"2026-01-10T08:00:00Z"},
            {"sourcedId":"u2","dateLastModified":"2026-01-12T08:00:00Z","extra":1}],
            "orgs":[{"sourcedId":"o1"}], "statusInfoSet": []}"#;
        let p = OneRosterJson.parse("users.json", text).unwrap();
        assert_eq!(p.records.len(), 3);
        assert_eq!(p.records.iter().filter(|r| r.entitet == "users").count(), 2);
        assert_eq!(
            p.newest_modified.unwrap().to_rfc3339(),
            "2026-01-12T08:00:00+00:00"
        );
        let single = OneRosterJson
            .parse("u.json", r#"{"user":{"sourcedId":"u1"}}"#)
            .unwrap();
        assert_eq!(single.records[0].entitet, "users");
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = OneRosterJson
            .parse("users.json", "{\n\"users\": [\n{,}]}")
            .unwrap_err();
        assert!(err.to_string().starts_with("users.json, line 3"), "{err}");
        let err = OneRosterJson.parse("x.json", r#"{"foo": 1}"#).unwrap_err();
        assert!(
            err.to_string().contains("not a OneRoster envelope"),
            "{err}"
        );
    }
}
