//! The SCD2 engine: applies full snapshots, in as-of order, to the current rows of one table and
//! yields what to change — which current versions to close (with their `valid_to`) and which new
//! versions to insert. Rows are compared by a hash of their tracked columns, so only the key,
//! the hash and the interval of current rows are needed in memory.
//!
//! Not here: reading or writing Delta (load.rs, commit.rs), identity resolution (identity.rs),
//! the row hash (row_hash.rs).

use std::num::NonZeroU32;
use std::sync::Arc;

use super::row_hash::RowHash;
use crate::carried::Hash128;

use rustc_hash::{FxHashMap, FxHashSet};
use tracing::warn;

/// A key as the engine holds it: an id elevflyt made (a UUID in its canonical lower-case text)
/// as its 128 bits — no allocation, one-word hashing for the millions of pupils and
/// elevforhold — and any other key (a school number) as its text. Equal keys are equal texts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Id([u64; 2]),
    Text(Arc<str>),
}

impl Key {
    pub fn of(text: &str) -> Key {
        match canonical_uuid(text) {
            Some(v) => Key::Id([(v >> 64) as u64, v as u64]),
            None => Key::Text(Arc::from(text)),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Id([hi, lo]) => {
                let v = (*hi as u128) << 64 | *lo as u128;
                let mut buf = uuid::Uuid::encode_buffer();
                f.write_str(uuid::Uuid::from_u128(v).hyphenated().encode_lower(&mut buf))
            }
            Key::Text(t) => f.write_str(t),
        }
    }
}

/// The 128 bits of a UUID written as `8-4-4-4-12` lower-case hex digits, the only text that
/// renders back to itself; anything else (upper case, braces, no hyphens) is `None`.
fn canonical_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        let d = match (i, c) {
            (8 | 13 | 18 | 23, b'-') => continue,
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9') => c - b'0',
            (_, b'a'..=b'f') => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | d as u128;
    }
    Some(v)
}

/// A source name or school number as the engine holds it: a number for the text in its table of
/// texts (they repeat on every row: four bytes per row, not a pointer of sixteen). Texts of one
/// engine only; [`Scd2::text`] gives the text back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Text(NonZeroU32);

impl Text {
    /// Its place in [`Scd2::texts`], from 0.
    pub fn position(self) -> u32 {
        self.0.get() - 1
    }
}

/// The texts of one engine, each held once; a text's [`Text`] is its place in the set.
#[derive(Debug, Default)]
struct Texts {
    set: indexmap::IndexSet<Arc<str>, rustc_hash::FxBuildHasher>,
    /// Rows come grouped (one source, pupils school by school), and a row interns its source
    /// and then its school: the two previous ones are tried first.
    recent: [Option<Text>; 2],
}

impl Texts {
    fn shared(&self, t: Text) -> &Arc<str> {
        &self.set[t.position() as usize]
    }

    fn intern(&mut self, s: &str) -> Text {
        if let Some(hit) = self
            .recent
            .iter()
            .flatten()
            .find(|t| **self.shared(**t) == *s)
        {
            return *hit;
        }
        let place = match self.set.get_index_of(s) {
            Some(i) => i,
            None => self.set.insert_full(Arc::from(s)).0,
        };
        // More than 4 billion distinct sources and schools cannot be held in memory long
        // before this would overflow.
        let t = Text(
            NonZeroU32::new(u32::try_from(place + 1).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MAX),
        );
        self.recent = [Some(t), self.recent[0]];
        t
    }
}

/// A current version of a key: 72 bytes, held for every current key of a table (a million
/// pupils and as many elevforhold), so kept small — the hash as a [`Hash128`] (two words: no
/// 16-byte alignment), texts as [`Text`] numbers, the origin and the snapshot mark as 32 bits.
#[derive(Debug, Clone)]
pub struct Current {
    hash: Hash128,
    pub valid_from: i64,
    /// A hash of the staged row this version was made from (its source, source key and every
    /// staged field; `0` when not known, e.g. read from the tables), by which an unchanged row
    /// is carried forward without being staged again (docs/ARCHITECTURE.md, "Carried rows").
    pub staged: u64,
    pub parent: Option<Key>,
    /// Scope attributes, used for deletions.
    pub kildesystem: Option<Text>,
    pub skolenummer: Option<Text>,
    /// [`STORED`]: already in the table; otherwise inserted by this run, this index into
    /// `Scd2::inserts`.
    origin: u32,
    /// The last snapshot (number of `apply` calls) that had this key.
    seen: u32,
}

