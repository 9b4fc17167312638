//! `elevflyt generate` for oneroster-json: one snapshot of the synthetic population as the five OneRoster collections, one file each.

use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{Duration, NaiveDate};

use crate::error::Result;
use crate::generate::{io, Population};

pub fn write(out: &Path, date: NaiveDate, population: &Population<'_>) -> Result<Vec<String>> {
    let (year_end, schools, pupils) = (population.year_end, population.schools, population.pupils);
    let d = date.format("%Y-%m-%d").to_string();
    let modified = format!(
        "{}T00:00:00Z",
        (date - Duration::days(1)).format("%Y-%m-%d")
    );
    let mut names = Vec::new();
    let mut open = |name: &str| -> Result<(BufWriter<std::fs::File>, std::path::PathBuf)> {
        let path = out.join(format!("{name}-{d}.json"));
        names.push(path.display().to_string());
        let f = std::fs::File::create(&path).map_err(io(&path))?;
        Ok((BufWriter::with_capacity(1 << 20, f), path))
    };
    let (mut w, p) = open("orgs")?;
    write!(w, "{{\"orgs\": [").map_err(io(&p))?;
    for (i, s) in schools.iter().enumerate() {
        write!(
            w,
            "{}\n{{\"sourcedId\":\"org-{}\",\"status\":\"active\",\"dateLastModified\":\"{modified}\",\"name\":\"{}\",\"type\":\"school\",\"identifier\":\"{}\",\"metadata\":{{\"skolenummer\":\"{}\",\"kommunenummer\":\"{}\"}}}}",
            if i > 0 { "," } else { "" }, s.skolenummer, s.name, s.orgnr, s.skolenummer, s.kommune
        ).map_err(io(&p))?;
    }
    writeln!(w, "]}}").map_err(io(&p))?;
    w.flush().map_err(io(&p))?;

    let (mut w, p) = open("academicSessions")?;
    writeln!(w, "{{\"academicSessions\": [{{\"sourcedId\":\"as-{year_end}\",\"status\":\"active\",\"title\":\"{}/{year_end}\",\"type\":\"schoolYear\",\"schoolYear\":\"{year_end}\"}}]}}", year_end - 1).map_err(io(&p))?;
    w.flush().map_err(io(&p))?;

    let (mut w, p) = open("classes")?;
    write!(w, "{{\"classes\": [").map_err(io(&p))?;
    let mut first = true;
    for s in schools {
        for g in 1..=10 {
            for c in ['A', 'B'] {
                write!(
                    w,
                    "{}\n{{\"sourcedId\":\"cls-{sn}-{g}{c}\",\"status\":\"active\",\"title\":\"{g}{c}\",\"classType\":\"homeroom\",\"grades\":[\"{g:02}\"],\"school\":{{\"sourcedId\":\"org-{sn}\"}},\"terms\":[{{\"sourcedId\":\"as-{year_end}\"}}]}}",
                    if first { "" } else { "," },
                    sn = s.skolenummer
                ).map_err(io(&p))?;
                first = false;
            }
        }
    }
    writeln!(w, "]}}").map_err(io(&p))?;
    w.flush().map_err(io(&p))?;

    let (mut w, p) = open("users")?;
    write!(w, "{{\"users\": [").map_err(io(&p))?;
    for (i, u) in pupils.iter().enumerate() {
        let sn = &schools[u.school].skolenummer;
        write!(
            w,
            "{}\n{{\"sourcedId\":\"{sid}\",\"status\":\"active\",\"dateLastModified\":\"{modified}\",\"enabledUser\":true,\"role\":\"student\",\"username\":\"{lsid}\",\"userIds\":[{{\"type\":\"Feide\",\"identifier\":\"{lsid}@k{k}.kommune.no\"}}],\"givenName\":\"{}\",\"familyName\":\"{}\",\"identifier\":\"{}\",\"orgs\":[{{\"sourcedId\":\"org-{sn}\"}}]}}",
            if i > 0 { "," } else { "" },
            u.given, u.family, u.fnr,
            sid = u.sid, lsid = u.sid.to_lowercase(), k = schools[u.school].kommune
        ).map_err(io(&p))?;
    }
    writeln!(w, "]}}").map_err(io(&p))?;
    w.flush().map_err(io(&p))?;

    let (mut w, p) = open("enrollments")?;
    write!(w, "{{\"enrollments\": [").map_err(io(&p))?;
    for (i, u) in pupils.iter().enumerate() {
        let sn = &schools[u.school].skolenummer;
        write!(
            w,
            "{}\n{{\"sourcedId\":\"enr-{sid}-{sn}\",\"status\":\"active\",\"dateLastModified\":\"{modified}\",\"user\":{{\"sourcedId\":\"{sid}\"}},\"class\":{{\"sourcedId\":\"cls-{sn}-{}{}\"}},\"school\":{{\"sourcedId\":\"org-{sn}\"}},\"role\":\"student\"}}",
            if i > 0 { "," } else { "" },
            u.grade, u.class, sid = u.sid
        ).map_err(io(&p))?;
    }
    writeln!(w, "]}}").map_err(io(&p))?;
    w.flush().map_err(io(&p))?;
    Ok(names)
}
