//! Pupil identity (docs/ARCHITECTURE.md, "Identity") and the `elev_id` table analysts can read.
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

use crate::context::RunContext;
use crate::error::Result;
use crate::schema;

/// Namespace for elevflyt's deterministic ids.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b4e_9a7d_4c1e_8b3a_5d2e_7f90_1a44);

/// What is known of a pupil: seen in this source (an index into `Identity::sources`), with
/// this system id and number, first and last at these as-of times. The texts share their
/// allocation with the lookup maps' keys.
struct Fact {
    source: u32,
    system_id: Option<Arc<str>>,
    fodselsnummer: Option<Arc<str>>,
    first_seen: i64,
    last_seen: i64,
}

impl Fact {
    fn is(&self, source: u32, system_id: Option<&str>, fnr: Option<&str>) -> bool {
        self.source == source
            && self.system_id.as_deref() == system_id
            && self.fodselsnummer.as_deref() == fnr
    }

    /// Widens the interval to cover `seen`; returns whether it grew.
    fn widen(&mut self, seen: (i64, i64)) -> bool {
        let widened = seen.0 < self.first_seen || seen.1 > self.last_seen;
        self.first_seen = self.first_seen.min(seen.0);
        self.last_seen = self.last_seen.max(seen.1);
        widened
    }
}

