//! Summaries of carried records (docs/ARCHITECTURE.md, "Carried records"): for each record
//! standardize may carry forward unread, the id of the current version its row is, what the
//! checks across records need of it and its completeness bits, by the record's hash. Standardize
//! and publish make them, publish keeps them with the current state (`publish::state`), and the
//! next standardize finds the day's records in them. They hold ids, hashes, school numbers and
//! bits: no personal data.

use rustc_hash::FxHashMap;

/// What is kept of a carried record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The id of the current version its row is.
    pub id: [u64; 2],
    /// The 128-bit hash of its pupil's source key (validation's key sets hash keys the same way).
    pub pupil: Hash128,
    /// Its school number, an index into [`Records::schools`] ([`NO_SCHOOL`]: a pupil's).
    pub school: u32,
    /// Which staged columns are null (the completeness counts).
    pub nulls: u64,
}

impl Entry {
    /// The summary of no record.
    pub const NONE: Entry = Entry {
        id: [0; 2],
        pupil: Hash128([0; 2]),
        school: NO_SCHOOL,
        nulls: 0,
    };
}

/// A 128-bit hash kept as two 64-bit halves: a `u128` would align [`Entry`] to 16 bytes, and
/// make a summary with its record hash 64 bytes instead of 56 (millions of them are held); a
/// map's entry keyed by it is likewise 8 bytes shorter than one keyed by a `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash128([u64; 2]);

impl Hash128 {
    pub fn get(self) -> u128 {
        (self.0[1] as u128) << 64 | self.0[0] as u128
    }
}

impl From<u128> for Hash128 {
    fn from(h: u128) -> Self {
        Hash128([h as u64, (h >> 64) as u64])
    }
}

/// [`Entry::school`] of a record that has none (a pupil).
pub const NO_SCHOOL: u32 = u32::MAX;

/// A summary with its record hash.
type Summary = (u64, Entry);

/// The bytes of one entry with its record hash.
const ENTRY_BYTES: usize = 8 + 16 + 16 + 4 + 8;

/// Summaries per part of the state file written or read (some 8 MB of them): the state file is
/// written part by part and its pages are given back part by part as they are read.
pub const SUMMARIES_PER_PART: usize = 160_000;

/// Summaries of records, with their record hashes, as written with the current state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    pub schools: Vec<String>,
    pub entries: Vec<(u64, Entry)>,
}

impl Records {
    /// The number of a school in [`Records::schools`], added when new (`place` remembers them).
    pub fn school(&mut self, place: &mut FxHashMap<String, u32>, s: &str) -> u32 {
        if let Some(&n) = place.get(s) {
            return n;
        }
        let n = self.schools.len() as u32;
        self.schools.push(s.to_string());
        place.insert(s.to_string(), n);
        n
    }

