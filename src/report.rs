//! The operator report: the pilot's three questions first (pupils per class, invalid
//! fødselsnummer, when data was last loaded), then open deviations per school, the last runs and
//! quality over time. Text, JSON or one self-contained HTML file. Never a fødselsnummer or a
//! name: deviation values are masked in `avvik` already.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Pipeline;
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct KlasseRad {
    pub skolenummer: String,
    pub klasse: String,
    pub antall: i64,
}

#[derive(Debug, Serialize)]
pub struct Kjoring {
    pub run_id: String,
    pub steg: String,
    pub status: String,
    pub melding: Option<String>,
    pub started: String,
    pub finished: String,
}

#[derive(Debug, Serialize)]
pub struct SkuleAvvik {
    pub skolenummer: String,
    pub antall: i64,
    pub per_regel: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize)]
pub struct AvvikRad {
    pub skolenummer: Option<String>,
    pub kjelde: Option<String>,
    pub rad: Option<String>,
    pub regel: String,
    pub alvorsgrad: String,
    pub felt: Option<String>,
    pub verdi: Option<String>,
    pub melding: String,
}

#[derive(Debug, Serialize)]
pub struct KvalitetPunkt {
    pub run_id: String,
    pub malt: String,
    pub elevar: Option<f64>,
    pub ugyldige_fodselsnummer: Option<f64>,
    pub duplikat: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub pipeline: String,
    pub kommunenummer: String,
    pub generert: String,
    pub elever_per_klasse: Vec<KlasseRad>,
    pub ugyldige_fodselsnummer: i64,
    pub sist_lastet: Option<String>,
    pub siste_kjoring: Option<Kjoring>,
    pub apne_avvik_per_skole: Vec<SkuleAvvik>,
    pub apne_avvik: Vec<AvvikRad>,
    pub kjoringar: Vec<Kjoring>,
    pub kvalitet_over_tid: Vec<KvalitetPunkt>,
}

