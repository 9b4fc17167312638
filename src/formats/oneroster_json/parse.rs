//! `oneroster-json`: OneRoster 1.1/1.2 REST JSON envelopes as Vigilo exports them
//! (`{"users": [...]}`, `orgs`, `classes`, `enrollments`, `academicSessions`, single-object
//! envelopes such as `{"user": {...}}`). Records are kept as delivered; interpretation (including
//! the misspelled `identfier`) happens in standardize.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::formats::{ParsedFile, Record};

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

/// The collections a complete snapshot has (in one file or several).
pub const REQUIRED: &[&str] = &[
    "users",
    "orgs",
    "classes",
    "enrollments",
    "academicSessions",
];

#[derive(Deserialize)]
struct Stamp<'a> {
    #[serde(rename = "dateLastModified", borrow, default)]
    date_last_modified: Option<&'a str>,
}

/// The records of one file (see [`crate::formats::Format::parse`]).
pub fn parse<'a>(file: &str, text: &'a str, need_modified: bool) -> Result<ParsedFile<'a>> {
    // Members borrow from the text: records are sliced out of it, not copied. Arrays are
    // split into their elements while the file is read (one pass over the text).
    let members = match crate::formats::json::envelope(text) {
        Some(members) => members
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    crate::formats::json::Top::Items(items) => Member::Items(items),
                    crate::formats::json::Top::Object => Member::Object,
                    crate::formats::json::Top::Scalar => Member::Scalar,
                };
                (k, v)
            })
            .collect(),
        // What the scanner leaves (invalid text above all): serde_json decides and words it.
        None => {
            serde_json::from_str::<Members<'a>>(text)
                .map_err(|e| json_error(file, e))?
                .0
        }
    };
    let mut records = Vec::new();
    let mut parts = Vec::new();
    let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
    // As in a JSON object read into a map: a repeated key counts once, with its last value.
    let mut by_key: BTreeMap<&str, &Member<'a>> = BTreeMap::new();
    for (key, value) in &members {
        by_key.insert(key, value);
    }
    for (key, value) in &by_key {
        let Some(entity) = ENTITIES
            .iter()
            .find(|(plural, single)| key == plural || key == single)
            .map(|(plural, _)| *plural)
        else {
            continue;
        };
        parts.push(entity);
        let single: Vec<&'a str>;
        let items: &[&'a str] = match value {
            Member::Items(items) => items,
            // A single-object envelope (`{"user": {...}}`): small, read again for its text.
            Member::Object => {
                single = single_object(file, text, key)?
                    .into_iter()
                    .map(RawValue::get)
                    .collect();
                &single
            }
            Member::Scalar => {
                return Err(Error::input(
                    file,
                    None,
                    format!("`{key}` must hold JSON objects"),
                ))
            }
        };
        records.reserve(items.len());
        for &raw in items {
            if !raw.starts_with('{') {
                return Err(Error::input(
                    file,
                    None,
                    format!("`{key}` must hold JSON objects"),
                ));
            }
            if need_modified {
                let stamp: Stamp = serde_json::from_str(raw).map_err(|_| {
                    Error::input(file, None, format!("`{key}` must hold JSON objects"))
                })?;
                if let Some(t) = stamp
                    .date_last_modified
                    .and_then(crate::formats::asof::parse_time)
                {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
            records.push(Record {
                entitet: entity,
                rad: records.len() as i64 + 1,
                post: std::borrow::Cow::Borrowed(raw),
            });
        }
    }
    if records.is_empty()
        && !by_key
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
        delta: Vec::new(),
        parts,
    })
}

/// The members of a file's top-level object, arrays split into their (unparsed) elements.
struct Members<'a>(Vec<(std::borrow::Cow<'a, str>, Member<'a>)>);

/// A member's value as far as ingest cares.
enum Member<'a> {
    Items(Vec<&'a str>),
    Object,
    Scalar,
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    members.push((k.0, map.next_value_seed(MemberSeed)?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

struct MemberSeed;

impl<'de> serde::de::DeserializeSeed<'de> for MemberSeed {
    type Value = Member<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Member<'de>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Member<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item.get());
                }
                Ok(Member::Items(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Member<'de>, A::Error> {
                use serde::de::IgnoredAny;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Member::Object)
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Member<'de>, E> {
                Ok(Member::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Member<'de>, E> {
                Ok(Member::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Member<'de>, E> {
                Ok(Member::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Member<'de>, E> {
                Ok(Member::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Member<'de>, E> {
                Ok(Member::Scalar)
            }
            fn visit_unit<E>(self) -> std::result::Result<Member<'de>, E> {
                Ok(Member::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// The text of the (last) object under `key` in a file's top-level object.
fn single_object<'a>(file: &str, text: &'a str, key: &str) -> Result<Option<&'a RawValue>> {
    Ok(serde_json::from_str::<Envelope<'a>>(text)
        .map_err(|e| json_error(file, e))?
        .0
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

/// A JSON object's members in order, values unparsed and borrowed from the text: the top-level
/// object of a file here, each record in standardize.
pub(crate) struct Envelope<'a>(pub(crate) Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Envelope<'de>, A::Error> {
                let mut members = Vec::with_capacity(16);
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    members.push((k.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Envelope(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// An object key, borrowed unless it has escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
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
        let p = parse("users.json", text, true).unwrap();
        assert_eq!(p.records.len(), 3);
        assert_eq!(p.records.iter().filter(|r| r.entitet == "users").count(), 2);
        assert_eq!(
            p.newest_modified.unwrap().to_rfc3339(),
            "2026-01-12T08:00:00+00:00"
        );
        let single = parse("u.json", r#"{"user":{"sourcedId":"u1"}}"#, true).unwrap();
        assert_eq!(single.records[0].entitet, "users");
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("users.json", "{\n\"users\": [\n{,}]}", true).unwrap_err();
        assert!(err.to_string().starts_with("users.json, line 3"), "{err}");
        let err = parse("x.json", r#"{"foo": 1}"#, true).unwrap_err();
        assert!(
            err.to_string().contains("not a OneRoster envelope"),
            "{err}"
        );
    }
}
