//! Pupil identity (docs/ARCHITECTURE.md, "Identity") and the `elev_id` table analysts can read.
//!
//! Resolution order: (kildesystem, system_id) already known → its id; else the fødselsnummer
//! already known → its id; else a UUID v5 of kommunenummer, kildesystem and the source key, so
//! that rebuilding the tables from raw gives the same ids. The id therefore survives a D-number
//! replaced by a fødselsnummer (same system_id), a move between schools, a move between source
//! systems (same fødselsnummer) and a pupil who leaves and comes back.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, StringViewArray, TimestampMicrosecondArray,
};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use crate::context::RunContext;
use crate::error::Result;
use crate::schema;

/// Namespace for elevflyt's deterministic ids.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b4e_9a7d_4c1e_8b3a_5d2e_7f90_1a44);

/// The UUID v5 of `name` in elevflyt's namespace — `Uuid::new_v5(&NAMESPACE, name)`, with a
/// SHA-1 that uses the CPU's SHA instructions where it has them.
pub fn uuid_v5(name: &[u8]) -> Uuid {
    use sha1::Digest;
    let mut sha = sha1::Sha1::new();
    sha.update(NAMESPACE.as_bytes());
    sha.update(name);
    let digest = sha.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(first).into_uuid()
}

/// Where a text is in the map's texts ([`Texts`]): in a buffer of the texts it learnt or in
/// one of the buffers of the columns it was read from.
#[derive(Debug, Clone, Copy)]
struct Span {
    buffer: u32,
    start: u32,
    len: u32,
}

/// Every text the map holds (ids, system ids, numbers). Those it learns in a run are copied one
/// after the other into one buffer (a million pupils are one buffer's growth, not three million
/// allocations); those read from `elev_id` stay where the reader put them, in the columns'
/// buffers, which the map keeps ([`Texts::point`]): no copy, no fresh pages for a million texts.
#[derive(Default)]
struct Texts {
    /// The texts learnt, in buffers of at most 4 GB (spans hold 32-bit positions); the last
    /// one grows. Their spans count down from `u32::MAX`, those of read buffers up from 0.
    own: Vec<String>,
    read: Vec<arrow::buffer::Buffer>,
}

impl Texts {
    fn push(&mut self, s: &str) -> Span {
        if self
            .own
            .last()
            .is_none_or(|own| own.len() + s.len() > u32::MAX as usize)
        {
            self.own.push(String::new());
        }
        let chunk = self.own.len() - 1;
        let own = &mut self.own[chunk];
        let start = own.len() as u32;
        own.push_str(s);
        Span {
            buffer: u32::MAX - chunk as u32,
            start,
            len: s.len() as u32,
        }
    }

    /// Room for `bytes` more learnt texts.
    fn reserve(&mut self, bytes: usize) {
        match self.own.last_mut() {
            Some(own) => own.reserve(bytes),
            None => self.own.push(String::with_capacity(bytes)),
        }
    }

    fn get(&self, s: Span) -> &str {
        let (from, to) = (s.start as usize, s.start as usize + s.len as usize);
        let chunk = (u32::MAX - s.buffer) as usize;
        if chunk < self.own.len() {
            return &self.own[chunk][from..to];
        }
        let bytes = &self.read[s.buffer as usize].as_slice()[from..to];
        // SAFETY: a span into a read buffer is only made by `point`, and covers exactly the
        // bytes of one value of a UTF-8 string array (views or offsets), which arrow checked.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// Where value `i` of a column read from a table lies, its buffer kept by the map (once per
    /// buffer, `kept` remembering which); `None` for a null. The text is not copied.
    fn point(&mut self, col: &crate::delta::TextCol, kept: &mut Kept, i: usize) -> Option<Span> {
        use crate::delta::TextCol;
        col.opt(i)?;
        let mut keep = |slot: usize, buffer: &arrow::buffer::Buffer| -> u32 {
            if kept.0.len() <= slot {
                kept.0.resize(slot + 1, None);
            }
            *kept.0[slot].get_or_insert_with(|| {
                self.read.push(buffer.clone());
                self.read.len() as u32 - 1
            })
        };
        match col {
            TextCol::View(a) => {
                let view = a.views()[i];
                let len = view as u32;
                if len <= 12 {
                    // Short texts lie in their view, after its four bytes of length (copied in
                    // a column too long for 32-bit positions, which no reader makes).
                    let Ok(start) = u32::try_from(i * 16 + 4) else {
                        return Some(self.push(a.value(i)));
                    };
                    let buffer = keep(0, a.views().inner());
                    Some(Span { buffer, start, len })
                } else {
                    let at = (view >> 64) as u32 as usize;
                    let buffer = keep(1 + at, &a.data_buffers()[at]);
                    Some(Span {
                        buffer,
                        start: (view >> 96) as u32,
                        len,
                    })
                }
            }
            TextCol::Utf8(a) => {
                let offsets = a.value_offsets();
                let buffer = keep(0, a.values());
                Some(Span {
                    buffer,
                    start: offsets[i] as u32,
                    len: (offsets[i + 1] - offsets[i]) as u32,
                })
            }
        }
    }

    /// Every buffer of the map's texts, as [`Texts::views`] numbers them: those read as they
    /// are, then those learnt, copied once (a next day learns few).
    fn buffers(&self) -> Arc<[arrow::buffer::Buffer]> {
        let learnt = self
            .own
            .iter()
            .map(|s| arrow::buffer::Buffer::from(s.as_bytes()));
        self.read.iter().cloned().chain(learnt).collect()
    }

    /// The texts at `spans` as a column of string views into `buffers` ([`Texts::buffers`]):
    /// none is copied. Short texts (12 bytes or less) lie in their views.
    fn views(
        &self,
        buffers: &Arc<[arrow::buffer::Buffer]>,
        spans: impl ExactSizeIterator<Item = Option<Span>>,
    ) -> Result<ArrayRef> {
        let read = self.read.len() as u32;
        let mut nulls = arrow::array::NullBufferBuilder::new(spans.len());
        let views: Vec<u128> = spans
            .map(|s| {
                nulls.append(s.is_some());
                s.map_or(0, |s| {
                    // A learnt text's buffer follows the read ones.
                    let chunk = (u32::MAX - s.buffer) as usize;
                    let buffer = match chunk < self.own.len() {
                        true => read + chunk as u32,
                        false => s.buffer,
                    };
                    arrow::array::builder::make_view(self.get(s).as_bytes(), buffer, s.start)
                })
            })
            .collect();
        // Checked (one pass over the texts): each view within its buffer, of UTF-8.
        let array = StringViewArray::try_new(views.into(), buffers.clone(), nulls.finish())?;
        Ok(Arc::new(array))
    }
}

/// Which buffers of one read column the map keeps, by slot (views or values first, then the
/// data buffers of string views), and their numbers in [`Texts::read`].
#[derive(Default)]
struct Kept(Vec<Option<u32>>);

/// A text's 128-bit hash: the lookups compare these, not the texts (one memory access a
/// lookup instead of two; a collision is as likely as guessing a random UUID twice, as for the
/// key sets of validation, docs/ARCHITECTURE.md "Identity").
fn text_hash(s: &str) -> [u64; 2] {
    let h = xxhash_rust::xxh3::xxh3_128(s.as_bytes());
    [(h >> 64) as u64, h as u64]
}

/// A [`text_hash`] as one number (as validation's key sets hold keys).
fn u128_of(h: [u64; 2]) -> u128 {
    (h[0] as u128) << 64 | h[1] as u128
}

/// A lookup from a text (by its [`text_hash`]) to a pupil number: the keys of the map read back
/// (sorted, built at once) and those this run pointed (a hash table, which wins), so that a
/// million pupils read back are three sorts, not three million inserts at random places
/// (docs/ARCHITECTURE.md, "Identity").
#[derive(Default)]
struct Lookup {
    read: Sorted,
    pointed: HashTable<([u64; 2], u32)>,
}

impl Lookup {
    fn get(&self, key: [u64; 2]) -> Option<u32> {
        match self.pointed.find(key[1], |e| e.0 == key) {
            Some(e) => Some(e.1),
            None => self.read.get(key),
        }
    }

