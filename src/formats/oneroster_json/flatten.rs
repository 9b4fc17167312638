//! OneRoster (Vigilo) → FINT rows: users(student) → elev, orgs(school) → skole,
//! enrollments(student, homeroom class) → elevforhold with klasse, trinn and skoleår.
//!
//! Real exports are messy: `identfier` is read as `identifier`, optional fields may be missing,
//! extra fields are ignored; 1.1 (`role`, `orgs`) and 1.2 (`roles`, `primaryOrg`) shapes both work.

use std::borrow::Cow;

use rustc_hash::FxHashMap as HashMap;
use serde_json::value::RawValue;

use super::parse::Envelope;
use crate::fint::{EfRow, ElevRow, Origin, SkoleRow, Staged, Str, Text};
use crate::formats::{trinn_from_name, RawRec, SnapshotInput};

/// One JSON object whose members stay unparsed until asked for: a record is scanned once and
/// only the fields standardize uses are decoded (no tree of values per record). As with
/// `serde_json::Value`, a repeated key keeps its last value.
struct Obj<'a>(Vec<(Cow<'a, str>, &'a str)>);

impl<'a> Obj<'a> {
    /// The object in `text`, or `None` when it is not an object. The scanner reads it; what it
    /// leaves is read by serde_json (`crate::formats::json`).
    fn parse(text: &'a str) -> Option<Obj<'a>> {
        if let Some(members) = crate::formats::json::members(text) {
            return Some(Obj(members));
        }
        serde_json::from_str::<Envelope<'a>>(text)
            .ok()
            .map(|e| Obj(e.0.into_iter().map(|(k, v)| (k, v.get())).collect()))
    }

    fn raw(&self, key: &str) -> Option<&'a str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A text field: a non-blank string (trimmed) or a number (as written); else `None`.
    fn s(&self, key: &str) -> Text<'a> {
        text(self.raw(key)?)
    }

    fn obj(&self, key: &str) -> Option<Obj<'a>> {
        Obj::parse(self.raw(key)?)
    }

    /// The elements of an array field (none when the field is missing or not an array).
    fn arr(&self, key: &str) -> Vec<&'a str> {
        self.raw(key)
            .and_then(|r| {
                crate::formats::json::elements(r).or_else(|| {
                    serde_json::from_str::<Vec<&RawValue>>(r)
                        .ok()
                        .map(|v| v.into_iter().map(RawValue::get).collect())
                })
            })
            .unwrap_or_default()
    }
}

/// A JSON string or number as text: strings trimmed (blank → `None`), numbers as written.
/// Borrowed from the record unless the string has escapes.
fn text(t: &str) -> Text<'_> {
    match t.as_bytes().first()? {
        // A JSON string without escapes is its own content between the quotes.
        b'"' if !t.contains('\\') => {
            let trimmed = t[1..t.len() - 1].trim();
            (!trimmed.is_empty()).then_some(Str::borrowed(trimmed))
        }
        b'"' => {
            let value = serde_json::from_str::<String>(t).ok()?;
            let trimmed = value.trim();
            (!trimmed.is_empty()).then(|| Str::owned(trimmed.to_string()))
        }
        b'-' | b'0'..=b'9' => Some(Str::borrowed(t)),
        _ => None,
    }
}

/// Lower case, borrowed when the text already is.
fn lowercase(v: Str<'_>) -> Str<'_> {
    if v.is_ascii() && !v.bytes().any(|b| b.is_ascii_uppercase()) {
        v
    } else {
        Str::owned(v.to_lowercase())
    }
}

fn guid<'a>(v: &Obj<'a>, key: &str) -> Text<'a> {
    v.obj(key).and_then(|g| g.s("sourcedId"))
}

fn identifier<'a>(v: &Obj<'a>) -> Text<'a> {
    v.s("identifier").or_else(|| v.s("identfier"))
}

fn meta<'a>(v: &Obj<'a>, key: &str) -> Text<'a> {
    v.obj("metadata").and_then(|m| m.s(key))
}

fn is_deleted(v: &Obj) -> bool {
    matches!(
        v.s("status").as_deref(),
        Some("tobedeleted") | Some("inactive")
    )
}

fn is_student(v: &Obj) -> bool {
    if v.s("role").as_deref() == Some("student") {
        return true;
    }
    v.arr("roles")
        .iter()
        .any(|r| Obj::parse(r).is_some_and(|r| r.s("role").as_deref() == Some("student")))
}

struct Class<'a> {
    name: Text<'a>,
    trinn: Option<i32>,
    school: Text<'a>,
    term: Text<'a>,
    homeroom: bool,
}

/// The records of one snapshot by kind; pupils and enrollments (most of the records) are
/// parsed one at a time later, once the classes, schools and terms they refer to are known.
struct Sorted<'a> {
    users: Vec<RawRec<'a>>,
    enrollments: Vec<RawRec<'a>>,
    orgs: Vec<(RawRec<'a>, Obj<'a>)>,
    classes: HashMap<Str<'a>, Class<'a>>,
    /// academicSession sourcedId → skoleår (`20252026`).
    sessions: HashMap<Str<'a>, String>,
}

