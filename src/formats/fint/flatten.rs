//! FINT → rows: `elev` + its `person` → elev, `skole` → skole, `elevforhold` → elevforhold
//! with the class (through `klassemedlemskap` → `klasse`; v3's direct `basisgruppe` link too),
//! trinn (the class's `trinn` link, else its name) and skoleår (the `skolear` link).
//!
//! A relation is a `_links` entry whose `href` ends in `/{klasse}/{felt}/{verdi}`: it is
//! resolved against every resource's identifiers (`systemId`, `skolenummer`, `fodselsnummer`,
//! …) and `self` links, never by calling the URL.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use crate::fint::{EfRow, ElevRow, Origin, SkoleRow, Staged, Str, Text};
use crate::formats::{RawRec, SnapshotInput};

#[derive(Deserialize, Default)]
struct Id<'a> {
    #[serde(borrow, default)]
    identifikatorverdi: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Href<'a> {
    #[serde(borrow)]
    href: Cow<'a, str>,
}

type Links<'a> = HashMap<Cow<'a, str>, Vec<Href<'a>>>;

#[derive(Deserialize, Default)]
struct Navn<'a> {
    #[serde(borrow, default)]
    fornavn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mellomnavn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    etternavn: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Kontakt<'a> {
    #[serde(borrow, default)]
    epostadresse: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mobiltelefonnummer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    telefonnummer: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Adresse<'a> {
    #[serde(borrow, default)]
    adresselinje: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    postnummer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    poststed: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Periode<'a> {
    #[serde(borrow, default)]
    start: Option<Time<'a>>,
    #[serde(borrow, default)]
    slutt: Option<Time<'a>>,
}

/// A FINT date: ISO 8601 text (`2024-08-01T00:00:00Z`) or epoch milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum Time<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Millis(i64),
}

impl Time<'_> {
    fn date(&self) -> Option<chrono::NaiveDate> {
        match self {
            Time::Text(t) => t
                .get(..10)
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
            Time::Millis(ms) => {
                chrono::DateTime::from_timestamp_millis(*ms).map(|t| t.date_naive())
            }
        }
    }
}

/// The fields of every resource elevflyt reads (each resource uses its own).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Res<'a> {
    #[serde(borrow, default)]
    system_id: Option<Id<'a>>,
    #[serde(borrow, default)]
    skolenummer: Option<Id<'a>>,
    #[serde(borrow, default)]
    organisasjonsnummer: Option<Id<'a>>,
    #[serde(borrow, default)]
    fodselsnummer: Option<Id<'a>>,
    #[serde(borrow, default)]
    feidenavn: Option<Id<'a>>,
    #[serde(borrow, default)]
    elevnummer: Option<Id<'a>>,
    #[serde(borrow, default)]
    brukernavn: Option<Id<'a>>,
    /// Person: a Personnavn; skole and klasse: a string.
    #[serde(borrow, default)]
    navn: Option<NavnOrText<'a>>,
    #[serde(borrow, default)]
    fodselsdato: Option<Time<'a>>,
    #[serde(borrow, default)]
    kontaktinformasjon: Option<Kontakt<'a>>,
    #[serde(borrow, default)]
    bostedsadresse: Option<Adresse<'a>>,
    #[serde(borrow, default)]
    gyldighetsperiode: Option<Periode<'a>>,
    #[serde(borrow, default)]
    avbruddsdato: Option<Time<'a>>,
    #[serde(default)]
    hovedskole: Option<bool>,
    #[serde(rename = "_links", borrow, default)]
    links: Links<'a>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NavnOrText<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Navn(#[serde(borrow)] Navn<'a>),
}

fn id<'a>(i: &Option<Id<'a>>) -> Text<'a> {
    clean(i.as_ref()?.identifikatorverdi.clone())
}

/// Trimmed; blank → `None`.
fn clean(v: Option<Cow<'_, str>>) -> Text<'_> {
    let v = v?;
    let t = v.trim();
    if t.is_empty() {
        return None;
    }
    Some(if t.len() == v.len() {
        v.into()
    } else {
        Str::owned(t.to_string())
    })
}

/// `(felt, verdi)` of a link: the last two path segments, the value percent-decoded.
fn target(href: &str) -> Option<(String, String)> {
    let path = href.split(['?', '#']).next()?.trim_end_matches('/');
    let mut it = path.rsplitn(3, '/');
    let value = it.next()?;
    let field = it.next()?;
    let value = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((field.to_ascii_lowercase(), value))
}

/// The values of a relation's links (`_links.skole` → `[("systemid", "S-1")]`).
fn links(r: &Res, rel: &str) -> Vec<(String, String)> {
    r.links
        .get(rel)
        .map(|hs| hs.iter().filter_map(|h| target(&h.href)).collect())
        .unwrap_or_default()
}

/// The resources of one collection, findable by any of their identifiers.
struct Collection<'a> {
    items: Vec<(RawRec<'a>, Res<'a>)>,
    by_id: HashMap<(String, String), usize>,
}

