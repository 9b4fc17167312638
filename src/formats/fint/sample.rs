//! `elevflyt generate` for fint: one snapshot as the six FINT collections, one HAL page per
//! collection (`elev-2026-09-01.json`, …), with the `_links` a FINT API gives. The links point
//! at `https://fint.invalid/utdanning` (a name that resolves nowhere): the test server rewrites
//! them to its own address, and elevflyt only reads them, never calls them.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::Result;
use crate::generate::{io, Population};

/// The base URL of the generated links.
pub const BASE: &str = "https://fint.invalid/utdanning";

pub fn write(
    out: &Path,
    date: chrono::NaiveDate,
    population: &Population<'_>,
) -> Result<Vec<String>> {
    let (year_end, schools, pupils) = (population.year_end, population.schools, population.pupils);
    let d = date.format("%Y-%m-%d").to_string();
    let skolear = format!("{}{year_end}", year_end - 1);
    let mut names = Vec::new();
    let mut collection = |name: &str,
                          path: &str,
                          n: usize,
                          entry: &mut dyn FnMut(usize, &mut dyn Write) -> std::io::Result<()>|
     -> Result<()> {
        let file = out.join(format!("{name}-{d}.json"));
        names.push(file.display().to_string());
        let f = std::fs::File::create(&file).map_err(io(&file))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        (|| {
            write!(w, "{{\"_embedded\":{{\"_entries\":[")?;
            for i in 0..n {
                if i > 0 {
                    w.write_all(b",")?;
                }
                w.write_all(b"\n")?;
                entry(i, &mut w)?;
            }
            writeln!(
                w,
                "]}},\"_links\":{{\"self\":[{{\"href\":\"{BASE}/{path}\"}}]}},\"total_items\":{n},\"size\":{n},\"offset\":0}}"
            )?;
            w.flush()
        })()
        .map_err(io(&file))
    };
    let link = |rel: &str, path: &str| format!("\"{rel}\":[{{\"href\":\"{BASE}/{path}\"}}]");

    collection(
        "skole",
        "utdanningsprogram/skole",
        schools.len(),
        &mut |i, w| {
            let s = &schools[i];
            let sn = &s.skolenummer;
            write!(
            w,
            "{{\"systemId\":{{\"identifikatorverdi\":\"S-{sn}\"}},\"skolenummer\":{{\"identifikatorverdi\":\"{sn}\"}},\"organisasjonsnummer\":{{\"identifikatorverdi\":\"{}\"}},\"navn\":\"{}\",\"_links\":{{\"self\":[{{\"href\":\"{BASE}/utdanningsprogram/skole/systemid/S-{sn}\"}},{{\"href\":\"{BASE}/utdanningsprogram/skole/skolenummer/{sn}\"}}]}}}}",
            s.orgnr, s.name
        )
        },
    )?;

    let classes: Vec<(usize, u32, char)> = (0..schools.len())
        .flat_map(|s| (1..=10).flat_map(move |g| ['A', 'B'].map(|c| (s, g, c))))
        .collect();
    collection("klasse", "elev/klasse", classes.len(), &mut |i, w| {
        let (s, g, c) = classes[i];
        let sn = &schools[s].skolenummer;
        write!(
            w,
            "{{\"systemId\":{{\"identifikatorverdi\":\"K-{sn}-{g}{c}\"}},\"navn\":\"{g}{c}\",\"beskrivelse\":\"Klasse {g}{c}\",\"_links\":{{{},{},{},{}}}}}",
            link("self", &format!("elev/klasse/systemid/K-{sn}-{g}{c}")),
            link("skole", &format!("utdanningsprogram/skole/systemid/S-{sn}")),
            link("trinn", &format!("utdanningsprogram/arstrinn/systemid/{g}")),
            link("skolear", &format!("kodeverk/skolear/systemid/{skolear}")),
        )
    })?;

    collection(
        "klassemedlemskap",
        "elev/klassemedlemskap",
        pupils.len(),
        &mut |i, w| {
            let u = &pupils[i];
            let sn = &schools[u.school].skolenummer;
            write!(
            w,
            "{{\"systemId\":{{\"identifikatorverdi\":\"KM-{sid}-{sn}\"}},\"_links\":{{{},{},{}}}}}",
            link("self", &format!("elev/klassemedlemskap/systemid/KM-{}-{sn}", u.sid)),
            link("elevforhold", &format!("elev/elevforhold/systemid/enr-{}-{sn}", u.sid)),
            link("klasse", &format!("elev/klasse/systemid/K-{sn}-{}{}", u.grade, u.class)),
            sid = u.sid
        )
        },
    )?;

    collection("person", "elev/person", pupils.len(), &mut |i, w| {
        let u = &pupils[i];
        let info = crate::quality::fnr::classify(&u.fnr, date).ok();
        let born = info
            .and_then(|i| i.birth_date)
            .map(|b| format!(",\"fodselsdato\":\"{b}T00:00:00Z\""))
            .unwrap_or_default();
        let kjonn = info
            .and_then(|i| i.kjonn)
            .map(|k| format!(",\"kjonn\":[{{\"href\":\"https://fint.invalid/felles/kodeverk/iso/kjonn/systemid/{k}\"}}]"))
            .unwrap_or_default();
        write!(
            w,
            "{{\"fodselsnummer\":{{\"identifikatorverdi\":\"{fnr}\"}},\"navn\":{{\"fornavn\":\"{}\",\"etternavn\":\"{}\"}}{born},\"_links\":{{{}{kjonn},{}}}}}",
            u.given,
            u.family,
            link("self", &format!("elev/person/fodselsnummer/{}", u.fnr)),
            link("elev", &format!("elev/elev/systemid/{}", u.sid)),
            fnr = u.fnr
        )
    })?;

    collection("elev", "elev/elev", pupils.len(), &mut |i, w| {
        let u = &pupils[i];
        let s = &schools[u.school];
        let lsid = u.sid.to_lowercase();
        write!(
            w,
            "{{\"systemId\":{{\"identifikatorverdi\":\"{sid}\"}},\"brukernavn\":{{\"identifikatorverdi\":\"{lsid}\"}},\"feidenavn\":{{\"identifikatorverdi\":\"{lsid}@k{k}.kommune.no\"}},\"_links\":{{{},{},{}}}}}",
            link("self", &format!("elev/elev/systemid/{}", u.sid)),
            link("person", &format!("elev/person/fodselsnummer/{}", u.fnr)),
            link("elevforhold", &format!("elev/elevforhold/systemid/enr-{}-{}", u.sid, s.skolenummer)),
            sid = u.sid,
            k = s.kommune
        )
    })?;

    collection(
        "elevforhold",
        "elev/elevforhold",
        pupils.len(),
        &mut |i, w| {
            let u = &pupils[i];
            let sn = &schools[u.school].skolenummer;
            write!(
            w,
            "{{\"systemId\":{{\"identifikatorverdi\":\"enr-{sid}-{sn}\"}},\"beskrivelse\":\"Elevforhold {}/{year_end}\",\"hovedskole\":true,\"_links\":{{{},{},{},{},{}}}}}",
            year_end - 1,
            link("self", &format!("elev/elevforhold/systemid/enr-{}-{sn}", u.sid)),
            link("elev", &format!("elev/elev/systemid/{}", u.sid)),
            link("skole", &format!("utdanningsprogram/skole/systemid/S-{sn}")),
            link("skolear", &format!("kodeverk/skolear/systemid/{skolear}")),
            link("klassemedlemskap", &format!("elev/klassemedlemskap/systemid/KM-{}-{sn}", u.sid)),
            sid = u.sid
        )
        },
    )?;
    Ok(names)
}
