//! `lines` (test builds only): the smallest format there can be — one pupil per line,
//! `fødselsnummer;namn;skolenummer;klasse`, a full snapshot of the source; each school named
//! becomes a `skole` row. It exists to show (and
//! test) what adding a format takes: this module and one line in the registry
//! (docs/ARCHITECTURE.md, "Adding an input format").

use std::borrow::Cow;
use std::path::Path;

use chrono::NaiveDate;

use super::{Format, ParsedFile, RawRec, Record, SnapshotInput};
use crate::error::{Error, Result};
use crate::fint::{EfRow, ElevRow, Origin, SkoleRow, Staged, Str};
use crate::generate::Population;

pub struct Lines;

impl Format for Lines {
    fn name(&self) -> &'static str {
        "lines"
    }

    fn description(&self) -> &'static str {
        "test only: fødselsnummer;namn;skolenummer;klasse, one pupil per line"
    }

    fn parse<'a>(&self, file: &str, text: &'a str, _need_modified: bool) -> Result<ParsedFile<'a>> {
        let mut records = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let fields: Vec<&str> = line.split(';').map(str::trim).collect();
            let [fnr, namn, skule, klasse] = fields[..] else {
                return Err(Error::input(
                    file,
                    Some(n as u64 + 1),
                    "expected four fields",
                ));
            };
            let post =
                serde_json::json!({"fnr": fnr, "namn": namn, "skule": skule, "klasse": klasse});
            records.push(Record {
                entitet: "line",
                rad: n as i64 + 1,
                post: Cow::Owned(post.to_string()),
            });
        }
        Ok(ParsedFile {
            records,
            ..Default::default()
        })
    }

    fn flatten<'a>(
        &self,
        snapshot: &SnapshotInput<'a>,
        records: &mut dyn Iterator<Item = RawRec<'a>>,
        out: &mut Staged<'a>,
    ) {
        for rec in records {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(rec.post) else {
                continue;
            };
            let field = |k: &str| v[k].as_str().map(|s| Str::owned(s.to_string()));
            let mut names = v["namn"].as_str().unwrap_or_default().split_whitespace();
            let r = Origin {
                kildesystem: snapshot.kildesystem,
                kjelde: rec.kjelde,
                rad: rec.rad,
                skolenummer: field("skule"),
                system_id: None,
            };
            out.elev.push(ElevRow {
                kilde_nokkel: field("fnr"),
                fodselsnummer: field("fnr"),
                kommunenummer: Some(Str::borrowed(snapshot.kommunenummer)),
                fornavn: names.next().map(|s| Str::owned(s.to_string())),
                etternavn: names.last().map(|s| Str::owned(s.to_string())),
                fnr_required: true,
                ..ElevRow::from(r.clone())
            });
            let school = field("skule").unwrap_or_default();
            if !out.skole.iter().any(|s| s.skolenummer == school) {
                out.skole.push(SkoleRow {
                    r: r.clone(),
                    skolenummer: school,
                    organisasjonsnummer: None,
                    navn: None,
                    kommunenummer: Some(Str::borrowed(snapshot.kommunenummer)),
                    fylkesnummer: snapshot.kommunenummer.get(..2).map(Str::borrowed),
                    eierform: None,
                });
            }
            out.elevforhold.push(EfRow {
                r,
                elev_kilde_nokkel: field("fnr"),
                system_id: None,
                skolenummer: field("skule"),
                klasse: field("klasse"),
                trinn: v["klasse"].as_str().and_then(|k| k.get(..2)?.parse().ok()),
                skolear: None,
                hovedskole: Some(true),
                startdato: None,
                sluttdato: None,
            });
        }
    }

    fn write_sample(&self, out: &Path, date: NaiveDate, p: &Population<'_>) -> Result<Vec<String>> {
        let path = out.join(format!("elevar-{date}.txt"));
        let text: String = p
            .pupils
            .iter()
            .map(|u| {
                let school = &p.schools[u.school].skolenummer;
                format!(
                    "{};{} {};{school};{}{}\n",
                    u.fnr, u.given, u.family, u.grade, u.class
                )
            })
            .collect();
        std::fs::write(&path, text).map_err(crate::generate::io(&path))?;
        Ok(vec![path.display().to_string()])
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Pipeline;
    use crate::run::{execute, RunContext, Stage};

    /// A pipeline with `format = "lines"` goes through all three stages on its own, with its
    /// rows validated like any other format's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registered_format_runs_through_every_stage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/elevar-2026-01-15.txt"),
            "12911153597;Ingrid Myrvang;46520;10A\n15811192470;Tiril Myrvang;46520;10B\n12345678901;Ugyldig Nummer;46520;10A\n",
        )
        .unwrap();
        let toml = "[pipeline]\nname = \"l\"\nkommunenummer = \"4621\"\nwarehouse = \"lake\"\ncatalog = \"c\"\nschema = \"s\"\n\n\
                    [[source]]\nname = \"linjer\"\nformat = \"lines\"\nlocation = \"src\"\n\n[quality]\nallow_synthetic_fnr = true\n";
        let path = dir.path().join("p.toml");
        std::fs::write(&path, toml).unwrap();
        let p = Pipeline::load(&path, None).unwrap();
        for stage in [Stage::Ingest, Stage::Standardize, Stage::Publish] {
            execute(&RunContext::new(p.clone()), stage).await.unwrap();
        }
        let session = crate::ops::session_at(&p, None, None).await.unwrap();
        let count = |sql: &'static str| {
            let session = session.clone();
            async move {
                let b = crate::delta::query(&session, sql).await.unwrap();
                let n = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64)
                    .unwrap();
                n.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap()
                    .value(0)
            }
        };
        // The invalid number is dropped and reported; the two others are published.
        assert_eq!(count("SELECT count(*) FROM elev WHERE is_current").await, 2);
        assert_eq!(
            count("SELECT count(*) FROM elevforhold WHERE trinn = 10").await,
            2
        );
        assert_eq!(
            count("SELECT count(*) FROM skole WHERE skolenummer = '46520'").await,
            1
        );
        assert_eq!(count("SELECT count(*) FROM elevliste_vgs").await, 2);
        assert_eq!(
            count("SELECT count(*) FROM avvik WHERE regel = 'fnr_ugyldig'").await,
            1
        );
    }
}
