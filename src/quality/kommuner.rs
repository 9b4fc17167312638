//! The 2024 kommune and fylke code lists (SSB, 357 kommuner, 15 fylker), compiled in.

use std::collections::HashMap;
use std::sync::OnceLock;

const CSV: &str = include_str!("kommuner-2024.csv");

pub struct Kommune {
    pub navn: &'static str,
    pub fylkesnummer: &'static str,
}

fn table() -> &'static HashMap<&'static str, Kommune> {
    static T: OnceLock<HashMap<&'static str, Kommune>> = OnceLock::new();
    T.get_or_init(|| {
        CSV.lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split(',');
                let nr = f.next()?;
                let navn = f.next()?;
                let fylke = f.next()?;
                Some((
                    nr,
                    Kommune {
                        navn,
                        fylkesnummer: fylke,
                    },
                ))
            })
            .collect()
    })
}

pub fn is_kommune(nr: &str) -> bool {
    table().contains_key(nr)
}

pub fn kommune(nr: &str) -> Option<&'static Kommune> {
    table().get(nr)
}

pub fn is_fylke(nr: &str) -> bool {
    table().values().any(|k| k.fylkesnummer == nr)
}

/// Every kommunenummer in the list, sorted.
pub fn all() -> Vec<&'static str> {
    let mut v: Vec<_> = table().keys().copied().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_has_357_kommuner_and_15_fylker() {
        assert_eq!(super::all().len(), 357);
        let mut f: Vec<_> = super::table().values().map(|k| k.fylkesnummer).collect();
        f.sort();
        f.dedup();
        assert_eq!(f.len(), 15);
        assert!(super::is_kommune("4601") && super::is_kommune("4621"));
        assert!(!super::is_kommune("1201") && super::is_fylke("46") && !super::is_fylke("30"));
        assert_eq!(super::kommune("4621").unwrap().fylkesnummer, "46");
    }
}