impl<'a> Collection<'a> {
    fn new(records: Vec<RawRec<'a>>) -> Self {
        let items: Vec<(RawRec<'a>, Res<'a>)> = records
            .into_iter()
            .filter_map(|rec| serde_json::from_str(rec.post).ok().map(|r| (rec, r)))
            .collect();
        let mut by_id = HashMap::with_capacity(items.len() * 2);
        for (i, (_, r)) in items.iter().enumerate() {
            let ids = [
                ("systemid", &r.system_id),
                ("skolenummer", &r.skolenummer),
                ("organisasjonsnummer", &r.organisasjonsnummer),
                ("fodselsnummer", &r.fodselsnummer),
                ("feidenavn", &r.feidenavn),
                ("elevnummer", &r.elevnummer),
                ("brukernavn", &r.brukernavn),
            ];
            for (field, v) in ids {
                if let Some(v) = id(v) {
                    by_id.entry((field.to_string(), v.to_string())).or_insert(i);
                }
            }
            for t in links(r, "self") {
                by_id.entry(t).or_insert(i);
            }
        }
        Collection { items, by_id }
    }

    /// The resource a relation of `from` points to.
    fn follow(&self, from: &Res, rel: &str) -> Option<&Res<'a>> {
        links(from, rel)
            .into_iter()
            .find_map(|t| self.by_id.get(&t))
            .map(|&i| &self.items[i].1)
    }
}

