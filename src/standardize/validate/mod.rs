//! The rules applied to one snapshot's rows (docs/ARCHITECTURE.md, "Quality rules and deviations"): what must not be published is removed,
//! every broken rule becomes a deviation.
//!
//! The checks of one row (required fields, fødselsnummer, codes, contact fields) run on every
//! core, each part with a checker of its own; what needs the rows before it (duplicates, which
//! pupils an elevforhold may point to) is decided after, in row order. The deviations are put
//! back in row order, so the list reads as one pass over the rows would have written it.

mod elev;
mod elevforhold;

use std::collections::HashSet;

use chrono::NaiveDate;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::carried::Hash128;
use crate::fint::{EfRow, ElevRow, SkoleRow, Staged, Str};
use crate::quality::{fnr, kommuner, rules, Avvik, Checker, Severity};
use crate::sort::HashSorted;
use elev::check_pupils;
use elevforhold::{check_enrolments, References};

/// An enrollment carried forward without being read (docs/ARCHITECTURE.md, "Carried
/// records"): where its record is, and what the checks across records need of it. (A run reads
/// carried enrollments where standardize keeps them, through [`CarriedEnrollments`]; this is
/// the plain list of them.)
#[derive(Debug, Clone)]
pub(in crate::standardize) struct CarriedEf<'a> {
    pub kjelde: &'a str,
    pub rad: i64,
    /// [`key_hash`] of its pupil's source key.
    pub pupil: u128,
    pub school: &'a str,
}

/// A pupil carried forward without being read (docs/ARCHITECTURE.md, "Carried records"): where
/// its record is, the [`key_hash`] of its source key and of its fødselsnummer (the plain list;
/// see [`CarriedPupils`]).
#[derive(Debug, Clone)]
pub(in crate::standardize) struct CarriedElev<'a> {
    pub kjelde: &'a str,
    pub rad: i64,
    pub key: u128,
    pub fnr: Option<u128>,
}

/// Records carried unread as validation reads them, each by its place in record order: how
/// many there are and where each one's record is. Standardize's lists of them are read where
/// they are, with only what validation reads often copied out (`records::CarriedPupilsOf`): a copy
/// of every record for validation was 80 MB at a million pupils, at the next day's peak
/// (docs/PERFORMANCE.md, twenty-ninth session).
pub(in crate::standardize) trait CarriedList: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its record: file and record number.
    fn at(&self, j: usize) -> (&str, i64);
}

/// The pupils carried unread: the [`key_hash`] of each one's source key and of its
/// fødselsnummer. Given to validation, which turns them into its set of their keys once they are
/// checked ([`CarriedPupils::into_keys`]).
pub(in crate::standardize) trait CarriedPupils: CarriedList {
    fn key(&self, j: usize) -> u128;
    fn fnr(&self, j: usize) -> Option<u128>;
    /// Every one's key, in record order: the list of them the pupils hold if they hold one (a
    /// million keys at 1M, not copied), else a list made.
    fn into_keys(self) -> Vec<Hash128>;
}

/// The enrollments carried unread: each one's pupil's [`key_hash`] and its school.
pub(in crate::standardize) trait CarriedEnrollments<'a>:
    CarriedList
{
    fn pupil(&self, j: usize) -> u128;
    fn school(&self, j: usize) -> &'a str;
}

/// A carried record of a plain list: where its record is.
trait Placed: Sync {
    fn place(&self) -> (&str, i64);
}

impl Placed for CarriedElev<'_> {
    fn place(&self) -> (&str, i64) {
        (self.kjelde, self.rad)
    }
}

impl Placed for CarriedEf<'_> {
    fn place(&self) -> (&str, i64) {
        (self.kjelde, self.rad)
    }
}

impl<T: Placed> CarriedList for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn at(&self, j: usize) -> (&str, i64) {
        self[j].place()
    }
}

