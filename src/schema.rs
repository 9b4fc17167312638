//! The tables of elevflyt, defined once: names, types, nullability, comments, descriptions,
//! partitioning and which columns SCD2 tracks.
//!
//! Everything else — the Delta writer, the SCD2 engine, the README table reference and the tests —
//! is derived from these definitions. Not here: how rows are produced (see the stage modules).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{DataType as DeltaType, PrimitiveType, StructField};

/// Column types used by elevflyt tables (a small subset of Delta's primitive types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    String,
    Date,
    /// UTC timestamp with microsecond precision (Delta `timestamp`).
    Timestamp,
    Boolean,
    Int,
    Long,
    Double,
}

impl ColType {
    pub fn arrow(self) -> DataType {
        match self {
            ColType::String => DataType::Utf8,
            ColType::Date => DataType::Date32,
            ColType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColType::Boolean => DataType::Boolean,
            ColType::Int => DataType::Int32,
            ColType::Long => DataType::Int64,
            ColType::Double => DataType::Float64,
        }
    }

    pub fn delta(self) -> DeltaType {
        DeltaType::Primitive(match self {
            ColType::String => PrimitiveType::String,
            ColType::Date => PrimitiveType::Date,
            ColType::Timestamp => PrimitiveType::Timestamp,
            ColType::Boolean => PrimitiveType::Boolean,
            ColType::Int => PrimitiveType::Integer,
            ColType::Long => PrimitiveType::Long,
            ColType::Double => PrimitiveType::Double,
        })
    }

    pub fn sql_name(self) -> &'static str {
        match self {
            ColType::String => "string",
            ColType::Date => "date",
            ColType::Timestamp => "timestamp",
            ColType::Boolean => "boolean",
            ColType::Int => "int",
            ColType::Long => "bigint",
            ColType::Double => "double",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
    pub comment: &'static str,
}

const fn col(name: &'static str, ty: ColType, nullable: bool, comment: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        comment,
    }
}

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SCD type 2 history, merged each run (Change Data Feed enabled).
    Scd2,
    /// Append-only log.
    Append,
    /// Overwritten each run; earlier states stay readable by Delta version.
    Overwrite,
}

#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    /// Business key: SCD2 tables have one, the others do not.
    pub key: Option<&'static str>,
    pub partition_by: &'static [&'static str],
    pub columns: &'static [Column],
}

use ColType::*;

pub const VALID_FROM: &str = "valid_from";
pub const VALID_TO: &str = "valid_to";
pub const IS_CURRENT: &str = "is_current";
pub const TRANSACTION_TIME: &str = "transaction_time";
pub const ROW_HASH: &str = "rad_hash";

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
        "Elevliste til fylkeskommunen: noverande elevar på 10. trinn. Partisjonert per fylke.",
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
];

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Business columns: everything but the SCD2 bookkeeping.
    pub fn business_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| {
            !matches!(
                c.name,
                VALID_FROM | VALID_TO | IS_CURRENT | TRANSACTION_TIME | ROW_HASH
            )
        })
    }

    /// Columns whose change opens a new SCD2 version: all business columns but the key.
    pub fn tracked_columns(&self) -> impl Iterator<Item = &Column> {
        let key = self.key;
        self.business_columns().filter(move |c| Some(c.name) != key)
    }

    /// The schema of a MERGE source for this table: its columns, all nullable (a row that only
    /// closes a version carries its key and dates), and `_op`, what to do with the row.
    pub fn merge_source_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(c.name, c.ty.arrow(), true))
                .chain([Field::new("_op", DataType::Utf8, false)])
                .collect::<Vec<_>>(),
        ))
    }

    /// The business key of an SCD2 table; an error for a table that has none.
    pub fn scd2_key(&self) -> crate::Result<&'static str> {
        self.key
            .ok_or_else(|| crate::Error::Internal(format!("`{}` has no business key", self.name)))
    }

    /// A batch in this table's schema from its columns given by name, in any order. A column of
    /// the table without values, or values for a name that is not a column, is an error naming
    /// it: columns can never shift into one another's place.
    pub fn batch(&self, columns: Vec<(&str, ArrayRef)>) -> crate::Result<RecordBatch> {
        let schema = self.arrow_schema();
        let mut given: std::collections::HashMap<&str, ArrayRef> = columns.into_iter().collect();
        let arrays = schema
            .fields()
            .iter()
            .map(|f| {
                given.remove(f.name().as_str()).ok_or_else(|| {
                    crate::Error::Internal(format!(
                        "{}: no values for column `{}`",
                        self.name,
                        f.name()
                    ))
                })
            })
            .collect::<crate::Result<Vec<_>>>()?;
        if let Some(extra) = given.keys().next() {
            return Err(crate::Error::Internal(format!(
                "{}: `{extra}` is not one of its columns",
                self.name
            )));
        }
        Ok(RecordBatch::try_new(schema, arrays)?)
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(arrow_field).collect::<Vec<_>>(),
        ))
    }

    pub fn delta_fields(&self) -> Vec<StructField> {
        self.columns.iter().map(delta_field).collect()
    }

    pub fn stage_name(&self) -> std::string::String {
        format!("stg_{}", self.name)
    }
}

