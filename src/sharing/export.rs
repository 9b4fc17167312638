//! `elevflyt export vigo`: the county list as the legacy semicolon files, one per school
//! (`elevliste_<skolenummer>_<yyyymmdd>.csv`, Windows-1252 by default), for a county still on
//! files. Every export is a disclosure and is logged in `utlevering`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::error::{Error, Result};

/// The legacy file's header.
pub const HEADER: &str = "kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn";
const COLUMNS: [&str; 6] = [
    "kommunenummer",
    "skolenummer",
    "fylkesnummer",
    "klasse",
    "fodselsnummer",
    "elev_namn",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Windows1252,
    Utf8,
}

/// What an export wrote.
#[derive(Debug, serde::Serialize)]
pub struct Exported {
    pub files: Vec<PathBuf>,
    pub rows: usize,
    /// The version of `elevliste_vgs` exported.
    pub version: i64,
}

/// A field as the legacy format writes it: quoted only when it has to be.
fn field(s: &str) -> String {
    if s.contains([';', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn digits_only(s: &str, what: &str) -> Result<()> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Usage(format!("{what}: `{s}` is not a number")));
    }
    Ok(())
}

pub async fn vigo(
    pipeline: &Pipeline,
    fylke: &str,
    skule: Option<&str>,
    out: &Path,
    encoding: Encoding,
) -> Result<Exported> {
    digits_only(fylke, "--fylke")?;
    if let Some(s) = skule {
        digits_only(s, "--skule")?;
    }
    let url = pipeline.table_url("elevliste_vgs");
    let table = crate::delta::try_open(&url).await?.ok_or_else(|| {
        Error::Usage(format!(
            "there is no county list yet ({url}); run the pipeline first"
        ))
    })?;
    let version = table.version().unwrap_or(0) as i64;
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    crate::delta::register(&ctx, "elevliste_vgs", &table).await?;
    let mut sql = format!(
        "SELECT {} FROM elevliste_vgs WHERE fylkesnummer = '{fylke}'",
        COLUMNS.join(", ")
    );
    if let Some(s) = skule {
        sql.push_str(&format!(" AND skolenummer = '{s}'"));
    }
    sql.push_str(" ORDER BY skolenummer, klasse, elev_namn");
    let batches = crate::delta::query(&ctx, &sql).await?;
    let mut schools: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rows = 0;
    for b in &batches {
        let cols: Vec<_> = COLUMNS
            .iter()
            .map(|c| crate::delta::text(b, c))
            .collect::<Result<_>>()?;
        for i in 0..b.num_rows() {
            let values: Vec<String> = cols
                .iter()
                .map(|c| field(c.opt(i).unwrap_or_default()))
                .collect();
            let school = cols[1].opt(i).unwrap_or("ukjend").to_string();
            schools.entry(school).or_default().push(values.join(";"));
            rows += 1;
        }
    }
    if schools.is_empty() {
        return Err(Error::Usage(format!(
            "no pupils in the county list (version {version}) for fylke {fylke}{}: nothing exported",
            skule.map(|s| format!(", skule {s}")).unwrap_or_default()
        )));
    }
    // Logged before a file is written: a disclosure the log does not know of never happens.
    let mut restriction = format!("fylkesnummer={fylke}");
    if let Some(s) = skule {
        restriction.push_str(&format!(",skolenummer={s}"));
    }
    super::disclosure::append(
        pipeline,
        &[super::disclosure::Disclosure {
            time: chrono::Utc::now(),
            recipient: "fil".into(),
            share: None,
            table: "elevliste_vgs".into(),
            version: Some(version),
            from_version: None,
            operation: "export",
            files: schools.len() as i64,
            rows: rows as i64,
            restriction: Some(restriction),
            request_id: format!("export-{}", uuid::Uuid::new_v4()),
        }],
        &format!("export-{}", uuid::Uuid::new_v4()),
    )
    .await?;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", out.display())))?;
    let date = chrono::Utc::now().format("%Y%m%d");
    let mut files = Vec::new();
    for (school, lines) in &schools {
        let mut text = format!("{HEADER}\r\n");
        for l in lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        let bytes = match encoding {
            Encoding::Utf8 => text.into_bytes(),
            Encoding::Windows1252 => {
                let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
                if unmappable {
                    // Which line, never what it holds (a name).
                    let line = text
                        .lines()
                        .position(|l| encoding_rs::WINDOWS_1252.encode(l).2)
                        .map_or(0, |i| i + 1);
                    return Err(Error::Usage(format!(
                        "school {school}: line {line} has a letter Windows-1252 cannot write; export with --encoding utf-8"
                    )));
                }
                bytes.into_owned()
            }
        };
        let path = out.join(format!("elevliste_{school}_{date}.csv"));
        let tmp = out.join(format!(".elevliste_{school}_{date}.csv.tmp"));
        super::tokens::write_private(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
        files.push(path);
    }
    Ok(Exported {
        files,
        rows,
        version,
    })
}