/// A list of carried records given by reference is read as the list.
impl<L: CarriedList + ?Sized> CarriedList for &L {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn at(&self, j: usize) -> (&str, i64) {
        (**self).at(j)
    }
}

impl CarriedPupils for &[CarriedElev<'_>] {
    fn key(&self, j: usize) -> u128 {
        self[j].key
    }
    fn fnr(&self, j: usize) -> Option<u128> {
        self[j].fnr
    }
    fn into_keys(self) -> Vec<Hash128> {
        self.iter().map(|e| Hash128::from(e.key)).collect()
    }
}

impl<'a> CarriedEnrollments<'a> for [CarriedEf<'a>] {
    fn pupil(&self, j: usize) -> u128 {
        self[j].pupil
    }
    fn school(&self, j: usize) -> &'a str {
        self[j].school
    }
}

/// No records carried unread.
pub(in crate::standardize) const NOTHING_CARRIED: (&[CarriedElev<'_>], &[CarriedEf<'_>]) =
    (&[], &[]);

/// Each pupil's school, by the pupil's [`key_hash`]; a later school of a pupil replaces the
/// earlier. A million pupils are in it at 1M, so it is small and made without a lookup each:
/// the schools given are listed as (key, order given, school's number), 24 bytes each, then
/// sorted by key ([`crate::sort::by_hash`], in place) with the last given first, and only that
/// one of each key kept; each school (a few thousand) is held once. A map of keys to schools
/// took 66 MB at 1M (two million buckets of 32 bytes), this takes 25; a table of places into
/// the list took 34 MB, and twice as long to fill as sorting takes.
pub(in crate::standardize) struct SchoolOf<'r, 'a> {
    pupils: HashSorted<(Hash128, u32, u32)>,
    schools: Vec<School<'r, 'a>>,
}

/// The schools given for [`SchoolOf`], in the order given.
struct SchoolsGiven<'r, 'a> {
    given: Vec<(Hash128, u32, u32)>,
    schools: Vec<School<'r, 'a>>,
    numbers: FxHashMap<&'r str, u32>,
}

impl<'r, 'a: 'r> SchoolsGiven<'r, 'a> {
    /// Room for `n` schools given.
    fn with_capacity(n: usize) -> Self {
        SchoolsGiven {
            given: Vec::with_capacity(n),
            schools: Vec::new(),
            numbers: FxHashMap::default(),
        }
    }

    /// Pupil `key` is at `school` (the last school given is the pupil's).
    fn insert(&mut self, key: Hash128, school: School<'r, 'a>) {
        let next = self.schools.len() as u32;
        let number = *self.numbers.entry(school.name()).or_insert(next);
        if number == next {
            self.schools.push(school);
        }
        let order = u32::try_from(self.given.len()).unwrap_or(u32::MAX);
        self.given.push((key, order, number));
    }

    /// Each pupil's last school.
    fn finish(self) -> SchoolOf<'r, 'a> {
        let mut given = self.given;
        let top = |g: &(Hash128, u32, u32)| g.0.get() as u64;
        crate::sort::by_hash(&mut given, top, |a, b| {
            (top(a), a.0.get(), b.1).cmp(&(top(b), b.0.get(), a.1))
        });
        given.dedup_by_key(|g| g.0);
        SchoolOf {
            pupils: HashSorted::of_sorted(given, top),
            schools: self.schools,
        }
    }
}

impl<'r, 'a> SchoolOf<'r, 'a> {
    /// The school of pupil `key`.
    pub fn get(&self, key: &Hash128) -> Option<School<'r, 'a>> {
        let near = self.pupils.near(key.get() as u64);
        let (_, _, school) = near.iter().find(|p| p.0 == *key)?;
        self.schools.get(*school as usize).copied()
    }
}

/// A set of [`key_hash`]es made once and then only asked: the keys sorted in the list given
/// (in place) and found as [`HashSorted`] finds them, 1 byte a key beside the list. A hash set of
/// the carried pupils' keys took 34 MB at 1M (two million buckets of 17 bytes); this takes 1 MB
/// beside the list of keys the carried pupils held already.
struct KeySet(HashSorted<Hash128>);