    /// These summaries' bytes as the state file holds them ([`Next::encode_each`] makes the
    /// same of summaries it merges; a state file's change holds a few).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = head_bytes(&self.schools, self.entries.len());
        out.extend(entry_bytes(&self.entries));
        out
    }

    /// These summaries with those of `change` in place of every summary whose record hash
    /// `named` holds (sorted): the summaries a state file's base and its change make
    /// (docs/ARCHITECTURE.md, "The current state"). The result is in record-hash order.
    pub fn changed(mut self, named: &[u64], change: Records) -> Records {
        // One walk along both when the summaries are in order (as a state file has them).
        if self.entries.is_sorted_by_key(|e| e.0) {
            let mut named = named.iter().peekable();
            self.entries.retain(|(h, _)| {
                while named.next_if(|&&n| n < *h).is_some() {}
                named.peek() != Some(&h)
            });
        } else {
            self.entries
                .retain(|(h, _)| named.binary_search(h).is_err());
        }
        let mut place: FxHashMap<String, u32> = (self.schools.iter().enumerate())
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let map: Vec<u32> = (change.schools.iter())
            .map(|s| self.school(&mut place, s))
            .collect();
        let mut added: Vec<Summary> = Vec::with_capacity(change.entries.len());
        for (h, mut e) in change.entries {
            if e.school != NO_SCHOOL {
                match map.get(e.school as usize) {
                    Some(&s) => e.school = s,
                    None => continue,
                }
            }
            added.push((h, e));
        }
        added.sort_by_key(|e| e.0);
        // Merged in place from the end: the few added into the many kept, no second vector.
        let kept = self.entries.len();
        self.entries.resize(kept + added.len(), (0, Entry::NONE));
        let (mut i, mut w) = (kept, self.entries.len());
        while let Some(a) = added.last() {
            w -= 1;
            if i > 0 && self.entries[i - 1].0 > a.0 {
                i -= 1;
                self.entries[w] = self.entries[i];
            } else {
                self.entries[w] = *a;
                added.pop();
            }
        }
        self
    }

    /// The summaries in `b` (see [`Next::encode_each`]); `None` when they do not read. Each
    /// part of the entries is handed to `release` once it is read.
    pub fn decode(b: &[u8], release: &(dyn Fn(&[u8]) + Sync)) -> Option<Records> {
        let mut pos = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(pos..pos.checked_add(n)?)?;
            pos += n;
            Some(s)
        };
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        let n = u32_of(take(4)?) as usize;
        let mut schools = Vec::with_capacity(n.min(b.len()));
        for _ in 0..n {
            let len = u32_of(take(4)?) as usize;
            schools.push(std::str::from_utf8(take(len)?).ok()?.to_string());
        }
        let n = usize::try_from(u64_of(take(8)?)).ok()?;
        // The entries are exactly the rest.
        let rest = take(n.checked_mul(ENTRY_BYTES)?)?;
        if pos != b.len() {
            return None;
        }
        let mut entries: Vec<(u64, Entry)> = Vec::with_capacity(n);
        // In parts of some 8 MB, each released once read.
        for part in rest.chunks(ENTRY_BYTES * SUMMARIES_PER_PART) {
            entries.extend(part.chunks_exact(ENTRY_BYTES).map(|e| {
                let entry = Entry {
                    id: [u64_of(&e[8..16]), u64_of(&e[16..24])],
                    pupil: u128::from_le_bytes(e[24..40].try_into().unwrap_or_default()).into(),
                    school: u32_of(&e[40..44]),
                    nulls: u64_of(&e[44..52]),
                };
                (u64_of(&e[..8]), entry)
            }));
            release(part);
        }
        let schools_known =
            |e: &Entry| e.school == NO_SCHOOL || (e.school as usize) < schools.len();
        (entries.iter().all(|(_, e)| schools_known(e))).then_some(Records { schools, entries })
    }
}

/// The summaries for the next day, as the state file holds them: those of the records read
/// (`records`, sorted by record hash), and the places in the day's memo of those carried unread
/// (`kept`, in the memo's order, which is record-hash order). A carried record's summary is
/// the next day's as it is, but for its school's number: two million of them at 1M, 56 bytes
/// each, are not copied (docs/ARCHITECTURE.md, "Carried records").
pub struct Next<'m> {
    records: Records,
    kept: Vec<u32>,
    memo: &'m [(u64, Entry)],
    /// A memo school's number in `records.schools` ([`NO_SCHOOL`]: no kept record's).
    school_of: Vec<u32>,
}

