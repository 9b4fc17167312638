//! Carried records (docs/ARCHITECTURE.md, "Carried records"): a pupil or enrollment whose raw
//! record is unchanged since the last publish — an enrollment's classes, schools and terms too —
//! is carried forward without being parsed, flattened or checked on its own again. What the
//! checks across records need of it (its pupil key, an enrollment's school; a pupil's number
//! from the identity map), what publish needs (its staged-row hash, which finds its id in the
//! current state) and its completeness bits come from a summary kept with the current state.
//! Which records a format carries is the format's
//! ([`crate::formats::Format::carried_records`]).
//!
//! The summaries themselves are `crate::carried`'s; here is how records are hashed. A summary
//! holds hashes, a school number and bits: no personal data. A record whose pupil key
//! looks like a fødselsnummer (ten or eleven digits) gets no summary and is read every day.

use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::Xxh3;

use super::snapshots::Snapshot;
use super::validate::{key_hash, CarriedEnrollments, CarriedList, CarriedPupils};
use crate::carried::{Entry, Hash128, Made, Memo, Records, NO_SCHOOL};
use crate::fint::{EfRow, ElevRow};
use crate::formats::{CarriedRecords, RawRec};
use crate::publish::identity::{Identity, Settling};
use crate::standardize::stage::NullBits;

/// Changed when what a summary means changes (the elevflyt version is hashed too).
const RECORDS_FORMAT: &[u8] = b"elevflyt-records-1";

/// A member no format's flatten reads and exports may restamp on every record every day: left
/// out of a record's hash, so that a record restamped but otherwise unchanged is unchanged.
const IGNORED_MEMBER: &[u8] = b"\"dateLastModified\"";

/// A record carried unread: which of its part's records it is, (a pupil's) its number in
/// identity, its summary's place in the memo and (a pupil's) its fødselsnummer's hash (`0`:
/// none). 32 bytes: two million of them are held at 1M.
struct Carried {
    at: u32,
    n: u32,
    place: u32,
    fnr: Hash128,
}

/// A record of a carried entity: its hash, its number in its file and its file's place in the
/// snapshot's list of files. 16 bytes (a file name's reference and an `i64` made it 32): two
/// million are held from finding the carried records until they are carried, at 1M.
#[derive(Debug, Clone, Copy)]
struct Rec {
    hash: u64,
    rad: u32,
    file: u32,
}

/// The records of one entity: every one in record order, the files they are in, those carried
/// (in record order), and the memo their summaries are in.
#[derive(Default)]
struct Part<'a, 'm> {
    entity: &'static str,
    files: Vec<&'a str>,
    records: Vec<Rec>,
    carried: Vec<Carried>,
    memo: Option<&'m Memo>,
}

/// A read row as summaries see it: where its record is, its pupil key, school, staged-row hash,
/// null bits, and the id it was carried as.
type RowSummary<'r> = (
    (&'r str, i64),
    Option<&'r str>,
    Option<&'r str>,
    u64,
    Option<[u64; 2]>,
);

/// Which of the summaries found may be carried: every one (an enrollment: its pupil is checked
/// with the rows), or a pupil's when identity would see it again without learning anything
/// (`None`: no pupil is).
enum Keep<'i> {
    Every,
    Settled(Option<Settling<'i>>),
}