impl KeySet {
    /// The set of `keys` (fewer than 2³² of them: they are records of one snapshot).
    fn new(mut keys: Vec<Hash128>) -> KeySet {
        let top = |k: &Hash128| (k.get() >> 64) as u64;
        crate::sort::by_hash(&mut keys, top, |a, b| a.get().cmp(&b.get()));
        KeySet(HashSorted::of_sorted(keys, top))
    }

    fn contains(&self, k: u128) -> bool {
        self.0.near((k >> 64) as u64).contains(&Hash128::from(k))
    }
}

/// The school a pupil is enrolled at: an elevforhold row's, or a carried enrollment's.
#[derive(Debug, Clone, Copy)]
pub(in crate::standardize) enum School<'r, 'a> {
    Row(&'r Str<'a>),
    Carried(&'a str),
}

impl<'r, 'a: 'r> School<'r, 'a> {
    /// The school number.
    pub fn name(self) -> &'r str {
        match self {
            School::Row(s) => s,
            School::Carried(s) => s,
        }
    }

    /// The school number as a row holds it (a borrowed one stays borrowed).
    pub fn to_text(self) -> Str<'a> {
        match self {
            School::Row(s) => s.clone(),
            School::Carried(s) => Str::borrowed(s),
        }
    }
}

/// One of a snapshot's rows or carried records (pupils or elevforhold), in record order: a row
/// read (by index), or a carried record (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ordered {
    Row(usize),
    Carried(usize),
}

/// The rows and the carried records in record order (file, then record number; both lists are
/// in that order already).
fn ef_order<'x, 'e, E: CarriedEnrollments<'e> + ?Sized>(
    rows: &'x [EfRow<'_>],
    carried: &'x E,
) -> impl Iterator<Item = Ordered> + 'x {
    in_record_order(
        rows.len(),
        |i| (rows[i].r.kjelde, rows[i].r.rad),
        carried.len(),
        |j| carried.at(j),
    )
}

/// `n` rows and `m` carried records, each in record order (`row`, `rec`: where each is), as one
/// sequence in record order.
fn in_record_order<'x>(
    n: usize,
    row: impl Fn(usize) -> (&'x str, i64) + 'x,
    m: usize,
    rec: impl Fn(usize) -> (&'x str, i64) + 'x,
) -> impl Iterator<Item = Ordered> + 'x {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let row = (i < n).then(|| row(i));
        let rec = (j < m).then(|| rec(j));
        match (row, rec) {
            (Some(a), Some(b)) if b < a => {
                j += 1;
                Some(Ordered::Carried(j - 1))
            }
            (Some(_), _) => {
                i += 1;
                Some(Ordered::Row(i - 1))
            }
            (None, Some(_)) => {
                j += 1;
                Some(Ordered::Carried(j - 1))
            }
            (None, None) => None,
        }
    })
}

