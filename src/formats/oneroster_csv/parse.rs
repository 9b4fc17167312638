//! A OneRoster CSV zip → records shaped as the REST JSON objects.
//!
//! `manifest.csv` (`propertyName,value`) says the version (`oneroster.version` 1.1 or 1.2) and,
//! per file (`file.users`, …), `bulk` (a full snapshot of the collection), `delta` (changes since
//! the previous delivery: ingest lays them over the previous snapshot) or `absent`. Passwords
//! (`password` columns, `userProfiles.csv`) are never kept.

use std::collections::HashMap;
use std::io::Read;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::formats::{ParsedFile, Record};

/// The collections elevflyt reads, by file name.
const FILES: &[&str] = &[
    "orgs",
    "academicSessions",
    "classes",
    "users",
    "enrollments",
    "courses",
    "demographics",
];

/// A zip member larger than this is refused (a zip bomb, or not a school's export).
const MAX_MEMBER_BYTES: u64 = 2 << 30;

fn input(file: &str, what: impl std::fmt::Display) -> Error {
    Error::input(file, None, what.to_string())
}

pub fn parse(file: &str, bytes: &[u8], need_modified: bool) -> Result<ParsedFile<'static>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| input(file, format!("not a zip file: {e}")))?;
    let mut read = |name: &str| -> Result<Option<String>> {
        let Some(i) = (0..zip.len()).find(|&i| {
            zip.name_for_index(i)
                .and_then(|n| n.ok())
                .is_some_and(|n| n.rsplit('/').next() == Some(name))
        }) else {
            return Ok(None);
        };
        let mut member = zip
            .by_index(i)
            .map_err(|e| input(file, format!("{name}: {e}")))?;
        if member.size() > MAX_MEMBER_BYTES {
            return Err(input(file, format!("{name} is larger than 2 GiB unpacked")));
        }
        let mut raw = Vec::with_capacity(member.size() as usize);
        member
            .by_ref()
            .take(MAX_MEMBER_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| input(file, format!("{name}: {e}")))?;
        let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw);
        String::from_utf8(raw.to_vec()).map(Some).map_err(|e| {
            input(
                file,
                format!(
                    "{name} is not UTF-8 (byte {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })
    };
    let manifest_text = read("manifest.csv")?.ok_or_else(|| {
        input(
            file,
            "no manifest.csv in the zip (a OneRoster CSV bulk delivery has one)",
        )
    })?;
    let manifest = manifest(file, &manifest_text)?;
    let version = manifest
        .get("oneroster.version")
        .map(String::as_str)
        .unwrap_or("1.1");
    if !matches!(version, "1.1" | "1.2") {
        return Err(input(
            file,
            format!("manifest.csv: oneroster.version `{version}` (elevflyt reads 1.1 and 1.2)"),
        ));
    }
    let mode = |name: &str| -> Result<&str> {
        match manifest.get(&format!("file.{name}")).map(String::as_str) {
            None | Some("absent") => Ok("absent"),
            Some(m @ ("bulk" | "delta")) => Ok(m),
            Some(other) => Err(input(
                file,
                format!("manifest.csv: file.{name} is `{other}` (expected bulk, delta or absent)"),
            )),
        }
    };
    // 1.2: a user's roles are rows of roles.csv.
    let mut roles: HashMap<String, Vec<Value>> = HashMap::new();
    if version == "1.2" && mode("roles")? != "absent" {
        let text = read("roles.csv")?
            .ok_or_else(|| input(file, "manifest.csv names roles.csv, the zip has none"))?;
        for (_, row) in rows(file, "roles.csv", &text)? {
            let Some(user) = row.get("userSourcedId").cloned() else {
                continue;
            };
            let mut role = Map::new();
            for (k, v) in &row {
                match k.as_str() {
                    "roleType" | "role" | "beginDate" | "endDate" => {
                        role.insert(k.clone(), Value::String(v.clone()));
                    }
                    "orgSourcedId" => {
                        role.insert("org".into(), guid(v, "org"));
                    }
                    "userProfileSourcedId" => {
                        role.insert("userProfile".into(), Value::String(v.clone()));
                    }
                    _ => {}
                }
            }
            roles.entry(user).or_default().push(Value::Object(role));
        }
    }
    let mut out = ParsedFile::default();
    let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
    for &name in FILES {
        let m = mode(name)?;
        if m == "absent" {
            continue;
        }
        let csv = format!("{name}.csv");
        let text = read(&csv)?.ok_or_else(|| {
            input(
                file,
                format!("manifest.csv says file.{name} = {m}, the zip has no {csv}"),
            )
        })?;
        out.parts.push(name_static(name));
        if m == "delta" {
            out.delta.push(name_static(name));
        }
        for (_line, row) in rows(file, &csv, &text)? {
            if need_modified {
                if let Some(t) = row
                    .get("dateLastModified")
                    .and_then(|t| crate::formats::asof::parse_time(t))
                {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
            let object = to_object(name, version, row, &mut roles);
            // Numbered through the zip, in the order above: a record's number is unique in its
            // file, as every format's is (the line of users.csv alone would not be).
            out.records.push(Record {
                entitet: name_static(name),
                rad: out.records.len() as i64 + 1,
                post: std::borrow::Cow::Owned(Value::Object(object).to_string()),
            });
        }
    }
    if out.parts.is_empty() {
        return Err(input(
            file,
            "manifest.csv lists no collection elevflyt reads as bulk or delta (orgs, users, classes, enrollments, academicSessions)",
        ));
    }
    out.newest_modified = newest;
    Ok(out)
}

fn name_static(name: &str) -> &'static str {
    FILES
        .iter()
        .find(|f| **f == name)
        .copied()
        .unwrap_or("users")
}

fn manifest(file: &str, text: &str) -> Result<HashMap<String, String>> {
    Ok(rows(file, "manifest.csv", text)?
        .into_iter()
        .filter_map(|(_, r)| {
            Some((
                r.get("propertyName")?.clone(),
                r.get("value")?.trim().to_string(),
            ))
        })
        .collect())
}

/// The rows of one CSV member as header → non-empty cell, with their line numbers.
fn rows(file: &str, member: &str, text: &str) -> Result<Vec<(u64, HashMap<String, String>)>> {
    let records = crate::formats::csv::records(&format!("{file}:{member}"), text, ',')?;
    let mut it = records.into_iter();
    let Some((_, header)) = it.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    Ok(it
        .map(|(line, cells)| {
            let row = header
                .iter()
                .zip(cells)
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(h, v)| (h.clone(), v))
                .collect();
            (line, row)
        })
        .collect())
}

fn guid(id: &str, kind: &str) -> Value {
    serde_json::json!({ "sourcedId": id.trim(), "type": kind })
}

/// A list cell (`"a,b"`) as its items.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One CSV row as the object the REST JSON has for it.
fn to_object(
    collection: &str,
    version: &str,
    row: HashMap<String, String>,
    roles: &mut HashMap<String, Vec<Value>>,
) -> Map<String, Value> {
    let mut o = Map::new();
    let mut metadata = Map::new();
    let user_id = row.get("sourcedId").cloned();
    for (k, v) in row {
        if let Some(key) = k.strip_prefix("metadata.") {
            metadata.insert(key.to_string(), Value::String(v));
            continue;
        }
        let value = match (collection, k.as_str()) {
            // Never kept: a password is no business of the pupil list.
            (_, "password") => continue,
            (_, "parentSourcedId") => ("parent", guid(&v, "org")),
            ("classes", "courseSourcedId") => ("course", guid(&v, "course")),
            ("classes", "schoolSourcedId") | ("enrollments", "schoolSourcedId") => {
                ("school", guid(&v, "org"))
            }
            ("classes", "termSourcedIds") => (
                "terms",
                Value::Array(list(&v).map(|t| guid(t, "academicSession")).collect()),
            ),
            ("courses", "schoolYearSourcedId") => ("schoolYear", guid(&v, "academicSession")),
            ("courses", "orgSourcedId") => ("org", guid(&v, "org")),
            ("enrollments", "classSourcedId") => ("class", guid(&v, "class")),
            ("enrollments", "userSourcedId") => ("user", guid(&v, "user")),
            ("users", "orgSourcedIds") => (
                "orgs",
                Value::Array(list(&v).map(|t| guid(t, "org")).collect()),
            ),
            ("users", "primaryOrgSourcedId") => ("primaryOrg", guid(&v, "org")),
            ("users", "agentSourcedIds") => (
                "agents",
                Value::Array(list(&v).map(|t| guid(t, "user")).collect()),
            ),
            ("users", "userIds") => ("userIds", Value::Array(user_ids(&v))),
            ("users", "preferredGivenName") => ("preferredFirstName", Value::String(v)),
            ("users", "preferredFamilyName") => ("preferredLastName", Value::String(v)),
            (_, "grades" | "subjects" | "subjectCodes" | "periods") => {
                let items = list(&v).map(|s| Value::String(s.to_string())).collect();
                (k.as_str(), Value::Array(items))
            }
            _ => (k.as_str(), Value::String(v)),
        };
        o.insert(value.0.to_string(), value.1);
    }
    if collection == "users" && version == "1.2" {
        if let Some(r) = user_id.and_then(|id| roles.remove(&id)) {
            o.insert("roles".into(), Value::Array(r));
        }
    }
    if !metadata.is_empty() {
        o.insert("metadata".into(), Value::Object(metadata));
    }
    o
}

/// `{Feide:kari@skule.no},{LMS:1}` → `[{"type":"Feide","identifier":"kari@skule.no"}, …]`.
fn user_ids(v: &str) -> Vec<Value> {
    v.split('}')
        .filter_map(|item| {
            let item = item
                .trim()
                .trim_start_matches(',')
                .trim()
                .strip_prefix('{')?;
            let (kind, id) = item.split_once(':')?;
            Some(serde_json::json!({ "type": kind.trim(), "identifier": id.trim() }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        for (name, text) in files {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(text.as_bytes()).unwrap();
        }
        z.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn rows_become_the_rest_objects_with_roles_metadata_and_no_password() {
        let z = zip_of(&[
            ("manifest.csv", "propertyName,value\nmanifest.version,1.0\noneroster.version,1.2\nfile.users,bulk\nfile.roles,bulk\nfile.orgs,delta\nfile.classes,absent\n"),
            ("users.csv", "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,password,primaryOrgSourcedId,identifier\nu1,active,2026-09-01T00:00:00Z,true,kari,\"{Feide:kari@k.no},{LMS:9}\",Kari,\"Nord, Øy\",hemmeleg,o1,01818912345\n"),
            ("roles.csv", "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId\nr1,active,,u1,primary,student,,,o1,\n"),
            ("orgs.csv", "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId,metadata.skolenummer\no1,active,,Nord skule,school,974123456,d1,46500\n"),
        ]);
        let p = parse("oneroster-2026-09-01.zip", &z, true).unwrap();
        assert_eq!(p.parts, vec!["orgs", "users"]);
        assert_eq!(p.delta, vec!["orgs"]);
        let user: Value = serde_json::from_str(&p.records[1].post).unwrap();
        assert_eq!(user["roles"][0]["role"], "student");
        assert_eq!(user["roles"][0]["org"]["sourcedId"], "o1");
        assert_eq!(user["primaryOrg"]["sourcedId"], "o1");
        assert_eq!(user["userIds"][0]["identifier"], "kari@k.no");
        assert_eq!(user["familyName"], "Nord, Øy");
        assert!(user.get("password").is_none());
        let org: Value = serde_json::from_str(&p.records[0].post).unwrap();
        assert_eq!(org["metadata"]["skolenummer"], "46500");
        assert_eq!(org["parent"]["sourcedId"], "d1");
        assert_eq!((p.records[0].rad, p.records[1].rad), (1, 2));
        assert!(p.newest_modified.is_some());

        // 1.1: the role and the orgs are columns of users.csv.
        let z = zip_of(&[
            ("manifest.csv", "propertyName,value\noneroster.version,1.1\nfile.users,bulk\n"),
            ("users.csv", "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName\nu2,active,,true,\"o1,o2\",student,per,{Feide:per@k.no},Per,Li\n"),
        ]);
        let p = parse("v11.zip", &z, false).unwrap();
        let user: Value = serde_json::from_str(&p.records[0].post).unwrap();
        assert_eq!(user["role"], "student");
        assert_eq!(user["orgs"][1]["sourcedId"], "o2");
        assert!(user.get("roles").is_none() && user.get("primaryOrg").is_none());
        let bad = zip_of(&[(
            "manifest.csv",
            "propertyName,value\noneroster.version,2.0\n",
        )]);
        let err = parse("x.zip", &bad, false).unwrap_err().to_string();
        assert!(err.contains("oneroster.version `2.0`"), "{err}");

        let err = parse("x.zip", b"PK not really", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a zip file"), "{err}");
        let err = parse("x.zip", &zip_of(&[("users.csv", "sourcedId\n")]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no manifest.csv"), "{err}");
        let err = parse(
            "x.zip",
            &zip_of(&[("manifest.csv", "propertyName,value\nfile.users,bulk\n")]),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no users.csv"), "{err}");
    }
}