impl<'a, 'm> Part<'a, 'm> {
    /// `records` of `entity` (their hashes made without a seed) hashed with `seed`, and found in
    /// `memo`; those found carried as `keep` says.
    fn make(
        entity: &'static str,
        (files, mut records): (Vec<&'a str>, Vec<Rec>),
        seed: u64,
        memo: Option<&'m Memo>,
        keep: Keep<'_>,
    ) -> Part<'a, 'm> {
        for r in records.iter_mut() {
            r.hash = xxhash_rust::xxh3::xxh3_64_with_seed(&r.hash.to_le_bytes(), seed).max(1);
        }
        let carried = match (memo, keep) {
            (Some(memo), keep) if !memo.is_empty() && !matches!(keep, Keep::Settled(None)) => {
                let mut hashes: Vec<(u64, u32)> = (records.iter().enumerate())
                    .map(|(i, r)| (r.hash, i as u32))
                    .collect();
                crate::sort::by_hash(&mut hashes, |h| h.0, Ord::cmp);
                // A hash met twice today is of neither record.
                let twice: Vec<bool> = (0..hashes.len())
                    .map(|i| {
                        (i > 0 && hashes[i - 1].0 == hashes[i].0)
                            || hashes.get(i + 1).is_some_and(|n| n.0 == hashes[i].0)
                    })
                    .collect();
                let mut tw = twice.into_iter();
                hashes.retain(|_| !tw.next().unwrap_or(true));
                // The places found, put in record order (the join gives them in hash order) in
                // the join's own list: (record, place).
                let mut hits = memo.join(&hashes);
                drop(hashes);
                let mut hit = vec![u32::MAX; records.len()];
                for &(at, place) in &hits {
                    hit[at as usize] = place;
                }
                hits.clear();
                hits.extend(
                    (hit.into_iter().enumerate())
                        .filter(|&(_, place)| place != u32::MAX)
                        .map(|(at, place)| (at as u32, place)),
                );
                // Each found record carried as `keep` says, made in a list of its final size.
                let settled = match &keep {
                    Keep::Settled(Some(s)) => {
                        let numbers = s.numbers(hits.len(), |k| memo.entry(hits[k].1).id);
                        Some((s, numbers))
                    }
                    _ => None,
                };
                let mut carried = Vec::with_capacity(hits.len());
                for (k, &(at, place)) in hits.iter().enumerate() {
                    let (n, fnr) = match &settled {
                        Some((s, numbers)) => {
                            match s.settled(numbers[k], memo.entry(place).pupil.get()) {
                                Some((n, fnr)) => (n, fnr.unwrap_or(0)),
                                None => continue,
                            }
                        }
                        None => (u32::MAX, 0),
                    };
                    carried.push(Carried {
                        at,
                        n,
                        place,
                        fnr: fnr.into(),
                    });
                }
                carried
            }
            _ => Vec::new(),
        };
        Part {
            entity,
            files,
            records,
            carried,
            memo,
        }
    }

    /// Where carried record `c` is (file, record number).
    fn at(&self, c: &Carried) -> (&'a str, i64) {
        self.place(&self.records[c.at as usize])
    }

    /// Where record `r` is (file, record number).
    fn place(&self, r: &Rec) -> (&'a str, i64) {
        (self.files[r.file as usize], i64::from(r.rad))
    }

    /// Carried record `c`'s summary.
    fn entry(&self, c: &Carried) -> &'m Entry {
        // A part with carried records has the memo they were found in.
        self.memo.map(|m| m.entry(c.place)).unwrap_or(&Entry::NONE)
    }

    /// Carried record `c`'s school (`None`: a pupil's).
    fn school(&self, c: &Carried) -> Option<&'m str> {
        self.memo.and_then(|m| m.school(self.entry(c)))
    }

    /// The places of the carried records' summaries into `kept` (they are the next day's as
    /// they are), then the summaries of each read row (`rows` in record order) that is `clean`,
    /// has a pupil key that may be summarised and a staged-row hash: into `out` when its id is
    /// known, else into the returned list (one per row without an id, in row order) for publish
    /// to give it its id.
    fn summaries<'r>(
        &self,
        out: &mut Records,
        kept: &mut Vec<u32>,
        place: &mut FxHashMap<String, u32>,
        rows: impl Iterator<Item = (RowSummary<'r>, u64)>,
        clean: &dyn Fn(&str, i64) -> bool,
    ) -> Vec<Option<(u64, Entry)>> {
        kept.extend(self.carried.iter().map(|c| c.place));
        // (A first load's rows have no id yet: every one waits for it.)
        let mut pending = Vec::with_capacity(rows.size_hint().0);
        let mut j = 0;
        for ((at, key, skole, staged, id), bits) in rows {
            while self.records.get(j).is_some_and(|r| self.place(r) < at) {
                j += 1;
            }
            let hash = (self.records.get(j))
                .filter(|r| self.place(r) == at)
                .map(|r| r.hash);
            let summary = match (hash, key) {
                (Some(hash), Some(key))
                    if staged != 0 && summarisable_key(key) && clean(at.0, at.1) =>
                {
                    Some((
                        hash,
                        Entry {
                            id: id.unwrap_or_default(),
                            pupil: key_hash(key).into(),
                            school: skole.map_or(NO_SCHOOL, |s| out.school(place, s)),
                            nulls: bits,
                        },
                    ))
                }
                _ => None,
            };
            match id {
                Some(_) => out.entries.extend(summary),
                None => pending.push(summary),
            }
        }
        pending
    }
}

