//! Test exports written on the fly: OneRoster JSON snapshots and Vigo lists for small stories.

use std::path::{Path, PathBuf};

use serde_json::json;

/// A synthetic Tenor fødselsnummer (month + 80) with valid control digits, distinct per `n`.
/// `dnr` makes it a D-number (day + 40).
pub fn tenor(n: u32, dnr: bool) -> String {
    let w1 = [3, 7, 6, 1, 8, 9, 4, 5, 2];
    let w2 = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    let year = 10 + (n / 336) % 10;
    for individ in 500..1000 {
        let s = format!(
            "{:02}{:02}{:02}{:03}",
            day + if dnr { 40 } else { 0 },
            month + 80,
            year,
            individ
        );
        let d: Vec<u32> = s.bytes().map(|b| (b - b'0') as u32).collect();
        let k1 = (11 - d.iter().zip(w1).map(|(a, b)| a * b).sum::<u32>() % 11) % 11;
        if k1 == 10 {
            continue;
        }
        let mut d2 = d.clone();
        d2.push(k1);
        let k2 = (11 - d2.iter().zip(w2).map(|(a, b)| a * b).sum::<u32>() % 11) % 11;
        if k2 == 10 {
            continue;
        }
        // Spread numbers sharing a date over individnummer by n.
        if (individ as u32) < 500 + (n * 7) % 400 {
            continue;
        }
        return format!("{s}{k1}{k2}");
    }
    tenor(n + 1000, dnr)
}

/// A pupil in a OneRoster snapshot.
#[derive(Clone, Debug)]
pub struct P {
    pub sid: String,
    pub fnr: String,
    pub given: String,
    pub family: String,
    pub school: String,
    pub class: String,
}

pub fn p(sid: &str, fnr: &str, family: &str, school: &str, class: &str) -> P {
    P {
        sid: sid.into(),
        fnr: fnr.into(),
        given: "Test".into(),
        family: family.into(),
        school: school.into(),
        class: class.into(),
    }
}

/// A school's OneRoster metadata: schools numbered 03… are in Oslo (fylke 03), the rest in the
/// pipeline's kommune.
fn school_metadata(s: &str) -> serde_json::Value {
    match s.starts_with("03") {
        true => json!({"skolenummer": s, "kommunenummer": "0301"}),
        false => json!({"skolenummer": s}),
    }
}

/// Writes one OneRoster snapshot (one file with every collection) dated `date`.
pub fn oneroster(dir: &Path, date: &str, pupils: &[P]) -> PathBuf {
    let mut schools: Vec<&str> = pupils.iter().map(|p| p.school.as_str()).collect();
    schools.extend(["46591", "46592"]);
    schools.sort();
    schools.dedup();
    let orgs: Vec<_> = schools
        .iter()
        .map(|s| json!({"sourcedId": format!("o{s}"), "status": "active", "name": format!("Skule {s}"), "type": "school",
                        "identifier": "974760673", "metadata": school_metadata(s)}))
        .collect();
    let mut classes = Vec::new();
    for s in &schools {
        for c in ["5A", "5B", "10A", "10B"] {
            classes.push(json!({"sourcedId": format!("c{s}{c}"), "status": "active", "title": c, "classType": "homeroom",
                                "school": {"sourcedId": format!("o{s}")}, "terms": [{"sourcedId": "y"}]}));
        }
    }
    let users: Vec<_> = pupils
        .iter()
        .map(|p| {
            json!({"sourcedId": p.sid, "status": "active", "role": "student", "givenName": p.given,
                        "familyName": p.family, "identifier": p.fnr})
        })
        .collect();
    let enrollments: Vec<_> = pupils
        .iter()
        .map(|p| json!({"sourcedId": format!("e{}{}", p.sid, p.school), "status": "active", "role": "student",
                        "user": {"sourcedId": p.sid}, "class": {"sourcedId": format!("c{}{}", p.school, p.class)},
                        "school": {"sourcedId": format!("o{}", p.school)}}))
        .collect();
    let doc = json!({
        "orgs": orgs, "classes": classes, "users": users, "enrollments": enrollments,
        "academicSessions": [{"sourcedId": "y", "status": "active", "title": "2025/2026", "type": "schoolYear", "schoolYear": "2026"}],
    });
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("export-{date}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path
}

/// Writes one Vigo list for `school`, dated `date` (yyyymmdd), rows (fnr, name, class).
pub fn vigo(dir: &Path, school: &str, date: &str, rows: &[(&str, &str, &str)]) -> PathBuf {
    let mut text =
        String::from("kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn\r\n");
    for (fnr, name, class) in rows {
        text.push_str(&format!("4621;{school};46;{class};{fnr};{name}\r\n"));
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("elevliste_{school}_{date}.csv"));
    std::fs::write(&path, encoding_rs::WINDOWS_1252.encode(&text).0).unwrap();
    path
}

/// A pipeline over the given sources (name, format, folder) in `dir`, warehouse `dir/lake`.
pub fn pipeline(
    dir: &Path,
    sources: &[(&str, &str, &Path)],
    quality: &str,
) -> elevflyt::config::Pipeline {
    let mut body = String::from(
        "[pipeline]\nname = \"story\"\nkommunenummer = \"4621\"\nwarehouse = \"lake\"\ncatalog = \"c\"\nschema = \"s\"\n",
    );
    for (name, format, path) in sources {
        body.push_str(&format!(
            "\n[[source]]\nname = \"{name}\"\nformat = \"{format}\"\nlocation = \"{}\"\n",
            path.display()
        ));
    }
    body.push_str(&format!(
        "\n[quality]\nallow_synthetic_fnr = true\n{quality}\n"
    ));
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, body).unwrap();
    elevflyt::config::Pipeline::load(&path, None).unwrap()
}

/// Writes one OneRoster snapshot as one file per collection (`users-<date>.json`, …), only the
/// collections named in `parts`: a partial delivery when some are left out.
pub fn oneroster_parts(dir: &Path, date: &str, pupils: &[P], parts: &[&str]) -> Vec<PathBuf> {
    let whole = tempfile::tempdir().unwrap();
    let file = oneroster(whole.path(), date, pupils);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    parts
        .iter()
        .map(|part| {
            let path = dir.join(format!("{part}-{date}.json"));
            let one = json!({ *part: doc[*part].clone() });
            std::fs::write(&path, serde_json::to_vec_pretty(&one).unwrap()).unwrap();
            path
        })
        .collect()
}

/// Every OneRoster collection a complete snapshot has.
pub const ONEROSTER_PARTS: &[&str] = &[
    "users",
    "orgs",
    "classes",
    "enrollments",
    "academicSessions",
];