const STORED: u32 = u32::MAX;

impl Current {
    pub fn hash(&self) -> RowHash {
        self.hash.get()
    }

    fn set_hash(&mut self, h: RowHash) {
        self.hash = h.into();
    }

    /// The insert of this run that made this version, if it is new.
    fn new_insert(&self) -> Option<usize> {
        (self.origin != STORED).then_some(self.origin as usize)
    }
}

/// A version this run inserts: row `row` of prepared batch `batch`. 80 bytes, one for every
/// row of a first load (two million at 1M pupils), so kept small like [`Current`]: the hash as a
/// [`Hash128`], the source as a [`Text`] number, the places as 32 bits.
#[derive(Debug, Clone)]
pub struct Insert {
    pub key: Key,
    /// The source system ([`Scd2::text`] gives its name).
    pub kildesystem: Option<Text>,
    hash: Hash128,
    pub valid_from: i64,
    pub valid_to: Option<i64>,
    pub batch: u32,
    pub row: u32,
    pub removed: bool,
}

impl Insert {
    pub fn hash(&self) -> RowHash {
        self.hash.get()
    }

    fn set_hash(&mut self, h: RowHash) {
        self.hash = h.into();
    }
}

/// A batch or row index as an insert holds it. No batch or row count reaches 4 billion in
/// memory; `u32::MAX` stands for any that would.
fn place(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// A stored current version this run closes.
#[derive(Debug, Clone)]
pub struct Close {
    pub key: Key,
    pub valid_from: i64,
    pub valid_to: i64,
}

/// Which keys of the state a snapshot covers, for closing absent keys.
pub enum Scope<'a> {
    /// Keys of this source system.
    Source(&'a str),
    /// Keys of this source system at this school.
    School(&'a str, &'a str),
    /// Absence closes nothing.
    None,
}

/// A scope with its values interned: covering is a comparison of numbers per key.
enum Interned {
    Source(Text),
    School(Text, Text),
    None,
}

impl Interned {
    fn covers(&self, c: &Current) -> bool {
        match *self {
            Interned::Source(k) => c.kildesystem == Some(k),
            Interned::School(k, s) => c.kildesystem == Some(k) && c.skolenummer == Some(s),
            Interned::None => false,
        }
    }
}

/// The current versions by key: the entries in one vector, the hash table holding only their
/// positions (a million keys: about 120 MB instead of the 300 MB of a map of 144-byte entries at
/// its load factor; docs/ARCHITECTURE.md, "History (SCD2)"). Order carries no meaning (a
/// closed key's place is taken by the last one).
pub type State = indexmap::IndexMap<Key, Current, rustc_hash::FxBuildHasher>;

#[derive(Debug, Default)]
pub struct Scd2 {
    pub state: State,
    pub closes: Vec<Close>,
    pub inserts: Vec<Insert>,
    /// Keys closed because they were absent from a snapshot, per snapshot call.
    pub last_absent: Vec<Key>,
    /// Keys of the last snapshot's scope that were current before it: the ones it still had
    /// and the ones it closed for absence (what the mass-change guard measures against).
    pub last_prior: usize,
    /// Parent key (e.g. elev_id of an elevforhold) of every key closed in this run.
    pub parents_of_closed: FxHashMap<Key, Key>,
    pub late_rows_skipped: usize,
    /// Carried keys that were not current when their snapshot was applied (must stay 0).
    pub carried_missing: usize,
    /// Keys whose current version was kept with another staged-row hash (the state file's
    /// change names them; docs/ARCHITECTURE.md, "The current state").
    pub restaged: Vec<Key>,
    /// Source systems and school numbers repeat on every row: one copy of each.
    texts: Texts,
    /// Snapshots applied so far.
    snapshots: u32,
}

/// A row of a snapshot, ready to apply.
#[derive(Clone)]
pub struct SnapshotRow<'a> {
    pub key: &'a str,
    pub hash: RowHash,
    pub kildesystem: Option<&'a str>,
    pub skolenummer: Option<&'a str>,
    pub parent: Option<&'a str>,
    /// The hash of the staged row (`0`: not known).
    pub staged: u64,
}

