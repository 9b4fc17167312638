//! OneRoster (Vigilo) → FINT rows: users(student) → elev, orgs(school) → skole,
//! enrollments(student, homeroom class) → elevforhold with klasse, trinn and skoleår.
//!
//! Real exports are messy: `identfier` is read as `identifier`, optional fields may be missing,
//! extra fields are ignored; 1.1 (`role`, `orgs`) and 1.2 (`roles`, `primaryOrg`) shapes both work.

use std::collections::HashMap;

use serde_json::Value;

use super::{EfRow, ElevRow, SkoleRow, Snapshot, Staged};
use crate::quality::RecordRef;

fn s(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(x) if !x.trim().is_empty() => Some(x.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn guid(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(|g| s(g, "sourcedId"))
}

fn identifier(v: &Value) -> Option<String> {
    s(v, "identifier").or_else(|| s(v, "identfier"))
}

fn meta(v: &Value, key: &str) -> Option<String> {
    v.get("metadata").and_then(|m| s(m, key))
}

fn is_deleted(v: &Value) -> bool {
    matches!(
        s(v, "status").as_deref(),
        Some("tobedeleted") | Some("inactive")
    )
}

fn is_student(v: &Value) -> bool {
    if s(v, "role").as_deref() == Some("student") {
        return true;
    }
    v.get("roles")
        .and_then(Value::as_array)
        .is_some_and(|roles| {
            roles
                .iter()
                .any(|r| s(r, "role").as_deref() == Some("student"))
        })
}

/// Leading digits of a class name: `10A` → 10.
pub fn trinn_from_name(name: &str) -> Option<i32> {
    let d: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
    d.parse().ok()
}

struct Class {
    name: Option<String>,
    trinn: Option<i32>,
    school: Option<String>,
    term: Option<String>,
    homeroom: bool,
}

pub fn flatten(snap: &Snapshot, kommunenummer: &str, out: &mut Staged) {
    let mut users = Vec::new();
    let mut orgs = Vec::new();
    let mut classes = HashMap::new();
    let mut sessions: HashMap<String, String> = HashMap::new();
    let mut enrollments = Vec::new();
    for rec in &snap.records {
        let Ok(v) = serde_json::from_str::<Value>(&rec.post) else {
            continue;
        };
        match rec.entitet.as_str() {
            "users" => users.push((rec, v)),
            "orgs" => orgs.push((rec, v)),
            "classes" => {
                if let Some(id) = s(&v, "sourcedId") {
                    let name = s(&v, "title").or_else(|| s(&v, "classCode"));
                    let grade = v
                        .get("grades")
                        .and_then(Value::as_array)
                        .and_then(|g| g.first())
                        .and_then(|g| match g {
                            Value::String(x) => x.trim().parse().ok(),
                            Value::Number(n) => n.as_i64().map(|n| n as i32),
                            _ => None,
                        });
                    classes.insert(
                        id,
                        Class {
                            trinn: grade.or_else(|| name.as_deref().and_then(trinn_from_name)),
                            name,
                            school: guid(&v, "school"),
                            term: v
                                .get("terms")
                                .and_then(Value::as_array)
                                .and_then(|t| t.first())
                                .and_then(|t| s(t, "sourcedId")),
                            homeroom: s(&v, "classType").is_none_or(|t| t == "homeroom"),
                        },
                    );
                }
            }
            "academicSessions" => {
                if let (Some(id), Some(y)) = (s(&v, "sourcedId"), s(&v, "schoolYear")) {
                    if let Ok(y) = y.parse::<i32>() {
                        sessions.insert(id, format!("{}{}", y - 1, y));
                    }
                }
            }
            "enrollments" => enrollments.push((rec, v)),
            _ => {}
        }
    }

    let reference =
        |rec: &super::RawRec, system_id: Option<String>, school: Option<String>| RecordRef {
            kildesystem: snap.kildesystem.clone(),
            kjelde: rec.kjelde.clone(),
            rad: rec.rad,
            skolenummer: school,
            system_id,
        };

    // Schools: org sourcedId → skolenummer.
    let mut school_of_org = HashMap::new();
    for (rec, v) in &orgs {
        if is_deleted(v) || s(v, "type").is_some_and(|t| t != "school") {
            continue;
        }
        let Some(id) = s(v, "sourcedId") else {
            continue;
        };
        let skolenummer = meta(v, "skolenummer")
            .or_else(|| meta(v, "vigoSkolenummer"))
            .unwrap_or_else(|| id.clone());
        let kommune = meta(v, "kommunenummer").unwrap_or_else(|| kommunenummer.to_string());
        school_of_org.insert(id.clone(), skolenummer.clone());
        out.skole.push(SkoleRow {
            r: reference(rec, Some(id), Some(skolenummer.clone())),
            skolenummer,
            organisasjonsnummer: identifier(v),
            navn: s(v, "name"),
            fylkesnummer: meta(v, "fylkesnummer").or_else(|| kommune.get(..2).map(str::to_string)),
            kommunenummer: Some(kommune),
            eierform: meta(v, "eierform").or(Some("kommunal".into())),
        });
    }

    let mut students = std::collections::HashSet::new();
    for (rec, v) in &users {
        if !is_student(v) || is_deleted(v) {
            continue;
        }
        let system_id = s(v, "sourcedId");
        let feide = v
            .get("userIds")
            .and_then(Value::as_array)
            .and_then(|ids| {
                ids.iter()
                    .find(|i| s(i, "type").is_some_and(|t| t.eq_ignore_ascii_case("feide")))
            })
            .and_then(identifier);
        if let Some(id) = &system_id {
            students.insert(id.clone());
        }
        out.elev.push(ElevRow {
            r: reference(rec, system_id.clone(), None),
            kilde_nokkel: system_id.clone(),
            system_id,
            fodselsnummer: identifier(v),
            feidenavn: feide.map(|f| f.to_lowercase()),
            kommunenummer: Some(kommunenummer.to_string()),
            fornavn: s(v, "givenName"),
            mellomnavn: s(v, "middleName"),
            etternavn: s(v, "familyName"),
            fodselsdato: None,
            kjonn: None,
            epostadresse: s(v, "email"),
            mobiltelefonnummer: s(v, "sms").or_else(|| s(v, "phone")),
            bostedsadresse: meta(v, "bostedsadresse"),
            postnummer: meta(v, "postnummer"),
            poststed: meta(v, "poststed"),
            fnr_required: false,
        });
    }

    for (rec, v) in &enrollments {
        if is_deleted(v) || s(v, "role").is_some_and(|r| r != "student") {
            continue;
        }
        let Some(user) = guid(v, "user") else {
            continue;
        };
        let class = guid(v, "class").and_then(|c| classes.get(&c));
        if class.is_some_and(|c| !c.homeroom) {
            continue;
        }
        let org = guid(v, "school").or_else(|| class.and_then(|c| c.school.clone()));
        let skolenummer = org
            .as_ref()
            .map(|o| school_of_org.get(o).cloned().unwrap_or_else(|| o.clone()));
        out.elevforhold.push(EfRow {
            r: reference(rec, s(v, "sourcedId"), skolenummer.clone()),
            elev_kilde_nokkel: Some(user),
            system_id: s(v, "sourcedId"),
            skolenummer,
            klasse: class.and_then(|c| c.name.clone()),
            trinn: class.and_then(|c| c.trinn),
            skolear: class
                .and_then(|c| c.term.as_ref())
                .and_then(|t| sessions.get(t).cloned()),
            hovedskole: Some(true),
            startdato: s(v, "beginDate").and_then(|d| d.parse().ok()),
            sluttdato: s(v, "endDate").and_then(|d| d.parse().ok()),
        });
    }
}
