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

pub(crate) const fn col(
    name: &'static str,
    ty: ColType,
    nullable: bool,
    comment: &'static str,
) -> Column {
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

pub const VALID_FROM: &str = "valid_from";
pub const VALID_TO: &str = "valid_to";
pub const IS_CURRENT: &str = "is_current";
pub const TRANSACTION_TIME: &str = "transaction_time";
pub const ROW_HASH: &str = "rad_hash";

mod tables;

pub use tables::*;

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether the table records a Change Data Feed: the history tables, and the county list,
    /// which the county reads as changes (docs/ARCHITECTURE.md, "Sharing").
    pub fn change_data_feed(&self) -> bool {
        self.kind == Kind::Scd2 || self.name == ELEVLISTE_VGS.name
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
    /// it: columns can never shift into one another's place. A text column may be given as
    /// string views (ingest's records as views of the file read, not copies of it): the batch's
    /// schema then says so, and `delta::conform` casts it, a slice at a time, as it is written.
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
        let fields: Vec<Field> = (schema.fields().iter().zip(&arrays))
            .map(|(f, a)| match (f.data_type(), a.data_type()) {
                (DataType::Utf8, DataType::Utf8View) => {
                    f.as_ref().clone().with_data_type(DataType::Utf8View)
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Ok(RecordBatch::try_new(schema, arrays)?)
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(arrow_field).collect::<Vec<_>>(),
        ))
    }

    /// The columns that hold personal data (see [`PERSONAL_COLUMNS`]).
    pub fn personal_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns
            .iter()
            .map(|c| c.name)
            .filter(|n| PERSONAL_COLUMNS.contains(n))
    }

    /// `delta.dataSkippingStatsColumns` for a table with personal columns: every other column,
    /// so that the Delta log's file statistics never hold a fødselsnummer or a name.
    pub fn stats_columns(&self) -> Option<String> {
        self.personal_columns().next()?;
        Some(
            self.columns
                .iter()
                .map(|c| c.name)
                .filter(|n| !PERSONAL_COLUMNS.contains(n))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    pub fn delta_fields(&self) -> Vec<StructField> {
        self.columns.iter().map(delta_field).collect()
    }

    pub fn stage_name(&self) -> std::string::String {
        format!("stg_{}", self.name)
    }
}

/// Columns with personal data, in any table: no min/max statistics are kept for them, neither
/// in the Delta log nor in the Parquet files (docs/ARCHITECTURE.md, "Privacy"). `post` is a
/// raw record as delivered; `verdi` is masked, but keeps a birth date.
pub const PERSONAL_COLUMNS: &[&str] = &[
    "fodselsnummer",
    "fodselsdato",
    "fornavn",
    "mellomnavn",
    "etternavn",
    "elev_namn",
    "feidenavn",
    "epostadresse",
    "mobiltelefonnummer",
    "bostedsadresse",
    "postnummer",
    "poststed",
    "post",
    "verdi",
];

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
