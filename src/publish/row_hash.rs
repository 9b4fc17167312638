//! The row hash SCD2 compares versions by: xxh3-128 of a row's tracked columns over a canonical
//! text form, stable across runs and versions, stored as 32 hex digits in `rad_hash`.

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use crate::error::Result;
use crate::schema::Table;

/// xxh3-128 of a row's tracked columns; stored as 32 hex digits in `rad_hash`.
pub type RowHash = u128;

/// Writes the stored text form of a row hash: 32 hex digits.
pub fn write_hex(out: &mut impl std::fmt::Write, h: RowHash) -> std::fmt::Result {
    write!(out, "{h:032x}")
}

/// A stored `rad_hash`; an unreadable one never equals a computed hash, so the row gets a new
/// version rather than being silently kept.
pub fn parse_hash(text: &str) -> RowHash {
    // 32 hex digits as written by `write_hex`, decoded without the generic radix parser (this
    // runs for every current row each day); anything else through it.
    let b = text.as_bytes();
    if b.len() == 32 {
        let mut h: u128 = 0;
        for &c in b {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return u128::from_str_radix(text, 16).unwrap_or(u128::MAX),
            };
            h = h << 4 | d as u128;
        }
        return h;
    }
    u128::from_str_radix(text, 16).unwrap_or(u128::MAX)
}

/// Hashes of the tracked columns of every row of `batch` (xxh3-128 over a canonical text form,
/// stable across runs and versions).
pub fn row_hashes(table: &Table, batch: &RecordBatch) -> Result<Vec<RowHash>> {
    let cols: Vec<StringArray> = table
        .tracked_columns()
        .map(|c| -> Result<StringArray> {
            let a = batch
                .column_by_name(c.name)
                .ok_or_else(|| crate::error::Error::Internal(format!("no column {}", c.name)))?;
            let s = cast(a, &DataType::Utf8)?;
            Ok(s.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::new_null(a.len())))
        })
        .collect::<Result<_>>()?;
    let mut buf = Vec::with_capacity(256);
    Ok((0..batch.num_rows())
        .map(|i| {
            buf.clear();
            for c in &cols {
                if c.is_null(i) {
                    buf.push(0);
                } else {
                    buf.push(1);
                    buf.extend_from_slice(c.value(i).as_bytes());
                }
                buf.push(0x1f);
            }
            xxhash_rust::xxh3::xxh3_128(&buf)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hashes_read_back() {
        for h in [
            0,
            1,
            u128::MAX - 1,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let mut text = String::new();
            write_hex(&mut text, h).unwrap();
            assert_eq!(parse_hash(&text), h);
        }
        assert_eq!(
            parse_hash("0123456789ABCDEF0123456789abcdef"),
            0x0123456789abcdef0123456789abcdef
        );
        assert_eq!(parse_hash("not a hash"), u128::MAX);
        assert_eq!(parse_hash("0123456789abcdef0123456789abcdeg"), u128::MAX);
    }
}