/// Applies the rules to one snapshot's rows, in place: what must not be published is removed.
/// `carried`: pupils and enrollments carried forward unread, checked against the rows as the
/// rows are against each other. Returns false when one of them would not be kept as it is (a
/// duplicate of an earlier row; an enrollment's pupil gone or school unknown): the snapshot must
/// then be read the full way, and what was found here is not to be used.
pub(super) fn validate<'a, P, E>(
    c: &mut Checker,
    rows: &mut Staged<'a>,
    (carried_elev, carried): (P, &E),
    known_schools: &HashSet<String>,
    today: NaiveDate,
) -> bool
where
    P: CarriedPupils,
    E: CarriedEnrollments<'a> + ?Sized,
{
    let Staged {
        elev,
        elevforhold,
        skole,
    } = rows;
    check_schools(c, skole);
    let schools: FxHashSet<&str> = skole
        .iter()
        .map(|s| s.skolenummer.as_ref())
        .chain(known_schools.iter().map(String::as_str))
        .collect();
    let kildesystem = elev.first().map(|e| e.r.kildesystem).unwrap_or_default();
    let (school_of, delivered) = pupil_indexes(elev, elevforhold, carried);
    let Some(pupils) = check_pupils(c, elev, &carried_elev, &school_of, today) else {
        return false;
    };
    drop(school_of);
    // The carried pupils' keys, made once the schools are let go: the two are the largest
    // things validation makes (a million pupils at 1M), and are not held at once. The carried
    // pupils are checked: their list of keys becomes the set.
    let carried_keys = KeySet::new(carried_elev.into_keys());
    elev::report_invalid_fnr_share(c, kildesystem, pupils.per_school);
    // Records whose pupil was dropped: an elevforhold from the same record (Vigo lines carry
    // both) goes with it, already reported. File → record numbers.
    let mut dropped_records: FxHashMap<&str, FxHashSet<i64>> = FxHashMap::default();
    for (e, _) in elev.iter().zip(&pupils.kept).filter(|(_, k)| !**k) {
        dropped_records
            .entry(e.r.kjelde)
            .or_default()
            .insert(e.r.rad);
    }
    // Whether a key is a kept pupil's.
    let elev_key: Vec<bool> = elev
        .iter()
        .zip(&pupils.kept)
        .map(|(e, k)| *k && e.kilde_nokkel.is_some())
        .collect();
    let row_of_key = &pupils.row_of_key;
    // A carried pupil's row is `CARRIED` (it is kept); a carried pupil that shares no key or
    // number with a read row has none, and is kept.
    let is_pupil = |k: u128| match row_of_key.get(&k) {
        Some(&i) => i == elev::CARRIED || elev_key[i],
        None => carried_keys.contains(k),
    };
    let refs = References {
        dropped_records: &dropped_records,
        is_pupil: &is_pupil,
        delivered: &delivered,
        schools: &schools,
    };
    let Some(ef_kept) = check_enrolments(c, elevforhold, carried, &refs) else {
        return false;
    };
    retain_flagged(elev, pupils.kept.iter().copied());
    retain_flagged(elevforhold, ef_kept);
    true
}

/// The schools' codes: organisasjonsnummer, kommunenummer, fylkesnummer.
fn check_schools(c: &mut Checker, skole: &mut Vec<SkoleRow<'_>>) {
    skole.retain(|s| {
        type Check = fn(&str) -> bool;
        let codes: [(Option<&str>, Check, &'static str, &'static str, &str); 3] = [
            (
                s.organisasjonsnummer.as_deref(),
                fnr::valid_orgnr,
                rules::ORGNR_UGYLDIG,
                "organisasjonsnummer",
                "Organisasjonsnummeret har feil kontrollsiffer",
            ),
            (
                s.kommunenummer.as_deref(),
                kommuner::is_kommune,
                rules::KOMMUNENUMMER_UKJENT,
                "kommunenummer",
                "Kommunenummeret finst ikkje i kommunelista for 2024",
            ),
            (
                s.fylkesnummer.as_deref(),
                kommuner::is_fylke,
                rules::FYLKESNUMMER_UKJENT,
                "fylkesnummer",
                "Fylkesnummeret finst ikkje i fylkeslista for 2024",
            ),
        ];
        for (value, ok, rule, field, message) in codes {
            if let Some(v) = value.filter(|v| !ok(v)) {
                let sev = c.report(&s.r, rule, Some(field), Some(fnr::mask_code(v)), message);
                if sev == Severity::Drop {
                    return false;
                }
            }
        }
        true
    });
}

