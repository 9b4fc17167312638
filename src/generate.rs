//! `elevflyt generate`: synthetic exports at any scale, deterministic by seed — Tenor-style
//! fødselsnummer (month + 80) with valid control digits, invented names, about 300 pupils per
//! school, and churn between snapshots (moves, name changes, leavers, newcomers, D-number →
//! fødselsnummer). Never real people.

use std::path::Path;

use chrono::{Duration, NaiveDate};

use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Kommunenummer, or every kommune in the 2024 list.
    pub kommuner: Vec<String>,
    pub pupils: u64,
    pub snapshots: u32,
    pub churn: f64,
    pub seed: u64,
    pub start: NaiveDate,
    pub interval_days: i64,
}

/// Writes one snapshot of the population as a format's files; returns their paths (an input
/// format's `write_sample`).
pub type WriteSnapshot<'w> = &'w dyn Fn(&Path, NaiveDate, &Population<'_>) -> Result<Vec<String>>;

/// A small deterministic generator (splitmix64).
struct Rng(u64, std::collections::HashSet<String>);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15, Default::default())
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

const FORNAVN: &[&str] = &[
    "Ingrid",
    "Ola",
    "Kari",
    "Sindre",
    "Åse",
    "Bjørn",
    "Solveig",
    "Eirik",
    "Marte",
    "Håkon",
    "Sigrid",
    "Torbjørn",
    "Ragnhild",
    "Øystein",
    "Liv",
    "Jørgen",
    "Tuva",
    "Even",
    "Maja",
    "Aksel",
    "Hedda",
    "Vetle",
    "Ylva",
    "Brage",
    "Frøya",
    "Tiril",
    "Sølve",
    "Embla",
    "Odin",
    "Nora",
];
const ETTERNAVN: &[&str] = &[
    "Fjellheim",
    "Nordbø",
    "Strandvik",
    "Brekkestø",
    "Lysefjord",
    "Haugland",
    "Myrvang",
    "Skogrand",
    "Sætervik",
    "Øvrebø",
    "Kvamsdal",
    "Lindås",
    "Tveitane",
    "Rølvåg",
    "Bjørkedal",
    "Solheimsvik",
    "Grønås",
    "Hammersvoll",
    "Åsvang",
    "Bergslien",
];

/// A synthetic Tenor number (month + 80) for a birth date; `dnr` adds 40 to the day.
fn tenor_fnr(rng: &mut Rng, year: i32, month: u32, day: u32, dnr: bool) -> String {
    const W1: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
    const W2: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let (mut month, mut day) = (month, day);
    let mut misses = 0u32;
    loop {
        // A date has about 400 valid numbers (500 individnummer of its century): when its
        // numbers keep being taken, the pupil is born on another day of the year.
        if misses == 64 {
            (month, day) = (1 + rng.below(12) as u32, 1 + rng.below(28) as u32);
            misses = 0;
        }
        misses += 1;
        // Individnummer 500–999 is a birth in 2000–2039, 000–499 one in the 1900s.
        let individ = if year >= 2000 { 500 } else { 0 } + rng.below(500) as u32;
        let s = format!(
            "{:02}{:02}{:02}{:03}",
            day + if dnr { 40 } else { 0 },
            month + 80,
            year % 100,
            individ
        );
        let d: Vec<u32> = s.bytes().map(|b| (b - b'0') as u32).collect();
        let k1 = (11 - W1.iter().zip(&d).map(|(w, x)| w * x).sum::<u32>() % 11) % 11;
        if k1 == 10 {
            continue;
        }
        let k2 = (11
            - W2.iter()
                .zip(d.iter().chain([&k1]))
                .map(|(w, x)| w * x)
                .sum::<u32>()
                % 11)
            % 11;
        if k2 == 10 {
            continue;
        }
        let fnr = format!("{s}{k1}{k2}");
        // Every number once: two pupils never share one.
        if rng.1.insert(fnr.clone()) {
            return fnr;
        }
    }
}

/// One snapshot of the synthetic world, as a format's sample writer gets it.
pub struct Population<'a> {
    /// The calendar year the school year ends in.
    pub year_end: i32,
    pub schools: &'a [School],
    pub pupils: &'a [Pupil],
}

