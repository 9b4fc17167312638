//! The as-of time of a file: a date (and time) in its name, else the newest `dateLastModified`
//! inside it, else the object's last-modified time. A date without a time is 00:00:00 UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Finds a date, optionally followed by a time, in a file name (or else in the name of a folder
/// on its path): `2026-01-15`, `20261115`, `2026-01-15T10:30:00`, `20261115T103000`,
/// `20261115_1030`.
pub fn from_file_name(path: &str) -> Option<DateTime<Utc>> {
    path.rsplit('/').find_map(from_component)
}

fn from_component(name: &str) -> Option<DateTime<Utc>> {
    let b = name.as_bytes();
    let digits = |s: &[u8]| -> Option<u32> {
        if s.iter().all(|c| c.is_ascii_digit()) {
            std::str::from_utf8(s).ok()?.parse().ok()
        } else {
            None
        }
    };
    for start in 0..b.len() {
        // Dates must not be part of a longer digit run (skolenummer, kommunenummer).
        if start > 0 && b[start - 1].is_ascii_digit() {
            continue;
        }
        let (date, mut pos) =
            if b.len() >= start + 10 && b[start + 4] == b'-' && b[start + 7] == b'-' {
                let y = digits(&b[start..start + 4]);
                let m = digits(&b[start + 5..start + 7]);
                let d = digits(&b[start + 8..start + 10]);
                match (y, m, d) {
                    (Some(y), Some(m), Some(d)) => {
                        (NaiveDate::from_ymd_opt(y as i32, m, d), start + 10)
                    }
                    _ => continue,
                }
            } else if b.len() >= start + 8 {
                if b.get(start + 8).is_some_and(|c| c.is_ascii_digit()) {
                    continue;
                }
                match digits(&b[start..start + 8]) {
                    Some(v) => (
                        NaiveDate::from_ymd_opt((v / 10000) as i32, (v / 100) % 100, v % 100),
                        start + 8,
                    ),
                    None => continue,
                }
            } else {
                continue;
            };
        let Some(date) = date.filter(|d| (1990..=2100).contains(&chrono::Datelike::year(d))) else {
            continue;
        };
        let mut time = NaiveTime::MIN;
        if pos < b.len() && matches!(b[pos], b'T' | b'_' | b' ') {
            pos += 1;
            let rest: Vec<u8> = b[pos..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == b':')
                .filter(|c| c.is_ascii_digit())
                .copied()
                .collect();
            let hms = match rest.len() {
                4 => digits(&rest).map(|v| (v / 100, v % 100, 0)),
                6 => digits(&rest).map(|v| (v / 10000, (v / 100) % 100, v % 100)),
                _ => None,
            };
            if let Some((h, m, s)) = hms {
                time = NaiveTime::from_hms_opt(h, m, s).unwrap_or(NaiveTime::MIN);
            }
        }
        return Some(NaiveDateTime::new(date, time).and_utc());
    }
    None
}

/// Parses an ISO 8601 date or date-time as used in `dateLastModified` and `--as-of`.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(NaiveTime::MIN).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<String> {
        from_file_name(s).map(|d| d.to_rfc3339())
    }

    #[test]
    fn dates_in_file_names() {
        assert_eq!(
            t("users-2026-01-15.json").as_deref(),
            Some("2026-01-15T00:00:00+00:00")
        );
        assert_eq!(
            t("elevliste_46505_20261101.csv").as_deref(),
            Some("2026-11-01T00:00:00+00:00")
        );
        assert_eq!(
            t("x_20261101T103000.csv").as_deref(),
            Some("2026-11-01T10:30:00+00:00")
        );
        assert_eq!(
            t("snap/2026-02-01T08:15/users.json").as_deref(),
            Some("2026-02-01T08:15:00+00:00")
        );
        assert_eq!(
            t("users_2026-02-01T08:15.json").as_deref(),
            Some("2026-02-01T08:15:00+00:00")
        );
        assert_eq!(t("users.json"), None);
        assert_eq!(t("elevliste_4650520261101.csv"), None);
    }

    #[test]
    fn iso_times() {
        assert_eq!(
            parse_time("2026-01-15").unwrap().to_rfc3339(),
            "2026-01-15T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-01-15T10:00:00Z").unwrap().to_rfc3339(),
            "2026-01-15T10:00:00+00:00"
        );
        assert!(parse_time("15.01.2026").is_none());
    }
}