/// Sets of keys hold 128-bit hashes of them (no copy of a million strings; a collision is as
/// likely as guessing a random UUID twice). At the same time: the school of each pupil (from the
/// snapshot's elevforhold), for per-school thresholds; and the keys of every pupil read, kept
/// or not (references to dropped pupils are not new news).
fn pupil_indexes<'r, 'a, E>(
    elev: &[ElevRow<'a>],
    elevforhold: &'r [EfRow<'a>],
    carried: &E,
) -> (SchoolOf<'r, 'a>, FxHashSet<u128>)
where
    E: CarriedEnrollments<'a> + ?Sized,
{
    crate::par::both(
        || {
            // Room for every enrollment's school (about one a pupil: an elevforhold is a pupil's
            // membership of a school); each pupil's last is kept.
            let mut school_of = SchoolsGiven::with_capacity(elevforhold.len() + carried.len());
            // In record order: a pupil's last elevforhold names the school.
            for ef in ef_order(elevforhold, carried) {
                match ef {
                    Ordered::Row(i) => {
                        let ef = &elevforhold[i];
                        if let (Some(k), Some(s)) =
                            (ef.elev_kilde_nokkel.as_deref(), ef.skolenummer.as_ref())
                        {
                            school_of.insert(key_hash(k).into(), School::Row(s));
                        }
                    }
                    Ordered::Carried(j) => {
                        let pupil = carried.pupil(j).into();
                        school_of.insert(pupil, School::Carried(carried.school(j)));
                    }
                }
            }
            school_of.finish()
        },
        || {
            let delivered = elev
                .iter()
                .filter_map(|e| {
                    let k = e.kilde_nokkel.as_deref()?;
                    Some(if e.fnr_required {
                        key_hash(&fnr::normalize(k))
                    } else {
                        key_hash(k)
                    })
                })
                .collect();
            delivered
        },
    )
}

/// Deviations found by a part of the rows, each with the row it is about.
type Found = Vec<(usize, Avvik)>;

/// Runs `check` on every row, on every core. `check` gets a checker and a state of its own part
/// of the rows (made by `state` for a part of so many rows: room for what it collects is made
/// once, not grown a row at a time), the row's index and the row, and says whether to keep the
/// row. Returns the keep flags, the parts' states (in row order) and their deviations, by row.
fn check_rows<T: Send, S: Send>(
    c: &mut Checker,
    rows: &mut [T],
    state: impl Fn(usize) -> S + Sync,
    check: impl Fn(&mut Checker, &mut S, usize, &mut T) -> bool + Sync,
) -> (Vec<bool>, Vec<S>, Found) {
    let parts = crate::par::parts_mut(rows, |first, part| {
        let mut checker = c.fork();
        let mut state = state(part.len());
        let mut keep = Vec::with_capacity(part.len());
        let mut owner = Vec::new();
        for (j, row) in part.iter_mut().enumerate() {
            keep.push(check(&mut checker, &mut state, first + j, row));
            owner.resize(checker.avvik.len(), first + j);
        }
        (keep, state, checker, owner)
    });
    let mut keep = Vec::with_capacity(rows.len());
    let mut states = Vec::with_capacity(parts.len());
    let mut found = Vec::new();
    for (k, state, checker, owner) in parts {
        keep.extend(k);
        states.push(state);
        found.extend(owner.into_iter().zip(c.absorb(checker)));
    }
    (keep, states, found)
}

/// Adds the deviations of the row checks (`found`) and of the duplicates (`dups`, reported for
/// `dup_rows` in that order) to `c`, in row order: a row's own deviations come before its
/// duplicate (the sort is stable).
fn add_in_row_order(c: &mut Checker, mut found: Found, dup_rows: Vec<usize>, dups: Checker) {
    found.extend(dup_rows.into_iter().zip(c.absorb(dups)));
    found.sort_by_key(|(i, _)| *i);
    c.avvik.extend(found.into_iter().map(|(_, a)| a));
}

/// Keeps the rows whose flag is set.
pub(in crate::standardize) fn retain_flagged<T>(
    rows: &mut Vec<T>,
    keep: impl IntoIterator<Item = bool>,
) {
    let mut flags = keep.into_iter();
    rows.retain(|_| flags.next().unwrap_or(false));
}

