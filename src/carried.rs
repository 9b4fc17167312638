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

/// A 128-bit hash kept as two 64-bit halves: a `u128` would align [`Entry`] to 16 bytes, and
/// make a summary with its record hash 64 bytes instead of 56 (millions of them are held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The bytes of one entry with its record hash.
const ENTRY_BYTES: usize = 8 + 16 + 16 + 4 + 8;

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

    /// Several snapshots' summaries as one (their school numbers in one table), sorted by
    /// record hash.
    pub fn merge(parts: impl IntoIterator<Item = Records>) -> Records {
        let mut out = Records::default();
        let mut place: FxHashMap<String, u32> = FxHashMap::default();
        for mut part in parts {
            let map: Vec<u32> = (part.schools.iter())
                .map(|s| out.school(&mut place, s))
                .collect();
            let known = |e: &Entry| e.school == NO_SCHOOL || map.get(e.school as usize).is_some();
            // The first part with entries keeps its school numbers (unless it names a school
            // twice): its entries are taken as they are, not copied one by one — a next day's
            // one snapshot is two and a half million of them.
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
        // Two records whose rows are one version (two keys that identity took for one pupil)
        // are of neither: which one the version is cannot be told. The ids are sorted to find
        // them while the entries are sorted by record hash.
        let ids: Vec<[u64; 2]> = out.entries.iter().map(|(_, e)| e.id).collect();
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
        }
        out
    }

    /// The bytes [`Records::encode_each`] hands on, collected.
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_each(usize::MAX, &mut |part| out.extend_from_slice(&part));
        out
    }

    /// How many bytes [`Records::encode_each`] hands on in all.
    pub fn encoded_len(&self) -> usize {
        let schools: usize = self.schools.iter().map(|s| 4 + s.len()).sum();
        4 + schools + 8 + self.entries.len() * ENTRY_BYTES
    }

    /// The bytes of the summaries (framed by the state file), handed to `out` in parts of at most
    /// `per_part` entries each (after one with the schools), so that they are never all in memory
    /// at once: the summaries are a fifth of a gigabyte at a million pupils.
    pub fn encode_each(&self, per_part: usize, out: &mut dyn FnMut(Vec<u8>)) {
        let mut head = Vec::new();
        head.extend_from_slice(&(self.schools.len() as u32).to_le_bytes());
        for s in &self.schools {
            head.extend_from_slice(&(s.len() as u32).to_le_bytes());
            head.extend_from_slice(s.as_bytes());
        }
        head.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        out(head);
        // Fixed-size entries written in place.
        for entries in self.entries.chunks(per_part.max(1)) {
            let mut part = vec![0; entries.len() * ENTRY_BYTES];
            for (b, (h, e)) in part.chunks_exact_mut(ENTRY_BYTES).zip(entries) {
                b[..8].copy_from_slice(&h.to_le_bytes());
                b[8..16].copy_from_slice(&e.id[0].to_le_bytes());
                b[16..24].copy_from_slice(&e.id[1].to_le_bytes());
                b[24..40].copy_from_slice(&e.pupil.get().to_le_bytes());
                b[40..44].copy_from_slice(&e.school.to_le_bytes());
                b[44..52].copy_from_slice(&e.nulls.to_le_bytes());
            }
            out(part);
        }
    }

    /// The summaries in `b` (see [`Records::encode_each`]); `None` when they do not read.
    pub fn decode(b: &[u8]) -> Option<Records> {
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
        let entries: Vec<(u64, Entry)> = (rest.chunks_exact(ENTRY_BYTES))
            .map(|e| {
                let entry = Entry {
                    id: [u64_of(&e[8..16]), u64_of(&e[16..24])],
                    pupil: u128::from_le_bytes(e[24..40].try_into().unwrap_or_default()).into(),
                    school: u32_of(&e[40..44]),
                    nulls: u64_of(&e[44..52]),
                };
                (u64_of(&e[..8]), entry)
            })
            .collect();
        let schools_known =
            |e: &Entry| e.school == NO_SCHOOL || (e.school as usize) < schools.len();
        (entries.iter().all(|(_, e)| schools_known(e))).then_some(Records { schools, entries })
    }
}

/// Summaries made of one snapshot (`records`: those whose id is known), and for each table one
/// per staged row, in staged order, whose id publish gives (`None`: the row is not summarised).
#[derive(Debug, Default, Clone)]
pub struct Made {
    pub records: Records,
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

    /// The summaries of `hashes` (sorted by hash, each with a number of the caller's): per hash
    /// found, its number, summary and school number (`None`: a pupil's).
    pub fn join<'m>(&'m self, hashes: &[(u64, u32)]) -> Vec<(u32, &'m Entry, Option<&'m str>)> {
        let entries = &self.records.entries;
        let mut out = Vec::with_capacity(hashes.len().min(entries.len()));
        let mut j = 0;
        for &(h, n) in hashes {
            while entries.get(j).is_some_and(|e| e.0 < h) {
                j += 1;
            }
            match entries.get(j) {
                Some((eh, e)) if *eh == h => {
                    let school = self.records.schools.get(e.school as usize);
                    out.push((n, e, school.map(String::as_str)));
                }
                Some(_) => {}
                None => break,
            }
        }
        out
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
        assert_eq!(Records::decode(&a.encode()), Some(a.clone()));
        // In parts of two entries: a head and two parts, the same bytes.
        let mut parts = Vec::new();
        a.encode_each(2, &mut |p| parts.push(p));
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), a.encode());
        assert_eq!(a.encode().len(), a.encoded_len());
        let bytes = a.encode();
        assert_eq!(Records::decode(&bytes[..bytes.len() - 1]), None);
        let m = Records::merge([a, b]);
        assert_eq!(m.schools, ["46591", "46592"]);
        let hashes: Vec<u64> = m.entries.iter().map(|e| e.0).collect();
        assert_eq!(hashes, [11, 12, 13, 15], "sorted by record hash");
        let memo = Memo::new(m);
        let found = memo.join(&[(10, 0), (11, 1), (13, 2), (15, 3), (16, 4)]);
        let found: Vec<(u32, [u64; 2], Option<&str>)> =
            found.into_iter().map(|(n, e, s)| (n, e.id, s)).collect();
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
        let m = Records::merge([lone]);
        assert_eq!(m.schools, ["46591"]);
        let got: Vec<(u64, u32)> = m.entries.iter().map(|(h, e)| (*h, e.school)).collect();
        assert_eq!(got, [(19, NO_SCHOOL), (21, 0)]);
        let twice = Records {
            schools: vec!["46591".into(), "46592".into(), "46591".into()],
            entries: vec![(31, entry(1, 2)), (30, entry(2, 1))],
        };
        let m = Records::merge([Records::default(), twice]);
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
        let m = Records::merge([one_version]);
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
}