pub fn arrow_field(c: &Column) -> Field {
    Field::new(c.name, c.ty.arrow(), c.nullable).with_metadata(
        [("comment".to_string(), c.comment.to_string())]
            .into_iter()
            .collect(),
    )
}

pub fn delta_field(c: &Column) -> StructField {
    StructField::new(c.name, c.ty.delta(), c.nullable).with_metadata([(
        "comment".to_string(),
        deltalake::kernel::MetadataValue::String(c.comment.to_string()),
    )])
}

/// Markdown reference of the published tables (README's table reference is checked against it).
pub fn markdown_reference() -> std::string::String {
    let mut out = std::string::String::new();
    for t in PUBLISHED {
        out.push_str(&format!("### `{}`\n\n{}\n\n", t.name, t.description));
        if !t.partition_by.is_empty() {
            out.push_str(&format!(
                "Partitioned by `{}`.\n\n",
                t.partition_by.join("`, `")
            ));
        }
        out.push_str("| column | type | null | comment |\n|---|---|---|---|\n");
        for c in t.columns {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.name,
                c.ty.sql_name(),
                if c.nullable { "yes" } else { "no" },
                c.comment
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_has_a_comment_and_scd2_tables_end_with_history_columns() {
        for t in PUBLISHED.iter().copied().chain([&LEVERANSE]) {
            for c in t.columns {
                assert!(
                    !c.name.is_empty() && !c.comment.is_empty(),
                    "{}.{}",
                    t.name,
                    c.name
                );
            }
            if t.kind == Kind::Scd2 {
                assert!(t.column(t.scd2_key().unwrap()).is_some());
                for name in [VALID_FROM, VALID_TO, IS_CURRENT, TRANSACTION_TIME] {
                    assert!(t.column(name).is_some(), "{} lacks {name}", t.name);
                }
                assert!(t.tracked_columns().all(|c| Some(c.name) != t.key));
            }
        }
        for t in SCD2_TABLES {
            assert_eq!(t.kind, Kind::Scd2, "{}", t.name);
        }
        assert_eq!(ELEV.columns.len(), 21);
        assert_eq!(ELEV.tracked_columns().count(), 15);
    }

    #[test]
    fn batches_are_built_by_column_name_and_a_missing_or_unknown_column_is_named() {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let time =
            Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")) as ArrayRef;
        // Given in another order than the table's: each lands in its own column.
        let mut cols = vec![
            ("publisert", time.clone()),
            ("run_id", text("r")),
            ("as_of", time.clone()),
            ("omfang", text("46501")),
            ("kildesystem", text("vigo")),
        ];
        let b = LEVERANSE.batch(cols.clone()).unwrap();
        let first = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .map(|a| a.value(0).to_string())
        };
        assert_eq!(first("kildesystem").as_deref(), Some("vigo"));
        assert_eq!(first("omfang").as_deref(), Some("46501"));
        cols.retain(|(n, _)| *n != "omfang");
        let err = LEVERANSE.batch(cols.clone()).unwrap_err().to_string();
        assert!(err.contains("`omfang`"), "{err}");
        cols.push(("omfang", text("46501")));
        cols.push(("skule", text("x")));
        let err = LEVERANSE.batch(cols).unwrap_err().to_string();
        assert!(err.contains("`skule`"), "{err}");
    }
}
