//! Delimited text as RFC 4180 reads it, for the formats that are CSV (Vigo's semicolon lists,
//! OneRoster's comma files).

use crate::error::{Error, Result};

/// The records of a delimited file as RFC 4180 reads them: a field that starts with a double
/// quote runs to the closing quote, across the separator and line breaks (`""` inside it is a quote); a
/// quote elsewhere is an ordinary character. Each record comes with the number of the line it
/// starts on (from 1). A quoted field that is never closed is an error naming its line.
pub fn records(file: &str, text: &str, sep: char) -> Result<Vec<(u64, Vec<String>)>> {
    let mut out = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut line = 1u64;
    let mut record_line = 1u64;
    let mut quoted_from: Option<u64> = None;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted_from.is_some() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                '"' => quoted_from = None,
                '\n' => {
                    line += 1;
                    cur.push('\n');
                }
                other => cur.push(other),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted_from = Some(line);
                at_field_start = false;
            }
            c if c == sep => {
                fields.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut cur));
                out.push((record_line, std::mem::take(&mut fields)));
                line += 1;
                record_line = line;
                at_field_start = true;
            }
            ' ' | '\t' if at_field_start => cur.push(c),
            other => {
                cur.push(other);
                at_field_start = false;
            }
        }
    }
    if let Some(from) = quoted_from {
        return Err(Error::input(
            file,
            Some(from),
            "a quoted field that starts on this line is never closed (a missing `\"`)",
        ));
    }
    if !cur.is_empty() || !fields.is_empty() {
        fields.push(cur);
        out.push((record_line, fields));
    }
    // Blank lines are not records.
    out.retain(|(_, f)| f.iter().any(|v| !v.trim().is_empty()));
    Ok(out)
}