impl<'m> Next<'m> {
    /// Several snapshots' summaries as one (their school numbers in one table), of which the
    /// kept ones are places in `memo`, the memo the snapshots' records were found in.
    pub fn merge(
        parts: impl IntoIterator<Item = (Records, Vec<u32>)>,
        memo: Option<&'m Memo>,
    ) -> Next<'m> {
        let (memo, memo_schools) = match memo {
            Some(m) => (&m.records.entries[..], &m.records.schools[..]),
            None => (&[][..], &[][..]),
        };
        let mut out = Records::default();
        let mut kept: Vec<u32> = Vec::new();
        let mut place: FxHashMap<String, u32> = FxHashMap::default();
        for (mut part, k) in parts {
            match kept.is_empty() {
                true => kept = k,
                false => kept.extend(k),
            }
            let map: Vec<u32> = (part.schools.iter())
                .map(|s| out.school(&mut place, s))
                .collect();
            let known = |e: &Entry| e.school == NO_SCHOOL || map.get(e.school as usize).is_some();
            // The first part with entries keeps its school numbers (unless it names a school
            // twice): its entries are taken as they are, not copied one by one.
            if out.entries.is_empty() && map.iter().enumerate().all(|(i, &s)| s as usize == i) {
                part.entries.retain(|(_, e)| known(e));
                out.entries = part.entries;
                continue;
            }
            out.entries.reserve(part.entries.len());
            for (h, mut e) in part.entries {
                if e.school != NO_SCHOOL {
                    match map.get(e.school as usize) {
                        Some(&s) => e.school = s,
                        None => continue,
                    }
                }
                out.entries.push((h, e));
            }
        }
        // A place is of the memo its record was found in; one outside it, or of a school the
        // memo does not name, is of no record.
        let named = |k: u32| {
            (memo.get(k as usize)).is_some_and(|(_, e)| {
                e.school == NO_SCHOOL || (e.school as usize) < memo_schools.len()
            })
        };
        kept.retain(|&k| named(k));
        // Places spread over the top bits of the sort key, as a hash's are.
        let shift = 64 - (memo.len() as u64).max(1).ilog2() - 1;
        crate::sort::by_hash(&mut kept, |&k| u64::from(k) << shift, Ord::cmp);
        // Two records whose rows are one version (two keys that identity took for one pupil)
        // are of neither: which one the version is cannot be told. The ids are sorted to find
        // them while the entries are sorted by record hash.
        let ids: Vec<[u64; 2]> = (out.entries.iter().map(|(_, e)| e.id))
            .chain(kept.iter().map(|&k| memo[k as usize].1.id))
            .collect();
        let (shared, ()) = crate::par::both(
            move || {
                let mut ids = ids;
                crate::sort::by_hash(&mut ids, |id| id[0], Ord::cmp);
                (ids.windows(2))
                    .filter(|w| w[0] == w[1])
                    .map(|w| w[0])
                    .collect::<rustc_hash::FxHashSet<[u64; 2]>>()
            },
            || crate::sort::by_hash(&mut out.entries, |e| e.0, |a, b| a.0.cmp(&b.0)),
        );
        if !shared.is_empty() {
            out.entries.retain(|(_, e)| !shared.contains(&e.id));
            kept.retain(|&k| !shared.contains(&memo[k as usize].1.id));
        }
        // The kept records' schools, numbered among the read ones'.
        let mut school_of = vec![NO_SCHOOL; memo_schools.len()];
        for &k in &kept {
            let s = memo[k as usize].1.school;
            if s != NO_SCHOOL && school_of[s as usize] == NO_SCHOOL {
                school_of[s as usize] = out.school(&mut place, &memo_schools[s as usize]);
            }
        }
        Next {
            records: out,
            kept,
            memo,
            school_of,
        }
    }

    /// The schools, then every summary in record-hash order: the read ones and the kept ones
    /// (with their schools' numbers here) merged.
    #[cfg(test)]
    fn all(&self) -> (Vec<String>, Vec<(u64, Entry)>) {
        let mut all = Vec::new();
        self.each(usize::MAX, &mut |part| all.extend_from_slice(part));
        (self.records.schools.clone(), all)
    }

    /// Every summary in record-hash order, handed to `out` in parts of at most `per_part`.
    fn each(&self, per_part: usize, out: &mut dyn FnMut(&[Summary])) {
        let kept = self.kept.iter().map(|&k| {
            let (h, e) = self.memo[k as usize];
            let school = match e.school {
                NO_SCHOOL => NO_SCHOOL,
                s => self.school_of[s as usize],
            };
            (h, Entry { school, ..e })
        });
        let mut kept = kept.peekable();
        let mut read = self.records.entries.iter().copied().peekable();
        let per_part = per_part.clamp(1, self.len().max(1));
        let mut part = Vec::with_capacity(per_part);
        loop {
            let next = match (read.peek(), kept.peek()) {
                (Some(r), Some(k)) if k.0 < r.0 => kept.next(),
                (Some(_), _) => read.next(),
                (None, _) => kept.next(),
            };
            let Some(next) = next else { break };
            part.push(next);
            if part.len() == per_part {
                out(&part);
                part.clear();
            }
        }
        if !part.is_empty() {
            out(&part);
        }
    }

    /// The number of summaries.
    pub fn len(&self) -> usize {
        self.records.entries.len() + self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes [`Next::encode_each`] hands on, collected.
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_each(usize::MAX, &mut |part| out.extend_from_slice(&part));
        out
    }

    /// How many bytes [`Next::encode_each`] hands on in all.
    pub fn encoded_len(&self) -> usize {
        let schools: usize = self.records.schools.iter().map(|s| 4 + s.len()).sum();
        4 + schools + 8 + self.len() * ENTRY_BYTES
    }

    /// The bytes of the summaries (framed by the state file), handed to `out` in parts of at most
    /// `per_part` entries each (after one with the schools), so that they are never all in memory
    /// at once: the summaries are a fifth of a gigabyte at a million pupils.
    pub fn encode_each(&self, per_part: usize, out: &mut dyn FnMut(Vec<u8>)) {
        out(head_bytes(&self.records.schools, self.len()));
        self.each(per_part, &mut |entries| out(entry_bytes(entries)));
    }

    /// The record hashes whose summaries may differ from the memo's: those of the memo's
    /// records not kept, and those of the records read (sorted, once each). Every other
    /// summary is the memo's own (docs/ARCHITECTURE.md, "The current state").
    pub fn changed_from_memo(&self) -> Vec<u64> {
        let mut kept = self.kept.iter().peekable();
        let mut out: Vec<u64> = Vec::with_capacity(self.records.entries.len());
        for (place, (h, _)) in self.memo.iter().enumerate() {
            while kept.next_if(|&&k| (k as usize) < place).is_some() {}
            if kept.next_if(|&&k| k as usize == place).is_none() {
                out.push(*h);
            }
        }
        out.extend(self.records.entries.iter().map(|(h, _)| *h));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The summaries whose record hashes are in `hashes` (sorted), in record-hash order, with
    /// the schools their numbers are places in.
    pub fn of_hashes(&self, hashes: &[u64]) -> Records {
        let mut entries = Vec::new();
        let mut want = hashes.iter().peekable();
        self.each(SUMMARIES_PER_PART, &mut |part| {
            for &(h, e) in part {
                while want.next_if(|&&w| w < h).is_some() {}
                if want.peek() == Some(&&h) {
                    entries.push((h, e));
                }
            }
        });
        Records {
            schools: self.records.schools.clone(),
            entries,
        }
    }
}

