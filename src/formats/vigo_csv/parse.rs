//! `vigo-csv`: the legacy semicolon elevliste, one file per school.
//!
//! Header names are matched case-insensitively with `ø`/`o` and `_`/space alike; extra columns
//! are kept. Hand-made files have empty lines, trailing semicolons, quoted fields and duplicate
//! lines: the parser keeps every data line (duplicates are a quality question for standardize).

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::formats::{ParsedFile, Record};

/// Canonical form of a header name: lower case, `ø`→`o`, `æ`→`ae`, `å`→`a`, spaces → `_`.
pub fn canonical_header(h: &str) -> String {
    let mut out = String::new();
    for c in h.trim().trim_matches('"').trim().chars() {
        match c.to_lowercase().next().unwrap_or(c) {
            'ø' | 'ö' => out.push('o'),
            'æ' | 'ä' => out.push_str("ae"),
            'å' => out.push('a'),
            ' ' | '-' => out.push('_'),
            other => out.push(other),
        }
    }
    match out.as_str() {
        "elevnavn" | "elev_navn" | "elevnamn" | "navn" | "namn" => "elev_namn".into(),
        "fodselsnr" | "fnr" => "fodselsnummer".into(),
        _ => out,
    }
}

/// The records of a semicolon file (RFC 4180, see [`crate::formats::csv::records`]).
pub fn records(file: &str, text: &str) -> Result<Vec<(u64, Vec<String>)>> {
    crate::formats::csv::records(file, text, ';')
}

/// Splits one line on `;` (see [`records`]).
#[cfg(test)]
pub fn split_line(line: &str) -> Vec<String> {
    records("-", line)
        .ok()
        .and_then(|r| r.into_iter().next())
        .map(|(_, f)| f)
        .unwrap_or_default()
}

/// The records of one file (see [`crate::formats::Format::parse`]).
pub fn parse<'a>(file: &str, text: &'a str) -> Result<ParsedFile<'a>> {
    let mut lines = records(file, text)?.into_iter();
    let Some((header_line, header)) = lines.next() else {
        return Err(Error::input(file, None, "the file is empty"));
    };
    let header: Vec<String> = header.iter().map(|h| canonical_header(h)).collect();
    for required in ["skolenummer", "klasse", "fodselsnummer", "elev_namn"] {
        if !header.iter().any(|h| h == required) {
            return Err(Error::Input {
                    file: file.into(),
                    line: Some(header_line),
                    field: Some(required.into()),
                    message: format!(
                        "the header has no `{required}` column (expected kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn)"
                    ),
                });
        }
    }
    let mut records = Vec::new();
    let mut school_counts: std::collections::BTreeMap<String, usize> = Default::default();
    for (line, fields) in lines {
        let mut obj = Map::new();
        for (i, value) in fields.iter().enumerate() {
            let name = match header.get(i) {
                Some(h) if !h.is_empty() => h.clone(),
                // Trailing semicolons give empty fields past the header: ignore them.
                _ if value.trim().is_empty() => continue,
                _ => format!("kolonne_{}", i + 1),
            };
            obj.insert(name, Value::String(value.trim().to_string()));
        }
        if let Some(Value::String(s)) = obj.get("skolenummer") {
            let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() {
                *school_counts.entry(digits).or_default() += 1;
            }
        }
        records.push(Record {
            entitet: "elevliste",
            rad: line as i64,
            post: Value::Object(obj).to_string().into(),
        });
    }
    let omfang = school_from_name(file).or_else(|| {
        school_counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(s, _)| s)
    });
    if omfang.is_none() && !records.is_empty() {
        return Err(Error::Input {
                file: file.into(),
                line: None,
                field: Some("skolenummer".into()),
                message: "cannot tell which school the list is for: no skolenummer in the file name or the rows".into(),
            });
    }
    Ok(ParsedFile {
        records,
        newest_modified: None,
        omfang,
        ..Default::default()
    })
}

/// A five-digit skolenummer standing alone in the file name (`elevliste_46505_20261101.csv`).
fn school_from_name(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 5)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_quotes_and_trailing_semicolons() {
        assert_eq!(canonical_header("Fødselsnummer"), "fodselsnummer");
        assert_eq!(canonical_header("Elev namn"), "elev_namn");
        assert_eq!(split_line(r#"a;"b;c";"d""e";"#), ["a", "b;c", "d\"e", ""]);
        let text =
            "Kommunenummer;Skolenummer;Fylkesnummer;Klasse;Fødselsnummer;Elev_namn;Merknad\n\
                    4621;46505;46;10A;\"010110 12345\";Kari Nordmann;x;\n\n\
                    4621;46505;46;10A;2011012345;Ola Nordmann;\n";
        let p = parse("elevliste_46505_20261101.csv", text).unwrap();
        assert_eq!(p.omfang.as_deref(), Some("46505"));
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[1].rad, 4, "line numbers count empty lines");
        let v: Value = serde_json::from_str(&p.records[0].post).unwrap();
        assert_eq!(v["fodselsnummer"], "010110 12345");
        assert_eq!(v["merknad"], "x");
    }

    #[test]
    fn quoted_line_breaks_stay_in_their_field() {
        let text = "skolenummer;klasse;fodselsnummer;elev_namn\r\n\
                    46505;10A;01011012345;\"Kari\r\nNordmann\"\r\n\
                    46505;10B;\"0201\n1012345\";O\"Brien\r\n";
        let p = parse("elevliste_46505_20261101.csv", text).unwrap();
        assert_eq!(p.records.len(), 2, "two pupils, not four lines");
        assert_eq!(p.records[1].rad, 4, "the second pupil starts on line 4");
        let v: Value = serde_json::from_str(&p.records[0].post).unwrap();
        assert_eq!(v["elev_namn"], "Kari\r\nNordmann");
        let v: Value = serde_json::from_str(&p.records[1].post).unwrap();
        assert_eq!(
            v["elev_namn"], "O\"Brien",
            "a quote inside a field is a character"
        );
        let err = parse(
            "l.csv",
            "skolenummer;klasse;fodselsnummer;elev_namn\n1;2;\"3;4\n5;6;7;8\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("l.csv, line 2") && err.contains("never closed"),
            "{err}"
        );
    }

    #[test]
    fn missing_column_is_named() {
        let err = parse("l.csv", "skolenummer;klasse;elev_namn\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("l.csv, line 1, field `fodselsnummer`"),
            "{err}"
        );
    }
}