/// Where a new version of a row comes from: what [`NewVersion::insert`] needs besides the row.
struct NewVersion {
    batch: usize,
    row: usize,
    as_of: i64,
    snapshot: u32,
}

impl NewVersion {
    /// Records the insert of row `r` as a new version of `key` and returns its current version
    /// (the engine's texts and inserts taken apart from its state, which the caller holds).
    fn insert(
        self,
        texts: &mut Texts,
        inserts: &mut Vec<Insert>,
        key: Key,
        r: &SnapshotRow<'_>,
    ) -> Current {
        let kildesystem = r.kildesystem.map(|s| texts.intern(s));
        let skolenummer = r.skolenummer.map(|s| texts.intern(s));
        inserts.push(Insert {
            key,
            kildesystem,
            hash: r.hash.into(),
            valid_from: self.as_of,
            valid_to: None,
            batch: place(self.batch),
            row: place(self.row),
            removed: false,
        });
        // More than 4 billion inserts in one run cannot be held in memory long before this.
        let origin = u32::try_from(inserts.len() - 1).unwrap_or(STORED - 1);
        Current {
            hash: r.hash.into(),
            valid_from: self.as_of,
            staged: r.staged,
            parent: r.parent.map(Key::of),
            kildesystem,
            skolenummer,
            origin,
            seen: self.snapshot,
        }
    }
}

impl Scd2 {
    /// The number of a source name or school number in this engine.
    pub fn intern(&mut self, s: &str) -> Text {
        self.texts.intern(s)
    }

    /// The text of a number of this engine.
    pub fn text(&self, t: Text) -> &str {
        self.texts.shared(t)
    }