    /// Points `key` at pupil `n`; returns the other pupil it pointed at before, if any.
    fn point(&mut self, key: [u64; 2], n: u32) -> Option<u32> {
        // One probe of the table, whether the key is there or not.
        match self.pointed.entry(key[1], |e| e.0 == key, |e| e.0[1]) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                let before = std::mem::replace(&mut e.get_mut().1, n);
                (before != n).then_some(before)
            }
            hashbrown::hash_table::Entry::Vacant(e) => match self.read.get(key) {
                Some(before) if before == n => None,
                before => {
                    e.insert((key, n));
                    before
                }
            },
        }
    }

    /// The lookup of `rows` (a key, the row's place in the order the map is applied in, and
    /// the pupil the row is of) pointed one after the other: each key leads to the pupil of its
    /// last row. Also returns the pupils a key led to besides another (their lookups are
    /// contested, as [`Lookup::point`] tells one at a time).
    fn of_rows(mut rows: Vec<([u64; 2], u32, u32)>) -> (Lookup, Vec<u32>) {
        crate::sort::by_hash(&mut rows, |r| r.0[0], |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut contested = Vec::new();
        let mut keys = Vec::with_capacity(rows.len());
        for run in rows.chunk_by(|a, b| a.0 == b.0) {
            let last = run[run.len() - 1];
            if run.iter().any(|r| r.2 != last.2) {
                contested.extend(run.iter().map(|r| r.2));
            }
            keys.push((last.0, last.2));
        }
        let lookup = Lookup {
            read: Sorted::of(keys),
            pointed: HashTable::new(),
        };
        (lookup, contested)
    }
}

/// Keys and their pupils sorted by key, with where each run of keys with the same first bits
/// starts: a key is looked for among the one or two of its run. The keys are hashes, so the
/// runs are even.
#[derive(Default)]
struct Sorted {
    keys: Vec<([u64; 2], u32)>,
    /// `starts[b]..starts[b + 1]` are the keys whose first `bits` bits are `b`.
    starts: Vec<u32>,
    bits: u32,
}

impl Sorted {
    /// `keys` sorted by key, each key once.
    fn of(keys: Vec<([u64; 2], u32)>) -> Sorted {
        if keys.is_empty() {
            return Sorted::default();
        }
        // About one key a run (at most 2^24 runs).
        let bits = keys.len().ilog2().clamp(1, 24);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for run in 0..1u64 << bits {
            while keys.get(at).is_some_and(|k| k.0[0] >> (64 - bits) < run) {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(keys.len() as u32);
        Sorted { keys, starts, bits }
    }

    fn get(&self, key: [u64; 2]) -> Option<u32> {
        if self.keys.is_empty() {
            return None;
        }
        let run = (key[0] >> (64 - self.bits)) as usize;
        let (from, to) = (self.starts[run] as usize, self.starts[run + 1] as usize);
        self.keys[from..to].iter().find(|k| k.0 == key).map(|k| k.1)
    }
}

/// A text that may be absent, with its hash.
#[derive(Clone, Copy)]
struct Given<'t> {
    text: Option<&'t str>,
    hash: Option<[u64; 2]>,
}

impl<'t> Given<'t> {
    fn new(text: Option<&'t str>) -> Given<'t> {
        Given {
            text,
            hash: text.map(text_hash),
        }
    }
}

/// What is known of a pupil: seen in this source (an index into `Identity::sources`), with
/// this system id and number (their texts in [`Texts`], compared by hash), first and last at
/// these as-of times.
struct Fact {
    source: u32,
    system_id: Option<Span>,
    fodselsnummer: Option<Span>,
    system_hash: Option<[u64; 2]>,
    fnr_hash: Option<[u64; 2]>,
    first_seen: i64,
    last_seen: i64,
}

impl Fact {
    fn is(&self, source: u32, system_id: &Given, fnr: &Given) -> bool {
        self.source == source && self.system_hash == system_id.hash && self.fnr_hash == fnr.hash
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
    texts: Texts,
    /// Pupil number → id.
    ids: Vec<Span>,
    /// Id → pupil number.
    number: Lookup,
    /// Source systems seen (a handful).
    sources: Vec<Arc<str>>,
    /// Per source (same index as `sources`): system_id → pupil number.
    by_system: Vec<Lookup>,
    by_fnr: Lookup,
    /// The first fact of each pupil (same index as `ids`); further facts, rare, in `more_facts`.
    facts: Vec<Fact>,
    more_facts: FxHashMap<u32, Vec<Fact>>,
    /// Pupils a system id or number led to before it led to another (or after): their
    /// lookups may not lead to them ([`Identity::settled_by_id`]).
    contested: Vec<bool>,
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
        // Built off the async workers: a second of work that would otherwise hold up what is
        // read at the same time (the state file, `publish::load::preload`).
        let id = tokio::task::spawn_blocking(move || Identity::build(id, batches))
            .await
            .map_err(|e| crate::error::Error::Internal(format!("identity map: {e}")))??;
        tracing::debug!(
            pupils = id.ids.len(),
            ms = started.elapsed().as_millis() as u64,
            query_ms = queried.as_millis() as u64,
            "identity map loaded"
        );
        Ok(id)
    }