#[derive(Clone)]
pub struct Pupil {
    /// The school system's id (`P0000001`).
    pub sid: String,
    /// Tenor-style (month + 80) fødselsnummer or D-number; never a real person's.
    pub fnr: String,
    dnr_birth: Option<(i32, u32, u32)>,
    pub given: &'static str,
    pub family: &'static str,
    /// Index into [`Population::schools`].
    pub school: usize,
    pub grade: u32,
    pub class: char,
}

pub struct School {
    pub kommune: String,
    pub skolenummer: String,
    pub orgnr: String,
    pub name: String,
}

fn orgnr(n: u64) -> String {
    const W: [u64; 8] = [3, 2, 7, 6, 5, 4, 3, 2];
    let mut base = 310_000_000 / 10 + n * 7;
    loop {
        let digits: Vec<u64> = format!("{base:08}")
            .bytes()
            .map(|b| (b - b'0') as u64)
            .collect();
        let k = (11 - W.iter().zip(&digits).map(|(w, x)| w * x).sum::<u64>() % 11) % 11;
        if k < 10 {
            return format!("{base:08}{k}");
        }
        base += 1;
    }
}

fn schools(spec: &Spec) -> Vec<School> {
    let per_school = 300;
    let n_schools = spec.pupils.div_ceil(per_school).max(1) as usize;
    let mut per_fylke: std::collections::HashMap<String, u32> = Default::default();
    (0..n_schools)
        .map(|i| {
            let kommune = spec.kommuner[i % spec.kommuner.len()].clone();
            let fylke = kommune[..2].to_string();
            let seq = per_fylke.entry(fylke.clone()).or_insert(500);
            let nr = *seq;
            *seq += 1;
            let skolenummer = if nr <= 799 {
                format!("{fylke}{nr:03}")
            } else {
                format!("{fylke}{:03}", nr % 1000)
            };
            School {
                kommune,
                skolenummer,
                orgnr: orgnr(i as u64),
                name: format!("{} skule", ETTERNAVN[i % ETTERNAVN.len()]),
            }
        })
        .collect()
}

/// Over how many decades a grade's pupils are born: one up to a million pupils; beyond that a
/// decade more per million (adults in grunnskole). A birth year has about 140,000 Tenor
/// numbers (336 dates of about 400 each) and ten grades share ten years: more than about 1.4
/// million pupils born in one decade could not all have a number.
fn birth_decades(pupils: u64) -> u64 {
    1 + pupils.saturating_sub(1) / 1_000_000
}

fn new_pupil(rng: &mut Rng, i: u64, n_schools: usize, year_end: i32, decades: u64) -> Pupil {
    let grade = 1 + rng.below(10) as u32;
    // Up to a million pupils the same draws as ever (the same data for the same seed).
    let decades_earlier = if decades > 1 {
        rng.below(decades) as i32
    } else {
        0
    };
    let year = year_end - 6 - grade as i32 - 10 * decades_earlier;
    let (month, day) = (1 + rng.below(12) as u32, 1 + rng.below(28) as u32);
    let dnr = rng.chance(0.02);
    Pupil {
        sid: format!("P{i:07}"),
        fnr: tenor_fnr(rng, year, month, day, dnr),
        dnr_birth: dnr.then_some((year, month, day)),
        given: FORNAVN[rng.below(FORNAVN.len() as u64) as usize],
        family: ETTERNAVN[rng.below(ETTERNAVN.len() as u64) as usize],
        school: rng.below(n_schools as u64) as usize,
        grade,
        class: if rng.chance(0.5) { 'A' } else { 'B' },
    }
}

/// Applies churn to a snapshot's pupils: moves, name changes, leavers, newcomers, D → fnr.
fn churn(
    rng: &mut Rng,
    pupils: &mut Vec<Pupil>,
    rate: f64,
    next_id: &mut u64,
    n_schools: usize,
    year_end: i32,
    decades: u64,
) {
    let n = pupils.len();
    let changes = (n as f64 * rate).round() as usize;
    for _ in 0..changes {
        if pupils.is_empty() {
            break;
        }
        let k = rng.below(pupils.len() as u64) as usize;
        match rng.below(5) {
            0 => pupils[k].school = rng.below(n_schools as u64) as usize,
            1 => pupils[k].family = ETTERNAVN[rng.below(ETTERNAVN.len() as u64) as usize],
            2 => {
                pupils.swap_remove(k);
            }
            3 => {
                pupils.push(new_pupil(rng, *next_id, n_schools, year_end, decades));
                *next_id += 1;
            }
            _ => {
                if let Some((y, m, d)) = pupils[k].dnr_birth.take() {
                    pupils[k].fnr = tenor_fnr(rng, y, m, d, false);
                } else {
                    pupils[k].class = if pupils[k].class == 'A' { 'B' } else { 'A' };
                }
            }
        }
    }
}