/// The head of summaries as the state file holds them: the schools, then how many summaries
/// follow.
fn head_bytes(schools: &[String], n: usize) -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(&(schools.len() as u32).to_le_bytes());
    for s in schools {
        head.extend_from_slice(&(s.len() as u32).to_le_bytes());
        head.extend_from_slice(s.as_bytes());
    }
    head.extend_from_slice(&(n as u64).to_le_bytes());
    head
}

/// Entries with their record hashes, as the state file holds them: fixed-size, written in place.
fn entry_bytes(entries: &[Summary]) -> Vec<u8> {
    let mut part = vec![0; entries.len() * ENTRY_BYTES];
    for (b, (h, e)) in part.chunks_exact_mut(ENTRY_BYTES).zip(entries) {
        b[..8].copy_from_slice(&h.to_le_bytes());
        b[8..16].copy_from_slice(&e.id[0].to_le_bytes());
        b[16..24].copy_from_slice(&e.id[1].to_le_bytes());
        b[24..40].copy_from_slice(&e.pupil.get().to_le_bytes());
        b[40..44].copy_from_slice(&e.school.to_le_bytes());
        b[44..52].copy_from_slice(&e.nulls.to_le_bytes());
    }
    part
}

/// Summaries made of one snapshot (`records`: those of its read records whose id is known;
/// `kept`: the places in the day's [`Memo`] of those carried unread, whose summaries are the next
/// day's as they are, so not copied), and for each table one per staged row, in staged order,
/// whose id publish gives (`None`: the row is not summarised).
#[derive(Debug, Default, Clone)]
pub struct Made {
    pub records: Records,
    pub kept: Vec<u32>,
    pub elev: Vec<Option<(u64, Entry)>>,
    pub elevforhold: Vec<Option<(u64, Entry)>>,
}

