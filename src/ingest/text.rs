//! Decoding source files to text: UTF-8 with or without BOM, or Windows-1252 (a superset of the
//! printable ISO-8859-1) for legacy files with æøå. Anything else is a clear error.

use std::borrow::Cow;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Windows1252,
}

/// Decodes `bytes` and normalises line endings to `\n` (UTF-8 with `\n` endings is borrowed).
pub fn decode<'a>(file: &str, bytes: &'a [u8]) -> Result<(Cow<'a, str>, Encoding)> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Error::input(
            file,
            None,
            "the file is UTF-16; save it as UTF-8 or Windows-1252",
        ));
    }
    let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    if let Some(pos) = memchr::memchr(0, body) {
        let line = memchr::memchr_iter(b'\n', &body[..pos]).count() as u64 + 1;
        return Err(Error::input(
            file,
            Some(line),
            "the file contains NUL bytes: it is binary or in an unsupported encoding",
        ));
    }
    let (text, enc) = match std::str::from_utf8(body) {
        Ok(s) => (Cow::Borrowed(s), Encoding::Utf8),
        Err(e) => {
            // UTF-8 text with a stray byte is not Windows-1252: decoded so, every æøå of the
            // file would become mojibake and every name a new version. Refused, naming the line.
            if has_utf8_letters(body) {
                let at = e.valid_up_to();
                let line = memchr::memchr_iter(b'\n', &body[..at]).count() as u64 + 1;
                return Err(Error::input(
                    file,
                    Some(line),
                    "the file is UTF-8 (it has UTF-8 æøå), but this line has a byte that is not UTF-8 \
                     (mixed encodings, e.g. a line pasted from an older file): the file was not read; \
                     save it as UTF-8 throughout and deliver it again",
                ));
            }
            let (s, _, had_errors) = encoding_rs::WINDOWS_1252.decode(body);
            if had_errors {
                return Err(Error::input(file, None, "neither UTF-8 nor Windows-1252"));
            }
            (Cow::Owned(s.into_owned()), Encoding::Windows1252)
        }
    };
    let text = if memchr::memchr(b'\r', text.as_bytes()).is_some() {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        text
    };
    Ok((text, enc))
}

/// Whether `bytes` hold at least one valid multi-byte UTF-8 character (Windows-1252 text
/// practically never does: its æøå are single bytes that are not UTF-8 sequences).
fn has_utf8_letters(bytes: &[u8]) -> bool {
    bytes
        .utf8_chunks()
        .any(|chunk| chunk.valid().bytes().any(|b| b >= 0x80))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_bom_crlf_and_windows_1252() {
        let (t, e) = decode("f", b"\xEF\xBB\xBFa;b\r\nc\r\n").unwrap();
        assert_eq!((&*t, e), ("a;b\nc\n", Encoding::Utf8));
        let (t, e) = decode("f", b"Bj\xf8rn \xc6r\xe5\n").unwrap();
        assert_eq!((&*t, e), ("Bjørn Ærå\n", Encoding::Windows1252));
        assert!(decode("f", b"\xFF\xFEa\x00").is_err());
        let err = decode("x.csv", b"a\nb\x00").unwrap_err().to_string();
        assert!(err.contains("x.csv, line 2"), "{err}");
        // UTF-8 names with one Windows-1252 byte on line 3: refused, not read as mojibake.
        let mut mixed = "Bjørn\nÆrå\nKnut S".as_bytes().to_vec();
        mixed.extend_from_slice(b"\xf8rli\n");
        let err = decode("m.csv", &mixed).unwrap_err().to_string();
        assert!(
            err.contains("m.csv, line 3") && err.contains("not UTF-8"),
            "{err}"
        );
    }
}
