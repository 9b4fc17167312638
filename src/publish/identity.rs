//! Pupil identity (DESIGN §3.1) and the `elev_id` table analysts can read.
//!
//! Resolution order: (kildesystem, system_id) already known → its id; else the fødselsnummer
//! already known → its id; else a UUID v5 of kommunenummer, kildesystem and the source key, so
//! that rebuilding the tables from raw gives the same ids. The id therefore survives a D-number
//! replaced by a fødselsnummer (same system_id), a move between schools, a move between source
//! systems (same fødselsnummer) and a pupil who leaves and comes back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use uuid::Uuid;

use crate::error::Result;
use crate::run::RunContext;
use crate::schema;

/// Namespace for elevflyt's deterministic ids.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b4e_9a7d_4c1e_8b3a_5d2e_7f90_1a44);

/// One identity fact: this id was seen with this source key and number.
type Fact = (String, String, Option<String>, Option<String>);

#[derive(Default)]
pub struct Identity {
    by_system: HashMap<(String, String), String>,
    by_fnr: HashMap<String, String>,
    /// (id, kildesystem, system_id, fodselsnummer) → (first seen, last seen).
    facts: BTreeMap<Fact, (i64, i64)>,
    changed: bool,
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    use arrow::array::Array;
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

impl Identity {
    /// Loads `elev_id`, or on a first run after an upgrade, the identities in `elev`.
    pub async fn load(p: &crate::config::Pipeline, ctx: &SessionContext) -> Result<Identity> {
        let mut id = Identity::default();
        // Version 0 is the empty table a killed run created before writing the map.
        let written = crate::delta::try_open(&p.table_url("elev_id"))
            .await?
            .is_some_and(|t| t.version().unwrap_or(0) > 0);
        let sql = if written && crate::delta::has_table(ctx, "elev_id") {
            "SELECT id, kildesystem, system_id, fodselsnummer, first_seen, last_seen FROM elev_id"
        } else if crate::delta::has_table(ctx, "elev") {
            id.changed = true;
            "SELECT id, kildesystem, system_id, fodselsnummer, min(valid_from) AS first_seen, \
             max(valid_from) AS last_seen FROM elev GROUP BY 1, 2, 3, 4"
        } else {
            return Ok(id);
        };
        for b in crate::delta::query(ctx, &format!("{sql} ORDER BY first_seen")).await? {
            let ids = crate::delta::strings(&b, "id")?;
            let k = crate::delta::strings(&b, "kildesystem")?;
            let s = crate::delta::strings(&b, "system_id")?;
            let f = crate::delta::strings(&b, "fodselsnummer")?;
            let first = crate::delta::micros(&b, "first_seen")?;
            let last = crate::delta::micros(&b, "last_seen")?;
            for i in 0..b.num_rows() {
                let fact = (
                    ids.value(i).to_string(),
                    k.value(i).to_string(),
                    opt(&s, i),
                    opt(&f, i),
                );
                id.remember(&fact);
                id.facts.insert(fact, (first.value(i), last.value(i)));
            }
        }
        Ok(id)
    }

    fn remember(&mut self, (id, k, s, f): &Fact) {
        if let Some(s) = s {
            self.by_system.insert((k.clone(), s.clone()), id.clone());
        }
        if let Some(f) = f {
            self.by_fnr.insert(f.clone(), id.clone());
        }
    }

    /// The id of a pupil seen at `as_of` in a snapshot of `kildesystem`.
    pub fn resolve(
        &mut self,
        kommune: &str,
        kildesystem: &str,
        system_id: Option<&str>,
        fnr: Option<&str>,
        source_key: &str,
        as_of: i64,
    ) -> String {
        let found = system_id
            .and_then(|s| {
                self.by_system
                    .get(&(kildesystem.to_string(), s.to_string()))
            })
            .or_else(|| fnr.and_then(|f| self.by_fnr.get(f)))
            .cloned();
        let id = found.unwrap_or_else(|| {
            Uuid::new_v5(
                &NAMESPACE,
                format!("elev|{kommune}|{kildesystem}|{source_key}").as_bytes(),
            )
            .to_string()
        });
        let fact = (
            id.clone(),
            kildesystem.to_string(),
            system_id.map(str::to_string),
            fnr.map(str::to_string),
        );
        self.remember(&fact);
        let seen = self.facts.entry(fact).or_insert_with(|| {
            self.changed = true;
            (as_of, as_of)
        });
        if as_of < seen.0 || as_of > seen.1 {
            seen.0 = seen.0.min(as_of);
            seen.1 = seen.1.max(as_of);
            self.changed = true;
        }
        id
    }

    /// Every id known.
    pub fn ids(&self) -> std::collections::HashSet<&str> {
        self.facts.keys().map(|f| f.0.as_str()).collect()
    }

    /// Rewrites `elev_id` when something new was learnt. Returns the new version.
    pub async fn write(&self, ctx: &RunContext) -> Result<Option<i64>> {
        if !self.changed || ctx.dry_run {
            return Ok(None);
        }
        let t = &schema::ELEV_ID;
        let col = |f: fn(&Fact) -> Option<&str>| {
            Arc::new(StringArray::from(
                self.facts.keys().map(f).collect::<Vec<_>>(),
            )) as arrow::array::ArrayRef
        };
        let ts = |f: fn(&(i64, i64)) -> i64| {
            Arc::new(
                TimestampMicrosecondArray::from(self.facts.values().map(f).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ) as arrow::array::ArrayRef
        };
        let batch = RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                col(|f| Some(f.0.as_str())),
                col(|f| Some(f.1.as_str())),
                col(|f| f.2.as_deref()),
                col(|f| f.3.as_deref()),
                ts(|s| s.0),
                ts(|s| s.1),
            ],
        )?;
        crate::delta::write(
            &ctx.pipeline,
            t,
            vec![batch],
            SaveMode::Overwrite,
            &ctx.run_id,
            "publish",
        )
        .await
    }
}
