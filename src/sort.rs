//! Sorting millions of items keyed by hashes (record hashes, hashed keys, random ids) without a
//! comparison sort's passes over all of them (docs/ARCHITECTURE.md, "Sorting by hash").

use std::cmp::Ordering;

/// Fewer items than this are sorted the usual way.
const SMALL: usize = 1 << 12;

/// Bits of the first pass of [`by_hash`]: 256 buckets, whose next free places stay in the cache.
const FIRST_BITS: u32 = 8;

/// Sorts `v` by `cmp`, in place. `top` gives the first 64 bits of an item's sort key, spread
/// evenly over their range (a hash): `top(a) < top(b)` must mean that `a` sorts before `b`.
/// Keys that are not spread evenly make larger buckets: slower, never wrong. Not stable.
///
/// Two passes of buckets (docs/ARCHITECTURE.md, "Sorting by hash"): the first moves each item
/// into one of 256 buckets by its top 8 bits where the items are (each moved once, to the next
/// free place of its bucket; 256 such places stay in the cache); the second, on two cores, sorts
/// each of those buckets by its next bits through a copy of that bucket alone, and each of its
/// own buckets — a few dozen items — the usual way. No copy of `v` is made: at two million
/// summaries a copy was as large as the list, and placing all of them in place at once (not in
/// 256 buckets) was three times slower than the copy.
pub fn by_hash<T: Copy + Send>(
    v: &mut [T],
    top: impl Fn(&T) -> u64 + Sync,
    cmp: impl Fn(&T, &T) -> Ordering + Sync,
) {
    let n = v.len();
    if n < SMALL {
        v.sort_unstable_by(cmp);
        return;
    }
    let first = |x: &T| (top(x) >> (64 - FIRST_BITS)) as usize;
    let mut start = [0usize; (1 << FIRST_BITS) + 1];
    for x in v.iter() {
        start[first(x) + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut next = start;
    for b in 0..(1 << FIRST_BITS) {
        while next[b] < start[b + 1] {
            let mut x = v[next[b]];
            let mut home = first(&x);
            while home != b {
                // `home`'s next place holds an item not yet placed: the counts add up to `n`.
                std::mem::swap(&mut x, &mut v[next[home]]);
                next[home] += 1;
                home = first(&x);
            }
            v[next[b]] = x;
            next[b] += 1;
        }
    }
    // The buckets of each half of the items on a core of their own.
    let sort_buckets = |items: &mut [T], bounds: &[usize]| {
        let mut copy: Vec<T> = Vec::new();
        let offset = bounds[0];
        for w in bounds.windows(2) {
            let bucket = &mut items[w[0] - offset..w[1] - offset];
            by_next_bits(bucket, &mut copy, &top, &cmp);
        }
    };
    let half = start.partition_point(|&s| s < n / 2);
    let (low, high) = v.split_at_mut(start[half]);
    crate::par::both(
        || sort_buckets(low, &start[..=half]),
        || sort_buckets(high, &start[half..]),
    );
}

/// The second pass of [`by_hash`] over one of the first pass's buckets: its items counted per
/// bucket of their next bits, placed from `copy` (the bucket's own copy), each of these buckets
/// then sorted the usual way.
fn by_next_bits<T: Copy>(
    items: &mut [T],
    copy: &mut Vec<T>,
    top: impl Fn(&T) -> u64,
    cmp: impl Fn(&T, &T) -> Ordering,
) {
    let m = items.len();
    if m < 64 {
        items.sort_unstable_by(cmp);
        return;
    }
    // About 32 items per bucket.
    let bits = (m / 32).ilog2().clamp(1, 20);
    let bucket = |x: &T| ((top(x) << FIRST_BITS) >> (64 - bits)) as usize;
    let mut start = vec![0usize; (1 << bits) + 1];
    for x in items.iter() {
        start[bucket(x) + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    copy.clear();
    copy.extend_from_slice(items);
    let mut next = start.clone();
    for x in copy.iter() {
        let b = bucket(x);
        items[next[b]] = *x;
        next[b] += 1;
    }
    for w in start.windows(2) {
        items[w[0]..w[1]].sort_unstable_by(&cmp);
    }
}

/// Items sorted by a hash, found through where each bucket of the hash's top bits begins (about
/// four items a bucket: one or two cache lines a question, no table of empty buckets). Made once,
/// then only asked: 4 bytes an item beside the items, where a hash table of them holds twice as
/// many buckets as items.
pub struct HashSorted<T> {
    items: Vec<T>,
    starts: Vec<u32>,
    bits: u32,
}

impl<T> HashSorted<T> {
    /// `items`, already sorted by `top` (a hash's first 64 bits, as [`by_hash`] sorts them);
    /// fewer than 2³² of them.
    pub fn of_sorted(items: Vec<T>, top: impl Fn(&T) -> u64) -> HashSorted<T> {
        let bits = (items.len() / 4).max(2).ilog2().min(24);
        let mut starts = vec![0u32; (1 << bits) + 1];
        for x in &items {
            starts[(top(x) >> (64 - bits)) as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        HashSorted {
            items,
            starts,
            bits,
        }
    }

    /// The items whose hash has these first 64 bits, and a few others beside them.
    pub fn near(&self, top: u64) -> &[T] {
        let b = (top >> (64 - self.bits)) as usize;
        &self.items[self.starts[b] as usize..self.starts[b + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Sorts `v` by `cmp`, stably, the two halves on two cores and then merged (equal items keep
/// their order: the first half's come first). For keys that are not spread evenly (texts),
/// where [`by_hash`] would crowd its buckets; runs already sorted cost next to nothing.
pub fn stable_by<T: Copy + Send>(v: &mut Vec<T>, cmp: impl Fn(&T, &T) -> Ordering + Sync) {
    let n = v.len();
    if n < SMALL {
        v.sort_by(cmp);
        return;
    }
    let (a, b) = v.split_at_mut(n / 2);
    crate::par::both(|| a.sort_by(&cmp), || b.sort_by(&cmp));
    let (a, b) = v.split_at(n / 2);
    let mut out = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if cmp(&b[j], &a[i]) == Ordering::Less {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random keys with many ties, keys already sorted but for a tail, and small inputs come
    /// out as the standard stable sort orders them (ties in their first order).
    #[test]
    fn stable_by_sorts_as_the_stable_sort_does() {
        let random: Vec<(u64, u32)> = (0..50_000u32)
            .map(|i| (xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) % 5_000, i))
            .collect();
        let mostly_sorted: Vec<(u64, u32)> = (0..30_000u32)
            .map(|i| match i < 29_000 {
                true => (i as u64 / 3, i),
                false => (xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) % 10_000, i),
            })
            .collect();
        let small: Vec<(u64, u32)> = random[..100].to_vec();
        for input in [random, mostly_sorted, small, Vec::new()] {
            let mut expected = input.clone();
            expected.sort_by_key(|x| x.0);
            let mut got = input;
            stable_by(&mut got, |a, b| a.0.cmp(&b.0));
            assert_eq!(got, expected);
        }
    }

    /// Hashed keys, keys that all fall in one bucket, and small inputs come out as a
    /// comparison sort orders them, ties on the top bits broken by the rest of the key.
    #[test]
    fn sorts_as_a_comparison_sort_does() {
        let hashed: Vec<(u64, u32)> = (0..100_000u32)
            .map(|i| (xxhash_rust::xxh3::xxh3_64(&(i % 70_000).to_le_bytes()), i))
            .collect();
        let crowded: Vec<(u64, u32)> = (0..20_000u32).map(|i| (7, 20_000 - i)).collect();
        let small: Vec<(u64, u32)> = hashed[..100].to_vec();
        // Just past the usual sort: first-pass buckets of a few dozen, sorted the usual way.
        let few: Vec<(u64, u32)> = hashed[..SMALL + 1_000].to_vec();
        for input in [hashed, crowded, small, few, Vec::new()] {
            let mut expected = input.clone();
            expected.sort_unstable();
            let mut got = input;
            by_hash(&mut got, |x| x.0, Ord::cmp);
            assert_eq!(got, expected);
        }
        // Ids of two words sorted by their first: equal first words (three ids each) are
        // ordered by the second.
        let mut ids: Vec<[u64; 2]> = (0..60_000u64)
            .map(|i| {
                [
                    xxhash_rust::xxh3::xxh3_64(&(i / 3).to_le_bytes()),
                    60_000 - i,
                ]
            })
            .collect();
        assert!(ids
            .windows(2)
            .any(|w| w[0][0] == w[1][0] && w[0][1] > w[1][1]));
        let mut expected = ids.clone();
        expected.sort_unstable();
        by_hash(&mut ids, |x| x[0], Ord::cmp);
        assert_eq!(ids, expected);
    }
}
