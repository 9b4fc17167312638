//! The FINT target rows (`elev`, `elevforhold`, `skole`) as an input format produces them and
//! validation checks them, borrowing the raw record's text where it can. A leaf: formats,
//! quality and standardize share these types; this module needs none of theirs.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use chrono::NaiveDate;

/// Where a row came from, borrowed from its raw record while the row is checked.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub kildesystem: &'a str,
    pub kjelde: &'a str,
    pub rad: i64,
    pub skolenummer: Text<'a>,
    pub system_id: Text<'a>,
}

/// A text field of a staged row: borrowed from the raw record when it can be.
pub type Text<'a> = Option<Str<'a>>;

/// Text borrowed from the raw record or owned, like a `Cow<'a, str>`, in 16 bytes where a `Cow`
/// takes 24; `Option<Str>` is 16 bytes too. A first load holds a million pupils' rows of
/// sixteen text fields each at once, so the 8 bytes matter (docs/ARCHITECTURE.md, "Stages and
/// the data between them").
///
/// It is a pointer and a length whose top bit says whether the bytes are a `Box<str>` this
/// value owns. No `str` is longer than `isize::MAX`, so that bit is free.
pub struct Str<'a> {
    ptr: NonNull<u8>,
    tagged_len: usize,
    _borrow: PhantomData<&'a str>,
}

const OWNED: usize = 1 << (usize::BITS - 1);

impl<'a> Str<'a> {
    /// Text borrowed from the record.
    pub fn borrowed(s: &'a str) -> Self {
        Str {
            ptr: NonNull::from(s).cast(),
            tagged_len: s.len(),
            _borrow: PhantomData,
        }
    }

    /// Text made by a format or a repair, owned by the row.
    pub fn owned(s: String) -> Self {
        let boxed: &'static mut str = Box::leak(s.into_boxed_str());
        let len = boxed.len();
        Str {
            ptr: NonNull::from(boxed).cast(),
            tagged_len: len | OWNED,
            _borrow: PhantomData,
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: `ptr` and the untagged length are those of a `str` that is either borrowed for
        // 'a or owned by `self` (a leaked `Box<str>` freed only in `drop`), so it lives at least
        // as long as `&self` and is valid UTF-8.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                self.ptr.as_ptr(),
                self.tagged_len & !OWNED,
            ))
        }
    }

    pub fn is_owned(&self) -> bool {
        self.tagged_len & OWNED != 0
    }

    /// The text as a `Cow`, without copying it.
    pub fn into_cow(self) -> Cow<'a, str> {
        let this = std::mem::ManuallyDrop::new(self);
        let len = this.tagged_len & !OWNED;
        if this.is_owned() {
            let raw = std::ptr::slice_from_raw_parts_mut(this.ptr.as_ptr(), len) as *mut str;
            // SAFETY: owned text is the `Box<str>` leaked in `owned`; `this` is never dropped,
            // so the box is taken back once.
            Cow::Owned(unsafe { Box::from_raw(raw) }.into_string())
        } else {
            // SAFETY: borrowed text lives for 'a and is valid UTF-8 (see `as_str`).
            Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(std::slice::from_raw_parts(this.ptr.as_ptr(), len))
            })
        }
    }
}

impl Drop for Str<'_> {
    fn drop(&mut self) {
        if self.is_owned() {
            let len = self.tagged_len & !OWNED;
            let raw = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), len) as *mut str;
            // SAFETY: owned text is the `Box<str>` leaked in `owned`, freed here only.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

// SAFETY: a `Str` is a `&'a str` or a `Box<str>`, both `Send` and `Sync`.
unsafe impl Send for Str<'_> {}
unsafe impl Sync for Str<'_> {}

impl Clone for Str<'_> {
    fn clone(&self) -> Self {
        if self.is_owned() {
            Str::owned(self.as_str().to_owned())
        } else {
            Str {
                ptr: self.ptr,
                tagged_len: self.tagged_len,
                _borrow: PhantomData,
            }
        }
    }
}

impl Default for Str<'_> {
    fn default() -> Self {
        Str::borrowed("")
    }
}

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Str<'_> {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str::borrowed(s)
    }
}

impl<'a> From<Cow<'a, str>> for Str<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        match s {
            Cow::Borrowed(s) => Str::borrowed(s),
            Cow::Owned(s) => Str::owned(s),
        }
    }
}

impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str<'_> {}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for Str<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

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
    pub skolenummer: Str<'a>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_str_is_16_bytes_and_so_is_an_absent_one() {
        assert_eq!(std::mem::size_of::<Str>(), 16);
        assert_eq!(std::mem::size_of::<Text>(), 16);
        assert_eq!(std::mem::size_of::<Cow<str>>(), 24);
        // A first load holds a million of each at once; these were 432 and 232 bytes with
        // `Option<Cow<str>>` fields.
        assert!(std::mem::size_of::<ElevRow>() <= 304);
        assert!(std::mem::size_of::<EfRow>() <= 176);
    }

    #[test]
    fn a_str_reads_back_what_it_was_made_of_borrowed_or_owned() {
        let record = String::from("Kari Nord");
        let b = Str::borrowed(&record[..4]);
        assert!(!b.is_owned());
        assert_eq!(b.as_str(), "Kari");
        assert_eq!(b.as_ptr(), record.as_ptr(), "borrowed text is not copied");

        let o = Str::owned("kari.nord@skole.no".to_lowercase());
        assert!(o.is_owned());
        assert_eq!(&*o, "kari.nord@skole.no");

        for s in ["", "æøå", "x"] {
            assert_eq!(Str::owned(s.to_string()).as_str(), s);
            assert_eq!(Str::borrowed(s).as_str(), s);
        }
    }

    #[test]
    fn a_cloned_str_is_equal_and_owns_its_own_copy() {
        let o = Str::owned("46591".to_string());
        let c = o.clone();
        assert_eq!(c, o);
        assert!(c.is_owned());
        assert_ne!(c.as_ptr(), o.as_ptr());
        drop(o);
        assert_eq!(c.as_str(), "46591");

        let record = String::from("10A");
        let b = Str::borrowed(&record);
        let cb = b.clone();
        assert_eq!(cb.as_ptr(), record.as_ptr());
    }

    #[test]
    fn a_str_turns_into_the_same_cow_and_hashes_as_its_text() {
        use std::collections::HashSet;
        let record = String::from("46591");
        let Cow::Borrowed(b) = Str::borrowed(&record).into_cow() else {
            panic!("copied")
        };
        assert_eq!(b.as_ptr(), record.as_ptr());
        assert!(matches!(Str::owned("x".into()).into_cow(), Cow::Owned(s) if s == "x"));
        assert!(matches!(Str::from(Cow::Borrowed("y")), s if !s.is_owned() && s == "y"));

        let set: HashSet<Str> = [Str::owned("46591".into()), Str::borrowed("46592")].into();
        assert!(set.contains("46591") && set.contains("46592") && !set.contains("46593"));
    }
}