pub(crate) async fn rows(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    table: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    if !crate::delta::has_table(ctx, table) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for b in crate::delta::query(ctx, sql).await? {
        let cols: Vec<_> = (0..b.num_columns())
            .map(|i| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_any().downcast_ref::<arrow::array::StringArray>()?;
                        (!arrow::array::Array::is_null(s, r)).then(|| s.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

fn s(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

fn kjoring(r: &[Option<String>]) -> Kjoring {
    Kjoring {
        run_id: s(&r[0]),
        steg: s(&r[1]),
        status: s(&r[2]),
        melding: r[3].clone(),
        started: s(&r[4]),
        finished: s(&r[5]),
    }
}

/// Open deviations, each problem once: those of the newest snapshot of each source and scope.
/// A problem a newer snapshot still has is open in it (with its newest report); one it no longer
/// has is resolved (`lost`). Counted by record, so two pupils of one school with the same masked
/// fødselsnummer are two.
pub(crate) const OPEN: &str = "SELECT * FROM (SELECT *, max(as_of) OVER (PARTITION BY kildesystem, coalesce(omfang, '')) AS newest \
    FROM avvik WHERE lost IS NULL) WHERE as_of = newest OR as_of IS NULL";

/// Gathers the report from the tables (works after a failed run too).
pub async fn build(p: &Pipeline) -> Result<Report> {
    let ctx = crate::ops::session_at(p, None, None).await?;
    let per_class = rows(&ctx, "elevforhold",
        "SELECT skolenummer, klasse, count(*) FROM elevforhold WHERE is_current GROUP BY 1, 2 ORDER BY 1, 2").await?;
    let invalid = rows(&ctx, "avvik", &format!(
        "SELECT count(*) FROM ({OPEN}) WHERE regel IN ('fnr_ugyldig', 'fnr_manglar_null', 'fnr_syntetisk')")).await?;
    let loaded = rows(&ctx, "leveranse", "SELECT max(publisert) FROM leveranse").await?;
    let runs = rows(&ctx, "kjoring",
        "SELECT run_id, steg, status, melding, started, finished FROM kjoring ORDER BY finished DESC LIMIT 10").await?;
    let per_school = rows(&ctx, "avvik", &format!(
        "SELECT coalesce(skolenummer, '-'), regel, count(*) FROM ({OPEN}) GROUP BY 1, 2 ORDER BY 1, 2")).await?;
    let open = rows(
        &ctx,
        "avvik",
        &format!(
        "SELECT skolenummer, kjelde, rad, regel, alvorsgrad, felt, verdi, melding FROM ({OPEN}) \
         ORDER BY skolenummer, kjelde, rad LIMIT 1000"),
    )
    .await?;
    let quality = rows(&ctx, "kvalitet",
        "SELECT run_id, min(malt) AS malt, \
           max(CASE WHEN tabell = 'elev' AND regel_eller_metrikk = 'rader_gjeldande' THEN verdi END), \
           max(CASE WHEN regel_eller_metrikk = 'ugyldige_fodselsnummer' THEN verdi END), \
           max(CASE WHEN tabell = 'elev' AND regel_eller_metrikk = 'duplikat' THEN verdi END) \
         FROM kvalitet GROUP BY run_id ORDER BY malt DESC LIMIT 30").await?;

    let mut schools: BTreeMap<String, SkuleAvvik> = BTreeMap::new();
    for r in &per_school {
        let e = schools.entry(s(&r[0])).or_insert_with(|| SkuleAvvik {
            skolenummer: s(&r[0]),
            antall: 0,
            per_regel: BTreeMap::new(),
        });
        let n: i64 = s(&r[2]).parse().unwrap_or(0);
        e.antall += n;
        e.per_regel.insert(s(&r[1]), n);
    }
    let num = |v: &Option<String>| v.as_deref().and_then(|x| x.parse::<f64>().ok());
    let mut kvalitet_over_tid: Vec<KvalitetPunkt> = quality
        .iter()
        .map(|r| KvalitetPunkt {
            run_id: s(&r[0]),
            malt: s(&r[1]),
            elevar: num(&r[2]),
            ugyldige_fodselsnummer: num(&r[3]),
            duplikat: num(&r[4]),
        })
        .collect();
    kvalitet_over_tid.reverse();
    let kjoringar: Vec<Kjoring> = runs.iter().map(|r| kjoring(r)).collect();
    Ok(Report {
        pipeline: p.name().to_string(),
        kommunenummer: p.kommunenummer().to_string(),
        generert: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        elever_per_klasse: per_class
            .iter()
            .map(|r| KlasseRad {
                skolenummer: s(&r[0]),
                klasse: s(&r[1]),
                antall: s(&r[2]).parse().unwrap_or(0),
            })
            .collect(),
        ugyldige_fodselsnummer: invalid
            .first()
            .map(|r| s(&r[0]).parse().unwrap_or(0))
            .unwrap_or(0),
        sist_lastet: loaded.first().and_then(|r| r[0].clone()),
        siste_kjoring: runs.first().map(|r| kjoring(r)),
        apne_avvik_per_skole: schools.into_values().collect(),
        apne_avvik: open
            .iter()
            .map(|r| AvvikRad {
                skolenummer: r[0].clone(),
                kjelde: r[1].clone(),
                rad: r[2].clone(),
                regel: s(&r[3]),
                alvorsgrad: s(&r[4]),
                felt: r[5].clone(),
                verdi: r[6].clone(),
                melding: s(&r[7]),
            })
            .collect(),
        kjoringar,
        kvalitet_over_tid,
    })
}

pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "elevflyt-rapport for {} (kommune {}), laga {}",
        r.pipeline, r.kommunenummer, r.generert
    );
    let _ = writeln!(o);
    if let Some(k) = &r.siste_kjoring {
        let _ = writeln!(
            o,
            "Siste køyring: {} ({}) {} – {}",
            k.status, k.steg, k.started, k.finished
        );
        if k.status != "ok" {
            let _ = writeln!(o, "  Kvifor: {}", k.melding.as_deref().unwrap_or("ukjent"));
        }
    } else {
        let _ = writeln!(o, "Ingen køyringar enno.");
    }
    let _ = writeln!(
        o,
        "Sist lasta: {}",
        r.sist_lastet.as_deref().unwrap_or("aldri")
    );
    let _ = writeln!(
        o,
        "Ugyldige fødselsnummer (opne): {}",
        r.ugyldige_fodselsnummer
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "Elevar per klasse:");
    let _ = writeln!(
        o,
        "  {:<12} {:<10} {:>6}",
        "skulenummer", "klasse", "elevar"
    );
    for k in &r.elever_per_klasse {
        let _ = writeln!(
            o,
            "  {:<12} {:<10} {:>6}",
            k.skolenummer, k.klasse, k.antall
        );
    }
    let total: i64 = r.elever_per_klasse.iter().map(|k| k.antall).sum();
    let _ = writeln!(o, "  {:<23} {:>6}", "i alt", total);
    let _ = writeln!(o);
    let _ = writeln!(o, "Opne avvik per skule:");
    if r.apne_avvik_per_skole.is_empty() {
        let _ = writeln!(o, "  ingen");
    }
    for sk in &r.apne_avvik_per_skole {
        let regler = sk
            .per_regel
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(o, "  {:<12} {:>4}  ({regler})", sk.skolenummer, sk.antall);
    }
    if !r.apne_avvik.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "Avvik som skulane må rette:");
        for a in &r.apne_avvik {
            let _ = writeln!(
                o,
                "  {} {} rad {}: {} [{}] {} {} — {}",
                a.skolenummer.as_deref().unwrap_or("-"),
                a.kjelde.as_deref().unwrap_or("-"),
                a.rad.as_deref().unwrap_or("-"),
                a.regel,
                a.alvorsgrad,
                a.felt.as_deref().unwrap_or(""),
                a.verdi.as_deref().unwrap_or(""),
                a.melding
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Siste køyringar:");
    for k in &r.kjoringar {
        let _ = writeln!(
            o,
            "  {}  {:<11} {:<6} {}",
            k.finished, k.steg, k.status, &k.run_id
        );
    }
    o
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG.
pub(crate) fn bars(title: &str, items: &[(String, f64)], colour: &str) -> String {
    let max = items.iter().map(|i| i.1).fold(1.0_f64, f64::max);
    let h = 22 * items.len().max(1) + 30;
    // The chart as words for a screen reader, and scaled to the page on a phone.
    let summary: Vec<String> = items.iter().map(|(l, v)| format!("{l}: {v}")).collect();
    let label = match summary.is_empty() {
        true => format!("{title}: ingen data"),
        false => format!("{title}. {}", summary.join("; ")),
    };
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 640 {h}" width="100%" style="max-width:640px" role="img" aria-label="{}">"#,
        esc(title),
        esc(&label)
    );
    if items.is_empty() {
        svg.push_str(r#"<text x="10" y="20">ingen data</text>"#);
    }
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 10 + 22 * i;
        let w = (v / max * 420.0).max(1.0);
        let _ = write!(
            svg,
            r#"<text x="0" y="{ty}" font-size="12">{l}</text><rect x="150" y="{y}" width="{w:.1}" height="16" fill="{colour}"/><text x="{tx:.1}" y="{ty}" font-size="12">{v}</text>"#,
            ty = y + 13,
            l = esc(label),
            tx = 155.0 + w,
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

pub fn html(r: &Report) -> String {
    let classes: Vec<(String, f64)> = r
        .elever_per_klasse
        .iter()
        .map(|k| (format!("{} {}", k.skolenummer, k.klasse), k.antall as f64))
        .collect();
    let schools: Vec<(String, f64)> = r
        .apne_avvik_per_skole
        .iter()
        .map(|s| (s.skolenummer.clone(), s.antall as f64))
        .collect();
    let quality: Vec<(String, f64)> = r
        .kvalitet_over_tid
        .iter()
        .filter_map(|q| {
            q.ugyldige_fodselsnummer
                .map(|v| (q.malt.chars().take(16).collect(), v))
        })
        .collect();
    let pupils: Vec<(String, f64)> = r
        .kvalitet_over_tid
        .iter()
        .filter_map(|q| q.elevar.map(|v| (q.malt.chars().take(16).collect(), v)))
        .collect();
    let last = match &r.siste_kjoring {
        Some(k) if k.status == "ok" => format!(
            "<p class=ok>Siste køyring: ok ({}), {}</p>",
            esc(&k.steg),
            esc(&k.finished)
        ),
        Some(k) => format!(
            "<p class=fail>Siste køyring: {} ({}), {}<br>Kvifor: {}</p>",
            esc(&k.status),
            esc(&k.steg),
            esc(&k.finished),
            esc(k.melding.as_deref().unwrap_or("ukjent"))
        ),
        None => "<p>Ingen køyringar enno.</p>".into(),
    };
    let mut avvik_rows = String::new();
    if r.apne_avvik.is_empty() {
        avvik_rows.push_str("<tr><td colspan=8>Ingen opne avvik.</td></tr>");
    }
    for a in &r.apne_avvik {
        let _ = write!(
            avvik_rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(a.skolenummer.as_deref().unwrap_or("-")),
            esc(a.kjelde.as_deref().unwrap_or("-")),
            esc(a.rad.as_deref().unwrap_or("-")),
            esc(&a.regel),
            esc(&a.alvorsgrad),
            esc(a.felt.as_deref().unwrap_or("")),
            esc(a.verdi.as_deref().unwrap_or("")),
            esc(&a.melding)
        );
    }
    format!(
        r#"<!doctype html>
<html lang="nn"><head><meta charset="utf-8"><title>elevflyt – {name}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.4em; }} .ok {{ color: #1a7f37; }} .fail {{ color: #b42318; font-weight: bold; }}
.kpi {{ display: flex; gap: 2em; }} .kpi div {{ border: 1px solid #ccc; padding: .8em 1.2em; border-radius: 6px; }}
.kpi b {{ display: block; font-size: 1.8em; }}
table {{ border-collapse: collapse; font-size: .85em; }} td, th {{ border: 1px solid #ddd; padding: 3px 6px; }}
figure {{ margin: 1.5em 0; }} figcaption {{ font-weight: bold; margin-bottom: .4em; }}
</style></head><body>
<h1>elevflyt: {name} (kommune {kommune})</h1>
<p>Laga {generert}</p>
{last}
<div class="kpi">
<div>Elevar i alt<b>{total}</b></div>
<div>Ugyldige fødselsnummer<b>{invalid}</b></div>
<div>Sist lasta<b style="font-size:1em">{loaded}</b></div>
</div>
{c1}
{c2}
{c3}
{c4}
<h2>Opne avvik</h2>
<table><tr><th>skule</th><th>fil</th><th>rad</th><th>regel</th><th>alvor</th><th>felt</th><th>verdi</th><th>melding</th></tr>
{avvik_rows}</table>
</body></html>
"#,
        name = esc(&r.pipeline),
        kommune = esc(&r.kommunenummer),
        generert = esc(&r.generert),
        total = r.elever_per_klasse.iter().map(|k| k.antall).sum::<i64>(),
        invalid = r.ugyldige_fodselsnummer,
        loaded = esc(r.sist_lastet.as_deref().unwrap_or("aldri")),
        c1 = bars("Elevar per klasse", &classes, "#2f6fb0"),
        c2 = bars("Opne avvik per skule", &schools, "#c2410c"),
        c3 = bars("Ugyldige fødselsnummer per køyring", &quality, "#b42318"),
        c4 = bars("Elevar (gjeldande) per køyring", &pupils, "#1a7f37"),
    )
}