    /// The map of the rows of `elev_id` (or of the query on `elev`), applied in order of first
    /// sighting as [`Identity::resolve`] would see them one after the other — but each lookup
    /// made at once by sorting ([`Lookup::of_rows`]) instead of a random insert per row.
    fn build(mut id: Identity, batches: Vec<RecordBatch>) -> Result<Identity> {
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
        // The texts' hashes are made on every core first.
        type Hashes = ([u64; 2], Option<[u64; 2]>, Option<[u64; 2]>);
        let hashes: Vec<Hashes> = crate::par::chunks(order.len(), |part| {
            part.map(|j| {
                let (_, bi, i) = order[j];
                let (ids, _, s, f, _, _) = &columns[bi as usize];
                let i = i as usize;
                (
                    text_hash(ids.value(i)),
                    s.opt(i).map(text_hash),
                    f.opt(i).map(text_hash),
                )
            })
            .collect()
        });
        let rows = order.len();
        // Pupils are numbered in order of first sighting: the rows of one id, sorted together,
        // are of the pupil its first row numbers.
        let mut by_id: Vec<([u64; 2], u32)> = (hashes.iter().enumerate())
            .map(|(j, h)| (h.0, j as u32))
            .collect();
        crate::sort::by_hash(&mut by_id, |r| r.0[0], Ord::cmp);
        let mut first_row = vec![0u32; rows];
        for run in by_id.chunk_by(|a, b| a.0 == b.0) {
            for r in run {
                first_row[r.1 as usize] = run[0].1;
            }
        }
        id.ids.reserve(rows);
        id.facts.reserve(rows);
        let mut pupil = vec![0u32; rows];
        let mut source = vec![0u32; rows];
        // The texts stay in the columns' buffers (`Texts::point`); which buffers of each
        // batch's id, system id and number columns the map keeps.
        let mut kept: Vec<[Kept; 3]> = (0..columns.len()).map(|_| Default::default()).collect();
        for (j, &(_, bi, i)) in order.iter().enumerate() {
            let (ids, k, s, f, first, last) = &columns[bi as usize];
            let kept = &mut kept[bi as usize];
            let i = i as usize;
            pupil[j] = match first_row[j] as usize {
                r if r == j => {
                    let span = id.texts.point(ids, &mut kept[0], i).ok_or_else(|| {
                        crate::error::Error::Internal("elev_id: a row without an id".into())
                    })?;
                    id.ids.push(span);
                    (id.ids.len() - 1) as u32
                }
                r => pupil[r],
            };
            source[j] = id.source(k.value(i));
            let (_, system_hash, fnr_hash) = hashes[j];
            let system_id = Given {
                text: s.opt(i),
                hash: system_hash,
            };
            let fnr = Given {
                text: f.opt(i),
                hash: fnr_hash,
            };
            id.learn_with(
                pupil[j],
                source[j],
                (system_id, fnr),
                (first.value(i), last.value(i)),
                |texts| {
                    let [_, at_system, at_fnr] = kept;
                    (texts.point(s, at_system, i), texts.point(f, at_fnr, i))
                },
            );
        }
        drop(first_row);
        // The lookups, each sorted on a core of its own: id, number, system id per source.
        let number = by_id
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| (run[0].0, pupil[run[0].1 as usize]));
        let number: Vec<([u64; 2], u32)> = number.collect();
        drop(by_id);
        let mut of_rows: Vec<Vec<([u64; 2], u32, u32)>> = vec![Vec::new(); 1 + id.sources.len()];
        for (j, h) in hashes.iter().enumerate() {
            if let Some(f) = h.2 {
                of_rows[0].push((f, j as u32, pupil[j]));
            }
            if let Some(s) = h.1 {
                of_rows[1 + source[j] as usize].push((s, j as u32, pupil[j]));
            }
        }
        drop(hashes);
        let mut made = crate::par::map_owned(of_rows, Lookup::of_rows);
        id.number = Lookup {
            read: Sorted::of(number),
            pointed: HashTable::new(),
        };
        let mut contested = Vec::new();
        for (at, (lookup, taken)) in made.drain(..).enumerate() {
            match at {
                0 => id.by_fnr = lookup,
                s => id.by_system[s - 1] = lookup,
            }
            contested.extend(taken);
        }
        for n in contested {
            id.contest(n, n);
        }
        Ok(id)
    }

    /// The number of a source system already seen.
    fn known_source(&self, kildesystem: &str) -> Option<u32> {
        self.sources
            .iter()
            .position(|s| **s == *kildesystem)
            .map(|i| i as u32)
    }

    /// The number of a source system, added when new.
    fn source(&mut self, kildesystem: &str) -> u32 {
        match self.known_source(kildesystem) {
            Some(i) => i,
            None => {
                self.sources.push(Arc::from(kildesystem));
                self.by_system.push(Lookup::default());
                (self.sources.len() - 1) as u32
            }
        }
    }

    /// A new pupil with this id (its first fact follows in `see`).
    fn add(&mut self, id: &str) -> u32 {
        self.add_hashed(id, text_hash(id))
    }

    /// [`Identity::add`] of an id whose [`text_hash`] is known.
    fn add_hashed(&mut self, id: &str, hash: [u64; 2]) -> u32 {
        let n = self.ids.len() as u32;
        self.number.point(hash, n);
        let span = self.texts.push(id);
        self.ids.push(span);
        n
    }

    /// Records that pupil `n` was seen with these identifiers during `seen` (first, last); the
    /// lookups then lead to `n`. Returns whether this was news.
    fn see(&mut self, n: u32, source: u32, system_id: Given, fnr: Given, seen: (i64, i64)) -> bool {
        if let Some(h) = system_id.hash {
            if let Some(other) = self.by_system[source as usize].point(h, n) {
                self.contest(other, n);
            }
        }
        if let Some(h) = fnr.hash {
            if let Some(other) = self.by_fnr.point(h, n) {
                self.contest(other, n);
            }
        }
        self.learn(n, source, system_id, fnr, seen)
    }

    /// Records pupil `n`'s fact (these identifiers seen during `seen`) without touching the
    /// lookups: [`Identity::see`] less the lookups. Returns whether this was news.
    fn learn(
        &mut self,
        n: u32,
        source: u32,
        system_id: Given,
        fnr: Given,
        seen: (i64, i64),
    ) -> bool {
        self.learn_with(n, source, (system_id, fnr), seen, |texts| {
            (
                system_id.text.map(|t| texts.push(t)),
                fnr.text.map(|t| texts.push(t)),
            )
        })
    }