/// The FINT rows of one snapshot (see [`crate::formats::Format::flatten`]).
pub fn flatten<'a>(
    snap: &SnapshotInput<'a>,
    records: &mut dyn Iterator<Item = RawRec<'a>>,
    out: &mut Staged<'a>,
) {
    let sorted = sort(records);
    let school_of_org = schools(snap, &sorted.orgs, &mut out.skole);
    // Pupils and enrollments are parsed at the same time, on two cores.
    let Staged {
        elev, elevforhold, ..
    } = out;
    if sorted.enrollments.len() * 4 < sorted.users.len() {
        // Most enrollments were carried forward (docs/ARCHITECTURE.md, "Carried records"): the
        // pupils on every core, then the few enrollments.
        let users = &sorted.users;
        let rows = crate::par::chunks(users.len(), |part| {
            let mut rows = Vec::new();
            pupils(snap, &users[part], &mut rows);
            rows
        });
        match elev.is_empty() {
            true => *elev = rows,
            false => elev.extend(rows),
        }
        enrolments(snap, &sorted, &school_of_org, elevforhold);
        return;
    }
    crate::par::both(
        || pupils(snap, &sorted.users, elev),
        || enrolments(snap, &sorted, &school_of_org, elevforhold),
    );
}

fn sort<'a>(records: &mut dyn Iterator<Item = RawRec<'a>>) -> Sorted<'a> {
    let mut s = Sorted {
        users: Vec::new(),
        enrollments: Vec::new(),
        orgs: Vec::new(),
        classes: HashMap::default(),
        sessions: HashMap::default(),
    };
    for rec in records {
        match rec.entitet {
            "users" => s.users.push(rec),
            "enrollments" => s.enrollments.push(rec),
            "orgs" | "classes" | "academicSessions" => {
                let Some(v) = Obj::parse(rec.post) else {
                    continue;
                };
                match rec.entitet {
                    "orgs" => s.orgs.push((rec, v)),
                    "classes" => s.classes.extend(class(&v)),
                    _ => {
                        if let (Some(id), Some(y)) = (v.s("sourcedId"), v.s("schoolYear")) {
                            if let Ok(y) = y.parse::<i32>() {
                                s.sessions.insert(id, format!("{}{}", y - 1, y));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// A class by its sourcedId: name, trinn (from `grades`, else the name), school and term.
fn class<'a>(v: &Obj<'a>) -> Option<(Str<'a>, Class<'a>)> {
    let id = v.s("sourcedId")?;
    let name = v.s("title").or_else(|| v.s("classCode"));
    let grade = v
        .arr("grades")
        .first()
        .and_then(|g| text(g))
        .and_then(|g| g.parse().ok());
    let class = Class {
        trinn: grade.or_else(|| name.as_deref().and_then(trinn_from_name)),
        name,
        school: guid(v, "school"),
        term: v
            .arr("terms")
            .first()
            .and_then(|t| Obj::parse(t))
            .and_then(|t| t.s("sourcedId")),
        homeroom: v.s("classType").is_none_or(|t| t == "homeroom"),
    };
    Some((id, class))
}

fn origin<'a>(
    snap: &SnapshotInput<'a>,
    rec: &RawRec<'a>,
    system_id: Text<'a>,
    school: Text<'a>,
) -> Origin<'a> {
    Origin {
        kildesystem: snap.kildesystem,
        kjelde: rec.kjelde,
        rad: rec.rad,
        skolenummer: school,
        system_id,
    }
}

/// The schools (orgs of type `school`); returns org sourcedId → skolenummer.
fn schools<'a>(
    snap: &SnapshotInput<'a>,
    orgs: &[(RawRec<'a>, Obj<'a>)],
    skole: &mut Vec<SkoleRow<'a>>,
) -> HashMap<Str<'a>, Str<'a>> {
    let mut school_of_org = HashMap::default();
    for (rec, v) in orgs {
        if is_deleted(v) || v.s("type").is_some_and(|t| t != "school") {
            continue;
        }
        let Some(id) = v.s("sourcedId") else {
            continue;
        };
        let skolenummer = meta(v, "skolenummer")
            .or_else(|| meta(v, "vigoSkolenummer"))
            .unwrap_or_else(|| id.clone());
        let kommune = meta(v, "kommunenummer").unwrap_or(Str::borrowed(snap.kommunenummer));
        school_of_org.insert(id.clone(), skolenummer.clone());
        skole.push(SkoleRow {
            r: origin(snap, rec, Some(id), Some(skolenummer.clone())),
            skolenummer,
            organisasjonsnummer: identifier(v),
            navn: v.s("name"),
            fylkesnummer: meta(v, "fylkesnummer")
                .or_else(|| kommune.get(..2).map(|f| Str::owned(f.to_string()))),
            kommunenummer: Some(kommune),
            eierform: meta(v, "eierform").or(Some("kommunal".into())),
        });
    }
    school_of_org
}

/// The students among the users.
fn pupils<'a>(snap: &SnapshotInput<'a>, users: &[RawRec<'a>], elev: &mut Vec<ElevRow<'a>>) {
    elev.reserve(users.len());
    for rec in users {
        let Some(v) = Obj::parse(rec.post) else {
            continue;
        };
        let v = &v;
        if !is_student(v) || is_deleted(v) {
            continue;
        }
        let system_id = v.s("sourcedId");
        let feide = v
            .arr("userIds")
            .iter()
            .filter_map(|i| Obj::parse(i))
            .find(|i| i.s("type").is_some_and(|t| t.eq_ignore_ascii_case("feide")))
            .and_then(|i| identifier(&i));
        // The address fields are in `metadata`: it is scanned once, not once a field.
        let metadata = v.obj("metadata");
        let meta = |key: &str| metadata.as_ref().and_then(|m| m.s(key));
        elev.push(ElevRow {
            r: origin(snap, rec, system_id.clone(), None),
            kilde_nokkel: system_id.clone(),
            system_id,
            fodselsnummer: identifier(v),
            feidenavn: feide.map(lowercase),
            kommunenummer: Some(Str::borrowed(snap.kommunenummer)),
            fornavn: v.s("givenName"),
            mellomnavn: v.s("middleName"),
            etternavn: v.s("familyName"),
            fodselsdato: None,
            kjonn: None,
            epostadresse: v.s("email"),
            mobiltelefonnummer: v.s("sms").or_else(|| v.s("phone")),
            bostedsadresse: meta("bostedsadresse"),
            postnummer: meta("postnummer"),
            poststed: meta("poststed"),
            fnr_required: false,
        });
    }
}

/// Students' enrollments in homeroom classes (scheduled classes are not elevforhold).
fn enrolments<'a>(
    snap: &SnapshotInput<'a>,
    s: &Sorted<'a>,
    school_of_org: &HashMap<Str<'a>, Str<'a>>,
    elevforhold: &mut Vec<EfRow<'a>>,
) {
    elevforhold.reserve(s.enrollments.len());
    for rec in &s.enrollments {
        let Some(v) = Obj::parse(rec.post) else {
            continue;
        };
        let v = &v;
        if is_deleted(v) || v.s("role").is_some_and(|r| r != "student") {
            continue;
        }
        let Some(user) = guid(v, "user") else {
            continue;
        };
        let class = guid(v, "class").and_then(|c| s.classes.get(&c));
        if class.is_some_and(|c| !c.homeroom) {
            continue;
        }
        let org = guid(v, "school").or_else(|| class.and_then(|c| c.school.clone()));
        let skolenummer = org
            .as_ref()
            .map(|o| school_of_org.get(o).cloned().unwrap_or_else(|| o.clone()));
        elevforhold.push(EfRow {
            r: origin(snap, rec, v.s("sourcedId"), skolenummer.clone()),
            elev_kilde_nokkel: Some(user),
            system_id: v.s("sourcedId"),
            skolenummer,
            klasse: class.and_then(|c| c.name.clone()),
            trinn: class.and_then(|c| c.trinn),
            skolear: class
                .and_then(|c| c.term.as_ref())
                .and_then(|t| s.sessions.get(t).map(|y| Str::owned(y.clone()))),
            hovedskole: Some(true),
            startdato: v.s("beginDate").and_then(|d| d.parse().ok()),
            sluttdato: v.s("endDate").and_then(|d| d.parse().ok()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_object_reads_fields_like_a_json_value() {
        let rec = r#"{"givenName":"  Kari ","familyName":"Nord\u00f8y \"K\"","grade":10,
            "blank":" ","flag":true,"nested":{"sourcedId":"o1"},"list":[{"type":"Feide"}],
            "status":"active","status":"tobedeleted","identfier":"02013299997"}"#;
        let v = Obj::parse(rec).unwrap();
        assert_eq!(v.s("givenName").as_deref(), Some("Kari"));
        assert_eq!(v.s("familyName").as_deref(), Some("Nordøy \"K\""));
        assert_eq!(v.s("grade").as_deref(), Some("10"));
        assert_eq!(v.s("blank"), None);
        assert_eq!(v.s("flag"), None);
        assert_eq!(v.s("nested"), None);
        assert_eq!(v.s("missing"), None);
        assert_eq!(guid(&v, "nested").as_deref(), Some("o1"));
        assert_eq!(v.arr("list").len(), 1);
        assert!(v.arr("nested").is_empty());
        // A repeated key keeps its last value, as serde_json::Value does.
        assert!(is_deleted(&v));
        assert_eq!(identifier(&v).as_deref(), Some("02013299997"));
        assert!(Obj::parse("[1, 2]").is_none());
    }
}
