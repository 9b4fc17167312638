//! The table definitions: every column of every table, with its type, nullability and comment
//! (the comment is what Unity Catalog and the README show), and each table's description, kind,
//! key and partitioning.

use super::ColType::*;
use super::{
    col, Column, Kind, Table, IS_CURRENT, ROW_HASH, TRANSACTION_TIME, VALID_FROM, VALID_TO,
};

/// Columns every SCD2 table ends with. `rad_hash` is a hash of the tracked columns so that a
/// snapshot can be compared with the current rows without reading them whole.
macro_rules! scd2_columns {
    () => {
        [
            col(
                VALID_FROM,
                Timestamp,
                false,
                "Frå og med (as-of-tid for øyeblikksbiletet som gav versjonen)",
            ),
            col(
                VALID_TO,
                Timestamp,
                true,
                "Til og med, eksklusiv (NULL = open ende)",
            ),
            col(IS_CURRENT, Boolean, false, "Sann for aktiv rad"),
            col(
                TRANSACTION_TIME,
                Timestamp,
                false,
                "Lastetid for denne versjonen",
            ),
            col(
                ROW_HASH,
                String,
                false,
                "Hash av dei sporade kolonnane (intern, for samanlikning)",
            ),
        ]
    };
}

const ELEV_COLUMNS: &[Column] = &{
    let b: &[Column] = &[
        col(
            "id",
            String,
            false,
            "Stabil global elev-ID, tåler endring i fødselsnummer",
        ),
        col("system_id", String, true, "Kildesystemets ID for eleven"),
        col("kildesystem", String, true, "Navn/kode for kildesystem"),
        col(
            "fodselsnummer",
            String,
            true,
            "Fødselsnummer (PII krev maskering ved bruk)",
        ),
        col("feidenavn", String, true, "Feide-brukaridentitet"),
        col(
            "kommunenummer",
            String,
            true,
            "Kommunenummer ved gyldighetstidspunktet",
        ),
        col("fornavn", String, true, "Fornamn"),
        col("mellomnavn", String, true, "Mellomnamn"),
        col("etternavn", String, true, "Etternamn"),
        col(
            "fodselsdato",
            Date,
            true,
            "Fødselsdato (avleidd frå fødselsnummeret når kjelda ikkje leverer han)",
        ),
        col(
            "kjonn",
            String,
            true,
            "Kjønn, FINT-kode: 0 uvisst, 1 mann, 2 kvinne, 9 gjelder ikkje",
        ),
        col("epostadresse", String, true, "E-postadresse"),
        col("mobiltelefonnummer", String, true, "Mobiltelefonnummer"),
        col("bostedsadresse", String, true, "Bustadadresse"),
        col("postnummer", String, true, "Postnummer"),
        col("poststed", String, true, "Poststad"),
    ];
    concat::<16, 5, 21>(b, scd2_columns!())
};

const ELEVFORHOLD_COLUMNS: &[Column] = &{
    let b: &[Column] = &[
        col(
            "id",
            String,
            false,
            "Stabil ID for elevforholdet (elev ved skule)",
        ),
        col("elev_id", String, false, "Elev-ID (elev.id)"),
        col(
            "system_id",
            String,
            true,
            "Kildesystemets ID for elevforholdet",
        ),
        col("kildesystem", String, true, "Navn/kode for kildesystem"),
        col("skolenummer", String, false, "Skulenummer (Vigo)"),
        col("klasse", String, true, "Basisgruppe/klasse, t.d. 10A"),
        col("trinn", Int, true, "Årstrinn 1–10"),
        col("skolear", String, true, "Skuleår, t.d. 20262027"),
        col(
            "hovedskole",
            Boolean,
            true,
            "Sann når dette er hovudskulen til eleven",
        ),
        col("startdato", Date, true, "Startdato for elevforholdet"),
        col("sluttdato", Date, true, "Sluttdato for elevforholdet"),
    ];
    concat::<11, 5, 16>(b, scd2_columns!())
};

const SKOLE_COLUMNS: &[Column] = &{
    let b: &[Column] = &[
        col("skolenummer", String, false, "Skulenummer (Vigo, 5 siffer)"),
        col(
            "organisasjonsnummer",
            String,
            true,
            "Organisasjonsnummer (underenhet i Einingsregisteret)",
        ),
        col("navn", String, true, "Namn på skulen"),
        col("kommunenummer", String, true, "Kommunenummer"),
        col("fylkesnummer", String, true, "Fylkesnummer"),
        col("eierform", String, true, "Eigarform: kommunal eller privat"),
        col("kildesystem", String, true, "Navn/kode for kildesystem"),
    ];
    concat::<7, 5, 12>(b, scd2_columns!())
};