    /// [`Identity::learn`], a new fact's texts (system id, number) placed by `place`.
    fn learn_with(
        &mut self,
        n: u32,
        source: u32,
        (system_id, fnr): (Given, Given),
        seen: (i64, i64),
        place: impl FnOnce(&mut Texts) -> (Option<Span>, Option<Span>),
    ) -> bool {
        // Most often the pupil's first (only) fact.
        let idx = n as usize;
        if let Some(f) = self
            .facts
            .get_mut(idx)
            .filter(|f| f.is(source, &system_id, &fnr))
        {
            return f.widen(seen);
        }
        if let Some(f) = self
            .more_facts
            .get_mut(&n)
            .and_then(|more| more.iter_mut().find(|f| f.is(source, &system_id, &fnr)))
        {
            return f.widen(seen);
        }
        let (system_span, fnr_span) = place(&mut self.texts);
        let fact = Fact {
            source,
            system_id: system_span,
            fodselsnummer: fnr_span,
            system_hash: system_id.hash,
            fnr_hash: fnr.hash,
            first_seen: seen.0,
            last_seen: seen.1,
        };
        if idx == self.facts.len() {
            self.facts.push(fact);
        } else {
            self.more_facts.entry(n).or_default().push(fact);
        }
        true
    }

    /// The id a pupil gets when nothing known leads to one: a UUID v5 of kommunenummer,
    /// kildesystem and the source key.
    pub fn new_id(kommune: &str, kildesystem: &str, source_key: &str) -> Uuid {
        let name = format!("elev|{kommune}|{kildesystem}|{source_key}");
        uuid_v5(name.as_bytes())
    }

    /// The number of the pupil seen at `as_of` in a snapshot of `kildesystem`; a new pupil with
    /// id `new_id()` when nothing known leads to one.
    pub fn resolve(
        &mut self,
        kildesystem: &str,
        system_id: Option<&str>,
        fnr: Option<&str>,
        new_id: impl FnOnce() -> Uuid,
        as_of: i64,
    ) -> u32 {
        let source = self.source(kildesystem);
        let (system_id, fnr) = (Given::new(system_id), Given::new(fnr));
        let found = system_id
            .hash
            .and_then(|h| self.by_system[source as usize].get(h))
            .or_else(|| fnr.hash.and_then(|h| self.by_fnr.get(h)));
        let n = match found {
            Some(n) => n,
            None => {
                let mut buf = Uuid::encode_buffer();
                let id = new_id().hyphenated().encode_lower(&mut buf);
                match self.number.get(text_hash(id)) {
                    // The id a source key always gets, met again under other identifiers.
                    Some(n) => n,
                    None => self.add(id),
                }
            }
        };
        if self.see(n, source, system_id, fnr, (as_of, as_of)) {
            self.changed = true;
        }
        n
    }

    /// [`Identity::resolve`] of the `n` rows of one snapshot of `kildesystem` taken at `as_of`,
    /// one after the other (`row(i)`: its system id, number and source key, of which a new
    /// pupil's id is made); returns each row's pupil number.
    ///
    /// On a first load (an empty map) a row whose system id, number and new id each occur in
    /// no other row is a new pupil that no other row leads to, and leads to no other: such rows
    /// are numbered and their facts learnt in one pass without a lookup, and their lookups are
    /// made by sorting on every core, as a map read back is (`Identity::build`). The other
    /// rows are resolved one at a time in their places, as ever; their keys are none of the
    /// first rows' keys, so neither kind of row can see the other's (docs/ARCHITECTURE.md,
    /// "Identity").
    pub fn resolve_rows<'a>(
        &mut self,
        (kildesystem, kommune): (&str, &str),
        n: usize,
        row: impl Fn(usize) -> (Option<&'a str>, Option<&'a str>, &'a str) + Sync,
        as_of: i64,
    ) -> Vec<u32> {
        if !self.is_empty() {
            return (0..n)
                .map(|i| {
                    let (system_id, fnr, source_key) = row(i);
                    let new_id = || Identity::new_id(kommune, kildesystem, source_key);
                    self.resolve(kildesystem, system_id, fnr, new_id, as_of)
                })
                .collect();
        }
        /// A row's identifiers hashed, and its new id.
        struct Hashed {
            system: Option<[u64; 2]>,
            fnr: Option<[u64; 2]>,
            id: Uuid,
            id_hash: [u64; 2],
        }
        let hashed: Vec<Hashed> = crate::par::chunks(n, |part| {
            part.map(|i| {
                let (system_id, fnr, source_key) = row(i);
                let id = Identity::new_id(kommune, kildesystem, source_key);
                let mut buf = Uuid::encode_buffer();
                Hashed {
                    system: system_id.map(text_hash),
                    fnr: fnr.map(text_hash),
                    id,
                    id_hash: text_hash(id.hyphenated().encode_lower(&mut buf)),
                }
            })
            .collect()
        });
        // Each kind of key with its rows, sorted by key: which keys are shared, and (the rows
        // learnt without a lookup) the lookups themselves.
        type Of = fn(&Hashed) -> Option<[u64; 2]>;
        let kinds: [Of; 3] = [|h| Some(h.id_hash), |h| h.system, |h| h.fnr];
        let sorted = crate::par::map(&kinds, |of| {
            let mut keys: Vec<([u64; 2], u32)> = (hashed.iter().enumerate())
                .filter_map(|(i, h)| Some((of(h)?, i as u32)))
                .collect();
            crate::sort::by_hash(&mut keys, |k| k.0[0], Ord::cmp);
            keys
        });
        let mut shared = vec![false; n];
        for keys in &sorted {
            for run in keys.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
                for &(_, i) in run {
                    shared[i as usize] = true;
                }
            }
        }
        let source = self.source(kildesystem);
        // About an id, a system id and a number a row.
        self.texts.reserve(n * 96);
        self.ids.reserve(n);
        self.facts.reserve(n);
        let mut pupils = Vec::with_capacity(n);
        for (i, h) in hashed.iter().enumerate() {
            let (system_id, fnr, _) = row(i);
            let pupil = if shared[i] {
                self.resolve(kildesystem, system_id, fnr, || h.id, as_of)
            } else {
                let pupil = self.ids.len() as u32;
                let mut buf = Uuid::encode_buffer();
                let span = self.texts.push(h.id.hyphenated().encode_lower(&mut buf));
                self.ids.push(span);
                let system_id = Given {
                    text: system_id,
                    hash: h.system,
                };
                let fnr = Given {
                    text: fnr,
                    hash: h.fnr,
                };
                self.learn(pupil, source, system_id, fnr, (as_of, as_of));
                self.changed = true;
                pupil
            };
            pupils.push(pupil);
        }
        drop(hashed);
        let made = crate::par::map_owned(sorted, |keys| {
            Sorted::of(
                (keys.into_iter())
                    .filter(|&(_, i)| !shared[i as usize])
                    .map(|(k, i)| (k, pupils[i as usize]))
                    .collect(),
            )
        });
        // In the order of `kinds`.
        let mut made = made.into_iter();
        if let (Some(number), Some(by_system), Some(by_fnr)) =
            (made.next(), made.next(), made.next())
        {
            self.number.read = number;
            self.by_system[source as usize].read = by_system;
            self.by_fnr.read = by_fnr;
        }
        pupils
    }

