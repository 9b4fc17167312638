//! The catalogue of quality rules: name, default severity and what each one means.
//! `elevflyt rules` prints this list; `[quality]` in the pipeline file overrides severities.

use super::Severity;

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub default: Severity,
    /// Default threshold, for rules about shares (e.g. 0.05 = 5 %).
    pub threshold: Option<f64>,
    pub table: &'static str,
    pub explanation: &'static str,
}

const fn rule(
    name: &'static str,
    default: Severity,
    table: &'static str,
    explanation: &'static str,
) -> Rule {
    Rule {
        name,
        default,
        threshold: None,
        table,
        explanation,
    }
}

pub const FNR_UGYLDIG: &str = "fnr_ugyldig";
pub const FNR_SYNTETISK: &str = "fnr_syntetisk";
pub const FNR_MANGLAR_NULL: &str = "fnr_manglar_null";
pub const FNR_REPARERT: &str = "fnr_reparert";
pub const FNR_MANGLAR: &str = "fnr_manglar";
pub const FNR_FORMATERT: &str = "fnr_formatert";
pub const FELT_FOR_LANGT: &str = "felt_for_langt";
pub const SKULE_ULIK_LISTE: &str = "skule_ulik_liste";
pub const PAKREVD_FELT: &str = "pakrevd_felt";
pub const TRINN_UGYLDIG: &str = "trinn_ugyldig";
pub const KOMMUNENUMMER_UKJENT: &str = "kommunenummer_ukjent";
pub const FYLKESNUMMER_UKJENT: &str = "fylkesnummer_ukjent";
pub const ORGNR_UGYLDIG: &str = "orgnr_ugyldig";
pub const DUPLIKAT: &str = "duplikat";
pub const UKJENT_SKOLE: &str = "ukjent_skole";
pub const UKJENT_ELEV: &str = "ukjent_elev";
pub const FEIDENAVN_UGYLDIG: &str = "feidenavn_ugyldig";
pub const FNR_UGYLDIG_ANDEL: &str = "fnr_ugyldig_andel";
pub const RADENDRING: &str = "radendring";
pub const MASSEENDRING: &str = "masseendring";
pub const EPOST_UGYLDIG: &str = "epost_ugyldig";
pub const MOBIL_UGYLDIG: &str = "mobil_ugyldig";

pub const RULES: &[Rule] = &[
    rule(FNR_UGYLDIG, Severity::Drop, "elev",
        "Fødselsnummeret har feil format, feil kontrollsiffer eller ingen gyldig dato."),
    rule(FNR_SYNTETISK, Severity::Drop, "elev",
        "Syntetisk testnummer (Tenor +80, NAV +40) i eit miljø utan allow_synthetic_fnr."),
    rule(FNR_MANGLAR_NULL, Severity::Drop, "elev",
        "Fødselsnummeret har 10 siffer: den første nullen har falle bort (reparerast med repair_leading_zero)."),
    rule(FNR_REPARERT, Severity::Warn, "elev",
        "Fødselsnummeret mangla første null og vart reparert (repair_leading_zero = true)."),
    rule(FNR_FORMATERT, Severity::Warn, "elev",
        "Fødselsnummeret hadde mellomrom, punktum eller bindestrek; dei er fjerna, men bør rettast i skulesystemet."),
    rule(FNR_MANGLAR, Severity::Warn, "elev",
        "Eleven har ikkje fødselsnummer i kjelda (elevar i Vigo-lista må ha det)."),
    rule(PAKREVD_FELT, Severity::Drop, "elev",
        "Eit påkravd felt manglar (t.d. namn, skulenummer, fødselsnummer i Vigo-lista)."),
    rule(FELT_FOR_LANGT, Severity::Drop, "elev",
        "Eit namn eller ei adresse er lengre enn 200 teikn: ein feil i eksporten, ikkje eit namn."),
    rule(TRINN_UGYLDIG, Severity::Drop, "elevforhold",
        "Trinnet er ikkje mellom 1 og 10."),
    rule(KOMMUNENUMMER_UKJENT, Severity::Warn, "elev",
        "Kommunenummeret finst ikkje i kommunelista for 2024."),
    rule(FYLKESNUMMER_UKJENT, Severity::Warn, "skole",
        "Fylkesnummeret finst ikkje i fylkeslista for 2024."),
    rule(ORGNR_UGYLDIG, Severity::Warn, "skole",
        "Organisasjonsnummeret har feil kontrollsiffer (mod 11)."),
    rule(DUPLIKAT, Severity::Drop, "elev",
        "Same elev står meir enn éin gong i same leveranse; berre den første vert publisert."),
    rule(UKJENT_SKOLE, Severity::Drop, "elevforhold",
        "Elevforholdet viser til ein skule som ikkje finst i leveransen eller i skule-tabellen."),
    rule(SKULE_ULIK_LISTE, Severity::Drop, "elevforhold",
        "Ei rad i ei skuleliste (Vigo) står på ein annan skule enn lista er for: eleven vert ikkje flytta."),
    rule(UKJENT_ELEV, Severity::Drop, "elevforhold",
        "Elevforholdet viser til ein elev som ikkje finst (eller vart forkasta) i leveransen."),
    Rule {
        threshold: Some(0.05),
        ..rule(FNR_UGYLDIG_ANDEL, Severity::Warn, "elev",
            "Delen elevar ved ein skule med ugyldig fødselsnummer er over terskelen (standard 5 %); set alvorsgrad \"fail\" for å stoppe køyringa.")
    },
    Rule {
        threshold: Some(0.2),
        ..rule(RADENDRING, Severity::Warn, "elev",
            "Talet på gjeldande elevar endrar seg meir enn terskelen (standard 20 %) frå førre køyring: ofte ein øydelagd eksport.")
    },
    Rule {
        threshold: Some(0.5),
        ..rule(MASSEENDRING, Severity::Fail, "elev, elevforhold, skole, elevliste_vgs",
            "Ein ny leveranse ville avslutte meir enn terskelen (standard 50 %) av dei gjeldande radene i sitt omfang (ei kjelde, ein skule), tømme eit omfang heilt, eller tømme elevlista til fylket: oftast ein øydelagd eller tom eksport. Køyringa stoppar før noko vert endra; køyr på nytt med --accept-mass-change når endringa er rett.")
    },
    rule(FEIDENAVN_UGYLDIG, Severity::Warn, "elev",
        "Feidenamnet er ikkje på forma brukar@domene (med små bokstavar)."),
    rule(EPOST_UGYLDIG, Severity::Warn, "elev",
        "E-postadressa er ikkje ei gyldig adresse."),
    rule(MOBIL_UGYLDIG, Severity::Warn, "elev",
        "Mobilnummeret er ikkje eit norsk mobilnummer (8 siffer som byrjar på 4 eller 9)."),
];

pub fn find(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}
