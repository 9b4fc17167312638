//! The rules about enrolments: each must point to a kept pupil of the snapshot and a known
//! school, with trinn and klasse; a pupil enrolled twice at one school is a duplicate.

use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    add_in_row_order, check_rows, ef_order, key_hash, pair_hash, CarriedEnrollments, Ordered,
};
use crate::fint::{EfRow, Str};
use crate::quality::{rules, Checker, Severity};
use crate::standardize::normalized;

/// What an elevforhold may refer to.
pub(super) struct References<'r> {
    pub dropped_records: &'r FxHashMap<&'r str, FxHashSet<i64>>,
    /// Whether a pupil key (its [`key_hash`]) is a kept pupil's.
    pub is_pupil: &'r (dyn Fn(u128) -> bool + Sync),
    /// The keys of the pupils read, kept or not (a carried pupil is a kept one).
    pub delivered: &'r FxHashSet<u128>,
    pub schools: &'r FxHashSet<&'r str>,
}

/// A carried enrollment as the rows read find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// It would not be kept as it is: its pupil is gone, its school unknown or its record one
    /// whose pupil was dropped.
    Dropped,
    /// Kept, and no read row has its pupil and school.
    Alone,
    /// Kept unless an earlier row or record has its pupil and school.
    SharesPair,
}

/// Each elevforhold on its own, on every core; then duplicates in row order, the carried
/// records among the rows. Returns which rows are published; `None` when a carried record would
/// not be kept as it is (see [`super::validate`]).
pub(super) fn check_enrolments<'e, E: CarriedEnrollments<'e> + ?Sized>(
    c: &mut Checker,
    elevforhold: &mut [EfRow<'_>],
    carried: &E,
    refs: &References<'_>,
) -> Option<Vec<bool>> {
    let repair = c.repair_leading_zero;
    let (ef_keep, pairs, found) = check_rows(
        c,
        elevforhold,
        Vec::with_capacity,
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
                pairs.push((i, pair_hash(key_hash(elev), skole)));
            }
            keep
        },
    );
    let mut ef_kept = vec![false; elevforhold.len()];
    let mut dups = c.fork();
    let mut dup_rows = Vec::new();
    let pairs: Vec<(usize, u128)> = pairs.into_iter().flatten().collect();
    // Carried records were kept rows of one snapshot together: no two have the same pupil and
    // school. Only those that share the pair with a read row take part in the duplicates.
    let read_pairs: FxHashSet<u128> = pairs.iter().map(|p| p.1).collect();
    let mut ef_keys: FxHashSet<u128> = FxHashSet::default();
    ef_keys.reserve(pairs.len());
    let mut pairs = pairs.into_iter().peekable();
    // A carried record was clean against rows like these; it stays so while its pupil is a
    // kept pupil, its school known and its record not one whose pupil was dropped, and no
    // earlier row has the same pupil and school (in record order, below). Each is checked on
    // every core, in place: one byte a record says which it is (the pair of the few that share
    // theirs with a read row is made again below).
    let mut carried_pairs = vec![Carried::Dropped; carried.len()];
    crate::par::parts_mut(&mut carried_pairs, |first, out| {
        for (k, state) in out.iter_mut().enumerate() {
            let j = first + k;
            let ((kjelde, rad), pupil, school) =
                (carried.at(j), carried.pupil(j), carried.school(j));
            let dropped = refs
                .dropped_records
                .get(kjelde)
                .is_some_and(|rads| rads.contains(&rad));
            if !dropped && (refs.is_pupil)(pupil) && refs.schools.contains(school) {
                *state = match read_pairs.contains(&pair_hash(pupil, school)) {
                    true => Carried::SharesPair,
                    false => Carried::Alone,
                };
            }
        }
    });
    for ef in ef_order(elevforhold, carried) {
        let (i, pair) = match ef {
            Ordered::Row(i) => match pairs.next_if(|(p, _)| *p == i) {
                Some(p) => p,
                None => continue,
            },
            Ordered::Carried(j) => match carried_pairs[j] {
                Carried::Dropped => return None,
                Carried::Alone => continue,
                Carried::SharesPair => {
                    match ef_keys.insert(pair_hash(carried.pupil(j), carried.school(j))) {
                        true => continue,
                        false => return None,
                    }
                }
            },
        };
        if ef_keys.insert(pair) {
            ef_kept[i] = ef_keep[i];
        } else {
            dups.report(&elevforhold[i].r, rules::DUPLIKAT, Some("klasse"), None,
                "Eleven har fleire elevforhold ved same skule i same leveranse; berre det første er teke med");
            dup_rows.push(i);
        }
    }
    add_in_row_order(c, found, dup_rows, dups);
    Some(ef_kept)
}

/// The checks of one elevforhold: its pupil must be a kept pupil of the snapshot, its school
/// known, trinn and klasse present. Returns whether the row may be kept.
fn check_elevforhold(
    c: &mut Checker,
    ef: &mut EfRow<'_>,
    dropped_records: &FxHashMap<&str, FxHashSet<i64>>,
    is_pupil: &(dyn Fn(u128) -> bool + Sync),
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
            if is_pupil(key_hash(&repaired)) {
                ef.elev_kilde_nokkel = Some(Str::owned(repaired));
            }
        }
    }
    if ef.r.system_id.is_none() {
        ef.elev_kilde_nokkel = ef.elev_kilde_nokkel.take().map(normalized);
    }
    if !ef
        .elev_kilde_nokkel
        .as_deref()
        .is_some_and(|k| is_pupil(key_hash(k)))
    {
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
    // A per-school list names its school; a row at another school would move the pupil there.
    if let Some(list) = c.snapshot.0.as_deref().filter(|list| *list != skole) {
        let melding = format!(
            "Rada står på skule {skole}, men lista er for skule {list}: rett skulenummeret i lista, eller send lista for rett skule"
        );
        let sev = c.report(
            &ef.r,
            rules::SKULE_ULIK_LISTE,
            Some("skolenummer"),
            Some(crate::quality::fnr::mask_code(skole)),
            melding,
        );
        if sev == Severity::Drop {
            return false;
        }
    }
    if !schools.contains(skole) {
        let sev = c.report(
            &ef.r,
            rules::UKJENT_SKOLE,
            Some("skolenummer"),
            Some(crate::quality::fnr::mask_code(skole)),
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
