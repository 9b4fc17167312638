//! `jsonPredicateHints` over partition values. A hint may only narrow what a recipient is
//! told of, never widen it, and a file is dropped only when the hint is surely false for it:
//! anything the hint cannot decide (a data column, an unknown operator, a bad tree) keeps it.

use std::collections::BTreeMap;

/// Deepest tree evaluated; deeper hints are ignored.
const MAX_DEPTH: usize = 100;

/// Whether the file with these partition values may match the hint.
pub fn keeps(hint: &serde_json::Value, partition: &BTreeMap<String, Option<String>>) -> bool {
    eval(hint, partition, 0) != Some(false)
}

fn eval(
    e: &serde_json::Value,
    pv: &BTreeMap<String, Option<String>>,
    depth: usize,
) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    let children: Vec<&serde_json::Value> = e["children"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    match e["op"].as_str()? {
        "and" => {
            let r: Vec<Option<bool>> = children.iter().map(|c| eval(c, pv, depth + 1)).collect();
            if r.contains(&Some(false)) {
                Some(false)
            } else if !r.is_empty() && r.iter().all(|x| *x == Some(true)) {
                Some(true)
            } else {
                None
            }
        }
        "or" => {
            let r: Vec<Option<bool>> = children.iter().map(|c| eval(c, pv, depth + 1)).collect();
            if r.contains(&Some(true)) {
                Some(true)
            } else if !r.is_empty() && r.iter().all(|x| *x == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        "not" => eval(children.first()?, pv, depth + 1).map(|b| !b),
        "isNull" => {
            let c = children.first()?;
            (c["op"] == "column")
                .then(|| pv.get(c["name"].as_str()?).map(Option::is_none))
                .flatten()
        }
        op @ ("equal" | "lessThan" | "lessThanOrEqual" | "greaterThan" | "greaterThanOrEqual") => {
            let [a, b] = children[..] else { return None };
            let (column, literal, flipped) = match (a["op"].as_str()?, b["op"].as_str()?) {
                ("column", "literal") => (a, b, false),
                ("literal", "column") => (b, a, true),
                _ => return None,
            };
            let value = pv.get(column["name"].as_str()?)?.as_deref()?;
            let lit = literal["value"].as_str()?;
            let ord = match literal["valueType"].as_str().unwrap_or("string") {
                "int" | "long" => value.parse::<i64>().ok()?.cmp(&lit.parse::<i64>().ok()?),
                "string" | "date" => value.cmp(lit),
                _ => return None,
            };
            let ord = if flipped { ord.reverse() } else { ord };
            use std::cmp::Ordering::*;
            Some(match op {
                "equal" => ord == Equal,
                "lessThan" => ord == Less,
                "lessThanOrEqual" => ord != Greater,
                "greaterThan" => ord == Greater,
                _ => ord != Less,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(v: &str) -> BTreeMap<String, Option<String>> {
        [("fylkesnummer".to_string(), Some(v.to_string()))].into()
    }

    fn eq(v: &str) -> serde_json::Value {
        json!({"op": "equal", "children": [
            {"op": "column", "name": "fylkesnummer", "valueType": "string"},
            {"op": "literal", "value": v, "valueType": "string"}]})
    }

    #[test]
    fn a_hint_drops_only_files_it_surely_excludes() {
        assert!(keeps(&eq("46"), &pv("46")));
        assert!(!keeps(&eq("03"), &pv("46")));
        assert!(keeps(
            &json!({"op": "or", "children": [eq("03"), eq("46")]}),
            &pv("46")
        ));
        assert!(!keeps(
            &json!({"op": "not", "children": [eq("46")]}),
            &pv("46")
        ));
        let data_column = json!({"op": "equal", "children": [
            {"op": "column", "name": "klasse", "valueType": "string"},
            {"op": "literal", "value": "10A", "valueType": "string"}]});
        assert!(
            keeps(&data_column, &pv("46")),
            "a data column cannot drop a file"
        );
        assert!(!keeps(
            &json!({"op": "and", "children": [data_column, eq("03")]}),
            &pv("46")
        ));
        assert!(keeps(&json!({"op": "frobnicate"}), &pv("46")));
        assert!(keeps(&json!("not a tree"), &pv("46")));
    }
}
