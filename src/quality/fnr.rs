//! Norwegian identity numbers: fødselsnummer family validation and classification, masking,
//! birth date and legacy gender; organisasjonsnummer. The rules (two mod-11 control digits, the
//! 2032 rule for the first, D-number day + 40, H-number month + 40, synthetic Tenor month + 80
//! and NAV month + 40) stand beside the code that applies them; what may be shown of a number:
//! docs/ARCHITECTURE.md, "Privacy".

use std::borrow::Cow;

use chrono::NaiveDate;

/// What kind of identity number an 11-digit string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FnrKind {
    Fnr,
    DNummer,
    /// Month +40: H-nummer or NAV/Dolly synthetic — the digits cannot tell them apart.
    HNummer,
    FhNummer,
    /// Month +80 (Skatteetaten Tenor / Test-Norge), possibly combined with D-nummer.
    Tenor,
    /// Month +65 (SyntPop).
    SyntPop,
}

impl FnrKind {
    pub fn code(self) -> &'static str {
        match self {
            FnrKind::Fnr => "fnr",
            FnrKind::DNummer => "dnr",
            FnrKind::HNummer => "hnr",
            FnrKind::FhNummer => "fhnr",
            FnrKind::Tenor => "tenor",
            FnrKind::SyntPop => "syntpop",
        }
    }

    /// Synthetic test numbers, accepted only with `allow_synthetic_fnr`.
    /// H-numbers count as synthetic here: in pupil data a month+40 number is NAV test data.
    pub fn is_synthetic(self) -> bool {
        matches!(self, FnrKind::Tenor | FnrKind::SyntPop | FnrKind::HNummer)
    }
}

/// Why a number is not a valid identity number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FnrError {
    Format,
    /// 10 digits: most likely a leading zero lost in a spreadsheet.
    LeadingZeroLost,
    Checksum,
    Date,
    Century,
    Future,
}

impl FnrError {
    pub fn message(self) -> &'static str {
        match self {
            FnrError::Format => "Fødselsnummeret må vere 11 siffer",
            FnrError::LeadingZeroLost => {
                "Fødselsnummeret manglar første siffer (0) — sjekk at kolonnen er formatert som tekst"
            }
            FnrError::Checksum => "Kontrollsifra i fødselsnummeret stemmer ikkje — sjekk at nummeret er skrive rett",
            FnrError::Date => "Fødselsnummeret inneheld ingen gyldig dato",
            FnrError::Century => "Individnummeret i fødselsnummeret passar ikkje med fødselsåret",
            FnrError::Future => "Fødselsnummeret har ein fødselsdato fram i tid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FnrInfo {
    pub kind: FnrKind,
    /// True when only the 2032 scheme (K1 rest 1–3) makes the number valid.
    pub scheme_2032: bool,
    pub birth_date: Option<NaiveDate>,
    /// Legacy gender from digit 9 (old scheme only): FINT kjønn code "1" mann / "2" kvinne.
    pub kjonn: Option<&'static str>,
}

/// Strips the separators people type into numbers (spaces, `-`, `.`); borrows when there are
/// none.
pub fn normalize(raw: &str) -> Cow<'_, str> {
    let sep = |c: char| c.is_whitespace() || c == '-' || c == '.';
    if raw.contains(sep) {
        Cow::Owned(raw.chars().filter(|c| !sep(*c)).collect())
    } else {
        Cow::Borrowed(raw)
    }
}

