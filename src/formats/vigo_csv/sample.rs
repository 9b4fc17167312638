//! `elevflyt generate` for vigo-csv: one snapshot of the synthetic population as one semicolon list per school (Windows-1252, CRLF), its 10th graders.

use std::path::Path;

use chrono::NaiveDate;

use crate::error::Result;
use crate::generate::{io, Population};

pub fn write(out: &Path, date: NaiveDate, population: &Population<'_>) -> Result<Vec<String>> {
    let (schools, pupils) = (population.schools, population.pupils);
    let d = date.format("%Y%m%d").to_string();
    let mut by_school: Vec<Vec<&crate::generate::Pupil>> = vec![Vec::new(); schools.len()];
    for p in pupils.iter().filter(|p| p.grade == 10) {
        by_school[p.school].push(p);
    }
    let mut names = Vec::new();
    for (s, list) in schools.iter().zip(by_school) {
        let path = out.join(format!("elevliste_{}_{d}.csv", s.skolenummer));
        let mut text = String::from(
            "kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn\r\n",
        );
        for p in list {
            text.push_str(&format!(
                "{};{};{};10{};{};{} {}\r\n",
                s.kommune,
                s.skolenummer,
                &s.kommune[..2],
                p.class,
                p.fnr,
                p.given,
                p.family
            ));
        }
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        names.push(path.display().to_string());
    }
    Ok(names)
}
