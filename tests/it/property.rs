//! Property: random sequences of random snapshots, loaded in random order and in random batches,
//! give the same history (ignoring transaction_time) as loading them one by one in as-of order.
//!
//! Seeds: ELEVFLYT_PROPTEST_SEEDS (default 6 per test, 4 tests: 24 cases); a failure prints the
//! seed to reproduce with ELEVFLYT_PROPTEST_SEED.

use crate::fixtures::{oneroster, p, pipeline, tenor, vigo, P};
use crate::scenarios::{ef, elev, load};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// One export file: where it goes and how to write it.
enum File {
    OneRoster(String, Vec<P>),
    Vigo(String, String, Vec<(String, String, String)>),
}

impl File {
    fn write(&self, dir: &std::path::Path) {
        match self {
            File::OneRoster(date, pupils) => {
                oneroster(dir, date, pupils);
            }
            File::Vigo(school, date, rows) => {
                let rows: Vec<(&str, &str, &str)> = rows
                    .iter()
                    .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                    .collect();
                vigo(dir, school, date, &rows);
            }
        }
    }
}

fn oneroster_files(rng: &mut Rng) -> Vec<File> {
    let n_snap = 3 + rng.below(3);
    (0..n_snap)
        .map(|i| {
            let date = format!("2026-{:02}-{:02}", 1 + i, 1 + rng.below(27));
            let present: Vec<u64> = (0..6).filter(|_| rng.chance(75)).collect();
            let pupils = present
                .into_iter()
                .map(|k| {
                    let name = ["Ask", "Bø", "Dal"][rng.below(3) as usize];
                    let school = ["46591", "46592"][rng.below(2) as usize];
                    let class = ["5A", "5B"][rng.below(2) as usize];
                    // Pupil 0 swaps a D-number for a fødselsnummer now and then.
                    let fnr = tenor(100 + k as u32, k == 0 && rng.chance(50) && i < 2);
                    p(&format!("u{k}"), &fnr, name, school, class)
                })
                .collect();
            File::OneRoster(date, pupils)
        })
        .collect()
}

fn vigo_files(rng: &mut Rng) -> Vec<File> {
    let n_snap = 3 + rng.below(3);
    (0..n_snap)
        .map(|i| {
            let school = ["46520", "46521"][rng.below(2) as usize];
            let date = format!("2026{:02}{:02}", 1 + i, 1 + rng.below(27));
            let present: Vec<u32> = (0..5).filter(|_| rng.chance(60)).collect();
            let rows = present
                .into_iter()
                .map(|k| {
                    let class = ["10A", "10B"][rng.below(2) as usize];
                    let name = ["Kim Ask", "Kim Bø"][rng.below(2) as usize];
                    (tenor(200 + k, false), name.to_string(), class.to_string())
                })
                .collect();
            File::Vigo(school.to_string(), date, rows)
        })
        .collect()
}

async fn case(seed: u64, vigo_format: bool) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let files = if vigo_format {
        vigo_files(&mut rng)
    } else {
        oneroster_files(&mut rng)
    };
    let (format, name) = if vigo_format {
        ("vigo-csv", "vigo")
    } else {
        ("oneroster-json", "vigilo")
    };

    // Reference: one run per file, in as-of order (files are generated in date order).
    let a = tempfile::tempdir().unwrap();
    let pa = pipeline(a.path(), &[(name, format, &a.path().join("src"))], "");
    for f in &files {
        f.write(&a.path().join("src"));
        load(&pa).await;
    }
    // Random order, random batches.
    let b = tempfile::tempdir().unwrap();
    let pb = pipeline(b.path(), &[(name, format, &b.path().join("src"))], "");
    let mut order: Vec<usize> = (0..files.len()).collect();
    rng.shuffle(&mut order);
    let mut i = 0;
    while i < order.len() {
        let n = 1 + rng.below(2) as usize;
        for k in &order[i..(i + n).min(order.len())] {
            files[*k].write(&b.path().join("src"));
        }
        load(&pb).await;
        i += n;
    }
    let ctx = format!("seed {seed} ({format}, order {order:?})");
    assert_eq!(elev(&pb).await, elev(&pa).await, "elev differs: {ctx}");
    assert_eq!(ef(&pb).await, ef(&pa).await, "elevforhold differs: {ctx}");
    let ids = "SELECT DISTINCT id, coalesce(system_id, fodselsnummer) FROM elev ORDER BY 1, 2";
    assert_eq!(
        crate::common::rows(&pb, ids).await,
        crate::common::rows(&pa, ids).await,
        "ids differ: {ctx}"
    );
    assert!(
        elevflyt::ops::check(&pb).await.unwrap().is_empty(),
        "invariants: {ctx}"
    );
}

fn seeds(offset: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("ELEVFLYT_PROPTEST_SEED") {
        return vec![s.parse().unwrap()];
    }
    let n: u64 = std::env::var("ELEVFLYT_PROPTEST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    (0..n).map(|i| offset * 1000 + i).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn oneroster_any_order_equals_as_of_order_a() {
    for s in seeds(1) {
        case(s, false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oneroster_any_order_equals_as_of_order_b() {
    for s in seeds(2) {
        case(s, false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vigo_any_order_equals_as_of_order_a() {
    for s in seeds(3) {
        case(s, true).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vigo_any_order_equals_as_of_order_b() {
    for s in seeds(4) {
        case(s, true).await;
    }
}