/// One part's carried pupils as validation reads them ([`CarriedPupils`]), in the part's own
/// lists, with only their key hashes copied out in record order (16 bytes a record): the
/// summaries lie in record-hash order, and validation reads each key several times, which
/// straight from them is a cache miss each time. The copy becomes validation's set of their keys
/// ([`CarriedPupils::into_keys`]).
pub struct CarriedPupilsOf<'p, 'a, 'm> {
    part: &'p Part<'a, 'm>,
    pupils: Vec<Hash128>,
}

impl<'p, 'a, 'm> CarriedPupilsOf<'p, 'a, 'm> {
    fn of(part: &'p Part<'a, 'm>) -> Self {
        // Filled in place on every core: no parts to put together (16 MB a list at 1M).
        let mut pupils = vec![Hash128::from(0); part.carried.len()];
        crate::par::parts_mut(&mut pupils, |first, out| {
            let carried = &part.carried[first..first + out.len()];
            for (p, c) in out.iter_mut().zip(carried) {
                *p = part.entry(c).pupil;
            }
        });
        CarriedPupilsOf { part, pupils }
    }
}

impl CarriedList for CarriedPupilsOf<'_, '_, '_> {
    fn len(&self) -> usize {
        self.part.carried.len()
    }
    fn at(&self, j: usize) -> (&str, i64) {
        self.part.at(&self.part.carried[j])
    }
}

impl CarriedPupils for CarriedPupilsOf<'_, '_, '_> {
    fn key(&self, j: usize) -> u128 {
        self.pupils[j].get()
    }
    fn fnr(&self, j: usize) -> Option<u128> {
        let fnr = self.part.carried[j].fnr.get();
        (fnr != 0).then_some(fnr)
    }
    fn into_keys(self) -> Vec<Hash128> {
        self.pupils
    }
}

/// One part's carried enrollments as validation reads them ([`CarriedEnrollments`]): straight
/// from their summaries. Validation reads an enrollment's pupil with its school, which is in
/// the same summary: a copy of the pupils' keys (16 MB at 1M, held through validation) would
/// save no cache miss.
pub struct CarriedEnrollmentsOf<'p, 'a, 'm>(&'p Part<'a, 'm>);

impl CarriedList for CarriedEnrollmentsOf<'_, '_, '_> {
    fn len(&self) -> usize {
        self.0.carried.len()
    }
    fn at(&self, j: usize) -> (&str, i64) {
        self.0.at(&self.0.carried[j])
    }
}

impl<'s, 'm: 's> CarriedEnrollments<'s> for CarriedEnrollmentsOf<'_, '_, 'm> {
    fn pupil(&self, j: usize) -> u128 {
        self.0.entry(&self.0.carried[j]).pupil.get()
    }
    fn school(&self, j: usize) -> &'s str {
        self.0.school(&self.0.carried[j]).unwrap_or_default()
    }
}

/// The ids of the records carried unread ([`Plan::into_ids`]).
#[derive(Default)]
pub struct CarriedIds {
    /// The ids of the carried enrollments' current versions.
    pub enrollments: Vec<[u64; 2]>,
    /// The carried pupils' numbers in identity, with the ids of their current versions.
    pub pupils: Vec<(u32, [u64; 2])>,
}

