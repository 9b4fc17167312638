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
        Err(_) => {
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
    }
}