/// Validates and classifies an identity number. `today` bounds birth dates.
pub fn classify(raw: &str, today: NaiveDate) -> Result<FnrInfo, FnrError> {
    let s = normalize(raw);
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FnrError::Format);
    }
    if s.len() == 10 {
        return Err(FnrError::LeadingZeroLost);
    }
    if s.len() != 11 {
        return Err(FnrError::Format);
    }
    let mut d = [0u32; 11];
    for (x, b) in d.iter_mut().zip(s.bytes()) {
        *x = (b - b'0') as u32;
    }
    const W1: [u32; 10] = [3, 7, 6, 1, 8, 9, 4, 5, 2, 1];
    const W2: [u32; 11] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2, 1];
    let r1 = W1.iter().zip(&d).map(|(w, x)| w * x).sum::<u32>() % 11;
    let r2 = W2.iter().zip(&d).map(|(w, x)| w * x).sum::<u32>() % 11;
    if r2 != 0 {
        return Err(FnrError::Checksum);
    }
    let scheme_2032 = match r1 {
        0 => false,
        1..=3 => true,
        _ => return Err(FnrError::Checksum),
    };
    if d[0] >= 8 {
        return Ok(FnrInfo {
            kind: FnrKind::FhNummer,
            scheme_2032,
            birth_date: None,
            kjonn: None,
        });
    }
    let day_off = if (4..=7).contains(&d[0]) { 40 } else { 0 };
    let m = 10 * d[2] + d[3];
    let (month_off, kind) = match m {
        1..=12 => (
            0,
            if day_off > 0 {
                FnrKind::DNummer
            } else {
                FnrKind::Fnr
            },
        ),
        41..=52 => (40, FnrKind::HNummer),
        66..=77 => (65, FnrKind::SyntPop),
        81..=92 => (80, FnrKind::Tenor),
        _ => return Err(FnrError::Date),
    };
    let day = 10 * d[0] + d[1] - day_off;
    let month = m - month_off;
    let yy = (10 * d[4] + d[5]) as i32;
    // Leap-year check without a century: 00 counts as 2000.
    if NaiveDate::from_ymd_opt(2000 + yy, month, day).is_none() {
        return Err(FnrError::Date);
    }
    let mut birth_date = None;
    let mut kjonn = None;
    if !scheme_2032 {
        let individ = 100 * d[6] + 10 * d[7] + d[8];
        let year = century(individ, yy).ok_or(FnrError::Century)?;
        let date = NaiveDate::from_ymd_opt(year, month, day).ok_or(FnrError::Date)?;
        if date > today {
            return Err(FnrError::Future);
        }
        birth_date = Some(date);
        kjonn = Some(if d[8] % 2 == 1 { "1" } else { "2" });
    }
    Ok(FnrInfo {
        kind,
        scheme_2032,
        birth_date,
        kjonn,
    })
}

fn century(individ: u32, yy: i32) -> Option<i32> {
    match individ {
        0..=499 => Some(1900 + yy),
        500..=749 if yy >= 54 => Some(1800 + yy),
        500..=999 if yy <= 39 => Some(2000 + yy),
        900..=999 if yy >= 40 => Some(1900 + yy),
        _ => None,
    }
}

/// Masks an identity number for logs and deviation lists: the first six digits are kept, the
/// rest become `*` (`058209*****`); shorter numbers keep at most half their digits. A value that
/// is not digits (a name in the number's column, after columns shifted) is masked whole: it is
/// not a number, so nothing of it is safe to show.
pub fn mask(raw: &str) -> String {
    let s = normalize(raw);
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return mask_all(&s);
    }
    let n = s.chars().count();
    let keep = if n >= 11 { 6 } else { n / 2 };
    s.chars()
        .enumerate()
        .map(|(i, c)| if i < keep { c } else { '*' })
        .collect()
}

/// A code (kommunenummer, fylkesnummer, skolenummer, organisasjonsnummer, trinn) for a deviation
/// list: digits as they are (codes are not personal data); anything else masked whole, since a
/// code column holding text usually holds another column's value, such as a name.
pub fn mask_code(raw: &str) -> String {
    let s = raw.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b' ') {
        return s.to_string();
    }
    mask_all(s)
}

/// Every character a `*` (at most 20): only the length shows.
fn mask_all(s: &str) -> String {
    "*".repeat(s.chars().count().clamp(1, 20))
}