/// What of a snapshot is carried unread, decided before it is flattened: every record of the
/// format's carried entities hashed, and those with a summary (a pupil's, one identity would see
/// again without learning anything) carried.
pub struct Plan<'a, 'm> {
    elevforhold: Part<'a, 'm>,
    elev: Part<'a, 'm>,
}

/// A snapshot's records of the carried entities with their hashes (unseeded), found in one pass
/// over the records on every core before anything else is loaded: the files they are in, and
/// enrollments, pupils and context records, each in record order.
pub struct Hashed<'a> {
    files: Vec<&'a str>,
    records: [Vec<Rec>; 3],
}

impl<'a> Hashed<'a> {
    /// Hashes the snapshot's records of `spec`'s entities; `None` (every record read) when a
    /// record's number does not fit the 32 bits a [`Rec`] holds (four billion records in a file).
    pub fn of(snap: &'a Snapshot, spec: &CarriedRecords) -> Option<Hashed<'a>> {
        type Found<'a> = Option<(Vec<&'a str>, [Vec<Rec>; 3])>;
        let parts: Vec<Found<'a>> = crate::par::chunks(snap.len(), |range| {
            let (mut files, mut found): (Vec<&'a str>, [Vec<Rec>; 3]) = Default::default();
            for i in range {
                let r = snap.record(i);
                let k = if r.entitet == spec.entity {
                    0
                } else if Some(r.entitet) == spec.pupils {
                    1
                } else if spec.context.contains(&r.entitet) {
                    2
                } else {
                    continue;
                };
                // Records come file by file: a file is the last one's or a new one.
                if files.last() != Some(&r.kjelde) {
                    files.push(r.kjelde);
                }
                let Ok(rad) = u32::try_from(r.rad) else {
                    return vec![None];
                };
                let file = (files.len() - 1) as u32;
                found[k].push(Rec {
                    hash: record_hash(0, r.post),
                    rad,
                    file,
                });
            }
            vec![Some((files, found))]
        });
        let mut hashed = Hashed {
            files: Vec::new(),
            records: Default::default(),
        };
        for part in parts {
            let (files, part) = part?;
            // The part's files numbered among the earlier parts' (a file may span two parts).
            let numbers: Vec<u32> = (files.iter())
                .map(|f| match hashed.files.iter().position(|g| g == f) {
                    Some(n) => n as u32,
                    None => {
                        hashed.files.push(f);
                        (hashed.files.len() - 1) as u32
                    }
                })
                .collect();
            for (all, mut some) in hashed.records.iter_mut().zip(part) {
                for r in some.iter_mut() {
                    r.file = numbers[r.file as usize];
                }
                match all.is_empty() {
                    true => *all = some,
                    false => all.extend(some),
                }
            }
        }
        Some(hashed)
    }
}

impl<'a, 'm> Plan<'a, 'm> {
    /// Seeds the snapshot's `hashed` records of `spec`'s entities with `fingerprint` (an
    /// enrollment also with the hash of the `spec.context` records) and finds them in `memo`
    /// (a pupil also in `identity`; pupils only when `pupils`: the pipeline has one source, so
    /// that no other source's row can have become a carried pupil's current version).
    pub fn make(
        snap: &'a Snapshot,
        hashed: Hashed<'a>,
        spec: &CarriedRecords,
        fingerprint: &[&[u8]],
        memo: Option<&'m Memo>,
        identity: Option<&'m Identity>,
        pupils: bool,
    ) -> Plan<'a, 'm> {
        let Hashed { files, records } = hashed;
        let [enrollments, users, context] = records;
        let pupil_files = files.clone();
        let kildesystem = snap.kildesystem.as_str();
        let context = context.iter().fold(Xxh3::new(), |mut h, r| {
            h.update(&r.hash.to_le_bytes());
            h
        });
        let ef_seed = seed(fingerprint, context.digest());
        // The pupils' part on a second core while the enrollments' is made: they share
        // nothing but the summaries they read.
        let pupils_part = || match spec.pupils {
            // A pupil is read from its own record only: its hashes are not seeded with the
            // context. It is carried when identity would see it again without learning
            // anything (`Identity::settled_by_id`).
            Some(entity) => {
                let memo = memo.filter(|_| pupils && identity.is_some());
                let settling = identity.and_then(|i| i.settling(kildesystem));
                let keep = Keep::Settled(settling);
                Part::make(
                    entity,
                    (pupil_files, users),
                    seed(fingerprint, 0),
                    memo,
                    keep,
                )
            }
            None => Part::default(),
        };
        let (elev, elevforhold) = crate::par::both(pupils_part, || {
            Part::make(
                spec.entity,
                (files, enrollments),
                ef_seed,
                memo,
                Keep::Every,
            )
        });
        Plan { elevforhold, elev }
    }

