//! The FINT target rows (`elev`, `elevforhold`, `skole`) as an input format produces them and
//! validation checks them, borrowing the raw record's text where it can. A leaf: formats,
//! quality and standardize share these types; this module needs none of theirs.

use std::borrow::Cow;

use chrono::NaiveDate;

/// Where a row came from, borrowed from its raw record while the row is checked.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub kildesystem: &'a str,
    pub kjelde: &'a str,
    pub rad: i64,
    pub skolenummer: Option<Cow<'a, str>>,
    pub system_id: Option<Cow<'a, str>>,
}

/// A text field of a staged row: borrowed from the raw record when it can be.
pub type Text<'a> = Option<Cow<'a, str>>;

#[derive(Debug, Clone)]
pub struct ElevRow<'a> {
    pub r: Origin<'a>,
    pub kilde_nokkel: Text<'a>,
    pub system_id: Text<'a>,
    pub fodselsnummer: Text<'a>,
    pub feidenavn: Text<'a>,
    pub kommunenummer: Text<'a>,
    pub fornavn: Text<'a>,
    pub mellomnavn: Text<'a>,
    pub etternavn: Text<'a>,
    pub fodselsdato: Option<NaiveDate>,
    pub kjonn: Text<'a>,
    pub epostadresse: Text<'a>,
    pub mobiltelefonnummer: Text<'a>,
    pub bostedsadresse: Text<'a>,
    pub postnummer: Text<'a>,
    pub poststed: Text<'a>,
    /// Whether the source must deliver a fødselsnummer (the Vigo list identifies pupils by it).
    pub fnr_required: bool,
}

#[derive(Debug, Clone)]
pub struct EfRow<'a> {
    pub r: Origin<'a>,
    pub elev_kilde_nokkel: Text<'a>,
    pub system_id: Text<'a>,
    pub skolenummer: Text<'a>,
    pub klasse: Text<'a>,
    pub trinn: Option<i32>,
    pub skolear: Text<'a>,
    pub hovedskole: Option<bool>,
    pub startdato: Option<NaiveDate>,
    pub sluttdato: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct SkoleRow<'a> {
    pub r: Origin<'a>,
    pub skolenummer: Cow<'a, str>,
    pub organisasjonsnummer: Text<'a>,
    pub navn: Text<'a>,
    pub kommunenummer: Text<'a>,
    pub fylkesnummer: Text<'a>,
    pub eierform: Text<'a>,
}

/// Rows of one snapshot, validated in place.
#[derive(Debug, Default)]
pub struct Staged<'a> {
    pub elev: Vec<ElevRow<'a>>,
    pub elevforhold: Vec<EfRow<'a>>,
    pub skole: Vec<SkoleRow<'a>>,
}

impl<'a> ElevRow<'a> {
    /// A pupil known by where it came from only; a format fills in what its source has
    /// (`ElevRow { fornavn, ..ElevRow::from(r) }`).
    pub fn from(r: Origin<'a>) -> Self {
        ElevRow {
            r,
            kilde_nokkel: None,
            system_id: None,
            fodselsnummer: None,
            feidenavn: None,
            kommunenummer: None,
            fornavn: None,
            mellomnavn: None,
            etternavn: None,
            fodselsdato: None,
            kjonn: None,
            epostadresse: None,
            mobiltelefonnummer: None,
            bostedsadresse: None,
            postnummer: None,
            poststed: None,
            fnr_required: false,
        }
    }
}
