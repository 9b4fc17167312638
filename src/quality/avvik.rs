//! The deviation list as the schools' to-do list: which deviations are new, and which open ones
//! a later snapshot of the same source and scope no longer has (resolved). Pure: the stage that
//! writes `avvik` (standardize) reads the open ones and commits the result.

use std::collections::HashSet;

use super::Avvik;

/// What identifies "the same problem" across snapshots: school, record id, rule, field and the
/// masked value.
pub type ProblemKey = (
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

/// An open deviation already stored.
#[derive(Debug)]
pub struct Open {
    pub run_id: String,
    pub kjelde: Option<String>,
    pub rad: Option<i64>,
    pub regel: String,
    pub felt: Option<String>,
    pub scope: (String, Option<String>),
    pub as_of: i64,
    pub key: ProblemKey,
}

pub fn key_of(a: &Avvik) -> ProblemKey {
    (
        a.record.skolenummer.clone(),
        a.record.system_id.clone(),
        a.regel.to_string(),
        a.felt.map(str::to_string),
        a.verdi.clone(),
    )
}

/// What a set of new snapshots does to the deviation list.
#[derive(Debug, Default)]
pub struct Resolution<'o> {
    /// Per new deviation (by index): already resolved by a later snapshot in the same run.
    pub new_lost: Vec<bool>,
    /// Stored open deviations that a later snapshot of their source and scope no longer has.
    pub resolved: Vec<&'o Open>,
}

/// Resolves deviations against the new snapshots, oldest first: a deviation (stored or new) of a
/// source and scope is resolved by a later snapshot of the same source and scope that does not
/// report the same problem (school, record id, rule, field, masked value). The deviations stored
/// for the same snapshot (delivered again) are replaced by the new ones.
pub fn resolve<'o>(
    avvik: &[Avvik],
    open: &'o [Open],
    snapshots: &[(String, Option<String>, i64)],
) -> Resolution<'o> {
    let mut snapshots = snapshots.to_vec();
    snapshots.sort_by_key(|s| s.2);
    let mut new_lost: Vec<bool> = vec![false; avvik.len()];
    let mut resolved: Vec<&Open> = Vec::new();
    for (k, o, t) in &snapshots {
        let keys: HashSet<ProblemKey> = avvik
            .iter()
            .filter(|a| a.record.kildesystem == *k && a.omfang == *o && a.as_of == *t)
            .map(key_of)
            .collect();
        for row in open {
            if row.scope == (k.clone(), o.clone())
                // A snapshot delivered again (or standardized again after a crash) replaces
                // its earlier deviations.
                && (row.as_of == *t || (row.as_of < *t && !keys.contains(&row.key)))
                && !resolved.iter().any(|r| std::ptr::eq(*r, row))
            {
                resolved.push(row);
            }
        }
        for (i, a) in avvik.iter().enumerate() {
            if a.record.kildesystem == *k
                && a.omfang == *o
                && a.as_of < *t
                && !keys.contains(&key_of(a))
            {
                new_lost[i] = true;
            }
        }
    }
    Resolution { new_lost, resolved }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{RecordRef, Severity};

    fn avvik(
        source: &str,
        school: Option<&str>,
        as_of: i64,
        system_id: &str,
        rule: &'static str,
    ) -> Avvik {
        Avvik {
            record: RecordRef {
                kildesystem: source.into(),
                kjelde: "f.json".into(),
                rad: 1,
                skolenummer: Some("46501".into()),
                system_id: Some(system_id.into()),
            },
            omfang: school.map(str::to_string),
            as_of,
            regel: rule,
            alvorsgrad: Severity::Warn,
            felt: Some("fodselsnummer"),
            verdi: Some("058209*****".into()),
            melding: "x".into(),
        }
    }

    fn stored(a: &Avvik) -> Open {
        Open {
            run_id: "r0".into(),
            kjelde: Some(a.record.kjelde.clone()),
            rad: Some(a.record.rad),
            regel: a.regel.into(),
            felt: a.felt.map(str::to_string),
            scope: (a.record.kildesystem.clone(), a.omfang.clone()),
            as_of: a.as_of,
            key: key_of(a),
        }
    }

    #[test]
    fn a_later_snapshot_without_the_problem_resolves_it_and_one_with_it_does_not() {
        let open = vec![
            stored(&avvik("vigilo", None, 1, "p1", "fnr_ugyldig")),
            stored(&avvik("vigilo", None, 1, "p2", "fnr_ugyldig")),
        ];
        // Day 2 still reports p2, not p1.
        let new = vec![avvik("vigilo", None, 2, "p2", "fnr_ugyldig")];
        let r = resolve(&new, &open, &[("vigilo".into(), None, 2)]);
        assert_eq!(r.resolved.len(), 1);
        assert_eq!(r.resolved[0].key.1.as_deref(), Some("p1"));
        assert_eq!(r.new_lost, vec![false]);
    }

    #[test]
    fn another_source_or_school_or_an_older_snapshot_resolves_nothing() {
        let open = vec![stored(&avvik(
            "vigo",
            Some("46501"),
            5,
            "p1",
            "fnr_ugyldig",
        ))];
        for snapshot in [
            ("vigilo".to_string(), None, 9),
            ("vigo".to_string(), Some("46502".to_string()), 9),
            ("vigo".to_string(), Some("46501".to_string()), 4),
        ] {
            let r = resolve(&[], &open, std::slice::from_ref(&snapshot));
            assert!(r.resolved.is_empty(), "{snapshot:?}");
        }
    }

    #[test]
    fn a_new_deviation_gone_in_a_later_snapshot_of_the_same_run_is_born_resolved() {
        let new = vec![
            avvik("vigilo", None, 1, "p1", "fnr_ugyldig"),
            avvik("vigilo", None, 2, "p2", "fnr_ugyldig"),
        ];
        let snapshots = [("vigilo".into(), None, 2), ("vigilo".into(), None, 1)];
        let r = resolve(&new, &[], &snapshots);
        assert_eq!(r.new_lost, vec![true, false]);
        assert!(r.resolved.is_empty());
    }
}