const fn concat<const A: usize, const B: usize, const N: usize>(
    a: &[Column],
    b: [Column; B],
) -> [Column; N] {
    assert!(A + B == N);
    let mut out = [col("", String, true, ""); N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < B {
        out[A + j] = b[j];
        j += 1;
    }
    out
}

pub const ELEV: Table = Table {
    name: "elev",
    description: "Elevar i grunnskulen (FINT Elev + Person), historikk som SCD type 2. Nøkkel: id.",
    kind: Kind::Scd2,
    key: Some("id"),
    partition_by: &[],
    columns: ELEV_COLUMNS,
};

pub const ELEVFORHOLD: Table = Table {
    name: "elevforhold",
    description: "Elevforhold: ein elev ved ein skule med klasse og trinn (FINT Elevforhold), SCD type 2. Nøkkel: id.",
    kind: Kind::Scd2,
    key: Some("id"),
    partition_by: &[],
    columns: ELEVFORHOLD_COLUMNS,
};

pub const SKOLE: Table = Table {
    name: "skole",
    description: "Skular (FINT Skole), SCD type 2. Nøkkel: skolenummer.",
    kind: Kind::Scd2,
    key: Some("skolenummer"),
    partition_by: &[],
    columns: SKOLE_COLUMNS,
};

pub const AVVIK: Table = Table {
    name: "avvik",
    description:
        "Avvik funne ved validering: lista som går attende til skulane. Verdiar er maskerte.",
    kind: Kind::Append,
    key: None,
    partition_by: &[],
    columns: &[
        col("run_id", String, false, "Køyrings-ID"),
        col("oppdaga", Timestamp, false, "Når avviket vart oppdaga"),
        col("kildesystem", String, true, "Kildesystem"),
        col("kjelde", String, true, "Kjeldefil"),
        col(
            "rad",
            Long,
            true,
            "Postnummer i kjeldefila (linje for CSV, element for JSON)",
        ),
        col("skolenummer", String, true, "Skulenummer"),
        col("system_id", String, true, "Kildesystemets ID for posten"),
        col("regel", String, false, "Regelnamn"),
        col("alvorsgrad", String, false, "warn, drop eller fail"),
        col("felt", String, true, "Feltet som har avviket"),
        col(
            "verdi",
            String,
            true,
            "Maskert verdi (aldri fullt fødselsnummer eller namn)",
        ),
        col("melding", String, false, "Melding til skulen"),
        col("omfang", String, true, "Omfang for leveransen: skulenummer for filer per skule, elles NULL"),
        col("as_of", Timestamp, true, "Tidspunktet leveransen med avviket gjeld for"),
        col("lost", Timestamp, true, "Når avviket vart retta: ein seinare leveranse frå same kjelde og omfang utan det (NULL = ope)"),
        col("lost_av", String, true, "Køyringa som fann at avviket var retta"),
    ],
};

pub const KVALITET: Table = Table {
    name: "kvalitet",
    description: "Kvalitetsmålingar per køyring, tabell og sjekk.",
    kind: Kind::Append,
    key: None,
    partition_by: &[],
    columns: &[
        col("run_id", String, false, "Køyrings-ID"),
        col("malt", Timestamp, false, "Når målinga vart gjort"),
        col("tabell", String, false, "Tabell"),
        col("regel_eller_metrikk", String, false, "Regel eller metrikk"),
        col(
            "kolonne",
            String,
            true,
            "Kolonne eller gruppe (t.d. skule/klasse)",
        ),
        col("verdi", Double, true, "Målt verdi"),
        col("bestatt", Long, true, "Tal på postar som bestod"),
        col("feila", Long, true, "Tal på postar som feila"),
        col("status", String, false, "ok, warn, drop eller fail"),
    ],
};

pub const KJORING: Table = Table {
    name: "kjoring",
    description: "Logg over køyringar av elevflyt.",
    kind: Kind::Append,
    key: None,
    partition_by: &[],
    columns: &[
        col("run_id", String, false, "Køyrings-ID"),
        col("pipeline", String, false, "Namn på pipeline"),
        col(
            "steg",
            String,
            false,
            "run, ingest, standardize eller publish",
        ),
        col("started", Timestamp, false, "Starttid"),
        col("finished", Timestamp, false, "Sluttid"),
        col("status", String, false, "ok, fail eller error"),
        col("melding", String, true, "Feilmelding når køyringa feila"),
        col("input_files", String, true, "Innlesne filer (JSON-liste)"),
        col(
            "rows_per_table",
            String,
            true,
            "Rader per tabell (JSON-objekt)",
        ),
        col(
            "delta_versions",
            String,
            true,
            "Delta-versjonar skrivne (JSON-objekt)",
        ),
        col("elevflyt_version", String, false, "elevflyt-versjon"),
    ],
};

pub const ELEVLISTE_VGS: Table = Table {
    name: "elevliste_vgs",
    description:
        "Elevliste til fylkeskommunen: noverande elevar på 10. trinn. Partisjonert per fylke; Change Data Feed med berre radene som endra seg.",
    kind: Kind::Overwrite,
    key: None,
    partition_by: &["fylkesnummer"],
    columns: &[
        col("fylkesnummer", String, true, "Fylkesnummer"),
        col("kommunenummer", String, true, "Kommunenummer"),
        col("skolenummer", String, true, "Skulenummer"),
        col("klasse", String, true, "Klasse"),
        col("fodselsnummer", String, true, "Fødselsnummer (PII)"),
        col(
            "elev_namn",
            String,
            true,
            "Elevnamn: fornamn [mellomnamn] etternamn",
        ),
        col("lastet_tid", Timestamp, false, "Når lista vart laga"),
    ],
};

/// The disclosure log: every read of shared data and every export, by whom, of which version
/// (docs/ARCHITECTURE.md, "Sharing"). Never a fødselsnummer or a name: who received which pupils
/// is answered by joining `versjon` with the table's history.
pub const UTLEVERING: Table = Table {
    name: "utlevering",
    description: "Utleveringslogg: kven som fekk kva for data frå delinga eller som eksport, når, og av kva versjon.",
    kind: Kind::Append,
    key: None,
    partition_by: &[],
    columns: &[
        col("tid", Timestamp, false, "Når dataa vart utleverte"),
        col("mottakar", String, false, "Mottakar (namnet i delingsfila), eller `fil` for ein eksport"),
        col("deling", String, true, "Deling (share) det vart lese gjennom"),
        col("tabell", String, false, "Tabellen som vart lesen"),
        col("versjon", Long, true, "Delta-versjonen som vart utlevert (til og med, for endringar)"),
        col("fra_versjon", Long, true, "Første versjon for endringar (Change Data Feed)"),
        col("operasjon", String, false, "query, changes, download eller export"),
        col("filer", Long, false, "Tal på filer"),
        col("rader", Long, false, "Tal på rader i filene"),
        col("avgrensing", String, true, "Radavgrensinga mottakaren har, t.d. fylkesnummer=46"),
        col("request_id", String, false, "Førespurnads-ID (også i svaret, `x-request-id`)"),
    ],
};

/// Approvals of the county list: which operator said which version "is ready", for which share
/// (docs/ARCHITECTURE.md, "Sharing"). Append-only.
pub const GODKJENNING: Table = Table {
    name: "godkjenning",
    description:
        "Godkjenningar av elevlista: kven som sa at kva versjon er klar for kva deling, og når.",
    kind: Kind::Append,
    key: None,
    partition_by: &[],
    columns: &[
        col("tid", Timestamp, false, "Når lista vart godkjend"),
        col(
            "brukar",
            String,
            false,
            "Operatøren som godkjende (namnet i delingsfila)",
        ),
        col("kommunenummer", String, false, "Kommunen"),
        col(
            "deling",
            String,
            false,
            "Delinga (share) godkjenninga gjeld",
        ),
        col("skjema", String, false, "Skjemaet (kommunen) i delinga"),
        col("tabell", String, false, "Tabellen som vart godkjend"),
        col("versjon", Long, false, "Delta-versjonen som vart godkjend"),
        col("request_id", String, false, "Førespurnads-ID"),
    ],
};

pub const ELEV_ID: Table = Table {
    name: "elev_id",
    description: "Identitetskart: kva kildesystem-ID og fødselsnummer kvar stabile elev-ID er sett med, og når.",
    kind: Kind::Overwrite,
    key: None,
    partition_by: &[],
    columns: &[
        col("id", String, false, "Stabil global elev-ID (elev.id)"),
        col("kildesystem", String, false, "Kildesystem"),
        col("system_id", String, true, "Kildesystemets ID for eleven"),
        col("fodselsnummer", String, true, "Fødselsnummer (PII krev maskering ved bruk)"),
        col("first_seen", Timestamp, false, "As-of for første øyeblikksbilete med denne identiteten"),
        col("last_seen", Timestamp, false, "As-of for siste øyeblikksbilete med denne identiteten"),
    ],
};

/// Which snapshots have gone through which stage (internal bookkeeping that makes stages
/// resumable).
pub const LEVERANSE: Table = Table {
    name: "leveranse",
    description: "Intern: kva for øyeblikksbilete (kjelde, omfang, as-of) som er publiserte.",
    kind: Kind::Append,
    key: None,
    partition_by: &[],
    columns: &[
        col("kildesystem", String, false, "Kildesystem"),
        col(
            "omfang",
            String,
            true,
            "Omfang: skulenummer for filer per skule, elles NULL",
        ),
        col(
            "as_of",
            Timestamp,
            false,
            "Tidspunktet øyeblikksbiletet gjeld for",
        ),
        col("run_id", String, false, "Køyringa som publiserte"),
        col("publisert", Timestamp, false, "Når det vart publisert"),
    ],
};

/// The snapshots staged by the last standardize (some may have no rows).
pub const STAGE_SNAPSHOTS: Table = Table {
    name: "stg_leveranse",
    description: "Intern: øyeblikksbileta som siste standardize gjorde klare for publisering.",
    kind: Kind::Overwrite,
    key: None,
    partition_by: &[],
    columns: &[
        col(
            "stg_kildesystem",
            String,
            false,
            "Kildesystem for øyeblikksbiletet",
        ),
        col("stg_omfang", String, true, "Omfang for øyeblikksbiletet"),
        col("stg_as_of", Timestamp, false, "As-of for øyeblikksbiletet"),
    ],
};

/// Columns of each `raw_<source>` table (bronze).
pub const RAW_COLUMNS: &[Column] = &[
    col("run_id", String, false, "Køyringa som las inn fila"),
    col("kildesystem", String, false, "Kildesystem (namn på kjelda)"),
    col(
        "kjelde",
        String,
        false,
        "Kjeldefil (sti relativ til kjeldeplasseringa)",
    ),
    col("sha256", String, false, "SHA-256 av fila"),
    col(
        "as_of",
        Timestamp,
        false,
        "Tidspunktet øyeblikksbiletet gjeld for",
    ),
    col(
        "omfang",
        String,
        true,
        "Omfang for slettingar: skulenummer for filer per skule, elles NULL",
    ),
    col(
        "entitet",
        String,
        false,
        "Posttype: users, orgs, classes, enrollments, academicSessions, elevliste",
    ),
    col(
        "rad",
        Long,
        false,
        "Postnummer i fila (linje for CSV, element for JSON, frå 1)",
    ),
    col("post", String, false, "Posten slik han vart levert (JSON)"),
    col("lastet", Timestamp, false, "Når fila vart lesen inn"),
];

pub fn raw_table(source: &str) -> Table {
    Table {
        name: Box::leak(format!("raw_{source}").into_boxed_str()),
        description: "Bronse: kvar post slik kjelda leverte han, med opphav (fil, sha256, as-of).",
        kind: Kind::Append,
        key: None,
        partition_by: &[],
        columns: RAW_COLUMNS,
    }
}

/// Staging tables between standardize and publish: the business columns of the target table
/// plus the snapshot they came from. Overwritten by each standardize.
pub const STAGE_EXTRA: &[Column] = &[
    col(
        "stg_kildesystem",
        String,
        false,
        "Kildesystem for øyeblikksbiletet",
    ),
    col("stg_omfang", String, true, "Omfang for øyeblikksbiletet"),
    col("stg_as_of", Timestamp, false, "As-of for øyeblikksbiletet"),
    col(
        "stg_kilde_nokkel",
        String,
        true,
        "Elevens nøkkel i kjelda (system_id eller fødselsnummer)",
    ),
];

/// The tables that keep history (SCD type 2), in the order publish commits them.
pub const SCD2_TABLES: [&Table; 3] = [&SKOLE, &ELEV, &ELEVFORHOLD];

/// Their names, for sessions that register them.
pub const SCD2_NAMES: [&str; 3] = [SKOLE.name, ELEV.name, ELEVFORHOLD.name];

pub const PUBLISHED: &[&Table] = &[
    &ELEV,
    &ELEVFORHOLD,
    &SKOLE,
    &ELEV_ID,
    &AVVIK,
    &KVALITET,
    &KJORING,
    &ELEVLISTE_VGS,
    &UTLEVERING,
    &GODKJENNING,
];
