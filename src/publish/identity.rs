//! Pupil identity (DESIGN §3.1) and the `elev_id` table analysts can read.
//!
//! Resolution order: (kildesystem, system_id) already known → its id; else the fødselsnummer
//! already known → its id; else a UUID v5 of kommunenummer, kildesystem and the source key, so
//! that rebuilding the tables from raw gives the same ids. The id therefore survives a D-number
//! replaced by a fødselsnummer (same system_id), a move between schools, a move between source
//! systems (same fødselsnummer) and a pupil who leaves and comes back.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use crate::error::Result;
use crate::run::RunContext;
use crate::schema;

/// Namespace for elevflyt's deterministic ids.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b4e_9a7d_4c1e_8b3a_5d2e_7f90_1a44);

/// What is known of an id: seen in this source, with this system id and number, first and last
/// at these as-of times.
struct Fact {
    kildesystem: Arc<str>,
    system_id: Option<Box<str>>,
    fodselsnummer: Option<Box<str>>,
    first_seen: i64,
    last_seen: i64,
}

#[derive(Default)]
pub struct Identity {
    /// kildesystem → system_id → id.
    by_system: FxHashMap<Arc<str>, FxHashMap<Box<str>, Arc<str>>>,
    by_fnr: FxHashMap<Box<str>, Arc<str>>,
    /// id → its facts (usually one).
    facts: FxHashMap<Arc<str>, Vec<Fact>>,
    changed: bool,
}