/// Pupils are numbered in the order they are met; the lookups lead to a number, and what is
/// known of pupil `n` is in vectors at `n` (no hash map keyed by the id on the hot path).
#[derive(Default)]
pub struct Identity {
    /// Pupil number → id.
    ids: Vec<Arc<str>>,
    /// Id → pupil number.
    number: FxHashMap<Arc<str>, u32>,
    /// Source systems seen (a handful).
    sources: Vec<Arc<str>>,
    /// Per source (same index as `sources`): system_id → pupil number.
    by_system: Vec<FxHashMap<Arc<str>, u32>>,
    by_fnr: FxHashMap<Arc<str>, u32>,
    /// The first fact of each pupil (same index as `ids`); further facts, rare, in `more_facts`.
    facts: Vec<Fact>,
    more_facts: FxHashMap<u32, Vec<Fact>>,
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

/// Points `key` at pupil `n` in a lookup map; returns the map's copy of the key.
fn point(map: &mut FxHashMap<Arc<str>, u32>, key: &str, n: u32) -> Arc<str> {
    match map.get_key_value(key) {
        Some((k, &v)) if v == n => k.clone(),
        Some((k, _)) => {
            let k = k.clone();
            map.insert(k.clone(), n);
            k
        }
        None => {
            let k: Arc<str> = Arc::from(key);
            map.insert(k.clone(), n);
            k
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
        // here on (first_seen, position) rather than by the query. The text columns are read
        // where the reader put them (string views, not copied).
        let started = std::time::Instant::now();
        let batches = crate::delta::query(ctx, sql).await?;
        let queried = started.elapsed();
        let mut columns = Vec::with_capacity(batches.len());
        let mut order: Vec<(i64, u32, u32)> = Vec::new();
        for (bi, b) in batches.into_iter().enumerate() {
            let b = &b;
            let first = crate::delta::micros(b, "first_seen")?;
            order.extend((0..b.num_rows()).map(|i| (first.value(i), bi as u32, i as u32)));
            columns.push((
                crate::delta::text(b, "id")?,
                crate::delta::text(b, "kildesystem")?,
                crate::delta::text(b, "system_id")?,
                crate::delta::text(b, "fodselsnummer")?,
                first,
                crate::delta::micros(b, "last_seen")?,
            ));
        }
        order.sort_unstable();
        id.reserve(order.len());
        for (_, bi, i) in order {
            let (ids, k, s, f, first, last) = &columns[bi as usize];
            let i = i as usize;
            let text = ids.value(i);
            let n = match id.number.get(text) {
                Some(&n) => n,
                None => id.add(Arc::from(text)),
            };
            let source = id.source(k.value(i));
            id.see(
                n,
                source,
                s.opt(i),
                f.opt(i),
                (first.value(i), last.value(i)),
            );
        }
        tracing::debug!(
            pupils = id.ids.len(),
            ms = started.elapsed().as_millis() as u64,
            query_ms = queried.as_millis() as u64,
            "identity map loaded"
        );
        Ok(id)
    }

    /// Room for `n` more pupils.
    fn reserve(&mut self, n: usize) {
        self.ids.reserve(n);
        self.number.reserve(n);
        self.by_fnr.reserve(n);
        self.facts.reserve(n);
    }

    /// The number of a source system, added when new.
    fn source(&mut self, kildesystem: &str) -> u32 {
        match self.sources.iter().position(|s| **s == *kildesystem) {
            Some(i) => i as u32,
            None => {
                self.sources.push(Arc::from(kildesystem));
                self.by_system.push(FxHashMap::default());
                (self.sources.len() - 1) as u32
            }
        }
    }

    /// A new pupil with this id (its first fact follows in `see`).
    fn add(&mut self, id: Arc<str>) -> u32 {
        let n = self.ids.len() as u32;
        self.number.insert(id.clone(), n);
        self.ids.push(id);
        n
    }

    /// Records that pupil `n` was seen with these identifiers during `seen` (first, last); the
    /// lookups then lead to `n`. Returns whether this was news.
    fn see(
        &mut self,
        n: u32,
        source: u32,
        system_id: Option<&str>,
        fnr: Option<&str>,
        seen: (i64, i64),
    ) -> bool {
        let system_key = system_id.map(|s| point(&mut self.by_system[source as usize], s, n));
        let fnr_key = fnr.map(|f| point(&mut self.by_fnr, f, n));
        // Most often the pupil's first (only) fact.
        let idx = n as usize;
        if let Some(f) = self
            .facts
            .get_mut(idx)
            .filter(|f| f.is(source, system_id, fnr))
        {
            return f.widen(seen);
        }
        let fact = Fact {
            source,
            system_id: system_key,
            fodselsnummer: fnr_key,
            first_seen: seen.0,
            last_seen: seen.1,
        };
        if idx == self.facts.len() {
            self.facts.push(fact);
            return true;
        }
        let more = self.more_facts.entry(n).or_default();
        match more.iter_mut().find(|f| f.is(source, system_id, fnr)) {
            Some(f) => f.widen(seen),
            None => {
                more.push(fact);
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

    /// The number of the pupil seen at `as_of` in a snapshot of `kildesystem`; a new pupil with
    /// id `new_id()` when nothing known leads to one.
    pub fn resolve(
        &mut self,
        kildesystem: &str,
        system_id: Option<&str>,
        fnr: Option<&str>,
        new_id: impl FnOnce() -> Arc<str>,
        as_of: i64,
    ) -> u32 {
        let source = self.source(kildesystem);
        let found = system_id
            .and_then(|s| self.by_system[source as usize].get(s))
            .or_else(|| fnr.and_then(|f| self.by_fnr.get(f)))
            .copied();
        let n = match found {
            Some(n) => n,
            None => {
                let id = new_id();
                match self.number.get(&id) {
                    // The id a source key always gets, met again under other identifiers.
                    Some(&n) => n,
                    None => self.add(id),
                }
            }
        };
        if self.see(n, source, system_id, fnr, (as_of, as_of)) {
            self.changed = true;
        }
        n
    }

    /// The id of pupil `n`.
    pub fn id(&self, n: u32) -> &str {
        &self.ids[n as usize]
    }

    /// Whether no pupil is known yet (a first load).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is a known pupil id.
    pub fn knows(&self, id: &str) -> bool {
        self.number.contains_key(id)
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
        let facts = self
            .facts
            .iter()
            .enumerate()
            .map(|(n, f)| (n as u32, f))
            .chain(
                self.more_facts
                    .iter()
                    .flat_map(|(&n, more)| more.iter().map(move |f| (n, f))),
            );
        let mut keyed: Vec<(u128, (&str, &Fact))> = facts
            .map(|(n, f)| {
                let id = self.id(n);
                (text_prefix(id), (id, f))
            })
            .collect();
        let source = |f: &Fact| -> &str { &self.sources[f.source as usize] };
        keyed.sort_unstable_by(|(pa, a), (pb, b)| {
            pa.cmp(pb).then_with(|| {
                (a.0, source(a.1), &a.1.system_id, &a.1.fodselsnummer).cmp(&(
                    b.0,
                    source(b.1),
                    &b.1.system_id,
                    &b.1.fodselsnummer,
                ))
            })
        });
        let rows: Vec<(&str, &Fact)> = keyed.into_iter().map(|(_, r)| r).collect();
        fn col<'a>(
            rows: &[(&'a str, &'a Fact)],
            f: impl Fn(&(&'a str, &'a Fact)) -> Option<&'a str>,
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
                col(&rows, |r| Some(r.0)),
                col(&rows, |r| Some(source(r.1))),
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