/// Writes the exports; returns the files written.
pub fn generate(spec: &Spec, out: &Path, write: WriteSnapshot<'_>) -> Result<Vec<String>> {
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", out.display())))?;
    let mut rng = Rng::new(spec.seed);
    let schools = schools(spec);
    let year_end = if chrono::Datelike::month(&spec.start) >= 8 {
        chrono::Datelike::year(&spec.start) + 1
    } else {
        chrono::Datelike::year(&spec.start)
    };
    let decades = birth_decades(spec.pupils);
    let mut pupils: Vec<Pupil> = (0..spec.pupils)
        .map(|i| new_pupil(&mut rng, i, schools.len(), year_end, decades))
        .collect();
    let mut next_id = spec.pupils;
    let mut files = Vec::new();
    for k in 0..spec.snapshots {
        if k > 0 {
            churn(
                &mut rng,
                &mut pupils,
                spec.churn,
                &mut next_id,
                schools.len(),
                year_end,
                decades,
            );
        }
        let date = spec.start + Duration::days(spec.interval_days * k as i64);
        let population = Population {
            year_end,
            schools: &schools,
            pupils: &pupils,
        };
        files.extend(write(out, date, &population)?);
    }
    Ok(files)
}

/// The error for a file that cannot be written.
pub fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Other(format!("cannot write {}: {e}", path.display()))
}

/// `generate --national`: one snapshot split into one export per kommune, each written by
/// `write` into `<out>/<kommunenummer>/` with only that kommune's schools and pupils.
pub fn per_kommune(
    out: &Path,
    date: NaiveDate,
    population: &Population<'_>,
    write: WriteSnapshot<'_>,
) -> Result<Vec<String>> {
    let mut by_kommune: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, s) in population.schools.iter().enumerate() {
        by_kommune.entry(s.kommune.as_str()).or_default().push(i);
    }
    let mut pupils_of: Vec<Vec<&Pupil>> = vec![Vec::new(); population.schools.len()];
    for p in population.pupils {
        pupils_of[p.school].push(p);
    }
    let mut files = Vec::new();
    for (kommune, schools) in by_kommune {
        let dir = out.join(kommune);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
        let local: Vec<School> = schools
            .iter()
            .map(|&i| {
                let s = &population.schools[i];
                School {
                    kommune: s.kommune.clone(),
                    skolenummer: s.skolenummer.clone(),
                    orgnr: s.orgnr.clone(),
                    name: s.name.clone(),
                }
            })
            .collect();
        let pupils: Vec<Pupil> = schools
            .iter()
            .enumerate()
            .flat_map(|(local, &i)| {
                pupils_of[i].iter().map(move |p| Pupil {
                    school: local,
                    ..(*p).clone()
                })
            })
            .collect();
        files.extend(write(
            &dir,
            date,
            &Population {
                year_end: population.year_end,
                schools: &local,
                pupils: &pupils,
            },
        )?);
    }
    Ok(files)
}