/// The first 16 bytes of `s` (zero-padded) as a big-endian number: `a < b` as numbers implies
/// `a < b` as text.
fn text_prefix(s: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// Points `key` at `id` in a lookup map.
fn point(map: &mut FxHashMap<Box<str>, Arc<str>>, key: &str, id: &Arc<str>) {
    match map.get_mut(key) {
        Some(v) if **v == **id => {}
        Some(v) => *v = id.clone(),
        None => {
            map.insert(key.into(), id.clone());
        }
    }
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
        // Applied in order of first sighting (a later id takes over a shared number), sorted
        // here on (first_seen, position) rather than by the query.
        let batches = crate::delta::query(ctx, sql).await?;
        let mut columns = Vec::with_capacity(batches.len());
        let mut order: Vec<(i64, u32, u32)> = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            let first = crate::delta::micros(b, "first_seen")?;
            order.extend((0..b.num_rows()).map(|i| (first.value(i), bi as u32, i as u32)));
            columns.push((
                crate::delta::strings(b, "id")?,
                crate::delta::strings(b, "kildesystem")?,
                crate::delta::strings(b, "system_id")?,
                crate::delta::strings(b, "fodselsnummer")?,
                first,
                crate::delta::micros(b, "last_seen")?,
            ));
        }
        order.sort_unstable();
        id.facts.reserve(order.len());
        id.by_fnr.reserve(order.len());
        for (_, bi, i) in order {
            let (ids, k, s, f, first, last) = &columns[bi as usize];
            let i = i as usize;
            id.see(
                &Arc::from(ids.value(i)),
                k.value(i),
                super::opt_str(s, i),
                super::opt_str(f, i),
                (first.value(i), last.value(i)),
            );
        }
        Ok(id)
    }

    /// Records that `id` was seen with these identifiers during `seen` (first, last); the
    /// lookups then lead to `id`. Returns whether this was news.
    fn see(
        &mut self,
        id: &Arc<str>,
        kildesystem: &str,
        system_id: Option<&str>,
        fnr: Option<&str>,
        seen: (i64, i64),
    ) -> bool {
        let source = match self.by_system.get_key_value(kildesystem) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(kildesystem);
                self.by_system.insert(k.clone(), FxHashMap::default());
                k
            }
        };
        if let Some(s) = system_id {
            if let Some(ids) = self.by_system.get_mut(kildesystem) {
                point(ids, s, id);
            }
        }
        if let Some(f) = fnr {
            point(&mut self.by_fnr, f, id);
        }
        let facts = self.facts.entry(id.clone()).or_default();
        match facts.iter_mut().find(|f| {
            *f.kildesystem == *kildesystem
                && f.system_id.as_deref() == system_id
                && f.fodselsnummer.as_deref() == fnr
        }) {
            Some(f) => {
                let widened = seen.0 < f.first_seen || seen.1 > f.last_seen;
                f.first_seen = f.first_seen.min(seen.0);
                f.last_seen = f.last_seen.max(seen.1);
                widened
            }
            None => {
                facts.push(Fact {
                    kildesystem: source,
                    system_id: system_id.map(Into::into),
                    fodselsnummer: fnr.map(Into::into),
                    first_seen: seen.0,
                    last_seen: seen.1,
                });
                true
            }
        }
    }

    /// The id a pupil gets when nothing known leads to one: a UUID v5 of kommunenummer,
    /// kildesystem and the source key.
    pub fn new_id(kommune: &str, kildesystem: &str, source_key: &str) -> Arc<str> {
        let name = format!("elev|{kommune}|{kildesystem}|{source_key}");
        let mut buf = Uuid::encode_buffer();
        Arc::from(
            &*Uuid::new_v5(&NAMESPACE, name.as_bytes())
                .hyphenated()
                .encode_lower(&mut buf),
        )
    }

    /// The id of a pupil seen at `as_of` in a snapshot of `kildesystem`; `new_id()` when nothing
    /// known leads to one.
    pub fn resolve(
        &mut self,
        kildesystem: &str,
        system_id: Option<&str>,
        fnr: Option<&str>,
        new_id: impl FnOnce() -> Arc<str>,
        as_of: i64,
    ) -> Arc<str> {
        let id = system_id
            .and_then(|s| self.by_system.get(kildesystem)?.get(s))
            .or_else(|| fnr.and_then(|f| self.by_fnr.get(f)))
            .cloned()
            .unwrap_or_else(new_id);
        if self.see(&id, kildesystem, system_id, fnr, (as_of, as_of)) {
            self.changed = true;
        }
        id
    }

    /// Whether no pupil is known yet (a first load).
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Whether `id` is a known pupil id.
    pub fn knows(&self, id: &str) -> bool {
        self.facts.contains_key(id)
    }

    /// Rewrites `elev_id` when something new was learnt. Returns the new version.
    pub async fn write(&self, ctx: &RunContext) -> Result<Option<i64>> {
        if !self.changed || ctx.dry_run {
            return Ok(None);
        }
        let t = &schema::ELEV_ID;
        // Sorted by id, then source, system id and number, as analysts would list them.
        // The first 16 bytes of the id as a number order rows as the text does; the rest is
        // compared only on a tie (one id with several facts).
        let mut keyed: Vec<(u128, (&Arc<str>, &Fact))> = self
            .facts
            .iter()
            .flat_map(|(id, facts)| facts.iter().map(move |f| (text_prefix(id), (id, f))))
            .collect();
        keyed.sort_unstable_by(|(pa, a), (pb, b)| {
            pa.cmp(pb).then_with(|| {
                (a.0, &a.1.kildesystem, &a.1.system_id, &a.1.fodselsnummer).cmp(&(
                    b.0,
                    &b.1.kildesystem,
                    &b.1.system_id,
                    &b.1.fodselsnummer,
                ))
            })
        });
        let rows: Vec<(&Arc<str>, &Fact)> = keyed.into_iter().map(|(_, r)| r).collect();
        fn col<'a>(
            rows: &[(&'a Arc<str>, &'a Fact)],
            f: impl Fn(&(&'a Arc<str>, &'a Fact)) -> Option<&'a str>,
        ) -> arrow::array::ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        }
        let ts = |f: fn(&Fact) -> i64| {
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| f(r.1)).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ) as arrow::array::ArrayRef
        };
        let batch = RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                col(&rows, |r| Some(&**r.0)),
                col(&rows, |r| Some(&*r.1.kildesystem)),
                col(&rows, |r| r.1.system_id.as_deref()),
                col(&rows, |r| r.1.fodselsnummer.as_deref()),
                ts(|f| f.first_seen),
                ts(|f| f.last_seen),
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

#[cfg(test)]
mod tests {
    use super::text_prefix;

    #[test]
    fn text_prefix_orders_as_the_text() {
        let mut words = vec![
            "",
            "a",
            "ab",
            "a\0",
            "b",
            "0f",
            "0e",
            "ffffffff-ffff-ff",
            "ffffffff-ffff-ff0",
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000000",
            "Z",
        ];
        for a in &words {
            for b in &words {
                if text_prefix(a) < text_prefix(b) {
                    assert!(a < b, "{a:?} < {b:?}");
                }
            }
        }
        words.sort_by_key(|w| text_prefix(w));
        assert!(words
            .windows(2)
            .all(|w| text_prefix(w[0]) <= text_prefix(w[1])));
    }
}