    /// The pupil `resolve` would find for these identifiers when seeing them again changes
    /// nothing but the pupil's interval: the source is known, the system id (else the number)
    /// leads to pupil `n`, every given identifier already leads to `n`, and `n`'s first fact is
    /// exactly these identifiers. Reads only, so it runs on every core; [`Identity::widen`]
    /// then does what `resolve` would.
    pub fn settled(
        &self,
        kildesystem: &str,
        system_id: Option<&str>,
        fnr: Option<&str>,
    ) -> Option<u32> {
        let source = self.known_source(kildesystem)?;
        let (system_id, fnr) = (Given::new(system_id), Given::new(fnr));
        let by_system = system_id
            .hash
            .map(|h| self.by_system[source as usize].get(h));
        let by_fnr = fnr.hash.map(|h| self.by_fnr.get(h));
        let n = by_system.flatten().or(by_fnr.flatten())?;
        let leads_to_n = |found: Option<Option<u32>>| found.is_none_or(|m| m == Some(n));
        (leads_to_n(by_system)
            && leads_to_n(by_fnr)
            && self.facts.get(n as usize)?.is(source, &system_id, &fnr))
        .then_some(n)
    }

    /// Pupil `n`, [`Identity::settled`], seen again at `as_of`.
    pub fn widen(&mut self, n: u32, as_of: i64) {
        if self.facts[n as usize].widen((as_of, as_of)) {
            self.changed = true;
        }
    }

    /// Marks two pupils that one lookup led to.
    fn contest(&mut self, a: u32, b: u32) {
        let top = a.max(b) as usize + 1;
        if self.contested.len() < top {
            self.contested.resize(top, false);
        }
        self.contested[a as usize] = true;
        self.contested[b as usize] = true;
    }

    /// The pupil with current version `id`, when a record of `kildesystem` whose system id has
    /// [`text_hash`] `system_hash` and that was resolved to it before (a record carried unread,
    /// docs/ARCHITECTURE.md, "Carried records") is settled as [`Identity::settled`] says: the
    /// pupil's first fact is its only one in the source and has that system id, and the system
    /// id and the fact's number lead to the pupil. Returns its number and its number's hash.
    #[cfg(test)]
    pub fn settled_by_id(
        &self,
        kildesystem: &str,
        id: [u64; 2],
        system_hash: u128,
    ) -> Option<(u32, Option<u128>)> {
        self.settled_by_ids(kildesystem, &[(id, system_hash)])
            .pop()
            .flatten()
    }

    /// [`Identity::settled_by_id`] of many records at once, answers in their order.
    #[cfg(test)]
    pub fn settled_by_ids(
        &self,
        kildesystem: &str,
        records: &[([u64; 2], u128)],
    ) -> Vec<Option<(u32, Option<u128>)>> {
        let Some(settling) = self.settling(kildesystem) else {
            return vec![None; records.len()];
        };
        let numbers = settling.numbers(records.len(), |i| records[i].0);
        (numbers.iter().zip(records))
            .map(|(&n, r)| settling.settled(n, r.1))
            .collect()
    }

    /// How records of `kildesystem` carried unread are settled ([`Identity::settled`]);
    /// `None` when the source is not known (none is).
    pub fn settling(&self, kildesystem: &str) -> Option<Settling<'_>> {
        Some(Settling {
            identity: self,
            source: self.known_source(kildesystem)?,
        })
    }

    /// Whether pupil `n` (`u32::MAX`: none) is settled for a record of `source` with this
    /// system id hash (see [`Identity::settled`]).
    fn settled_as(&self, n: u32, source: u32, system_hash: u128) -> Option<(u32, Option<u128>)> {
        // A pupil no lookup was taken from leads to itself by its first fact's identifiers.
        if self.contested.get(n as usize).copied().unwrap_or(false) {
            return None;
        }
        let f = self.facts.get(n as usize)?;
        let sys = [(system_hash >> 64) as u64, system_hash as u64];
        let only = self.more_facts.is_empty()
            || (self.more_facts.get(&n)).is_none_or(|more| more.iter().all(|m| m.source != source));
        (only && f.source == source && f.system_hash == Some(sys))
            .then(|| (n, f.fnr_hash.map(u128_of)))
    }

    /// The pupil a system id of `kildesystem` leads to.
    pub fn by_system_id(&self, kildesystem: &str, system_id: &str) -> Option<u32> {
        let source = self.known_source(kildesystem)?;
        self.by_system[source as usize].get(text_hash(system_id))
    }

    /// The number of pupils known.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The id of pupil `n`.
    pub fn id(&self, n: u32) -> &str {
        self.texts.get(self.ids[n as usize])
    }

    /// Whether no pupil is known yet (a first load).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is a known pupil id.
    pub fn knows(&self, id: &str) -> bool {
        self.number.get(text_hash(id)).is_some()
    }

    /// The rows of `elev_id` when something new was learnt and they are to be written (`None`
    /// otherwise), for [`write_batch`]: made apart from writing them, so that something else can
    /// be made or written meanwhile.
    pub fn batch(&self, ctx: &RunContext) -> Result<Option<RecordBatch>> {
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
        let mut keyed: Vec<(u128, u32, &Fact)> = facts
            .map(|(n, f)| (text_prefix(self.id(n)), n, f))
            .collect();
        let source = |f: &Fact| -> &str { &self.sources[f.source as usize] };
        let text = |s: Option<Span>| s.map(|s| self.texts.get(s));
        // Stable, which merges runs: the pupils read back from `elev_id` are numbered in its
        // order (by id), so all but the day's new pupils are in sorted runs already.
        crate::sort::stable_by(&mut keyed, |(pa, a, fa), (pb, b, fb)| {
            pa.cmp(pb).then_with(|| {
                (
                    self.id(*a),
                    source(fa),
                    text(fa.system_id),
                    text(fa.fodselsnummer),
                )
                    .cmp(&(
                        self.id(*b),
                        source(fb),
                        text(fb.system_id),
                        text(fb.fodselsnummer),
                    ))
            })
        });
        let rows: Vec<(u32, &Fact)> = keyed.into_iter().map(|(_, n, f)| (n, f)).collect();
        let ts = |f: fn(&Fact) -> i64| {
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| f(r.1)).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ) as ArrayRef
        };
        // The columns made on every core, in the schema's order. The ids, system ids and numbers
        // are views of the map's texts where they are (16 bytes a row, where a copy of them was
        // 40 and more, held while the file is written); the writer copies them into the table's
        // layout a slice at a time (`delta::write_files`).
        let buffers = self.texts.buffers();
        let columns = crate::par::map(&[0, 1, 2, 3, 4, 5], |&c| match c {
            0 => (self.texts).views(&buffers, rows.iter().map(|r| Some(self.ids[r.0 as usize]))),
            1 => Ok(Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| source(r.1)),
            )) as ArrayRef),
            2 => (self.texts).views(&buffers, rows.iter().map(|r| r.1.system_id)),
            3 => (self.texts).views(&buffers, rows.iter().map(|r| r.1.fodselsnummer)),
            4 => Ok(ts(|f| f.first_seen)),
            _ => Ok(ts(|f| f.last_seen)),
        });
        let columns = columns.into_iter().collect::<Result<Vec<ArrayRef>>>()?;
        // The table's fields, with the types of the columns made.
        let fields: Vec<arrow::datatypes::Field> = (t.arrow_schema().fields().iter())
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let batch = RecordBatch::try_new(schema, columns)?;
        Ok(Some(batch))
    }
}