/// 128-bit hash of a key, for sets of keys.
pub(in crate::standardize) fn key_hash(k: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(k.as_bytes())
}

/// 128-bit hash of a pupil (its [`key_hash`]) at a school, for the elevforhold duplicates.
fn pair_hash(pupil: u128, school: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&pupil.to_le_bytes());
    h.update(school.as_bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fint::Origin;

    /// A key set answers for every key in it and no other, whatever its size (empty, a few
    /// keys, keys crowded in one bucket, hashed keys past a directory of many buckets).
    #[test]
    fn a_key_set_holds_its_keys_and_no_others() {
        let hashed: Vec<u128> = (0..50_000u32).map(|i| key_hash(&i.to_string())).collect();
        let crowded: Vec<u128> = (1..5_000u128).collect();
        let few: Vec<u128> = hashed[..3].to_vec();
        for keys in [hashed.clone(), crowded, few, Vec::new()] {
            let set = KeySet::new(keys.iter().map(|&k| Hash128::from(k)).collect());
            assert!(keys.iter().all(|&k| set.contains(k)));
            let absent = (50_000..60_000u32).map(|i| key_hash(&i.to_string()));
            assert!(!absent.chain([0, 5_000, u128::MAX]).any(|k| set.contains(k)));
        }
    }

    /// A pupil's school is the last one given for its key, found by the key alone, also among
    /// many; a school named twice is held once.
    #[test]
    fn a_pupils_school_is_the_last_given() {
        let (a, b) = (Str::borrowed("46591"), Str::owned("46592".to_string()));
        let mut given = SchoolsGiven::with_capacity(2);
        let key = |k: &str| Hash128::from(key_hash(k));
        given.insert(key("p1"), School::Row(&a));
        given.insert(key("p2"), School::Carried("46592"));
        given.insert(key("p1"), School::Row(&b));
        given.insert(key("p2"), School::Carried("46591"));
        // Many pupils, each given a school twice: the second counts.
        for i in 0..20_000 {
            given.insert(key(&format!("q{i}")), School::Carried("46591"));
        }
        for i in (0..20_000).rev() {
            given.insert(
                key(&format!("q{i}")),
                School::Carried(["46592", "46593"][i % 2]),
            );
        }
        let of = given.finish();
        assert_eq!(of.get(&key("p1")).map(School::name), Some("46592"));
        assert_eq!(of.get(&key("p2")).map(School::name), Some("46591"));
        assert_eq!(of.get(&key("p3")).map(School::name), None);
        for i in 0..20_000 {
            let got = of.get(&key(&format!("q{i}"))).map(School::name);
            assert_eq!(got, Some(["46592", "46593"][i % 2]));
        }
        assert_eq!(of.schools.len(), 3);
        assert_eq!(of.pupils.len(), 20_002);
    }

    fn pupil(i: usize, key: &str) -> ElevRow<'static> {
        ElevRow {
            kilde_nokkel: Some(Str::owned(key.to_string())),
            system_id: Some(Str::owned(key.to_string())),
            fornavn: Some(Str::borrowed("Kari")),
            etternavn: Some(Str::borrowed("Nord")),
            ..ElevRow::from(Origin {
                kildesystem: "vigilo",
                kjelde: "users.json",
                rad: i as i64,
                skolenummer: Some(Str::borrowed("46591")),
                system_id: Some(Str::owned(key.to_string())),
            })
        }
    }

    #[test]
    fn duplicates_leave_one_row_per_key_whatever_the_severity() {
        // Carrying rows forward relies on it (docs/ARCHITECTURE.md, "Carried rows").
        let mut quality = crate::config::QualityConfig::default();
        quality
            .overrides
            .insert(rules::DUPLIKAT.into(), toml::Value::String("warn".into()));
        let ef = |i: i64, key: &str| EfRow {
            r: Origin {
                kildesystem: "vigilo",
                kjelde: "enrollments.json",
                rad: i,
                skolenummer: Some(Str::borrowed("46591")),
                system_id: None,
            },
            elev_kilde_nokkel: Some(Str::owned(key.to_string())),
            system_id: Some(Str::owned(format!("e{i}"))),
            skolenummer: Some(Str::borrowed("46591")),
            klasse: Some(Str::borrowed("10A")),
            trinn: Some(10),
            skolear: Some(Str::borrowed("20262027")),
            hovedskole: Some(true),
            startdato: None,
            sluttdato: None,
        };
        let mut staged = Staged {
            elev: vec![pupil(1, "a"), pupil(2, "b"), pupil(3, "a")],
            elevforhold: vec![ef(1, "a"), ef(2, "b"), ef(3, "b")],
            ..Default::default()
        };
        let mut c = Checker::new(&quality);
        let known = HashSet::from(["46591".to_string()]);
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert!(validate(
            &mut c,
            &mut staged,
            NOTHING_CARRIED,
            &known,
            today
        ));
        let elev: Vec<i64> = staged.elev.iter().map(|e| e.r.rad).collect();
        let ef: Vec<i64> = staged.elevforhold.iter().map(|e| e.r.rad).collect();
        assert_eq!(elev, [1, 2], "the second pupil with key a is not kept");
        assert_eq!(
            ef,
            [1, 2],
            "the second elevforhold of b at 46591 is not kept"
        );
        assert_eq!(c.failed.get(rules::DUPLIKAT), Some(&2));
    }

    #[test]
    fn a_carried_record_drawn_into_a_deviation_asks_for_a_full_read() {
        // docs/ARCHITECTURE.md, "Carried records": a carried pupil or enrollment stays carried
        // only while it would be kept as it is.
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let known = HashSet::from(["46591".to_string()]);
        let ef = |rad: i64, key: &str| EfRow {
            r: Origin {
                kildesystem: "vigilo",
                kjelde: "enrollments.json",
                rad,
                skolenummer: Some(Str::borrowed("46591")),
                system_id: Some(Str::owned(format!("e{rad}"))),
            },
            elev_kilde_nokkel: Some(Str::owned(key.to_string())),
            system_id: Some(Str::owned(format!("e{rad}"))),
            skolenummer: Some(Str::borrowed("46591")),
            klasse: Some(Str::borrowed("10A")),
            trinn: Some(10),
            skolear: Some(Str::borrowed("20262027")),
            hovedskole: Some(true),
            startdato: None,
            sluttdato: None,
        };
        let carried_pupil = |rad: i64, key: &str| CarriedElev {
            kjelde: "users.json",
            rad,
            key: key_hash(key),
            fnr: None,
        };
        let carried_ef = |rad: i64, key: &str| CarriedEf {
            kjelde: "enrollments.json",
            rad,
            pupil: key_hash(key),
            school: "46591",
        };
        let check = |elev: Vec<ElevRow<'static>>,
                     efs: Vec<EfRow<'static>>,
                     pupils: &[CarriedElev<'_>],
                     enrollments: &[CarriedEf<'static>]| {
            let mut staged = Staged {
                elev,
                elevforhold: efs,
                ..Default::default()
            };
            let mut c = Checker::new(&crate::config::QualityConfig::default());
            let ok = validate(&mut c, &mut staged, (pupils, enrollments), &known, today);
            (ok, staged, c)
        };

        // A row read before a carried pupil with the same key: the carried one is the duplicate.
        let (ok, _, _) = check(vec![pupil(1, "a")], vec![], &[carried_pupil(5, "a")], &[]);
        assert!(!ok, "a carried pupil after a row with its key");
        // A row after it is the duplicate, reported and dropped as in a full read.
        let (ok, staged, c) = check(vec![pupil(9, "a")], vec![], &[carried_pupil(5, "a")], &[]);
        assert!(ok);
        assert!(staged.elev.is_empty());
        assert_eq!(c.failed.get(rules::DUPLIKAT), Some(&1));
        // A carried enrollment whose pupil is not delivered, or whose pupil is a carried pupil.
        let (ok, _, _) = check(vec![pupil(1, "b")], vec![], &[], &[carried_ef(1, "a")]);
        assert!(!ok, "a carried enrollment of a pupil not delivered");
        let (ok, staged, c) = check(
            vec![pupil(1, "b")],
            vec![ef(2, "b"), ef(3, "a")],
            &[carried_pupil(2, "a")],
            &[carried_ef(1, "a")],
        );
        assert!(ok);
        // The read enrollment of a at the same school after the carried one is its duplicate.
        let kept: Vec<i64> = staged.elevforhold.iter().map(|e| e.r.rad).collect();
        assert_eq!(kept, [2]);
        assert_eq!(c.failed.get(rules::DUPLIKAT), Some(&1));
        // Carried pupils and enrollments sharing nothing with a read row are not looked at
        // again, yet a read enrollment of such a pupil still finds it (no orphan, no duplicate).
        let (ok, staged, c) = check(
            vec![pupil(1, "b")],
            vec![ef(2, "b"), ef(7, "c")],
            &[carried_pupil(3, "c"), carried_pupil(4, "d")],
            &[carried_ef(1, "d")],
        );
        assert!(ok);
        let kept: Vec<i64> = staged.elevforhold.iter().map(|e| e.r.rad).collect();
        assert_eq!(kept, [2, 7]);
        let flagged = [rules::DUPLIKAT, rules::UKJENT_ELEV, rules::UKJENT_SKOLE];
        assert!(
            flagged.iter().all(|r| !c.failed.contains_key(r)),
            "{:?}",
            c.failed
        );
        // A carried enrollment at a school that is no longer known.
        let unknown = CarriedEf {
            school: "99999",
            ..carried_ef(1, "b")
        };
        let (ok, _, _) = check(vec![pupil(1, "b")], vec![], &[], &[unknown]);
        assert!(!ok, "a carried enrollment at an unknown school");
    }

    #[test]
    fn rows_checked_in_parts_report_as_one_pass_in_row_order() {
        // Enough pupils for two parts (one per core); a duplicate of a pupil in the first part
        // sits in the second, a pupil without a surname in the middle.
        let n = 120_000;
        let mut staged = Staged {
            elev: (0..n)
                .map(|i| pupil(i, &format!("k{}", if i == 100_000 { 5 } else { i })))
                .collect(),
            ..Default::default()
        };
        staged.elev[70_000].etternavn = None;
        let mut c = Checker::new(&crate::config::QualityConfig::default());
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert!(validate(
            &mut c,
            &mut staged,
            NOTHING_CARRIED,
            &HashSet::new(),
            today
        ));

        // Every pupil lacks a fødselsnummer (warn); the two others are dropped.
        assert_eq!(staged.elev.len(), n - 2);
        assert!(staged
            .elev
            .iter()
            .all(|e| e.r.rad != 70_000 && e.r.rad != 100_000));
        let rows: Vec<(i64, &str)> = c.avvik.iter().map(|a| (a.record.rad, a.regel)).collect();
        assert_eq!(rows.len(), n + 2);
        assert!(
            rows.windows(2).all(|w| w[0].0 <= w[1].0),
            "not in row order"
        );
        let of =
            |rad: i64| -> Vec<&str> { rows.iter().filter(|r| r.0 == rad).map(|r| r.1).collect() };
        assert_eq!(of(70_000), [rules::PAKREVD_FELT, rules::FNR_MANGLAR]);
        assert_eq!(of(100_000), [rules::FNR_MANGLAR, rules::DUPLIKAT]);
        assert_eq!(of(5), [rules::FNR_MANGLAR]);
        assert_eq!(c.failed.get(rules::FNR_MANGLAR), Some(&(n as u64)));
        assert_eq!(c.failed.get(rules::DUPLIKAT), Some(&1));
    }
}