    /// Records carried unread: (pupils, enrollments).
    pub fn carried(&self) -> (usize, usize) {
        (self.elev.carried.len(), self.elevforhold.carried.len())
    }

    /// Reads every record after all (a carried one was drawn into a deviation).
    pub fn read_all(&mut self) {
        self.elev.carried.clear();
        self.elevforhold.carried.clear();
    }

    /// Whether each record of the snapshot is to be read, in record order (one pass).
    pub fn reads(&self) -> impl FnMut(&RawRec<'_>) -> bool + '_ {
        let parts = [&self.elev, &self.elevforhold];
        let mut seen = [0u32; 2];
        let mut next = parts.map(|p| p.carried.iter().peekable());
        move |r| {
            let Some(k) = parts.iter().position(|p| p.entity == r.entitet) else {
                return true;
            };
            let at = seen[k];
            seen[k] += 1;
            next[k].next_if(|c| c.at == at).is_none()
        }
    }

    /// The carried records as validation reads them, where they are: (pupils, enrollments).
    pub fn for_validation(
        &self,
    ) -> (
        CarriedPupilsOf<'_, 'a, 'm>,
        CarriedEnrollmentsOf<'_, 'a, 'm>,
    ) {
        (
            CarriedPupilsOf::of(&self.elev),
            CarriedEnrollmentsOf(&self.elevforhold),
        )
    }

    /// The carried records' ids, once their summaries are made ([`Plan::summaries`]), the
    /// plan let go of as they are listed: first where every record is (16 bytes a record), then
    /// each part's carried records once its list is made (32 bytes a record; at 1M each of
    /// the three is 32 MB). Their null bits are counted into `nulls` (enrollments, pupils) on
    /// the same passes.
    pub fn into_ids(self, nulls: (&mut NullBits, &mut NullBits)) -> CarriedIds {
        let Plan {
            mut elevforhold,
            mut elev,
        } = self;
        elevforhold.records = Vec::new();
        elev.records = Vec::new();
        let ids = (elevforhold.carried.iter())
            .map(|c| {
                let e = elevforhold.entry(c);
                nulls.0.add(e.nulls);
                e.id
            })
            .collect();
        drop(elevforhold);
        let pupils = (elev.carried.iter())
            .map(|c| {
                let e = elev.entry(c);
                nulls.1.add(e.nulls);
                (c.n, e.id)
            })
            .collect();
        CarriedIds {
            enrollments: ids,
            pupils,
        }
    }

    /// The summaries for the next day: the carried records' again, and each read row's that is
    /// `clean` (no deviation), has a pupil whose key may be summarised and (an elevforhold) a
    /// school — with its id when it was carried, else left for publish to give it its id. Each
    /// table's rows come with their staged-row hashes, null bits and the ids they were carried
    /// as.
    #[allow(clippy::type_complexity)]
    pub fn summaries(
        &self,
        elev: (&[ElevRow<'_>], &[u64], &[u64], &[Option<[u64; 2]>]),
        elevforhold: (&[EfRow<'_>], &[u64], &[u64], &[Option<[u64; 2]>]),
        clean: &dyn Fn(&str, i64) -> bool,
    ) -> Made {
        let mut records = Records::default();
        let mut place: FxHashMap<String, u32> = FxHashMap::default();
        // The carried records' summaries are not copied: room for the read ones'.
        let read = |p: &Part<'_, '_>| p.records.len() - p.carried.len();
        records
            .entries
            .reserve(read(&self.elevforhold) + read(&self.elev));
        let mut kept = Vec::with_capacity(self.elevforhold.carried.len() + self.elev.carried.len());
        let (rows, hashes, nulls, ids) = elevforhold;
        let ef = (rows.iter().zip(hashes).zip(ids).zip(nulls)).map(|(((r, &h), &id), &n)| {
            // An elevforhold without a school is not summarised.
            let skole = r.skolenummer.as_deref();
            let key = r.elev_kilde_nokkel.as_deref().filter(|_| skole.is_some());
            (((r.r.kjelde, r.r.rad), key, skole, h, id), n)
        });
        let elevforhold =
            self.elevforhold
                .summaries(&mut records, &mut kept, &mut place, ef, clean);
        let (rows, hashes, nulls, ids) = elev;
        let pupils = (rows.iter().zip(hashes).zip(ids).zip(nulls)).map(|(((r, &h), &id), &n)| {
            // A key that is not the system id cannot be found in identity by it.
            let key = (r.kilde_nokkel.as_deref()).filter(|k| Some(*k) == r.system_id.as_deref());
            (((r.r.kjelde, r.r.rad), key, None, h, id), n)
        });
        let elev = (self.elev).summaries(&mut records, &mut kept, &mut place, pupils, clean);
        Made {
            records,
            kept,
            elev,
            elevforhold,
        }
    }
}

/// A record's hash: its text without the member [`IGNORED_MEMBER`] when that is a plain string
/// (anything else is hashed as it stands: at worst a record is read again).
pub fn record_hash(seed: u64, post: &str) -> u64 {
    let b = post.as_bytes();
    let h = match ignored_span(b) {
        Some((from, to)) => {
            let mut h = Xxh3::with_seed(seed);
            h.update(&b[..from]);
            h.update(&[0x1f]);
            h.update(&b[to..]);
            h.digest()
        }
        None => xxhash_rust::xxh3::xxh3_64_with_seed(b, seed),
    };
    h.max(1)
}

/// Where the ignored member's name and string value are: from its opening quote to just past
/// its value's closing quote.
fn ignored_span(b: &[u8]) -> Option<(usize, usize)> {
    // Built once: a searcher made per record cost as much as the search (two million a day).
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(IGNORED_MEMBER));
    let from = FINDER.find(b)?;
    let mut i = from + IGNORED_MEMBER.len();
    let skip_space = |i: &mut usize| {
        while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    skip_space(&mut i);
    (b.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    skip_space(&mut i);
    (b.get(i) == Some(&b'"')).then_some(())?;
    let close = i + 1 + memchr::memchr(b'"', b.get(i + 1..)?)?;
    // A value with an escape is not a plain time stamp.
    (!b[i + 1..close].contains(&b'\\')).then_some((from, close + 1))
}

/// The seed of every record hash of a snapshot: what else its rows depend on — the format and
/// elevflyt's version, the source, the kommune, the quality settings, and the records the
/// carried ones are read against (`context`: the hashes of the classes, schools and terms).
pub fn seed(parts: &[&[u8]], context: u64) -> u64 {
    let mut h = Xxh3::new();
    for part in [RECORDS_FORMAT, env!("CARGO_PKG_VERSION").as_bytes()]
        .iter()
        .chain(parts)
    {
        h.update(&(part.len() as u32).to_le_bytes());
        h.update(part);
    }
    h.update(&context.to_le_bytes());
    h.digest()
}

/// Whether a pupil key may be summarised: not one that looks like a fødselsnummer.
pub fn summarisable_key(key: &str) -> bool {
    !(matches!(key.len(), 10 | 11) && key.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standardize::validate::{CarriedEf, CarriedElev};

    #[test]
    fn validation_reads_the_carried_records_where_they_are_as_from_a_list() {
        let entry = |pupil: u128, school: u32| Entry {
            id: [pupil as u64, 1],
            pupil: pupil.into(),
            school,
            nulls: 0,
        };
        // The memo's summaries in record-hash order: the record at 7 is place 0, at 9 place 1.
        let memo = Memo::new(Records {
            schools: vec!["46591".into()],
            entries: vec![(9, entry(22, NO_SCHOOL)), (7, entry(11, 0))],
        });
        let part = Part {
            entity: "users",
            files: vec!["a.json", "b.json"],
            records: [(0, 1, 7), (0, 2, 8), (1, 1, 9)]
                .map(|(file, rad, hash)| Rec { hash, rad, file })
                .to_vec(),
            carried: vec![
                Carried {
                    at: 0,
                    n: 5,
                    place: 0,
                    fnr: 0.into(),
                },
                Carried {
                    at: 2,
                    n: 6,
                    place: 1,
                    fnr: 99.into(),
                },
            ],
            memo: Some(&memo),
        };
        assert_eq!(std::mem::size_of::<Carried>(), 32);
        let view = CarriedPupilsOf::of(&part);
        let pupils = [
            CarriedElev {
                kjelde: "a.json",
                rad: 1,
                key: 11,
                fnr: None,
            },
            CarriedElev {
                kjelde: "b.json",
                rad: 1,
                key: 22,
                fnr: Some(99),
            },
        ];
        let enrollments = [
            CarriedEf {
                kjelde: "a.json",
                rad: 1,
                pupil: 11,
                school: "46591",
            },
            CarriedEf {
                kjelde: "b.json",
                rad: 1,
                pupil: 22,
                school: "",
            },
        ];
        let (pupils, enrollments) = (&pupils[..], &enrollments[..]);
        let of = CarriedEnrollmentsOf(&part);
        assert_eq!((view.len(), of.len()), (2, 2));
        for j in 0..2 {
            assert_eq!(view.at(j), pupils.at(j));
            assert_eq!(of.at(j), enrollments.at(j));
            assert_eq!(view.key(j), pupils.key(j));
            assert_eq!(view.fnr(j), pupils.fnr(j));
            assert_eq!(of.pupil(j), enrollments.pupil(j));
            assert_eq!(of.school(j), enrollments.school(j));
        }
        // Given up to validation's key set: the keys the view read, in record order.
        let keys = |k: Vec<Hash128>| k.into_iter().map(Hash128::get).collect::<Vec<_>>();
        assert_eq!(keys(view.into_keys()), keys(pupils.into_keys()));
        assert_eq!(keys(pupils.into_keys()), [11, 22]);
    }

    #[test]
    fn a_restamped_record_hashes_as_before_and_any_other_change_does_not() {
        let a = r#"{"sourcedId":"e1","dateLastModified":"2026-01-14T00:00:00Z","user":{"sourcedId":"u1"}}"#;
        let b = r#"{"sourcedId":"e1","dateLastModified" : "2026-01-15T00:00:00Z","user":{"sourcedId":"u1"}}"#;
        let c = r#"{"sourcedId":"e1","dateLastModified":"2026-01-14T00:00:00Z","user":{"sourcedId":"u2"}}"#;
        let d = r#"{"sourcedId":"e1","user":{"sourcedId":"u1"}}"#;
        assert_eq!(record_hash(7, a), record_hash(7, b));
        assert_ne!(record_hash(7, a), record_hash(7, c));
        assert_ne!(record_hash(7, a), record_hash(8, a), "the seed counts");
        // Without the member the bytes differ from a restamped record: read again, not wrong.
        assert_ne!(record_hash(7, a), record_hash(7, d));
        // A value that is not a plain string is hashed with the record.
        let e = r#"{"sourcedId":"e1","dateLastModified":"2026\"x","user":{"sourcedId":"u1"}}"#;
        let f = r#"{"sourcedId":"e1","dateLastModified":"2027\"x","user":{"sourcedId":"u1"}}"#;
        assert_ne!(record_hash(7, e), record_hash(7, f));
        assert_ne!(record_hash(7, ""), 0);
    }

    #[test]
    fn keys_that_look_like_a_fodselsnummer_are_not_summarised() {
        assert!(!summarisable_key("02013299997"));
        assert!(!summarisable_key("2013299997"));
        assert!(summarisable_key("u-000123"));
        assert!(summarisable_key("0201329999712"));
    }
}