impl Made {
    /// Gives staged row `row` of `table`'s summary its id (rows without an id stay out).
    pub fn give_id(&mut self, elev: bool, row: usize, id: [u64; 2]) {
        let pending = if elev {
            &mut self.elev
        } else {
            &mut self.elevforhold
        };
        if let Some((h, mut e)) = pending.get_mut(row).and_then(Option::take) {
            e.id = id;
            self.records.entries.push((h, e));
        }
    }
}

/// The summaries of the last publish, in record-hash order: a day's records are found in them by
/// one merge of two sorted lists, not a lookup each.
#[derive(Default)]
pub struct Memo {
    records: Records,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("records", &self.records.entries.len())
            .finish()
    }
}

impl Memo {
    /// The summaries sorted by record hash; a hash met twice is of neither record (which one a
    /// record is cannot be told, so both are read).
    pub fn new(mut records: Records) -> Memo {
        if !records.entries.is_sorted_by_key(|(h, _)| *h) {
            crate::sort::by_hash(&mut records.entries, |e| e.0, |a, b| a.0.cmp(&b.0));
        }
        let e = &records.entries;
        let twice = |i: usize| {
            (i > 0 && e[i - 1].0 == e[i].0) || e.get(i + 1).is_some_and(|n| n.0 == e[i].0)
        };
        if (0..e.len()).any(twice) {
            let keep: Vec<bool> = (0..e.len()).map(|i| !twice(i)).collect();
            let mut k = keep.into_iter();
            records.entries.retain(|_| k.next().unwrap_or(false));
        }
        Memo { records }
    }

    /// The places of `hashes` (sorted by hash, each with a number of the caller's): per hash
    /// found, its number and its summary's place.
    pub fn join(&self, hashes: &[(u64, u32)]) -> Vec<(u32, u32)> {
        let entries = &self.records.entries;
        let mut out = Vec::with_capacity(hashes.len().min(entries.len()));
        let mut j = 0;
        for &(h, n) in hashes {
            while entries.get(j).is_some_and(|e| e.0 < h) {
                j += 1;
            }
            match entries.get(j) {
                Some((eh, _)) if *eh == h => out.push((n, j as u32)),
                Some(_) => {}
                None => break,
            }
        }
        out
    }

    /// The summary at `place` (one [`Memo::join`] gave; [`Entry::NONE`] past the end).
    pub fn entry(&self, place: u32) -> &Entry {
        self.records
            .entries
            .get(place as usize)
            .map_or(&Entry::NONE, |e| &e.1)
    }

    /// The school of a summary of this memo (`None`: a pupil's).
    pub fn school(&self, e: &Entry) -> Option<&str> {
        self.records
            .schools
            .get(e.school as usize)
            .map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.records.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_with_its_record_hash_is_56_bytes_and_keeps_its_pupil_hash_whole() {
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 56);
        for h in [
            0u128,
            1,
            u64::MAX as u128,
            1 << 64,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(Hash128::from(h).get(), h);
        }
    }