/// `generate --national`: a pipeline file per kommune in `<out>/pipelines/`, all writing to
/// the warehouse `<out>/lager` (catalog `k<kommunenummer>`).
pub fn fleet_pipelines(out: &Path, kommuner: &[String], format: &str) -> Result<()> {
    let dir = out.join("pipelines");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
    for k in kommuner {
        // A kommune that got no school (fewer schools than kommuner) has no export.
        if !out.join(k).is_dir() {
            continue;
        }
        let path = dir.join(format!("{k}.toml"));
        let body = format!(
            "# Written by `elevflyt generate --national`: kommune {k}, synthetic data.\n\
             [pipeline]\nname = \"k{k}\"\nkommunenummer = \"{k}\"\nwarehouse = \"../lager\"\n\
             catalog = \"k{k}\"\nschema = \"grunnskole\"\n\n\
             [[source]]\nname = \"skulesystem\"\nformat = \"{format}\"\nlocation = \"../{k}\"\n\n\
             [quality]\n# Synthetic Tenor numbers; never in production.\nallow_synthetic_fnr = true\n"
        );
        std::fs::write(&path, body).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_birth_date_moves_the_pupil_to_another_day_and_numbers_stay_valid() {
        // One date has about 400 valid numbers: asking for 2,000 on it ends (the generator
        // once looped forever at 3M pupils), with every number unique, valid and of that year.
        let mut rng = Rng::new(7);
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let numbers: Vec<String> = (0..2000)
            .map(|_| tenor_fnr(&mut rng, 2012, 5, 17, false))
            .collect();
        let unique: std::collections::HashSet<&String> = numbers.iter().collect();
        assert_eq!(unique.len(), 2000);
        for n in &numbers {
            let info = crate::quality::fnr::classify(n, today).expect("a valid number");
            assert_eq!(
                info.birth_date.map(|d| chrono::Datelike::year(&d)),
                Some(2012)
            );
        }
        assert!(
            numbers.iter().any(|n| &n[..4] != "1785"),
            "other days were used"
        );
        // A birth in the 1900s (an adult pupil, at sizes beyond a million) gets its century's
        // individnummer.
        let old = tenor_fnr(&mut rng, 1995, 3, 2, false);
        let info = crate::quality::fnr::classify(&old, today).expect("a valid number");
        assert_eq!(info.birth_date, NaiveDate::from_ymd_opt(1995, 3, 2));
        assert_eq!(
            (
                birth_decades(1_000_000),
                birth_decades(1_000_001),
                birth_decades(3_000_000)
            ),
            (1, 2, 3)
        );
    }

    fn generate(spec: &(Spec, &dyn crate::formats::Format), out: &Path) -> Result<Vec<String>> {
        super::generate(&spec.0, out, &|o, d, p| spec.1.write_sample(o, d, p))
    }

    fn spec(
        format: &'static dyn crate::formats::Format,
    ) -> (Spec, &'static dyn crate::formats::Format) {
        let spec = Spec {
            kommuner: vec!["4601".into()],
            pupils: 700,
            snapshots: 2,
            churn: 0.05,
            seed: 7,
            start: NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
            interval_days: 1,
        };
        (spec, format)
    }

    #[test]
    fn deterministic_valid_numbers_and_churn() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let files = generate(
            &spec(&crate::formats::oneroster_json::OneRosterJson),
            a.path(),
        )
        .unwrap();
        generate(
            &spec(&crate::formats::oneroster_json::OneRosterJson),
            b.path(),
        )
        .unwrap();
        assert_eq!(files.len(), 10);
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(
            read(a.path(), "users-2026-01-15.json"),
            read(b.path(), "users-2026-01-15.json"),
            "same seed, same data"
        );
        let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let users: serde_json::Value =
            serde_json::from_str(&read(a.path(), "users-2026-01-15.json")).unwrap();
        let users = users["users"].as_array().unwrap();
        assert_eq!(users.len(), 700);
        let distinct: std::collections::HashSet<_> = users
            .iter()
            .map(|u| u["identifier"].as_str().unwrap())
            .collect();
        assert_eq!(distinct.len(), 700, "every pupil has a number of their own");
        for u in users {
            let fnr = u["identifier"].as_str().unwrap();
            let info = crate::quality::fnr::classify(fnr, today).unwrap();
            assert_eq!(
                info.kind,
                crate::quality::fnr::FnrKind::Tenor,
                "{}",
                crate::quality::fnr::mask(fnr)
            );
        }
        assert_ne!(
            read(a.path(), "users-2026-01-15.json"),
            read(a.path(), "users-2026-01-16.json"),
            "churn changed something"
        );
        let vigo = generate(&spec(&crate::formats::vigo_csv::VigoCsv), a.path()).unwrap();
        assert_eq!(vigo.len(), 2 * 3, "3 schools of ~300 pupils, 2 snapshots");
    }
}