    /// Every text of this engine, in the order of [`Text::position`].
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.texts.set.iter().map(|t| &**t)
    }

    pub fn load_current(
        &mut self,
        key: &str,
        hash: RowHash,
        valid_from: i64,
        kildesystem: Option<&str>,
        skolenummer: Option<&str>,
        parent: Option<&str>,
    ) {
        self.load_entry(
            Key::of(key),
            hash,
            valid_from,
            kildesystem,
            skolenummer,
            parent.map(Key::of),
            0,
        );
    }

    /// A stored current version with its key and parent already as keys (the state file).
    #[allow(clippy::too_many_arguments)]
    pub fn load_entry(
        &mut self,
        key: Key,
        hash: RowHash,
        valid_from: i64,
        kildesystem: Option<&str>,
        skolenummer: Option<&str>,
        parent: Option<Key>,
        staged: u64,
    ) {
        let kildesystem = kildesystem.map(|s| self.intern(s));
        let skolenummer = skolenummer.map(|s| self.intern(s));
        self.load_interned(
            key,
            hash,
            valid_from,
            kildesystem,
            skolenummer,
            parent,
            staged,
        );
    }

    /// [`Scd2::load_entry`] with the texts already numbers of this engine (the state file).
    #[allow(clippy::too_many_arguments)]
    pub fn load_interned(
        &mut self,
        key: Key,
        hash: RowHash,
        valid_from: i64,
        kildesystem: Option<Text>,
        skolenummer: Option<Text>,
        parent: Option<Key>,
        staged: u64,
    ) {
        let current = Current {
            hash: hash.into(),
            valid_from,
            staged,
            parent,
            kildesystem,
            skolenummer,
            origin: STORED,
            seen: 0,
        };
        self.state.insert(key, current);
    }

    fn close(&mut self, key: &Key, at: i64) {
        let Some((key, cur)) = self.state.swap_remove_entry(key) else {
            return;
        };
        if let Some(p) = &cur.parent {
            self.parents_of_closed.insert(key.clone(), p.clone());
        }
        match cur.new_insert() {
            None => self.closes.push(Close {
                key,
                valid_from: cur.valid_from,
                valid_to: at,
            }),
            Some(i) if self.inserts[i].valid_from == at => self.inserts[i].removed = true,
            Some(i) => self.inserts[i].valid_to = Some(at),
        }
    }

    /// Applies one full snapshot taken at `as_of`. Rows of `batch` (an index into the caller's
    /// prepared batches) are given in order; `scope` says which absent keys it closes.
    #[cfg(test)]
    pub fn apply(&mut self, batch: usize, as_of: i64, rows: &[SnapshotRow<'_>], scope: Scope<'_>) {
        self.apply_with(batch, as_of, rows, &[], scope);
    }

    /// [`Scd2::apply_each`] of rows already listed.
    #[cfg(test)]
    pub fn apply_with(
        &mut self,
        batch: usize,
        as_of: i64,
        rows: &[SnapshotRow<'_>],
        carried: &[Key],
        scope: Scope<'_>,
    ) {
        let row_at = |i: usize| rows[i].clone();
        self.apply_each(batch, as_of, rows.len(), row_at, carried, scope);
    }

    /// Applies one full snapshot taken at `as_of`, whose rows come from `batch` (an index into
    /// the caller's prepared batches) in order; `scope` says which absent keys it closes. Its
    /// unchanged rows may have been carried forward: `carried` are the keys of rows equal to
    /// their current version, present without a row. A carried key that is not current is
    /// counted in `carried_missing` (the caller refuses the run).
    ///
    /// The snapshot has `n` rows; `row_at(i)` makes row `i` when it is applied. A first load's
    /// million rows are then not listed beside the batch they are read from (88 MB a table, in
    /// fresh pages; docs/ARCHITECTURE.md, "History (SCD2)").
    pub fn apply_each<'r>(
        &mut self,
        batch: usize,
        as_of: i64,
        n: usize,
        row_at: impl Fn(usize) -> SnapshotRow<'r>,
        carried: &[Key],
        scope: Scope<'_>,
    ) {
        // Keys present in this snapshot are marked with its number (no set of present keys).
        self.snapshots += 1;
        let snapshot = self.snapshots;
        let mut prior = 0;
        for key in carried {
            match self.state.get_mut(key) {
                Some(cur) => {
                    if cur.seen != snapshot {
                        prior += 1;
                    }
                    cur.seen = snapshot;
                }
                None => self.carried_missing += 1,
            }
        }
        let scope = match scope {
            Scope::Source(k) => Interned::Source(self.intern(k)),
            Scope::School(k, s) => Interned::School(self.intern(k), self.intern(s)),
            Scope::None => Interned::None,
        };
        // Grow once, not by doubling (each doubling touches fresh memory).
        if self.state.is_empty() {
            self.inserts.reserve(n);
        }
        self.state.reserve(n.saturating_sub(self.state.len()));
        for row in 0..n {
            let r = &row_at(row);
            // One probe of the table per row: a new key is inserted where the lookup found
            // its place (on a first load every row is one).
            let mut o = match self.state.entry(Key::of(r.key)) {
                indexmap::map::Entry::Vacant(v) => {
                    let new = NewVersion {
                        batch,
                        row,
                        as_of,
                        snapshot,
                    };
                    let key = v.key().clone();
                    v.insert(new.insert(&mut self.texts, &mut self.inserts, key, r));
                    continue;
                }
                indexmap::map::Entry::Occupied(o) => o,
            };
            let cur = o.get_mut();
            if cur.seen != snapshot {
                prior += 1;
            }
            if cur.hash() == r.hash {
                cur.seen = snapshot;
                if cur.staged != r.staged {
                    cur.staged = r.staged;
                    self.restaged.push(o.key().clone());
                }
                continue;
            }
            if cur.valid_from > as_of {
                // Placing older snapshots inside history is not supported yet: keep the newer
                // state rather than corrupt it.
                cur.seen = snapshot;
                self.late_rows_skipped += 1;
                continue;
            }
            if cur.valid_from == as_of {
                cur.seen = snapshot;
                if let Some(i) = cur.new_insert() {
                    // Same as-of twice in one run (two files of one day): the later wins.
                    cur.set_hash(r.hash);
                    cur.staged = r.staged;
                    let kildesystem = r.kildesystem.map(|s| self.texts.intern(s));
                    let ins = &mut self.inserts[i];
                    ins.batch = place(batch);
                    ins.row = place(row);
                    ins.set_hash(r.hash);
                    ins.valid_to = None;
                    ins.removed = false;
                    ins.kildesystem = kildesystem;
                } else {
                    self.late_rows_skipped += 1;
                }
                continue;
            }
            // Changed: the current version is closed and a new one takes its place.
            let key = o.key().clone();
            self.close(&key, as_of);
            let new = NewVersion {
                batch,
                row,
                as_of,
                snapshot,
            };
            let current = new.insert(&mut self.texts, &mut self.inserts, key.clone(), r);
            self.state.insert(key, current);
        }
        let absent: Vec<Key> = self
            .state
            .iter()
            .filter(|(_, c)| c.seen != snapshot && c.valid_from < as_of && scope.covers(c))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &absent {
            self.close(k, as_of);
        }
        if self.late_rows_skipped > 0 {
            warn!(
                rows = self.late_rows_skipped,
                "rows of a snapshot older than the stored history were skipped"
            );
        }
        self.last_prior = prior + absent.len();
        self.last_absent = absent;
    }

    /// Closes `key` at `as_of` (used for deletions derived from other tables).
    pub fn close_key(&mut self, key: &Key, as_of: i64) {
        if self.state.get(key).is_some_and(|c| c.valid_from < as_of) {
            self.close(key, as_of);
        }
    }

    /// Every key whose current version this run may have changed: closed, inserted or
    /// restaged (a key may come more than once). The others are as they were loaded.
    pub fn touched(&self) -> impl Iterator<Item = &Key> {
        (self.closes.iter().map(|c| &c.key))
            .chain(self.inserts.iter().map(|i| &i.key))
            .chain(&self.restaged)
    }

    pub fn live_inserts(&self) -> impl Iterator<Item = &Insert> {
        self.inserts.iter().filter(|i| !i.removed)
    }

    pub fn has_changes(&self) -> bool {
        !self.closes.is_empty() || self.live_inserts().next().is_some()
    }

    /// Checks the SCD2 invariants on every key this run touches: the versions of a key (stored
    /// ones being closed, new ones) have non-empty, non-overlapping intervals and at most one is
    /// open. Untouched keys keep their stored, already checked history. Returns the first
    /// violation, naming the key.
    pub fn violation(&self) -> Option<String> {
        type Version = (i64, Option<i64>);
        // A key with one new, open version that is its current row (every key of a first load)
        // can only break the rules by an empty interval. The others — keys with a stored version
        // being closed, with several versions in this run, or any other state — are checked
        // version by version below.
        let mut involved: FxHashSet<&Key> = FxHashSet::default();
        involved.extend(self.closes.iter().map(|c| &c.key));
        for (idx, ins) in self.inserts.iter().enumerate() {
            if ins.removed {
                continue;
            }
            let alone = ins.valid_to.is_none()
                && self.state.get(&ins.key).and_then(Current::new_insert) == Some(idx);
            if !alone {
                involved.insert(&ins.key);
            }
        }
        if involved.is_empty() {
            return None;
        }
        // Most keys have one version: a list only for those with more.
        enum Versions {
            One(Version),
            Many(Vec<Version>),
        }
        let mut per_key: FxHashMap<&Key, Versions> = FxHashMap::default();
        per_key.reserve(involved.len());
        let versions = self
            .closes
            .iter()
            .map(|c| (&c.key, (c.valid_from, Some(c.valid_to))))
            .chain(
                self.live_inserts()
                    .filter(|i| involved.contains(&i.key))
                    .map(|i| (&i.key, (i.valid_from, i.valid_to))),
            );
        for (key, v) in versions {
            match per_key.get_mut(key) {
                None => {
                    per_key.insert(key, Versions::One(v));
                }
                Some(Versions::Many(list)) => list.push(v),
                Some(one) => {
                    if let Versions::One(first) = one {
                        *one = Versions::Many(vec![*first, v]);
                    }
                }
            }
        }
        for (key, versions) in per_key {
            let stored = self.state.get(key).filter(|cur| cur.new_insert().is_none());
            let mut versions = match versions {
                // One version and no stored current one: only its interval can be wrong.
                Versions::One((from, to)) if stored.is_none() => {
                    if to.is_some_and(|to| to <= from) {
                        return Some(format!("key {key}: empty interval starting {from}"));
                    }
                    continue;
                }
                Versions::One(v) => vec![v],
                Versions::Many(list) => list,
            };
            if let Some(cur) = stored {
                versions.push((cur.valid_from, None));
            }
            versions.sort();
            let open = versions.iter().filter(|v| v.1.is_none()).count();
            if open > 1 {
                return Some(format!("key {key} would have {open} current versions"));
            }
            for w in versions.windows(2) {
                match w[0].1 {
                    None => {
                        return Some(format!("key {key}: an open version is followed by another"))
                    }
                    Some(to) if to > w[1].0 => return Some(format!("key {key}: versions overlap")),
                    _ => {}
                }
            }
            if let Some(v) = versions.iter().find(|v| v.1.is_some_and(|to| to <= v.0)) {
                return Some(format!("key {key}: empty interval starting {}", v.0));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version inserted by hand, as a bug elsewhere could produce it.
    fn insert(key: &str, hash: RowHash, valid_from: i64, valid_to: Option<i64>) -> Insert {
        Insert {
            key: Key::of(key),
            kildesystem: None,
            hash: hash.into(),
            valid_from,
            valid_to,
            batch: 0,
            row: 0,
            removed: false,
        }
    }

    #[test]
    fn a_version_and_an_insert_stay_small() {
        // Two million of each at a first load of a million pupils.
        assert!(std::mem::size_of::<Current>() <= 72);
        assert!(std::mem::size_of::<Insert>() <= 80);
        let mut ins = insert("a", u128::MAX - 5, 1, None);
        assert_eq!(ins.hash(), u128::MAX - 5);
        ins.set_hash(7 << 64 | 9);
        assert_eq!(ins.hash(), 7 << 64 | 9);
    }

    fn row(key: &'static str, hash: RowHash) -> SnapshotRow<'static> {
        SnapshotRow {
            key,
            hash,
            kildesystem: Some("s"),
            skolenummer: None,
            parent: None,
            staged: 0,
        }
    }

    #[test]
    fn change_delete_and_unchanged() {
        let mut s = Scd2::default();
        s.load_current("a", 1, 10, Some("s"), None, None);
        s.load_current("b", 1, 10, Some("s"), None, None);
        s.load_current("other", 1, 10, Some("t"), None, None);
        s.apply(
            0,
            20,
            &[row("a", 2), row("b", 1), row("c", 1)],
            Scope::Source("s"),
        );
        s.apply(1, 30, &[row("b", 1)], Scope::Source("s"));
        let closes: Vec<_> = s
            .closes
            .iter()
            .map(|c| (c.key.to_string(), c.valid_from, c.valid_to))
            .collect();
        assert_eq!(closes, [("a".to_string(), 10, 20)]);
        let ins: Vec<_> = s
            .live_inserts()
            .map(|i| (i.key.to_string(), i.valid_from, i.valid_to))
            .collect();
        assert_eq!(
            ins,
            [
                ("a".to_string(), 20, Some(30)),
                ("c".to_string(), 20, Some(30))
            ]
        );
        assert!(
            s.state.contains_key(&Key::of("other")),
            "another source's keys stay open"
        );
    }

    #[test]
    fn violations_name_the_key() {
        let mut s = Scd2::default();
        s.load_current("a", 1, 10, Some("s"), None, None);
        s.apply(0, 20, &[row("a", 2)], Scope::Source("s"));
        assert_eq!(s.violation(), None);
        // A new version that would overlap the stored current one (as a wrongly placed late
        // snapshot would) is caught before anything is written.
        s.inserts.push(insert("a", 3, 15, Some(25)));
        assert_eq!(s.violation().as_deref(), Some("key a: versions overlap"));
        let mut s = Scd2::default();
        s.load_current("b", 1, 10, Some("s"), None, None);
        s.inserts.push(insert("b", 2, 20, None));
        assert_eq!(
            s.violation().as_deref(),
            Some("key b would have 2 current versions")
        );
    }

    #[test]
    fn a_second_open_version_of_a_new_key_is_caught() {
        let mut s = Scd2::default();
        s.apply(0, 20, &[row("c", 1), row("d", 1)], Scope::Source("s"));
        assert_eq!(s.violation(), None);
        // Two open versions of a key that was never closed: not the key's current row, so it
        // is checked version by version.
        s.inserts.push(insert("c", 2, 25, None));
        assert_eq!(
            s.violation().as_deref(),
            Some("key c would have 2 current versions")
        );
    }

    #[test]
    fn ids_are_numbers_and_other_keys_text() {
        let id = "6f1c2b4e-9a7d-4c1e-8b3a-5d2e7f901a44";
        assert!(matches!(Key::of(id), Key::Id(_)));
        assert_eq!(Key::of(id).to_string(), id);
        // Texts that parse as the same UUID but are not its canonical text stay text.
        for other in [
            "6F1C2B4E-9A7D-4C1E-8B3A-5D2E7F901A44",
            "6f1c2b4e9a7d4c1e8b3a5d2e7f901a44",
            "{6f1c2b4e-9a7d-4c1e-8b3a-5d2e7f901a4}",
            "6f1c2b4e-9a7d-4c1e-8b3a+5d2e7f901a44",
            "46591",
        ] {
            assert!(matches!(Key::of(other), Key::Text(_)), "{other}");
            assert_eq!(Key::of(other).to_string(), other);
            assert_ne!(Key::of(other), Key::of(id));
        }
        assert_eq!(
            Key::of("00000000-0000-0000-0000-000000000001"),
            Key::Id([0, 1])
        );
    }

    #[test]
    fn carried_keys_stay_current_and_absent_ones_close() {
        let mut s = Scd2::default();
        for k in ["a", "b", "c"] {
            s.load_entry(Key::of(k), 1, 10, Some("s"), None, None, 7);
        }
        // "a" carried forward without a row, "b" changed, "c" absent, "d" new.
        let rows = [row("b", 2), row("d", 1)];
        s.apply_with(0, 20, &rows, &[Key::of("a")], Scope::Source("s"));
        assert_eq!(s.carried_missing, 0);
        let mut closed: Vec<String> = s.closes.iter().map(|c| c.key.to_string()).collect();
        closed.sort();
        assert_eq!(closed, ["b", "c"]);
        assert_eq!(
            s.state[&Key::of("a")].valid_from,
            10,
            "carried: still the stored version"
        );
        assert_eq!(s.state[&Key::of("a")].staged, 7);
        assert_eq!(s.live_inserts().count(), 2);
        // Prior keys of the scope: a (carried), b (changed), c (closed).
        assert_eq!(s.last_prior, 3);
        // A carried key that is not current is counted, not invented.
        s.apply_with(0, 30, &[], &[Key::of("c")], Scope::None);
        assert_eq!(s.carried_missing, 1);
    }

    #[test]
    fn a_current_version_stays_small() {
        // Held for every current key of a table (a million pupils and as many elevforhold):
        // each byte here is two megabytes at that size.
        assert_eq!(std::mem::size_of::<Current>(), 72);
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert_eq!(std::mem::size_of::<Option<Text>>(), 4);
    }

    #[test]
    fn closing_keeps_every_other_key_findable() {
        // Closing a key moves the last entry into its place: every other key is still found
        // with its own version, and texts stay numbers of their own text.
        let mut s = Scd2::default();
        for i in 0..100u128 {
            let school = format!("{}", 10_000 + i % 7);
            s.load_entry(
                Key::of(&i.to_string()),
                i,
                10,
                Some("s"),
                Some(&school),
                None,
                0,
            );
        }
        let rows: Vec<String> = (0..100)
            .filter(|i| i % 3 != 0)
            .map(|i| i.to_string())
            .collect();
        let rows: Vec<SnapshotRow<'_>> = rows
            .iter()
            .map(|k| SnapshotRow {
                key: k,
                hash: k.parse::<u128>().unwrap(),
                kildesystem: Some("s"),
                skolenummer: None,
                parent: None,
                staged: 0,
            })
            .collect();
        s.apply(0, 20, &rows, Scope::Source("s"));
        assert_eq!(s.closes.len(), 34, "every third key was absent");
        assert_eq!(s.state.len(), 66);
        for i in (0..100u128).filter(|i| i % 3 != 0) {
            let cur = &s.state[&Key::of(&i.to_string())];
            assert_eq!((cur.hash(), cur.valid_from), (i, 10), "key {i}");
            let school = cur.skolenummer.map(|t| s.text(t));
            assert_eq!(school, Some(format!("{}", 10_000 + i % 7).as_str()));
        }
    }

    #[test]
    fn unchanged_snapshot_changes_nothing() {
        let mut s = Scd2::default();
        s.load_current("a", 1, 10, Some("s"), None, None);
        s.apply(0, 20, &[row("a", 1)], Scope::Source("s"));
        assert!(!s.has_changes());
    }
}