    #[test]
    fn a_change_replaces_the_summaries_it_names_in_order_or_not() {
        let entry = |id: u64, school: u32| Entry {
            id: [id, 0],
            pupil: u128::from(id).into(),
            school,
            nulls: 0,
        };
        let base = Records {
            schools: vec!["46591".into(), "46592".into()],
            // 30 twice (both named: both go), 50 not named (stays).
            entries: vec![
                (10, entry(1, 0)),
                (30, entry(3, 1)),
                (30, entry(4, 1)),
                (50, entry(5, 0)),
            ],
        };
        let change = Records {
            schools: vec!["46593".into(), "46592".into()],
            entries: vec![
                (40, entry(9, 0)),
                (10, entry(8, 1)),
                (60, entry(7, NO_SCHOOL)),
            ],
        };
        let named = [10, 20, 30, 40, 60];
        let expect: Vec<(u64, u64, Option<&str>)> = vec![
            (10, 8, Some("46592")),
            (40, 9, Some("46593")),
            (50, 5, Some("46591")),
            (60, 7, None),
        ];
        let mut unsorted = base.clone();
        unsorted.entries.reverse();
        for b in [base, unsorted] {
            let sorted = b.entries.is_sorted_by_key(|e| e.0);
            let got = b.changed(&named, change.clone());
            let got: Vec<(u64, u64, Option<&str>)> = (got.entries.iter())
                .map(|(h, e)| {
                    let school =
                        (e.school != NO_SCHOOL).then(|| got.schools[e.school as usize].as_str());
                    (*h, e.id[0], school)
                })
                .collect();
            match sorted {
                true => assert_eq!(got, expect),
                // Out of order in, the same summaries out (Memo::new sorts them).
                false => {
                    let mut got = got;
                    got.sort();
                    assert_eq!(got, expect);
                }
            }
        }
    }

    /// Summaries merged without a memo, as the state file would hold them.
    fn merged<const N: usize>(parts: [Records; N]) -> Records {
        let next = Next::merge(parts.map(|p| (p, Vec::new())), None);
        let (schools, entries) = next.all();
        Records { schools, entries }
    }

