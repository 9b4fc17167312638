//! The rules applied to one snapshot's rows (docs/ARCHITECTURE.md, "Quality rules and deviations"): what must not be published is removed,
//! every broken rule becomes a deviation.
//!
//! The checks of one row (required fields, fødselsnummer, codes, contact fields) run on every
//! core, each part with a checker of its own; what needs the rows before it (duplicates, which
//! pupils an elevforhold may point to) is decided after, in row order. The deviations are put
//! back in row order, so the list reads as one pass over the rows would have written it.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::NaiveDate;
use rustc_hash::{FxHashMap, FxHashSet};

use super::normalized;
use crate::fint::{EfRow, ElevRow, Origin, SkoleRow, Staged};
use crate::quality::{fnr, kommuner, rules, Avvik, Checker, Severity};

/// Validates a pupil's fødselsnummer; fills birth date and legacy gender. Returns false when the
/// row must be dropped.
fn check_fnr(c: &mut Checker, e: &mut ElevRow<'_>, today: NaiveDate) -> bool {
    let Some(raw) = e.fodselsnummer.take() else {
        if e.fnr_required {
            let sev = c.report(
                &e.r,
                rules::PAKREVD_FELT,
                Some("fodselsnummer"),
                None,
                "Fødselsnummer manglar: eleven kan ikkje sendast til fylket utan det",
            );
            return sev != Severity::Drop;
        }
        c.report(
            &e.r,
            rules::FNR_MANGLAR,
            Some("fodselsnummer"),
            None,
            "Eleven manglar fødselsnummer i kjeldesystemet",
        );
        return true;
    };
    let norm = normalized(raw);
    let mut result = fnr::classify(&norm, today);
    if result == Err(fnr::FnrError::LeadingZeroLost) {
        let repaired = format!("0{norm}");
        match fnr::classify(&repaired, today) {
            Ok(info) if c.repair_leading_zero => {
                c.report(&e.r, rules::FNR_REPARERT, Some("fodselsnummer"), Some(fnr::mask(&norm)),
                    "Fødselsnummeret mangla første siffer (0) og er reparert — rett det i skulesystemet");
                e.fodselsnummer = Some(Cow::Owned(repaired));
                result = Ok(info);
            }
            _ => {
                let sev = c.report(
                    &e.r,
                    rules::FNR_MANGLAR_NULL,
                    Some("fodselsnummer"),
                    Some(fnr::mask(&norm)),
                    fnr::FnrError::LeadingZeroLost.message(),
                );
                e.fodselsnummer = Some(norm);
                return sev != Severity::Drop;
            }
        }
    }
    let masked = || fnr::mask(&norm);
    let keep = match result {
        Ok(info) => {
            if info.kind.is_synthetic() && !c.allow_synthetic_fnr {
                let sev = c.report(&e.r, rules::FNR_SYNTETISK, Some("fodselsnummer"),
                    Some(masked()),
                    format!("Fødselsnummeret er eit syntetisk testnummer ({}) og kan ikkje brukast i produksjon", info.kind.code()));
                sev != Severity::Drop
            } else {
                if e.fodselsdato.is_none() {
                    e.fodselsdato = info.birth_date;
                }
                if e.kjonn.is_none() {
                    e.kjonn = Some(Cow::Borrowed(info.kjonn.unwrap_or("0")));
                }
                true
            }
        }
        Err(err) => {
            let sev = c.report(
                &e.r,
                rules::FNR_UGYLDIG,
                Some("fodselsnummer"),
                Some(masked()),
                err.message(),
            );
            sev != Severity::Drop
        }
    };
    if e.fodselsnummer.is_none() {
        e.fodselsnummer = Some(norm);
    }
    keep
}

/// Deviations found by a part of the rows, each with the row it is about.
type Found = Vec<(usize, Avvik)>;