/// organisasjonsnummer: 9 digits, mod-11 with weights 3,2,7,6,5,4,3,2.
pub fn valid_orgnr(raw: &str) -> bool {
    let s = normalize(raw);
    if s.len() != 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    const W: [u32; 9] = [3, 2, 7, 6, 5, 4, 3, 2, 1];
    s.bytes()
        .zip(W)
        .map(|(b, w)| (b - b'0') as u32 * w)
        .sum::<u32>()
        % 11
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published 2032 vectors are born in 2032: check them from 2033.
    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2033, 1, 1).unwrap()
    }

    #[test]
    fn published_test_vectors() {
        let ok = |s: &str| classify(s, today());
        // Valid in both schemes.
        assert!(!ok("02013299997").unwrap().scheme_2032);
        assert!(!ok("30108299920").unwrap().scheme_2032);
        // Valid only in the 2032 scheme.
        assert!(ok("02013299903").unwrap().scheme_2032);
        assert!(ok("30108299939").unwrap().scheme_2032);
        // Invalid.
        assert_eq!(ok("12345678901"), Err(FnrError::Checksum));
        assert_eq!(ok("02013299998"), Err(FnrError::Checksum));
        // Synthetic and special numbers.
        assert_eq!(ok("10915596784").unwrap().kind, FnrKind::Tenor);
        assert_eq!(ok("13527248013").unwrap().kind, FnrKind::HNummer);
        assert_eq!(ok("68467038838").unwrap().kind, FnrKind::HNummer);
        // Vigo fiktiv fails mod-11.
        assert!(ok("42059199202").is_err());
    }

    #[test]
    fn formats_and_lost_zero() {
        assert_eq!(
            classify("2013299997", today()),
            Err(FnrError::LeadingZeroLost)
        );
        assert_eq!(
            classify("0201329999", today()),
            Err(FnrError::LeadingZeroLost)
        );
        assert_eq!(
            classify("020132 99997", today()).map(|i| i.kind),
            Ok(FnrKind::Fnr)
        );
        assert_eq!(classify("abc", today()), Err(FnrError::Format));
        assert_eq!(classify("", today()), Err(FnrError::Format));
    }

    #[test]
    fn birth_date_gender_and_future_dates() {
        // Individnummer 999 with year 32 is 2032 in the old century table.
        let i = classify("02013299997", today()).unwrap();
        assert_eq!(i.birth_date, NaiveDate::from_ymd_opt(2032, 1, 2));
        assert_eq!(i.kjonn, Some("1"));
        let now = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(classify("02013299997", now), Err(FnrError::Future));
        let i = classify("10915596784", now).unwrap();
        assert_eq!(i.birth_date, NaiveDate::from_ymd_opt(1955, 11, 10));
        assert!(i.kind.is_synthetic());
    }

    #[test]
    fn masking_keeps_only_the_date_part() {
        assert_eq!(mask("05820912345"), "058209*****");
        assert_eq!(mask("5820912345"), "58209*****");
        assert_eq!(mask("1234"), "12**");
        // Not a number: nothing of it shows, wherever it stood.
        assert_eq!(mask("Håvard Nordmann"), "**************");
        assert_eq!(mask("05820912a45"), "***********");
        assert_eq!(mask_code("4601"), "4601");
        assert_eq!(mask_code("Kari Nordmann"), "*************");
        assert_eq!(mask_code(""), "*");
    }

    #[test]
    fn orgnr() {
        assert!(valid_orgnr("123456785"));
        assert!(valid_orgnr("988077917"));
        assert!(!valid_orgnr("988077918"));
        assert!(valid_orgnr("974760673"));
        assert!(valid_orgnr("310478717"));
        assert!(!valid_orgnr("12345678"));
    }
}

/// Feide name (`eduPersonPrincipalName`): `uid@realm`, the realm a domain, stored in lower case.
pub fn valid_feidenavn(s: &str) -> bool {
    let Some((uid, realm)) = s.split_once('@') else {
        return false;
    };
    !uid.is_empty()
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && valid_domain(realm)
        && s.chars().all(|c| {
            let mut lower = c.to_lowercase();
            lower.next() == Some(c) && lower.next().is_none()
        })
}

fn valid_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
}

/// A plain e-mail address: one `@`, a local part without spaces, a domain.
pub fn valid_epost(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(char::is_whitespace)
                && !local.contains('@')
                && !domain.contains('@')
                && if domain.is_ascii() {
                    valid_domain(domain)
                } else {
                    valid_domain(&domain.to_lowercase())
                }
        }
        None => false,
    }
}

/// A Norwegian mobile number: 8 digits starting with 4 or 9, optionally with +47/0047 and spaces.
pub fn valid_mobil(s: &str) -> bool {
    let sep = |c: char| c.is_whitespace() || c == '-';
    let d: Cow<str> = if s.contains(sep) {
        Cow::Owned(s.chars().filter(|c| !sep(*c)).collect())
    } else {
        Cow::Borrowed(s)
    };
    let d = d
        .strip_prefix("+47")
        .or_else(|| d.strip_prefix("0047"))
        .unwrap_or(&d);
    d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) && matches!(d.as_bytes()[0], b'4' | b'9')
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn contact_formats_table() {
        let cases: &[(&str, bool, bool, bool)] = &[
            // value, feidenavn, epost, mobil
            ("olanor123@skotthyll.kommune.no", true, true, false),
            ("OlaNor@skotthyll.kommune.no", false, true, false),
            ("ola nor@bergen.kommune.no", false, false, false),
            ("ola@localhost", false, false, false),
            ("@bergen.kommune.no", false, false, false),
            ("ola@@bergen.no", false, false, false),
            ("98765432", false, false, true),
            ("+47 987 65 432", false, false, true),
            ("0047 41234567", false, false, true),
            ("22334455", false, false, false),
            ("9876543", false, false, false),
        ];
        for (v, feide, epost, mobil) in cases {
            assert_eq!(valid_feidenavn(v), *feide, "feidenavn {v}");
            assert_eq!(valid_epost(v), *epost, "epost {v}");
            assert_eq!(valid_mobil(v), *mobil, "mobil {v}");
        }
    }
}