/// The FINT rows of one snapshot (see [`crate::formats::Format::flatten`]).
pub fn flatten<'a>(
    snap: &SnapshotInput<'a>,
    records: &mut dyn Iterator<Item = RawRec<'a>>,
    out: &mut Staged<'a>,
) {
    let mut by: HashMap<&str, Vec<RawRec<'a>>> = HashMap::new();
    for rec in records {
        by.entry(rec.entitet).or_default().push(rec);
    }
    let mut take = |c: &str| Collection::new(by.remove(c).unwrap_or_default());
    let skole = take("skole");
    let klasse = take("klasse");
    let medlemskap = take("klassemedlemskap");
    let person = take("person");
    let elev = take("elev");
    let elevforhold = take("elevforhold");

    for (rec, s) in &skole.items {
        let Some(skolenummer) = id(&s.skolenummer).or_else(|| id(&s.system_id)) else {
            continue;
        };
        let kommune = Str::borrowed(snap.kommunenummer);
        out.skole.push(SkoleRow {
            r: origin(snap, rec, id(&s.system_id), Some(skolenummer.clone())),
            skolenummer,
            organisasjonsnummer: id(&s.organisasjonsnummer),
            navn: text_navn(s),
            fylkesnummer: kommune.get(..2).map(|f| Str::owned(f.to_string())),
            kommunenummer: Some(kommune),
            eierform: Some("kommunal".into()),
        });
    }

    // A membership by the elevforhold it belongs to, for sources that link only that way.
    let mut membership_of: HashMap<(String, String), usize> = HashMap::new();
    for (i, (_, m)) in medlemskap.items.iter().enumerate() {
        for t in links(m, "elevforhold") {
            membership_of.entry(t).or_insert(i);
        }
    }

    out.elev.reserve(elev.items.len());
    for (rec, e) in &elev.items {
        let system_id = id(&e.system_id);
        let p = person.follow(e, "person");
        let navn = p.and_then(|p| match &p.navn {
            Some(NavnOrText::Navn(n)) => Some(n),
            _ => None,
        });
        let kontakt = e
            .kontaktinformasjon
            .as_ref()
            .or_else(|| p.and_then(|p| p.kontaktinformasjon.as_ref()));
        let adresse = p.and_then(|p| p.bostedsadresse.as_ref());
        let code = |rel: &str| -> Text<'a> {
            p.and_then(|p| links(p, rel).into_iter().next())
                .map(|(_, v)| Str::owned(v))
        };
        out.elev.push(ElevRow {
            r: origin(snap, rec, system_id.clone(), None),
            kilde_nokkel: system_id.clone(),
            system_id,
            fodselsnummer: p.and_then(|p| id(&p.fodselsnummer)),
            feidenavn: id(&e.feidenavn).map(|f| Str::owned(f.to_lowercase())),
            kommunenummer: code("kommune")
                .filter(|k| k.len() == 4)
                .or(Some(Str::borrowed(snap.kommunenummer))),
            fornavn: navn.and_then(|n| clean(n.fornavn.clone())),
            mellomnavn: navn.and_then(|n| clean(n.mellomnavn.clone())),
            etternavn: navn.and_then(|n| clean(n.etternavn.clone())),
            fodselsdato: p.and_then(|p| p.fodselsdato.as_ref()).and_then(Time::date),
            kjonn: code("kjonn"),
            epostadresse: kontakt.and_then(|k| clean(k.epostadresse.clone())),
            mobiltelefonnummer: kontakt.and_then(|k| {
                clean(k.mobiltelefonnummer.clone()).or_else(|| clean(k.telefonnummer.clone()))
            }),
            bostedsadresse: adresse
                .map(|a| a.adresselinje.join(", "))
                .filter(|a| !a.trim().is_empty())
                .map(Str::owned),
            postnummer: adresse.and_then(|a| clean(a.postnummer.clone())),
            poststed: adresse.and_then(|a| clean(a.poststed.clone())),
            fnr_required: false,
        });
    }

    out.elevforhold.reserve(elevforhold.items.len());
    for (rec, ef) in &elevforhold.items {
        let system_id = id(&ef.system_id);
        let pupil = elev.follow(ef, "elev");
        let elev_key = pupil.and_then(|e| id(&e.system_id)).or_else(|| {
            links(ef, "elev")
                .into_iter()
                .next()
                .map(|(_, v)| Str::owned(v))
        });
        let school = skole.follow(ef, "skole");
        let skolenummer = school
            .and_then(|s| id(&s.skolenummer).or_else(|| id(&s.system_id)))
            .or_else(|| {
                links(ef, "skole")
                    .into_iter()
                    .next()
                    .map(|(_, v)| Str::owned(v))
            });
        // The class: v4 through the membership, v3 also directly.
        let class = ["klassemedlemskap", "basisgruppemedlemskap"]
            .iter()
            .find_map(|rel| medlemskap.follow(ef, rel))
            .or_else(|| {
                links(ef, "self")
                    .into_iter()
                    .chain(
                        system_id
                            .as_ref()
                            .map(|s| ("systemid".to_string(), s.to_string())),
                    )
                    .find_map(|t| membership_of.get(&t))
                    .map(|&i| &medlemskap.items[i].1)
            })
            .and_then(|m| {
                klasse
                    .follow(m, "klasse")
                    .or_else(|| klasse.follow(m, "basisgruppe"))
            })
            .or_else(|| {
                klasse
                    .follow(ef, "basisgruppe")
                    .or_else(|| klasse.follow(ef, "klasse"))
            });
        let klassenavn = class.and_then(text_navn);
        let trinn = class
            .and_then(|c| links(c, "trinn").into_iter().next())
            .and_then(|(_, v)| v.parse::<i32>().ok())
            .or_else(|| {
                klassenavn
                    .as_deref()
                    .and_then(crate::formats::trinn_from_name)
            });
        let skolear = links(ef, "skolear")
            .into_iter()
            .chain(class.map(|c| links(c, "skolear")).unwrap_or_default())
            .map(|(_, v)| v)
            .find(|v| v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()))
            .map(Str::owned);
        let periode = ef.gyldighetsperiode.as_ref();
        out.elevforhold.push(EfRow {
            r: origin(snap, rec, system_id.clone(), skolenummer.clone()),
            elev_kilde_nokkel: elev_key,
            system_id,
            skolenummer,
            klasse: klassenavn,
            trinn,
            skolear,
            hovedskole: ef.hovedskole,
            startdato: periode.and_then(|p| p.start.as_ref()).and_then(Time::date),
            sluttdato: periode
                .and_then(|p| p.slutt.as_ref())
                .or(ef.avbruddsdato.as_ref())
                .and_then(Time::date),
        });
    }
}

fn text_navn<'a>(r: &Res<'a>) -> Text<'a> {
    match &r.navn {
        Some(NavnOrText::Text(t)) => clean(Some(t.clone())),
        _ => None,
    }
}