/// Writes the rows of `elev_id` made by [`Identity::batch`] over the table. Returns the new
/// version.
pub async fn write_batch(ctx: &RunContext, batch: RecordBatch) -> Result<Option<i64>> {
    crate::delta::write(
        &ctx.pipeline,
        &schema::ELEV_ID,
        vec![batch],
        SaveMode::Overwrite,
        &ctx.run_id,
        "publish",
    )
    .await
}

/// Records of one source carried unread, settled in identity as [`Identity::settled`]
/// says: first their pupils' numbers for all of them at once, then each one's answer, so that
/// the caller makes its own list of answers and no list of them is made here.
pub struct Settling<'i> {
    identity: &'i Identity,
    source: u32,
}

impl Settling<'_> {
    /// The numbers of the pupils whose current versions have the `n` ids `id` gives, in their
    /// order (`u32::MAX`: none). The ids are hashed on every core and looked up in the order of
    /// their hashes, which walks the map's sorted ids from one end to the other instead of
    /// touching them at random.
    pub fn numbers(&self, n: usize, id: impl Fn(usize) -> [u64; 2] + Sync) -> Vec<u32> {
        let mut hashes: Vec<([u64; 2], u32)> = crate::par::chunks(n, |part| {
            part.map(|i| {
                let mut buf = Uuid::encode_buffer();
                let [hi, lo] = id(i);
                let text = Uuid::from_u64_pair(hi, lo)
                    .hyphenated()
                    .encode_lower(&mut buf);
                (text_hash(text), i as u32)
            })
            .collect()
        });
        crate::sort::by_hash(&mut hashes, |h| h.0[0], Ord::cmp);
        let mut numbers = vec![u32::MAX; n];
        for (hash, i) in hashes {
            if let Some(p) = self.identity.number.get(hash) {
                numbers[i as usize] = p;
            }
        }
        numbers
    }

    /// Whether pupil `n` (one of [`Settling::numbers`]) is settled for a record with this system
    /// id hash: its number and its number's hash.
    pub fn settled(&self, n: u32, system_hash: u128) -> Option<(u32, Option<u128>)> {
        self.identity.settled_as(n, self.source, system_hash)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A column of views of the map's texts holds the texts: those read (from string arrays and
    /// from string views, long and short, a column sliced), those learnt, and nulls.
    #[test]
    fn views_of_the_texts_read_and_learnt_are_the_texts() {
        use crate::delta::TextCol;
        use arrow::array::Array;
        let long = |i: usize| format!("{i:04}-a-text-longer-than-twelve-bytes-æøå");
        let utf8 = StringArray::from_iter((0..50).map(|i| (i % 7 != 3).then(|| long(i))));
        let utf8 = TextCol::Utf8(utf8.slice(5, 40));
        let view = StringViewArray::from_iter((0..50).map(|i| match i % 3 {
            0 => Some(long(i + 100)),
            1 => Some(format!("s{i}")),
            _ => None,
        }));
        let view = TextCol::View(view.slice(2, 45));
        let mut texts = Texts::default();
        let mut expected: Vec<Option<String>> = Vec::new();
        let mut spans = Vec::new();
        for (col, n) in [(&utf8, 40), (&view, 45)] {
            let mut kept = Kept::default();
            for i in 0..n {
                spans.push(texts.point(col, &mut kept, i));
                expected.push(col.opt(i).map(str::to_string));
            }
        }
        for i in 0..30 {
            let learnt = if i % 2 == 0 {
                long(i + 200)
            } else {
                format!("n{i}")
            };
            spans.push(Some(texts.push(&learnt)));
            expected.push(Some(learnt));
        }
        spans.push(None);
        expected.push(None);
        let column = texts
            .views(&texts.buffers(), spans.iter().copied())
            .unwrap();
        let column = column.as_any().downcast_ref::<StringViewArray>().unwrap();
        let got: Vec<Option<String>> = column.iter().map(|v| v.map(str::to_string)).collect();
        assert_eq!(got, expected);
        assert!(expected.iter().any(Option::is_none) && expected.len() == 116);
    }

    /// The ids elevflyt has made are UUID v5 of its namespace: the SHA-1 used makes the same,
    /// for names of one and of several SHA-1 blocks, and for the ones the code builds.
    #[test]
    fn ids_are_the_uuid_v5_the_uuid_crate_makes() {
        let long = "x".repeat(200);
        let mut names = vec![
            String::new(),
            "elev|4601|vigilo|p1".to_string(),
            "elevforhold|vigilo|6f1c2b4e-9a7d-4c1e-8b3a-5d2e7f901a44|97400001".to_string(),
            "elev|4601|visma|Åse Ærlig".to_string(),
            long,
        ];
        names.extend((0..200).map(|i| "é".repeat(i)));
        for name in &names {
            let made = uuid_v5(name.as_bytes());
            assert_eq!(made, Uuid::new_v5(&NAMESPACE, name.as_bytes()), "{name}");
            assert_eq!(made.get_version_num(), 5);
        }
        assert_eq!(
            Identity::new_id("4601", "vigilo", "p1"),
            Uuid::new_v5(&NAMESPACE, b"elev|4601|vigilo|p1")
        );
    }

    /// `settled` answers only when resolving again would change nothing but the interval, and
    /// then names the pupil `resolve` finds; `widen` records the sighting as `resolve` does.
    #[test]
    fn a_pupil_is_settled_only_when_its_identifiers_lead_to_its_own_fact() {
        let mut id = Identity::default();
        fn new(k: &'static str) -> impl FnOnce() -> uuid::Uuid {
            move || Identity::new_id("4601", "vis", k)
        }
        let a = id.resolve("vis", Some("s1"), Some("01010100001"), new("s1"), 10);
        let b = id.resolve("vis", Some("s2"), Some("02020200002"), new("s2"), 10);
        assert_ne!(a, b);
        assert_eq!(id.settled("vis", Some("s1"), Some("01010100001")), Some(a));
        assert_eq!(id.settled("vis", Some("s2"), Some("02020200002")), Some(b));
        // Another number, a number without its system id, another source, a new pupil: the
        // fact or a lookup would change, so `resolve` must decide.
        assert_eq!(id.settled("vis", Some("s1"), Some("09090900009")), None);
        assert_eq!(id.settled("vis", None, Some("01010100001")), None);
        assert_eq!(id.settled("other", Some("s1"), Some("01010100001")), None);
        assert_eq!(id.settled("vis", Some("s3"), None), None);
        // Pupil b takes over a's number: a's number no longer leads to a.
        assert_eq!(
            id.resolve("vis", Some("s2"), Some("01010100001"), new("s2"), 11),
            b
        );
        assert_eq!(id.settled("vis", Some("s1"), Some("01010100001")), None);
        // Widening is what resolving a settled pupil does: the interval grows, the map changed.
        id.changed = false;
        let n = id.settled("vis", Some("s2"), Some("02020200002")).unwrap();
        id.widen(n, 12);
        assert!(id.changed);
        let fact = &id.facts[n as usize];
        assert_eq!((fact.first_seen, fact.last_seen), (10, 12));
        id.changed = false;
        id.widen(n, 12);
        assert!(!id.changed);
    }

    /// A pupil carried unread is found by its id and is settled only while no lookup of its
    /// was taken by another pupil and its one fact in the source has its system id.
    #[test]
    fn a_pupil_carried_unread_is_settled_by_its_id_as_by_its_identifiers() {
        let mut id = Identity::default();
        fn new(k: &'static str) -> impl FnOnce() -> uuid::Uuid {
            move || Identity::new_id("4601", "vis", k)
        }
        fn key(id: &Identity, n: u32) -> [u64; 2] {
            match crate::publish::scd2::Key::of(id.id(n)) {
                crate::publish::scd2::Key::Id(v) => v,
                crate::publish::scd2::Key::Text(_) => unreachable!(),
            }
        }
        let sys = |s: &str| xxhash_rust::xxh3::xxh3_128(s.as_bytes());
        let a = id.resolve("vis", Some("s1"), Some("01010100001"), new("s1"), 10);
        let b = id.resolve("vis", Some("s2"), Some("02020200002"), new("s2"), 10);
        let c = id.resolve("vis", Some("s3"), None, new("s3"), 10);
        let (ka, kb, kc) = (key(&id, a), key(&id, b), key(&id, c));
        assert_eq!(
            id.settled_by_id("vis", ka, sys("s1")),
            Some((a, Some(sys("01010100001"))))
        );
        assert_eq!(id.settled_by_id("vis", kc, sys("s3")), Some((c, None)));
        // Another system id, another source, an unknown id.
        assert_eq!(id.settled_by_id("vis", ka, sys("s2")), None);
        assert_eq!(id.settled_by_id("other", ka, sys("s1")), None);
        assert_eq!(id.settled_by_id("vis", [1, 2], sys("s1")), None);
        // Pupil b takes over a's number: neither is settled by id any more (as `settled` says
        // of a).
        id.resolve("vis", Some("s2"), Some("01010100001"), new("s2"), 11);
        assert_eq!(id.settled("vis", Some("s1"), Some("01010100001")), None);
        assert_eq!(id.settled_by_id("vis", ka, sys("s1")), None);
        assert_eq!(id.settled_by_id("vis", kb, sys("s2")), None);
        // A pupil with a second fact in the source: which one its record is cannot be told.
        id.resolve("vis", Some("s3"), Some("03030300003"), new("s3"), 12);
        assert_eq!(id.settled_by_id("vis", kc, sys("s3")), None);
    }

    /// The map as `build` made it before its lookups were sorted: each row resolved one after
    /// the other, every identifier pointed by [`Lookup::point`].
    fn one_row_at_a_time(batches: &[RecordBatch]) -> Identity {
        let mut id = Identity::default();
        let mut order = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            let first = crate::delta::micros(b, "first_seen").unwrap();
            order.extend((0..b.num_rows()).map(|i| (first.value(i), bi, i)));
        }
        order.sort_unstable();
        for (_, bi, i) in order {
            let b = &batches[bi];
            let text = |c| crate::delta::text(b, c).unwrap();
            let micros = |c| crate::delta::micros(b, c).unwrap().value(i);
            let (ids, k, s, f) = (
                text("id"),
                text("kildesystem"),
                text("system_id"),
                text("fodselsnummer"),
            );
            let h = text_hash(ids.value(i));
            let n = match id.number.get(h) {
                Some(n) => n,
                None => id.add_hashed(ids.value(i), h),
            };
            let source = id.source(k.value(i));
            let seen = (micros("first_seen"), micros("last_seen"));
            id.see(n, source, Given::new(s.opt(i)), Given::new(f.opt(i)), seen);
        }
        id
    }

    /// Everything a map answers for these texts, and what it holds.
    fn answers(id: &Identity, texts: &[String]) -> Vec<String> {
        let fact = |f: &Fact| {
            let t = |s: Option<Span>| s.map(|s| id.texts.get(s).to_string());
            format!(
                "{} {:?} {:?} {} {}",
                id.sources[f.source as usize],
                t(f.system_id),
                t(f.fodselsnummer),
                f.first_seen,
                f.last_seen
            )
        };
        let mut out: Vec<String> = (0..id.len() as u32)
            .map(|n| {
                let mut more: Vec<String> = id
                    .more_facts
                    .get(&n)
                    .into_iter()
                    .flatten()
                    .map(fact)
                    .collect();
                more.sort();
                let contested = id.contested.get(n as usize).copied().unwrap_or(false);
                format!(
                    "{n} {} {} {more:?} {contested}",
                    id.id(n),
                    fact(&id.facts[n as usize])
                )
            })
            .collect();
        for t in texts {
            let h = text_hash(t);
            let by_system: Vec<_> = id.by_system.iter().map(|l| l.get(h)).collect();
            out.push(format!(
                "{t} {:?} {:?} {by_system:?}",
                id.number.get(h),
                id.by_fnr.get(h)
            ));
        }
        out
    }

    /// A row of `elev_id`: id, source, system id, number, first and last seen.
    type Row = (
        String,
        &'static str,
        Option<String>,
        Option<String>,
        i64,
        i64,
    );

    /// Lookups made by sorting the rows lead where pointing them one at a time led, mark the
    /// same pupils contested, and go on taking new identifiers as before.
    #[test]
    fn a_map_read_back_is_the_map_its_rows_make_one_at_a_time() {
        use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::DataType;
        // A small generator: ids met again (further facts), system ids and numbers shared by
        // pupils (contested lookups), missing identifiers, two sources, equal first sightings.
        let mut x: u64 = 42;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        let mut rows = Vec::new();
        for _ in 0..3000 {
            let id = Identity::new_id("4601", "x", &next(2000).to_string()).to_string();
            let source = ["vis", "ist"][next(2) as usize];
            let system = (next(20) > 0).then(|| format!("s{}", next(2500)));
            let fnr = (next(10) > 0).then(|| format!("{:011}", next(2600)));
            let first = next(40) as i64;
            rows.push((id, source, system, fnr, first, first + next(5) as i64));
        }
        let batch = |rows: &[Row]| {
            let text = |f: &dyn Fn(&Row) -> Option<String>| {
                Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>())) as ArrayRef
            };
            let ts = |f: fn(&Row) -> i64| {
                Arc::new(
                    TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ) as ArrayRef
            };
            RecordBatch::try_new(
                schema::ELEV_ID.arrow_schema(),
                vec![
                    text(&|r| Some(r.0.clone())),
                    text(&|r| Some(r.1.to_string())),
                    text(&|r| r.2.clone()),
                    text(&|r| r.3.clone()),
                    ts(|r| r.4),
                    ts(|r| r.5),
                ],
            )
            .unwrap()
        };
        let batches = vec![batch(&rows[..1700]), batch(&rows[1700..])];
        let mut texts: Vec<String> = rows
            .iter()
            .flat_map(|r| [Some(r.0.clone()), r.2.clone(), r.3.clone()])
            .flatten()
            .collect();
        texts.extend(["s999999".to_string(), "99999999999".to_string()]);
        let mut sorted = Identity::build(Identity::default(), batches.clone()).unwrap();
        let mut one_at_a_time = one_row_at_a_time(&batches);
        let before = answers(&one_at_a_time, &texts);
        assert!(
            before.iter().any(|a| a.ends_with(" true")),
            "some pupil is contested"
        );
        assert!(
            before.iter().any(|a| a.ends_with(" false")),
            "some pupil is not"
        );
        assert!(
            !one_at_a_time.more_facts.is_empty(),
            "some pupil has further facts"
        );
        assert_eq!(answers(&sorted, &texts), before);
        // Read back as string views, as the table reader gives them: the short texts (system
        // ids, numbers) lie in their views, the ids in data buffers; the map points at both.
        let views: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let schema = b.schema();
                let columns = schema.fields().iter().zip(b.columns()).map(|(f, c)| {
                    let c = match c.data_type() {
                        DataType::Utf8 => arrow::compute::cast(c, &DataType::Utf8View).unwrap(),
                        _ => c.clone(),
                    };
                    (f.name().clone(), c)
                });
                RecordBatch::try_from_iter(columns).unwrap()
            })
            .collect();
        assert!(matches!(
            crate::delta::text(&views[0], "id").unwrap(),
            crate::delta::TextCol::View(_)
        ));
        let mut viewed = Identity::build(Identity::default(), views).unwrap();
        assert_eq!(answers(&viewed, &texts), before);
        // New sightings: a known system id with a new number, a known number under a new
        // system id, a new pupil.
        for id in [&mut sorted, &mut one_at_a_time, &mut viewed] {
            let new = |k: &'static str| move || Identity::new_id("4601", "vis", k);
            id.resolve("vis", Some("s7"), Some("99999999999"), new("s7"), 50);
            id.resolve(
                "vis",
                Some("s999999"),
                Some(&format!("{:011}", 7)),
                new("s999999"),
                50,
            );
            id.resolve("ist", Some("new"), None, new("new"), 50);
        }
        texts.push("new".to_string());
        assert_eq!(answers(&sorted, &texts), answers(&one_at_a_time, &texts));
        assert_eq!(answers(&viewed, &texts), answers(&one_at_a_time, &texts));
    }

    /// A first load's rows resolved at once (most learnt without a lookup) make the map that
    /// resolving them one after the other makes: the same numbers, facts, contested pupils and
    /// lookups, also where rows share a system id, a number or a source key; and the map goes
    /// on resolving as before.
    #[test]
    fn a_first_loads_rows_resolved_at_once_make_the_map_one_at_a_time_makes() {
        let mut x: u64 = 7;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        // Mostly rows of their own; some share a system id, a number or a source key, some
        // lack one; in a large snapshot the shared ones are few, as here.
        let rows: Vec<(Option<String>, Option<String>, String)> = (0..4000u64)
            .map(|i| {
                let shared = next(12) == 0;
                let system = (next(30) > 0)
                    .then(|| format!("s{}", if shared { next(50) } else { 1000 + i }));
                let fnr = (next(10) > 0)
                    .then(|| format!("{:011}", if next(12) == 0 { next(50) } else { 1000 + i }));
                let key = if next(60) == 0 {
                    format!("k{}", next(30))
                } else {
                    format!("k{}", 1000 + i)
                };
                (system, fnr, key)
            })
            .collect();
        let row = |i: usize| {
            let r = &rows[i];
            (r.0.as_deref(), r.1.as_deref(), r.2.as_str())
        };
        let mut at_once = Identity::default();
        let pupils = at_once.resolve_rows(("vis", "4601"), rows.len(), row, 10);
        let mut one_at_a_time = Identity::default();
        let expected: Vec<u32> = (0..rows.len())
            .map(|i| {
                let (s, f, k) = row(i);
                one_at_a_time.resolve("vis", s, f, || Identity::new_id("4601", "vis", k), 10)
            })
            .collect();
        assert_eq!(pupils, expected);
        assert!(
            one_at_a_time.len() < rows.len() && one_at_a_time.len() > rows.len() * 3 / 4,
            "some rows lead to a pupil met before, most do not"
        );
        let mut texts: Vec<String> = rows
            .iter()
            .flat_map(|r| [r.0.clone(), r.1.clone(), Some(r.2.clone())])
            .flatten()
            .collect();
        texts.extend((0..one_at_a_time.len() as u32).map(|n| one_at_a_time.id(n).to_string()));
        let before = answers(&one_at_a_time, &texts);
        assert!(
            before.iter().any(|a| a.ends_with(" true")),
            "some pupil is contested"
        );
        assert_eq!(answers(&at_once, &texts), before);
        assert!(at_once.changed);
        // A next day, resolved one at a time in both.
        for id in [&mut at_once, &mut one_at_a_time] {
            let later = [
                (Some("s1003"), Some("99999999999"), "k1003"),
                (None, Some("00000001005"), "x"),
            ];
            let got = id.resolve_rows(("vis", "4601"), later.len(), |i| later[i], 11);
            texts.push(id.id(got[1]).to_string());
        }
        assert_eq!(answers(&at_once, &texts), answers(&one_at_a_time, &texts));
    }

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
