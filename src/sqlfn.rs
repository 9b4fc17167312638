//! SQL functions for Norwegian identity numbers, available in `elevflyt sql`:
//! `gyldig_fnr(s)` (boolean), `fnr_type(s)` (fnr, dnr, hnr, fhnr, tenor, syntpop or ugyldig),
//! `masker_fnr(s)` (`058209*****`) and `fodselsdato_fra_fnr(s)` (date).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, StringArray};
use arrow::datatypes::DataType;
use deltalake::datafusion::error::Result as DfResult;
use deltalake::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use deltalake::datafusion::prelude::SessionContext;

use crate::quality::fnr;

fn strings(args: &[ColumnarValue]) -> DfResult<StringArray> {
    let array = args[0].to_array(1)?;
    let array = arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::new_null(array.len())))
}

/// Turns a per-value function over the first argument into a UDF body. A scalar argument gives a
/// scalar result.
fn map<F>(f: F) -> impl Fn(&[ColumnarValue]) -> DfResult<ColumnarValue> + Send + Sync
where
    F: Fn(&StringArray) -> ArrayRef + Send + Sync,
{
    move |args: &[ColumnarValue]| {
        let scalar = matches!(args[0], ColumnarValue::Scalar(_));
        let out = f(&strings(args)?);
        Ok(if scalar {
            ColumnarValue::Scalar(deltalake::datafusion::scalar::ScalarValue::try_from_array(
                &out, 0,
            )?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Registers the functions in a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "gyldig_fnr",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(map(|s: &StringArray| {
            let today = today();
            Arc::new(BooleanArray::from(
                s.iter()
                    .map(|v| v.map(|v| fnr::classify(v, today).is_ok()))
                    .collect::<Vec<_>>(),
            )) as ArrayRef
        })),
    ));
    ctx.register_udf(create_udf(
        "fnr_type",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(map(|s: &StringArray| {
            let today = today();
            Arc::new(StringArray::from(
                s.iter()
                    .map(|v| {
                        v.map(|v| match fnr::classify(v, today) {
                            Ok(i) => i.kind.code(),
                            Err(_) => "ugyldig",
                        })
                    })
                    .collect::<Vec<_>>(),
            )) as ArrayRef
        })),
    ));
    ctx.register_udf(create_udf(
        "masker_fnr",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(map(|s: &StringArray| {
            Arc::new(StringArray::from(
                s.iter().map(|v| v.map(fnr::mask)).collect::<Vec<_>>(),
            )) as ArrayRef
        })),
    ));
    ctx.register_udf(create_udf(
        "fodselsdato_fra_fnr",
        vec![DataType::Utf8],
        DataType::Date32,
        Volatility::Stable,
        Arc::new(map(|s: &StringArray| {
            let today = today();
            let epoch = chrono::NaiveDate::default();
            Arc::new(Date32Array::from(
                s.iter()
                    .map(|v| {
                        v.and_then(|v| fnr::classify(v, today).ok())
                            .and_then(|i| i.birth_date)
                            .map(|d| (d - epoch).num_days() as i32)
                    })
                    .collect::<Vec<_>>(),
            )) as ArrayRef
        })),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn functions_work_on_columns_and_literals() {
        let ctx = SessionContext::new();
        register(&ctx);
        let b = crate::delta::query(
            &ctx,
            "SELECT gyldig_fnr(s) AS g, fnr_type(s) AS t, masker_fnr(s) AS m, \
             CAST(fodselsdato_fra_fnr(s) AS VARCHAR) AS d \
             FROM (VALUES ('10915596784'), ('12345678901'), (NULL)) AS v(s)",
        )
        .await
        .unwrap();
        let b = &b[0];
        let col = |n: &str| crate::delta::strings(b, n).unwrap();
        let g = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let g = g.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(g.value(0), "true");
        assert_eq!(g.value(1), "false");
        assert_eq!(col("t").value(0), "tenor");
        assert_eq!(col("t").value(1), "ugyldig");
        assert_eq!(col("m").value(0), "109155*****");
        assert_eq!(col("d").value(0), "1955-11-10");
        assert!(col("d").is_null(1));
        assert!(g.is_null(2));
        let lit = crate::delta::query(&ctx, "SELECT masker_fnr('05820912345') AS m")
            .await
            .unwrap();
        assert_eq!(
            crate::delta::strings(&lit[0], "m").unwrap().value(0),
            "058209*****"
        );
    }
}