fn origin<'a>(
    snap: &SnapshotInput<'a>,
    rec: &RawRec<'a>,
    system_id: Text<'a>,
    school: Text<'a>,
) -> Origin<'a> {
    Origin {
        kildesystem: snap.kildesystem,
        kjelde: rec.kjelde,
        rad: rec.rad,
        skolenummer: school,
        system_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(entitet: &'a str, post: &'a str) -> RawRec<'a> {
        RawRec {
            kjelde: "side",
            entitet,
            rad: 1,
            post,
        }
    }

    #[test]
    fn links_are_resolved_between_the_resources() {
        let b = "https://fint.invalid/utdanning";
        let skole = r#"{"systemId":{"identifikatorverdi":"S-1"},"skolenummer":{"identifikatorverdi":"46500"},"navn":"Nord skule","_links":{}}"#.to_string();
        let klasse = format!(
            r#"{{"systemId":{{"identifikatorverdi":"K-1"}},"navn":"10A","_links":{{"trinn":[{{"href":"{b}/utdanningsprogram/arstrinn/systemid/10"}}],"skolear":[{{"href":"{b}/kodeverk/skolear/systemid/20252026"}}]}}}}"#
        );
        let km = format!(
            r#"{{"systemId":{{"identifikatorverdi":"KM-1"}},"_links":{{"elevforhold":[{{"href":"{b}/elev/elevforhold/systemid/EF-1"}}],"klasse":[{{"href":"{b}/elev/klasse/systemid/K-1"}}]}}}}"#
        );
        let person = format!(
            r#"{{"fodselsnummer":{{"identifikatorverdi":"01818912345"}},"navn":{{"fornavn":" Kari ","etternavn":"Nordmann"}},"fodselsdato":"1989-01-01T00:00:00Z","bostedsadresse":{{"adresselinje":["Gate 1","H0101"],"postnummer":"5003","poststed":"Bergen"}},"_links":{{"kjonn":[{{"href":"{b}/../felles/kodeverk/iso/kjonn/systemid/2"}}]}}}}"#
        );
        let elev = format!(
            r#"{{"systemId":{{"identifikatorverdi":"E-1"}},"feidenavn":{{"identifikatorverdi":"Kari@Skule.no"}},"_links":{{"person":[{{"href":"{b}/elev/person/fodselsnummer/01818912345"}}]}}}}"#
        );
        // No link from the elevforhold to its membership: found from the membership's side.
        let ef = format!(
            r#"{{"systemId":{{"identifikatorverdi":"EF-1"}},"hovedskole":true,"gyldighetsperiode":{{"start":1722470400000}},"_links":{{"elev":[{{"href":"{b}/elev/elev/systemid/E-1"}}],"skole":[{{"href":"{b}/utdanningsprogram/skole/systemid/S-1"}}]}}}}"#
        );
        let recs = vec![
            rec("skole", &skole),
            rec("klasse", &klasse),
            rec("klassemedlemskap", &km),
            rec("person", &person),
            rec("elev", &elev),
            rec("elevforhold", &ef),
        ];
        let snap = SnapshotInput {
            kildesystem: "fint",
            omfang: None,
            as_of: 0,
            kommunenummer: "4601",
        };
        let mut out = Staged::default();
        flatten(&snap, &mut recs.into_iter(), &mut out);
        let e = &out.elev[0];
        assert_eq!(e.fodselsnummer.as_deref(), Some("01818912345"));
        assert_eq!(e.fornavn.as_deref(), Some("Kari"));
        assert_eq!(e.feidenavn.as_deref(), Some("kari@skule.no"));
        assert_eq!(e.kjonn.as_deref(), Some("2"));
        assert_eq!(e.bostedsadresse.as_deref(), Some("Gate 1, H0101"));
        assert_eq!(
            e.fodselsdato.map(|d| d.to_string()).as_deref(),
            Some("1989-01-01")
        );
        let f = &out.elevforhold[0];
        assert_eq!(f.elev_kilde_nokkel.as_deref(), Some("E-1"));
        assert_eq!(f.skolenummer.as_deref(), Some("46500"));
        assert_eq!(f.klasse.as_deref(), Some("10A"));
        assert_eq!(
            (f.trinn, f.skolear.as_deref()),
            (Some(10), Some("20252026"))
        );
        assert_eq!(
            f.startdato.map(|d| d.to_string()).as_deref(),
            Some("2024-08-01")
        );
        assert_eq!(out.skole[0].skolenummer, "46500");
        assert_eq!(out.skole[0].fylkesnummer.as_deref(), Some("46"));
    }
}