/// Runs `check` on every row, on every core. `check` gets a checker and a state of its own part
/// of the rows, the row's index and the row, and says whether to keep the row. Returns the keep
/// flags, the parts' states (in row order) and their deviations, by row.
fn check_rows<T: Send, S: Default + Send>(
    c: &mut Checker,
    rows: &mut [T],
    check: impl Fn(&mut Checker, &mut S, usize, &mut T) -> bool + Sync,
) -> (Vec<bool>, Vec<S>, Found) {
    let parts = crate::par::parts_mut(rows, |first, part| {
        let mut checker = c.fork();
        let mut state = S::default();
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

/// Per part of the pupils: school → (pupils, invalid fødselsnummer), and for each kept row its
/// index with the hashes of its key and number.
#[derive(Default)]
struct ElevPart {
    per_school: FxHashMap<String, (u64, u64)>,
    candidates: Vec<(usize, u128, Option<u128>)>,
}

/// The checks of one pupil that need no other row. Fills the school the pupil's deviations go
/// to; returns whether the row may be kept.
fn check_elev<'a>(
    c: &mut Checker,
    part: &mut ElevPart,
    e: &mut ElevRow<'a>,
    school_of: &FxHashMap<u128, &Cow<'a, str>>,
    today: NaiveDate,
) -> bool {
    // A pupil's deviations go to the school the pupil is enrolled at.
    if e.r.skolenummer.is_none() {
        e.r.skolenummer = e
            .kilde_nokkel
            .as_deref()
            .and_then(|k| school_of.get(&key_hash(k)).map(|s| (*s).clone()));
    }
    let mut keep = true;
    if e.fornavn.is_none() || e.etternavn.is_none() {
        let sev = c.report(
            &e.r,
            rules::PAKREVD_FELT,
            Some("elev_namn"),
            None,
            "Eleven manglar fornamn eller etternamn",
        );
        keep &= sev != Severity::Drop;
    }
    if e.kilde_nokkel.is_none() && !e.fnr_required {
        let sev = c.report(
            &e.r,
            rules::PAKREVD_FELT,
            Some("system_id"),
            None,
            "Eleven manglar ID i kjeldesystemet",
        );
        keep &= sev != Severity::Drop;
    }
    let invalid_before = c.invalid_fnr();
    keep &= check_fnr(c, e, today);
    let school = e.r.skolenummer.as_deref().unwrap_or("-");
    let invalid = (c.invalid_fnr() > invalid_before) as u64;
    match part.per_school.get_mut(school) {
        Some(tally) => {
            tally.0 += 1;
            tally.1 += invalid;
        }
        None => {
            part.per_school.insert(school.to_string(), (1, invalid));
        }
    }
    if e.fnr_required {
        // The Vigo list is keyed by the (normalised, possibly repaired) fødselsnummer.
        e.kilde_nokkel = e.fodselsnummer.clone();
    }
    if let Some(k) = &e.kommunenummer {
        if !kommuner::is_kommune(k) {
            let sev = c.report(
                &e.r,
                rules::KOMMUNENUMMER_UKJENT,
                Some("kommunenummer"),
                Some(k.to_string()),
                "Kommunenummeret finst ikkje i kommunelista for 2024",
            );
            keep &= sev != Severity::Drop;
        }
    }
    // Contact fields: the value itself is personal data, so only the field is reported.
    type Check = fn(&str) -> bool;
    let contact: [(&'static str, &'static str, Option<&str>, Check, &str); 3] = [
        (
            rules::FEIDENAVN_UGYLDIG,
            "feidenavn",
            e.feidenavn.as_deref(),
            fnr::valid_feidenavn,
            "Feidenamnet er ikkje på forma brukar@domene",
        ),
        (
            rules::EPOST_UGYLDIG,
            "epostadresse",
            e.epostadresse.as_deref(),
            fnr::valid_epost,
            "E-postadressa er ikkje gyldig",
        ),
        (
            rules::MOBIL_UGYLDIG,
            "mobiltelefonnummer",
            e.mobiltelefonnummer.as_deref(),
            fnr::valid_mobil,
            "Mobilnummeret er ikkje eit norsk mobilnummer (8 siffer, byrjar på 4 eller 9)",
        ),
    ];
    for (rule, field, value, ok, message) in contact {
        if value.is_some_and(|v| !ok(v)) {
            let sev = c.report(&e.r, rule, Some(field), None, message);
            keep &= sev != Severity::Drop;
        }
    }
    keep
}

/// Applies the rules to one snapshot's rows, in place: what must not be published is removed.
pub(super) fn validate(
    c: &mut Checker,
    rows: &mut Staged<'_>,
    known_schools: &HashSet<String>,
    today: NaiveDate,
) {
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
    let (school_of, delivered) = pupil_indexes(elev, elevforhold);
    let pupils = check_pupils(c, elev, &school_of, today);
    drop(school_of);
    report_invalid_fnr_share(c, kildesystem, pupils.per_school);
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
    let is_pupil = |k: &str| row_of_key.get(&key_hash(k)).is_some_and(|&i| elev_key[i]);
    let refs = References {
        dropped_records: &dropped_records,
        is_pupil: &is_pupil,
        delivered: &delivered,
        schools: &schools,
    };
    let ef_kept = check_enrolments(c, elevforhold, &refs);
    retain_flagged(elev, &pupils.kept);
    retain_flagged(elevforhold, &ef_kept);
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
                let sev = c.report(&s.r, rule, Some(field), Some(v.to_string()), message);
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
/// snapshot's elevforhold), for per-school thresholds, and the keys of every delivered pupil,
/// kept or not (references to dropped pupils are not new news).
#[allow(clippy::type_complexity)]
fn pupil_indexes<'r, 'a>(
    elev: &[ElevRow<'a>],
    elevforhold: &'r [EfRow<'a>],
) -> (FxHashMap<u128, &'r Cow<'a, str>>, FxHashSet<u128>) {
    crate::par::both(
        || {
            let mut school_of: FxHashMap<u128, &Cow<'_, str>> = FxHashMap::default();
            school_of.reserve(elevforhold.len());
            for ef in elevforhold.iter() {
                if let (Some(k), Some(s)) =
                    (ef.elev_kilde_nokkel.as_deref(), ef.skolenummer.as_ref())
                {
                    school_of.insert(key_hash(k), s);
                }
            }
            school_of
        },
        || -> FxHashSet<u128> {
            elev.iter()
                .filter_map(|e| {
                    let k = e.kilde_nokkel.as_deref()?;
                    Some(if e.fnr_required {
                        key_hash(&fnr::normalize(k))
                    } else {
                        key_hash(k)
                    })
                })
                .collect()
        },
    )
}

/// What the pupils' checks found.
struct Pupils {
    /// Per row: published.
    kept: Vec<bool>,
    /// Per school: pupils and invalid fødselsnummer.
    per_school: FxHashMap<String, (u64, u64)>,
    /// The row each kept key came from.
    row_of_key: FxHashMap<u128, usize>,
}

/// Each pupil on its own, on every core; then duplicates: the first pupil with a key or a
/// number is kept.
fn check_pupils<'a>(
    c: &mut Checker,
    elev: &mut [ElevRow<'a>],
    school_of: &FxHashMap<u128, &Cow<'a, str>>,
    today: NaiveDate,
) -> Pupils {
    let (keep, parts, found) = check_rows(c, elev, |c, part: &mut ElevPart, i, e| {
        let keep = check_elev(c, part, e, school_of, today);
        if keep {
            let key = key_hash(e.kilde_nokkel.as_deref().unwrap_or_default());
            part.candidates
                .push((i, key, e.fodselsnummer.as_deref().map(key_hash)));
        }
        keep
    });
    let mut per_school: FxHashMap<String, (u64, u64)> = FxHashMap::default();
    let mut candidates = Vec::with_capacity(elev.len());
    for part in parts {
        for (school, (n, bad)) in part.per_school {
            let tally = per_school.entry(school).or_default();
            tally.0 += n;
            tally.1 += bad;
        }
        candidates.extend(part.candidates);
    }

    // Duplicates: the first pupil with a key or a number is kept. Numbers on one core, keys on
    // the other; the row each kept key came from is remembered for the elevforhold below.
    let (dup_fnr, (dup_key, row_of_key)) = crate::par::both(
        || {
            let mut seen: FxHashSet<u128> = FxHashSet::default();
            seen.reserve(candidates.len());
            candidates
                .iter()
                .map(|(_, _, f)| f.is_some_and(|f| !seen.insert(f)))
                .collect::<Vec<bool>>()
        },
        || {
            let mut first: FxHashMap<u128, usize> = FxHashMap::default();
            first.reserve(candidates.len());
            let dup: Vec<bool> = candidates
                .iter()
                .map(|&(i, k, _)| match first.entry(k) {
                    std::collections::hash_map::Entry::Occupied(_) => true,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        false
                    }
                })
                .collect();
            (dup, first)
        },
    );
    let mut kept = vec![false; elev.len()];
    let mut dups = c.fork();
    let mut dup_rows = Vec::new();
    for (n, &(i, _, _)) in candidates.iter().enumerate() {
        if dup_key[n] || dup_fnr[n] {
            let e = &elev[i];
            let verdi = e.fodselsnummer.as_deref().map(fnr::mask);
            dups.report(
                &e.r,
                rules::DUPLIKAT,
                Some("fodselsnummer"),
                verdi,
                "Eleven står fleire gonger i same leveranse; berre den første er teken med",
            );
            dup_rows.push(i);
        } else {
            kept[i] = keep[i];
        }
    }
    add_in_row_order(c, found, dup_rows, dups);
    Pupils {
        kept,
        per_school,
        row_of_key,
    }
}

/// Share of invalid fødselsnummer per school above the threshold (rule `fnr_ugyldig_andel`).
fn report_invalid_fnr_share(
    c: &mut Checker,
    kildesystem: &str,
    per_school: FxHashMap<String, (u64, u64)>,
) {
    let threshold = c.threshold(rules::FNR_UGYLDIG_ANDEL).unwrap_or(0.05);
    let mut per_school: Vec<(String, (u64, u64))> = per_school.into_iter().collect();
    per_school.sort();
    for (school, (n, bad)) in &per_school {
        let share = *bad as f64 / (*n).max(1) as f64;
        if *bad > 0 && share > threshold {
            let r = Origin {
                kildesystem,
                kjelde: "",
                rad: 0,
                skolenummer: (school != "-").then_some(Cow::Borrowed(school.as_str())),
                system_id: None,
            };
            c.report(&r, rules::FNR_UGYLDIG_ANDEL, Some("fodselsnummer"), Some(format!("{:.1} %", share * 100.0)),
                format!("{bad} av {n} elevar ved skulen har ugyldig fødselsnummer (over {:.0} %) — sjekk eksporten frå skulesystemet", threshold * 100.0));
        }
    }
}

/// What an elevforhold may refer to.
struct References<'r> {
    dropped_records: &'r FxHashMap<&'r str, FxHashSet<i64>>,
    is_pupil: &'r (dyn Fn(&str) -> bool + Sync),
    delivered: &'r FxHashSet<u128>,
    schools: &'r FxHashSet<&'r str>,
}

/// Each elevforhold on its own, on every core; then duplicates in row order. Returns which rows
/// are published.
fn check_enrolments(
    c: &mut Checker,
    elevforhold: &mut [EfRow<'_>],
    refs: &References<'_>,
) -> Vec<bool> {
    let repair = c.repair_leading_zero;
    let (ef_keep, pairs, found) = check_rows(
        c,
        elevforhold,
        |c, pairs: &mut Vec<(usize, u128)>, i, ef| {
            let keep = check_elevforhold(
                c,
                ef,
                refs.dropped_records,
                refs.is_pupil,
                refs.delivered,
                refs.schools,
                repair,
            );
            if let (true, Some(elev), Some(skole)) = (
                keep,
                ef.elev_kilde_nokkel.as_deref(),
                ef.skolenummer.as_deref(),
            ) {
                pairs.push((i, pair_hash(elev, skole)));
            }
            keep
        },
    );
    let mut ef_kept = vec![false; elevforhold.len()];
    let mut dups = c.fork();
    let mut dup_rows = Vec::new();
    let mut ef_keys: FxHashSet<u128> = FxHashSet::default();
    ef_keys.reserve(elevforhold.len());
    for (i, pair) in pairs.into_iter().flatten() {
        if ef_keys.insert(pair) {
            ef_kept[i] = ef_keep[i];
        } else {
            dups.report(&elevforhold[i].r, rules::DUPLIKAT, Some("klasse"), None,
                "Eleven har fleire elevforhold ved same skule i same leveranse; berre det første er teke med");
            dup_rows.push(i);
        }
    }
    add_in_row_order(c, found, dup_rows, dups);
    ef_kept
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
fn retain_flagged<T>(rows: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    rows.retain(|_| flags.next().copied().unwrap_or(false));
}

/// The checks of one elevforhold: its pupil must be a kept pupil of the snapshot, its school
/// known, trinn and klasse present. Returns whether the row may be kept.
fn check_elevforhold(
    c: &mut Checker,
    ef: &mut EfRow<'_>,
    dropped_records: &FxHashMap<&str, FxHashSet<i64>>,
    is_pupil: &(dyn Fn(&str) -> bool + Sync),
    delivered: &FxHashSet<u128>,
    schools: &FxHashSet<&str>,
    repair: bool,
) -> bool {
    if dropped_records
        .get(ef.r.kjelde)
        .is_some_and(|rads| rads.contains(&ef.r.rad))
    {
        return false;
    }
    if let Some(k) = ef.elev_kilde_nokkel.as_deref() {
        if k.len() == 10 && repair {
            // Follow the repaired number of a Vigo pupil.
            let repaired = format!("0{k}");
            if is_pupil(&repaired) {
                ef.elev_kilde_nokkel = Some(Cow::Owned(repaired));
            }
        }
    }
    if ef.r.system_id.is_none() {
        ef.elev_kilde_nokkel = ef.elev_kilde_nokkel.take().map(normalized);
    }
    if !ef.elev_kilde_nokkel.as_deref().is_some_and(is_pupil) {
        // Pupils dropped above are already reported; only unknown references are new.
        if !ef
            .elev_kilde_nokkel
            .as_deref()
            .is_some_and(|k| delivered.contains(&key_hash(k)))
        {
            c.report(
                &ef.r,
                rules::UKJENT_ELEV,
                Some("user"),
                None,
                "Elevforholdet viser til ein elev som ikkje er med i leveransen",
            );
        }
        return false;
    }
    let Some(skole) = ef.skolenummer.as_deref() else {
        c.report(
            &ef.r,
            rules::PAKREVD_FELT,
            Some("skolenummer"),
            None,
            "Skulenummer manglar",
        );
        return false;
    };
    if !schools.contains(skole) {
        let sev = c.report(
            &ef.r,
            rules::UKJENT_SKOLE,
            Some("skolenummer"),
            Some(skole.to_string()),
            "Skulen finst ikkje i leveransen eller i skuleregisteret til kommunen",
        );
        if sev == Severity::Drop {
            return false;
        }
    }
    if !ef.trinn.is_some_and(|t| (1..=10).contains(&t)) {
        let sev = c.report(
            &ef.r,
            rules::TRINN_UGYLDIG,
            Some("trinn"),
            ef.trinn.map(|t| t.to_string()),
            "Trinnet må vere mellom 1 og 10",
        );
        if sev == Severity::Drop {
            return false;
        }
    }
    if ef.klasse.is_none() {
        let sev = c.report(
            &ef.r,
            rules::PAKREVD_FELT,
            Some("klasse"),
            None,
            "Klasse manglar",
        );
        if sev == Severity::Drop {
            return false;
        }
    }
    true
}

/// 128-bit hash of a key, for sets of keys.
fn key_hash(k: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(k.as_bytes())
}

fn pair_hash(a: &str, b: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(a.as_bytes());
    h.update(&[0x1f]);
    h.update(b.as_bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pupil(i: usize, key: &str) -> ElevRow<'static> {
        ElevRow {
            kilde_nokkel: Some(Cow::Owned(key.to_string())),
            system_id: Some(Cow::Owned(key.to_string())),
            fornavn: Some(Cow::Borrowed("Kari")),
            etternavn: Some(Cow::Borrowed("Nord")),
            ..ElevRow::from(Origin {
                kildesystem: "vigilo",
                kjelde: "users.json",
                rad: i as i64,
                skolenummer: Some(Cow::Borrowed("46591")),
                system_id: Some(Cow::Owned(key.to_string())),
            })
        }
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
        validate(&mut c, &mut staged, &HashSet::new(), today);

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
