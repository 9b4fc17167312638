//! The rules about pupils: the fødselsnummer (valid, synthetic, lost leading zero), names and
//! contact fields, duplicates, and the share of invalid numbers per school.

use chrono::NaiveDate;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{add_in_row_order, check_rows, key_hash, CarriedPupils, School, SchoolOf};
use crate::carried::Hash128;
use crate::fint::{ElevRow, Origin, Str};
use crate::quality::{fnr, kommuner, rules, Checker, Severity};
use crate::standardize::normalized;

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
    // A number typed with spaces or separators is read, but the school hears of it.
    let had_separators = fnr::normalize(&raw).len() != raw.len();
    let norm = normalized(raw);
    let mut result = fnr::classify(&norm, today);
    if result == Err(fnr::FnrError::LeadingZeroLost) {
        let repaired = format!("0{norm}");
        match fnr::classify(&repaired, today) {
            Ok(info) if c.repair_leading_zero => {
                c.report(&e.r, rules::FNR_REPARERT, Some("fodselsnummer"), Some(fnr::mask(&norm)),
                    "Fødselsnummeret mangla første siffer (0) og er reparert — rett det i skulesystemet");
                e.fodselsnummer = Some(Str::owned(repaired));
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
                if had_separators {
                    c.report(&e.r, rules::FNR_FORMATERT, Some("fodselsnummer"), Some(masked()),
                        "Fødselsnummeret hadde mellomrom eller skiljeteikn (t.d. «010109 12345»), som er fjerna — rett det i skulesystemet");
                }
                if e.fodselsdato.is_none() {
                    e.fodselsdato = info.birth_date;
                }
                if e.kjonn.is_none() {
                    e.kjonn = Some(Str::borrowed(info.kjonn.unwrap_or("0")));
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

/// Per part of the pupils: school → (pupils, invalid fødselsnummer), and for each kept row its
/// index with the hashes of its key and number.
#[derive(Default)]
struct ElevPart {
    per_school: FxHashMap<String, (u64, u64)>,
    candidates: Vec<(usize, u128, Option<u128>)>,
}

/// The checks of one pupil that need no other row. Fills the school the pupil's deviations go
/// to; returns whether the row may be kept.
/// The longest name or address part accepted (Folkeregisteret's name parts are far shorter): a
/// longer one is a broken export, not a name, and must not reach the county's list.
pub const MAX_TEXT_CHARS: usize = 200;

fn check_elev<'a>(
    c: &mut Checker,
    part: &mut ElevPart,
    e: &mut ElevRow<'a>,
    school_of: &SchoolOf<'_, 'a>,
    today: NaiveDate,
) -> bool {
    // A pupil's deviations go to the school the pupil is enrolled at.
    if e.r.skolenummer.is_none() {
        e.r.skolenummer = e.kilde_nokkel.as_deref().and_then(|k| {
            school_of
                .get(&Hash128::from(key_hash(k)))
                .map(|s| s.to_text())
        });
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
    for (field, value) in [
        ("fornavn", &e.fornavn),
        ("mellomnavn", &e.mellomnavn),
        ("etternavn", &e.etternavn),
        ("bostedsadresse", &e.bostedsadresse),
        ("epostadresse", &e.epostadresse),
    ] {
        let chars = value.as_deref().map_or(0, |v| v.chars().count());
        if chars > MAX_TEXT_CHARS {
            let sev = c.report(
                &e.r,
                rules::FELT_FOR_LANGT,
                Some(field),
                None,
                format!("Feltet har {chars} teikn (meir enn {MAX_TEXT_CHARS}): truleg ein feil i eksporten — rett det i skulesystemet"),
            );
            keep &= sev != Severity::Drop;
        }
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
                Some(fnr::mask_code(k)),
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

/// [`Pupils::row_of_key`] of a carried pupil (it has no row).
pub(super) const CARRIED: usize = usize::MAX;

/// What the pupils' checks found.
pub(super) struct Pupils {
    /// Per row: published.
    pub kept: Vec<bool>,
    /// Per school: pupils and invalid fødselsnummer.
    pub per_school: FxHashMap<String, (u64, u64)>,
    /// The row each kept key came from ([`CARRIED`]: a carried pupil's). Holds the read rows'
    /// keys and those of the carried pupils that share a key or a number with a read row, not
    /// the others (docs/ARCHITECTURE.md, "Carried records").
    pub row_of_key: FxHashMap<u128, usize>,
}

/// Each pupil on its own, on every core; then duplicates: the first pupil with a key or a
/// number is kept. `carried`: pupils carried unread, counted at their school and taking part in
/// the duplicates in record order; `None` when one of them is a duplicate of an earlier row (see
/// [`super::validate`]).
pub(super) fn check_pupils<'a, P: CarriedPupils + ?Sized>(
    c: &mut Checker,
    elev: &mut [ElevRow<'a>],
    carried: &P,
    school_of: &SchoolOf<'_, 'a>,
    today: NaiveDate,
) -> Option<Pupils> {
    let part = |n| ElevPart {
        per_school: FxHashMap::default(),
        candidates: Vec::with_capacity(n),
    };
    let (keep, parts, found) = check_rows(c, elev, part, |c, part: &mut ElevPart, i, e| {
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
    // Carried pupils: at their school, with a valid number (they were clean); counted on every
    // core.
    let tallies: Vec<FxHashMap<&str, u64>> = crate::par::chunks(carried.len(), |part| {
        let mut at: FxHashMap<&str, u64> = FxHashMap::default();
        for j in part {
            let school = school_of
                .get(&Hash128::from(carried.key(j)))
                .map_or("-", School::name);
            *at.entry(school).or_default() += 1;
        }
        vec![at]
    });
    for (school, n) in tallies.into_iter().flatten() {
        match per_school.get_mut(school) {
            Some(tally) => tally.0 += n,
            None => {
                per_school.insert(school.to_string(), (n, 0));
            }
        }
    }
    if !carried.is_empty() {
        // Carried pupils were kept rows of one snapshot together (a duplicate has a deviation and
        // is not carried): no two share a key or a number. So only those that share one with a
        // read row can be, or make, a duplicate; the others are not looked at again. The read
        // rows' keys and numbers are few: the carried ones are looked up in them on every core.
        let keys: FxHashSet<u128> = candidates.iter().map(|c| c.1).collect();
        let fnrs: FxHashSet<u128> = candidates.iter().filter_map(|c| c.2).collect();
        let involved: Vec<usize> = crate::par::chunks(carried.len(), |part| {
            part.filter(|&j| {
                keys.contains(&carried.key(j)) || carried.fnr(j).is_some_and(|f| fnrs.contains(&f))
            })
            .collect()
        });
        // The candidates in record order, a carried pupil's row `CARRIED - j`.
        let rows = std::mem::take(&mut candidates);
        let order = super::in_record_order(
            rows.len(),
            |n| (elev[rows[n].0].r.kjelde, elev[rows[n].0].r.rad),
            involved.len(),
            |m| carried.at(involved[m]),
        );
        candidates.reserve(rows.len() + involved.len());
        for who in order {
            match who {
                super::Ordered::Row(n) => candidates.push(rows[n]),
                super::Ordered::Carried(m) => {
                    let j = involved[m];
                    candidates.push((CARRIED - j, carried.key(j), carried.fnr(j)));
                }
            }
        }
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
    let is_carried = |i: usize| i > CARRIED - carried.len();
    for (n, &(i, _, _)) in candidates.iter().enumerate() {
        if is_carried(i) {
            if dup_key[n] || dup_fnr[n] {
                // A carried pupil that is a duplicate of an earlier row is not kept as it is.
                return None;
            }
            continue;
        }
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
    let mut row_of_key = row_of_key;
    for i in row_of_key.values_mut().filter(|i| is_carried(**i)) {
        *i = CARRIED;
    }
    Some(Pupils {
        kept,
        per_school,
        row_of_key,
    })
}

/// Share of invalid fødselsnummer per school above the threshold (rule `fnr_ugyldig_andel`).
pub(super) fn report_invalid_fnr_share(
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
                skolenummer: (school != "-").then_some(Str::borrowed(school.as_str())),
                system_id: None,
            };
            c.report(&r, rules::FNR_UGYLDIG_ANDEL, Some("fodselsnummer"), Some(format!("{:.1} %", share * 100.0)),
                format!("{bad} av {n} elevar ved skulen har ugyldig fødselsnummer (over {:.0} %) — sjekk eksporten frå skulesystemet", threshold * 100.0));
        }
    }
}