    #[test]
    fn summaries_read_back_as_written_and_merge() {
        let entry = |s: u64, school: u32| Entry {
            id: [s, s + 1],
            pupil: ((s as u128) << 70 | 5).into(),
            school,
            nulls: s * 3,
        };
        let a = Records {
            schools: vec!["46591".into(), "46592".into()],
            entries: vec![
                (12, entry(2, 1)),
                (11, entry(1, 0)),
                (15, entry(5, NO_SCHOOL)),
            ],
        };
        let b = Records {
            schools: vec!["46592".into()],
            entries: vec![(13, entry(3, 0))],
        };
        assert_eq!(Records::decode(&a.to_bytes(), &|_| {}), Some(a.clone()));
        let bytes = a.to_bytes();
        // What the state file's writer makes of the same summaries (none kept from a memo).
        let next = Next {
            records: a.clone(),
            kept: Vec::new(),
            memo: &[],
            school_of: Vec::new(),
        };
        assert_eq!(next.encode(), bytes);
        assert_eq!(Records::decode(&bytes[..bytes.len() - 1], &|_| {}), None);
        let m = merged([a, b]);
        assert_eq!(m.schools, ["46591", "46592"]);
        let hashes: Vec<u64> = m.entries.iter().map(|e| e.0).collect();
        assert_eq!(hashes, [11, 12, 13, 15], "sorted by record hash");
        let memo = Memo::new(m);
        let found = memo.join(&[(10, 0), (11, 1), (13, 2), (15, 3), (16, 4)]);
        let found: Vec<(u32, [u64; 2], Option<&str>)> = (found.into_iter())
            .map(|(n, p)| (n, memo.entry(p).id, memo.school(memo.entry(p))))
            .collect();
        assert_eq!(
            found,
            [
                (1, [1, 2], Some("46591")),
                (2, [3, 4], Some("46592")),
                (3, [5, 6], None)
            ]
        );
        // The first part's entries are taken as they are, but for one of a school it does not
        // name; a first part that names a school twice has its numbers made anew.
        let lone = Records {
            schools: vec!["46591".into()],
            entries: vec![
                (21, entry(1, 0)),
                (20, entry(2, 7)),
                (19, entry(3, NO_SCHOOL)),
            ],
        };
        let m = merged([lone]);
        assert_eq!(m.schools, ["46591"]);
        let got: Vec<(u64, u32)> = m.entries.iter().map(|(h, e)| (*h, e.school)).collect();
        assert_eq!(got, [(19, NO_SCHOOL), (21, 0)]);
        let twice = Records {
            schools: vec!["46591".into(), "46592".into(), "46591".into()],
            entries: vec![(31, entry(1, 2)), (30, entry(2, 1))],
        };
        let m = merged([Records::default(), twice]);
        assert_eq!(m.schools, ["46591", "46592"]);
        let got: Vec<(u64, u32)> = m.entries.iter().map(|(h, e)| (*h, e.school)).collect();
        assert_eq!(got, [(30, 1), (31, 0)]);
        // Two records of one version are of neither, also when the first part is taken whole.
        let one_version = Records {
            schools: vec![],
            entries: vec![
                (41, entry(1, NO_SCHOOL)),
                (40, entry(1, NO_SCHOOL)),
                (42, entry(2, NO_SCHOOL)),
            ],
        };
        let m = merged([one_version]);
        assert_eq!(m.entries.iter().map(|e| e.0).collect::<Vec<_>>(), [42]);
        // A hash met twice finds neither record.
        let twice = Records {
            schools: vec!["1".into()],
            entries: vec![(9, entry(1, 0)), (9, entry(2, 0)), (10, entry(3, 0))],
        };
        let memo = Memo::new(twice);
        assert_eq!(memo.len(), 1);
        let found = memo.join(&[(9, 0), (10, 1)]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 1);
    }
    #[test]
    fn carried_summaries_are_written_from_their_places_in_the_memo() {
        let entry = |s: u64, school: u32| Entry {
            id: [s, s + 1],
            pupil: ((s as u128) << 70 | 9).into(),
            school,
            nulls: s,
        };
        // The day's memo: three schools, one of them no kept record's.
        let memo = Memo::new(Records {
            schools: vec!["A".into(), "B".into(), "C".into()],
            entries: vec![
                (10, entry(1, 0)),
                (20, entry(2, 2)),
                (30, entry(3, NO_SCHOOL)),
                (40, entry(4, 1)),
                (50, entry(5, 2)),
            ],
        });
        // Snapshot one read two records (one at a school the memo does not name) and kept
        // three, out of hash order; snapshot two kept the record at 40 again (its id is then
        // met twice: of neither) and one place past the memo's end (of no record).
        let read = Records {
            schools: vec!["D".into(), "C".into()],
            entries: vec![(35, entry(7, 0)), (15, entry(8, 1))],
        };
        let again = Records::default();
        let next = Next::merge([(read, vec![4, 0, 3]), (again, vec![3, 9])], Some(&memo));
        assert_eq!(next.len(), 4);
        let (schools, all) = next.all();
        let school = |e: &Entry| schools.get(e.school as usize).map(String::as_str);
        let got: Vec<(u64, u64, Option<&str>)> =
            all.iter().map(|(h, e)| (*h, e.id[0], school(e))).collect();
        assert_eq!(
            got,
            [
                (10, 1, Some("A")),
                (15, 8, Some("C")),
                (35, 7, Some("D")),
                (50, 5, Some("C")),
            ]
        );
        assert!(
            !schools.contains(&"B".to_string()),
            "no kept record's school"
        );
        // What is written reads back as the same summaries, whole or in parts of any size.
        let whole = next.encode();
        assert_eq!(whole.len(), next.encoded_len());
        for per_part in [1, 2, 3, 100] {
            let mut parts = Vec::new();
            next.encode_each(per_part, &mut |p| parts.push(p));
            assert_eq!(parts.len(), 1 + 4usize.div_ceil(per_part));
            assert_eq!(parts.concat(), whole);
        }
        let back = Records::decode(&whole, &|_| {}).expect("reads back");
        assert_eq!(back.schools, schools);
        assert_eq!(back.entries, all);
        assert_eq!(
            back.entries[3].1,
            Entry {
                school: back.entries[3].1.school,
                ..entry(5, 2)
            }
        );
    }
}
