//! The compact current state (docs/ARCHITECTURE.md, "The current state"): what the SCD2
//! engines hold after a publish — per table each current key with its row hash, `valid_from`,
//! source, school, parent and staged-row hash (docs/ARCHITECTURE.md, "Carried rows") — and the
//! summaries of the records the next day may carry unread ("Carried records"), written in one
//! binary file beside the tables, labelled with the table versions it belongs to. The next
//! publish reads it instead of the current rows in Parquet; a missing or damaged file, or one of
//! other versions, is ignored (the tables are read, and the file written anew after the
//! commit). It holds ids, hashes, dates, source names, school numbers and null bits: no
//! personal data.

use std::sync::Arc;

use super::scd2::{Key, Scd2, Text};
use crate::carried::{Memo, Next, Records};
use crate::context::RunContext;
use crate::error::{Error, Result};

const MAGIC: &[u8] = b"ELEVFLYT-TILSTAND\n";
/// 2: each row also has the hash of its staged row (`Current::staged`); 3: each table's part is
/// preceded by its length (the parts are written and read on every core); 4: a last part holds
/// the summaries of records carried unread (docs/ARCHITECTURE.md, "Carried records").
const FORMAT: u32 = 4;
/// The tables, in the order the file holds them.
pub const TABLES: [&str; 3] = ["skole", "elev", "elevforhold"];

/// Where the state of a pipeline's tables lives: a hidden folder beside them.
fn url(ctx: &RunContext) -> url::Url {
    let mut u = ctx.pipeline.table_url("_elevflyt");
    u.set_path(&format!("{}/current.state", u.path()));
    u
}

/// Where the change since the state file lives, beside it (docs/ARCHITECTURE.md, "The current
/// state").
fn change_url(ctx: &RunContext) -> url::Url {
    let mut u = ctx.pipeline.table_url("_elevflyt");
    u.set_path(&format!("{}/current.change", u.path()));
    u
}

const CHANGE_MAGIC: &[u8] = b"ELEVFLYT-ENDRING\n";
const CHANGE_FORMAT: u32 = 1;

/// A change is written while it names at most one in this many of the base's rows and
/// summaries (one in eight); a larger one writes the whole state anew as the base.
const CHANGE_AT_MOST: usize = 8;

/// Which table a state belongs to: its version and a hash of its Delta table id (a table
/// dropped and made again starts its versions anew, under a new id). `None`: no table.
pub type Label = Option<(u64, u64)>;

/// The label of a table as opened.
pub fn label(table: Option<&deltalake::DeltaTable>) -> Label {
    let t = table?;
    let version = t.version()?;
    let id = t.snapshot().ok()?.metadata().id().to_string();
    Some((version, xxhash_rust::xxh3::xxh3_64(id.as_bytes())))
}

fn put_label(out: &mut Vec<u8>, l: Label) {
    let (v, id) = l.map_or((-1, 0), |(v, id)| (v as i64, id));
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
}

/// Why the state file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unused {
    Missing,
    OtherVersions,
    Damaged(String),
}

impl std::fmt::Display for Unused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unused::Missing => f.write_str("no state file"),
            Unused::OtherVersions => f.write_str("the state file is of other table versions"),
            Unused::Damaged(why) => write!(f, "the state file is damaged ({why})"),
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_key(out: &mut Vec<u8>, k: &Key) {
    match k {
        Key::Id([hi, lo]) => {
            out.push(0);
            out.extend_from_slice(&hi.to_le_bytes());
            out.extend_from_slice(&lo.to_le_bytes());
        }
        Key::Text(t) => {
            out.push(1);
            put_bytes(out, t.as_bytes());
        }
    }
}

/// The positions of `state`'s rows in the order of the buckets of the hash table they land in
/// when they are read back into a map reserved for as many rows: the reader's inserts then walk
/// the table from one end to the other instead of touching it at random (docs/ARCHITECTURE.md,
/// "The current state"). A map of another size walks it in a few passes; any order is correct.
/// The rows are mostly in this order already (the map was read in it; a day adds and moves few),
/// and the sort is stable, which makes it a merge of a few runs.
fn bucket_order(state: &super::scd2::State) -> impl Iterator<Item = usize> {
    use std::hash::BuildHasher;
    // The buckets of a table reserved for `len` rows: a power of two, at most 7/8 full.
    let mask = (state.len().max(1) * 8 / 7).next_power_of_two() as u64 - 1;
    let mut order: Vec<(u64, u32)> = (state.keys().enumerate())
        .map(|(i, k)| (state.hasher().hash_one(k) & mask, i as u32))
        .collect();
    order.sort_by_key(|o| o.0);
    order.into_iter().map(|o| o.1 as usize)
}

/// One table's part of the file — its name, label, texts and current rows — handed to `emit`
/// preceded by its length, in parts of about `per_part` bytes: the rows of a million keys are
/// some 60 MB, which were made whole, one table beside the other while the file was written
/// (docs/ARCHITECTURE.md, "The current state").
fn section_each(
    name: &str,
    engine: &Scd2,
    version: Label,
    per_part: usize,
    emit: &mut dyn FnMut(Vec<u8>),
) {
    let mut head = Vec::new();
    put_head(&mut head, name, engine, version);
    head.extend_from_slice(&(engine.state.len() as u64).to_le_bytes());
    // The rows' length, counted by writing each one as below (a pass of a few milliseconds).
    let mut row = Vec::new();
    let rows: usize = (engine.state.iter())
        .map(|(key, cur)| {
            row.clear();
            put_row(&mut row, key, cur);
            row.len()
        })
        .sum();
    emit(((head.len() + rows) as u64).to_le_bytes().to_vec());
    emit(head);
    let mut out = Vec::with_capacity(per_part.min(rows) + 64);
    for (key, cur) in bucket_order(&engine.state).filter_map(|i| engine.state.get_index(i)) {
        put_row(&mut out, key, cur);
        if out.len() >= per_part {
            let capacity = out.capacity();
            emit(std::mem::replace(&mut out, Vec::with_capacity(capacity)));
        }
    }
    if !out.is_empty() {
        emit(out);
    }
}

/// A table's part's head, in the file and in a change: its name, label and the engine's texts
/// (source names and school numbers repeat on every row: the table of them first, each row
/// then has their places in it).
fn put_head(out: &mut Vec<u8>, name: &str, engine: &Scd2, version: Label) {
    put_bytes(out, name.as_bytes());
    put_label(out, version);
    let texts: Vec<&str> = engine.texts().collect();
    out.extend_from_slice(&(texts.len() as u32).to_le_bytes());
    for t in &texts {
        put_bytes(out, t.as_bytes());
    }
}

/// One current row: key, hash, valid_from, the places of its source and school in the table's
/// texts, parent (a key, or 2 for none), staged.
fn put_row(out: &mut Vec<u8>, key: &Key, cur: &super::scd2::Current) {
    let place = |t: Option<Text>| t.map_or(u32::MAX, Text::position);
    put_key(out, key);
    out.extend_from_slice(&cur.hash().to_le_bytes());
    out.extend_from_slice(&cur.valid_from.to_le_bytes());
    out.extend_from_slice(&place(cur.kildesystem).to_le_bytes());
    out.extend_from_slice(&place(cur.skolenummer).to_le_bytes());
    match &cur.parent {
        None => out.push(2),
        Some(p) => put_key(out, p),
    }
    out.extend_from_slice(&cur.staged.to_le_bytes());
}

/// Bytes of a table's rows handed on at a time ([`section_each`]).
const ROWS_PER_PART_BYTES: usize = 8 << 20;

/// The engines' state labelled with the table versions (`None`: no table), handed to `out` part
/// by part in the file's order, so that the file is never in memory whole (docs/ARCHITECTURE.md,
/// "The current state"): 8 MB of a table's rows or of the summaries at a time. Each
/// table's part and the summaries' are preceded by their length, so that they are read back on
/// every core; the last part is the checksum of all before it.
pub fn encode_each(
    engines: [&Scd2; 3],
    versions: [Label; 3],
    records: &Next<'_>,
    out: &mut dyn FnMut(Vec<u8>),
) {
    encode_in_parts(engines, versions, records, ROWS_PER_PART_BYTES, out);
}

/// [`encode_each`], each table's rows handed on in parts of about `rows_per_part` bytes.
fn encode_in_parts(
    engines: [&Scd2; 3],
    versions: [Label; 3],
    records: &Next<'_>,
    rows_per_part: usize,
    out: &mut dyn FnMut(Vec<u8>),
) {
    let mut sum = xxhash_rust::xxh3::Xxh3::new();
    let mut emit = |part: Vec<u8>| {
        sum.update(&part);
        out(part)
    };
    let mut head = Vec::with_capacity(MAGIC.len() + 4);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT.to_le_bytes());
    emit(head);
    for ((name, engine), version) in TABLES.iter().zip(engines).zip(versions) {
        section_each(name, engine, version, rows_per_part, &mut emit);
    }
    emit((records.encoded_len() as u64).to_le_bytes().to_vec());
    records.encode_each(crate::carried::SUMMARIES_PER_PART, &mut emit);
    let digest = sum.digest();
    out(digest.to_le_bytes().to_vec());
}

/// The parts [`encode_each`] hands on, collected.
#[cfg(test)]
fn encode(engines: [&Scd2; 3], versions: [Label; 3], records: &Records) -> Vec<Vec<u8>> {
    encode_by(engines, versions, records, ROWS_PER_PART_BYTES)
}

/// The parts [`encode_in_parts`] hands on, collected.
#[cfg(test)]
fn encode_by(
    engines: [&Scd2; 3],
    versions: [Label; 3],
    records: &Records,
    rows_per_part: usize,
) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let next = Next::merge([(records.clone(), Vec::new())], None);
    encode_in_parts(engines, versions, &next, rows_per_part, &mut |p| {
        parts.push(p)
    });
    parts
}

/// What is done with bytes read once and no longer needed (a mapped file's pages given back).
type Release<'r> = &'r (dyn Fn(&[u8]) + Sync);

/// Bytes read behind this many are released.
const RELEASE_EVERY: usize = 8 << 20;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    release: Release<'a>,
    /// The bytes before this are released.
    released: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader::releasing(b, &|_| {})
    }

    fn releasing(b: &'a [u8], release: Release<'a>) -> Self {
        Reader {
            b,
            pos: 0,
            release,
            released: 0,
        }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Unused> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| Unused::Damaged("ends too early".into()))?;
        self.pos += n;
        if self.pos - self.released >= RELEASE_EVERY {
            (self.release)(&self.b[self.released..self.pos]);
            self.released = self.pos;
        }
        Ok(s)
    }

    /// Releases what is read and not yet released.
    fn release_read(&mut self) {
        (self.release)(&self.b[self.released..self.pos]);
        self.released = self.pos;
    }
    fn u8(&mut self) -> std::result::Result<u8, Unused> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, Unused> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, Unused> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn u128(&mut self) -> std::result::Result<u128, Unused> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().unwrap_or_default(),
        ))
    }
    fn text(&mut self) -> std::result::Result<&'a str, Unused> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| Unused::Damaged("text is not UTF-8".into()))
    }
    fn key(&mut self, tag: u8) -> std::result::Result<Key, Unused> {
        match tag {
            0 => Ok(Key::Id([self.u64()?, self.u64()?])),
            1 => Ok(Key::Text(Arc::from(self.text()?))),
            t => Err(Unused::Damaged(format!("unknown key tag {t}"))),
        }
    }

    /// A part's table of texts ([`put_head`]), each made a number of `engine`.
    fn texts(&mut self, engine: &mut Scd2) -> std::result::Result<Vec<Text>, Unused> {
        let n = self.u32()? as usize;
        (0..n)
            .map(|_| self.text().map(|t| engine.intern(t)))
            .collect()
    }

    /// One current row as [`put_row`] wrote it, its texts' places in `texts`.
    fn row(&mut self, texts: &[Text]) -> std::result::Result<Row, Unused> {
        let text = |i: u32| match i {
            u32::MAX => Ok(None),
            i => (texts.get(i as usize).map(|t| Some(*t)))
                .ok_or_else(|| Unused::Damaged("text index".into())),
        };
        let tag = self.u8()?;
        let key = self.key(tag)?;
        Ok(Row {
            key,
            hash: self.u128()?,
            valid_from: self.u64()? as i64,
            kildesystem: text(self.u32()?)?,
            skolenummer: text(self.u32()?)?,
            parent: match self.u8()? {
                2 => None,
                tag => Some(self.key(tag)?),
            },
            staged: self.u64()?,
        })
    }
}

/// A current row read back.
struct Row {
    key: Key,
    hash: u128,
    valid_from: i64,
    kildesystem: Option<Text>,
    skolenummer: Option<Text>,
    parent: Option<Key>,
    staged: u64,
}

impl Row {
    /// Into `engine`, in place of any current version of its key.
    fn load(self, engine: &mut Scd2) {
        engine.load_interned(
            self.key,
            self.hash,
            self.valid_from,
            self.kildesystem,
            self.skolenummer,
            self.parent,
            self.staged,
        );
    }
}

/// What a state file holds: the engines, and the summaries of records carried unread.
pub type Decoded = ([Scd2; 3], Memo);

/// The engines and summaries in `bytes`, when they are of exactly these table versions. The
/// tables' parts are read on every core.
#[cfg(test)]
pub fn decode(bytes: &[u8], versions: [Label; 3]) -> std::result::Result<Decoded, Unused> {
    let (engines, records) = decode_records(bytes, versions, &|_| {})?;
    Ok((engines, Memo::new(records)))
}

/// The engines and the summaries (as the file has them) in `bytes`, when they are of exactly
/// these table versions, with each part of `bytes` handed to `release` once it is read (the
/// checksum reads them all first, then the parts are read once more): a mapped file's pages are
/// given back as the reads pass, so that the file is never resident whole beside the state it
/// becomes (225 MB of it at 1M pupils; docs/ARCHITECTURE.md, "The current state"). The tables'
/// parts are read on every core.
fn decode_records(
    bytes: &[u8],
    versions: [Label; 3],
    release: Release<'_>,
) -> std::result::Result<([Scd2; 3], Records), Unused> {
    let damaged = |why: &str| Unused::Damaged(why.to_string());
    let body_len = bytes
        .len()
        .checked_sub(8)
        .ok_or_else(|| damaged("too short"))?;
    let (body, sum) = bytes.split_at(body_len);
    if !body.starts_with(MAGIC) {
        return Err(damaged("not a state file"));
    }
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    for part in body.chunks(RELEASE_EVERY) {
        checksum.update(part);
        release(part);
    }
    if checksum.digest().to_le_bytes() != sum {
        return Err(damaged("checksum"));
    }
    let (tables, records) = parts(body)?;
    let sections: Vec<_> = (TABLES.iter().zip(tables).zip(versions))
        .map(|((name, b), version)| (*name, b, version))
        .collect();
    let engines = crate::par::map(&sections, |(name, b, version)| {
        decode_section(name, b, *version, release)
    })
    .into_iter()
    .collect::<std::result::Result<Vec<Scd2>, Unused>>()?;
    let engines = engines.try_into().map_err(|_| damaged("missing table"))?;
    let records = Records::decode(records, release).ok_or_else(|| damaged("carried records"))?;
    Ok((engines, records))
}

/// A file's body (without its checksum) in its parts: the three tables' and the summaries'.
fn parts(body: &[u8]) -> std::result::Result<([&[u8]; 3], &[u8]), Unused> {
    let damaged = |why: &str| Unused::Damaged(why.to_string());
    if !body.starts_with(MAGIC) {
        return Err(damaged("not a state file"));
    }
    let mut r = Reader::new(body);
    r.pos = MAGIC.len();
    if r.u32()? != FORMAT {
        return Err(damaged("format version"));
    }
    let mut part = || {
        let len = usize::try_from(r.u64()?).map_err(|_| damaged("section length"))?;
        r.take(len)
    };
    let parts = ([part()?, part()?, part()?], part()?);
    if r.pos != body.len() {
        return Err(damaged("trailing bytes"));
    }
    Ok(parts)
}

/// One table's part of the file (see [`section`]).
fn decode_section(
    name: &str,
    b: &[u8],
    version: Label,
    release: Release<'_>,
) -> std::result::Result<Scd2, Unused> {
    let damaged = |why: &str| Unused::Damaged(why.to_string());
    let mut r = Reader::releasing(b, release);
    let mut engine = Scd2::default();
    if r.text()? != name {
        return Err(damaged("table order"));
    }
    let mut expected = Vec::new();
    put_label(&mut expected, version);
    if r.take(16)? != expected.as_slice() {
        return Err(Unused::OtherVersions);
    }
    let texts = r.texts(&mut engine)?;
    let rows = r.u64()? as usize;
    engine.state.reserve(rows.min(b.len() / 40));
    for _ in 0..rows {
        r.row(&texts)?.load(&mut engine);
    }
    if r.pos != b.len() {
        return Err(damaged("trailing bytes"));
    }
    r.release_read();
    Ok(engine)
}

/// The labels the file's parts have, read without the rows (`None`: not a state file of this
/// format; `decode` says what is wrong with it).
fn stored_labels(bytes: &[u8]) -> Option<[Label; 3]> {
    let (tables, _) = parts(bytes.get(..bytes.len().checked_sub(8)?)?).ok()?;
    labels_of(tables)
}

/// The labels at the heads of a file's or a change's three table parts ([`put_head`]).
fn labels_of(tables: [&[u8]; 3]) -> Option<[Label; 3]> {
    let label = |part: &[u8]| {
        let mut r = Reader::new(part);
        r.text().ok()?;
        let (version, id) = (r.u64().ok()? as i64, r.u64().ok()?);
        Some((version >= 0).then_some((version as u64, id)))
    };
    Some([label(tables[0])?, label(tables[1])?, label(tables[2])?])
}

/// The labels the file may have for the tables to be at `versions`: a table's own, or the one
/// the file has when the table's commits since changed no data — compacted by `elevflyt
/// maintain` or an OPTIMIZE elsewhere, its current rows are the same (docs/ARCHITECTURE.md,
/// "The current state").
async fn accepted(
    ctx: &RunContext,
    stored: [Label; 3],
    versions: [Label; 3],
) -> Result<[Label; 3]> {
    let mut accepted = versions;
    for ((name, want), have) in TABLES.iter().zip(&mut accepted).zip(stored) {
        let (Some((to, id)), Some((from, stored_id))) = (*want, have) else {
            continue;
        };
        let url = ctx.pipeline.table_url(name);
        if id == stored_id
            && from < to
            && crate::delta::data_unchanged_since(&url, from, to).await?
        {
            tracing::debug!(
                table = name,
                from,
                to,
                "no data changed since the state file's version"
            );
            *want = have;
        }
    }
    Ok(accepted)
}

/// The engines as the state file — its base and the change beside it, when there is one of
/// that base — has them for these table versions, with what the next state's change is made
/// against, or why it could not be used. A store that cannot be read is an error.
pub async fn read(
    ctx: &RunContext,
    versions: [Label; 3],
) -> Result<std::result::Result<(Decoded, Base), Unused>> {
    let (base_url, change_url) = (url(ctx), change_url(ctx));
    let (bytes, change) = tokio::join!(
        crate::storage::get(&base_url),
        crate::storage::get(&change_url)
    );
    let Some(bytes) = bytes? else {
        return Ok(Err(Unused::Missing));
    };
    // A change of another base (one written anew since), or a damaged one, is not used: the
    // base alone is then of older versions, and the tables are read.
    let change = change?.and_then(|c| {
        let labels = change_labels(&c, checksum_of(&bytes)?)?;
        Some((c, labels))
    });
    let base_labels = stored_labels(&bytes);
    let stored = match &change {
        Some((_, labels)) => Some(*labels),
        None => base_labels,
    };
    let versions = match stored {
        Some(stored) if stored != versions => accepted(ctx, stored, versions).await?,
        _ => versions,
    };
    tokio::task::spawn_blocking(move || {
        // The file's pages are given back as they are read when it is mapped (a local
        // warehouse); bytes an object store copied to the heap are left alone.
        let release = crate::storage::pages_of(&bytes);
        let release: Release<'_> = match &release {
            Some(release) => release,
            None => &|_| {},
        };
        let Some((change, labels)) = change else {
            let (engines, records) = decode_records(&bytes, versions, release)?;
            let base = Base::of(&bytes, &engines, &records);
            return Ok(((engines, Memo::new(records)), base));
        };
        if labels != versions {
            return Err(Unused::OtherVersions);
        }
        let base_labels = base_labels.ok_or_else(|| Unused::Damaged("not a state file".into()))?;
        let (mut engines, records) = decode_records(&bytes, base_labels, release)?;
        let mut base = Base::of(&bytes, &engines, &records);
        let records = apply_change(&change, &mut engines, records, &mut base)?;
        Ok(((engines, Memo::new(records)), base))
    })
    .await
    .map_err(|e| Error::Internal(format!("reading the state file: {e}")))
}

/// What a state was read from: the next state is written as a change beside the same base
/// while that change stays small (docs/ARCHITECTURE.md, "The current state").
#[derive(Debug, Default)]
pub struct Base {
    /// The base file's checksum, which a change of it names.
    sum: u64,
    /// The base's current rows (the three tables') and summaries.
    rows: usize,
    records: usize,
    /// The keys (per table) and summaries' record hashes the change read with it named: they
    /// may differ from the base's, and the next change names them again.
    keys: [Vec<Key>; 3],
    hashes: Vec<u64>,
}

impl Base {
    fn of(bytes: &[u8], engines: &[Scd2; 3], records: &Records) -> Base {
        Base {
            sum: checksum_of(bytes).unwrap_or_default(),
            rows: engines.iter().map(|e| e.state.len()).sum(),
            records: records.entries.len(),
            ..Base::default()
        }
    }
}

/// A file's checksum: its last eight bytes.
fn checksum_of(bytes: &[u8]) -> Option<u64> {
    let at = bytes.len().checked_sub(8)?;
    Some(u64::from_le_bytes(bytes[at..].try_into().ok()?))
}

/// The state of `engines` and `records` as a change beside `base`: per table the rows of
/// every key this run touched or the base's change named (a key no longer current as removed),
/// and the summaries whose record hashes differ from the memo's or were named. `None` when it
/// would name more than one in [`CHANGE_AT_MOST`] of the base's rows and summaries: the whole
/// state is then written anew.
pub fn change(
    engines: [&Scd2; 3],
    versions: [Label; 3],
    base: &Base,
    records: &Next<'_>,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(CHANGE_MAGIC);
    out.extend_from_slice(&CHANGE_FORMAT.to_le_bytes());
    out.extend_from_slice(&base.sum.to_le_bytes());
    let mut named = 0;
    for (((name, engine), version), before) in
        (TABLES.iter().zip(engines)).zip(versions).zip(&base.keys)
    {
        let keys: rustc_hash::FxHashSet<&Key> = engine.touched().chain(before).collect();
        named += keys.len();
        if named * CHANGE_AT_MOST > base.rows + base.records {
            return None;
        }
        let (set, removed): (Vec<&Key>, Vec<&Key>) = keys
            .into_iter()
            .partition(|k| engine.state.contains_key(*k));
        let mut part = Vec::new();
        put_head(&mut part, name, engine, version);
        part.extend_from_slice(&(removed.len() as u64).to_le_bytes());
        for k in removed {
            put_key(&mut part, k);
        }
        part.extend_from_slice(&(set.len() as u64).to_le_bytes());
        for (k, cur) in set
            .into_iter()
            .filter_map(|k| engine.state.get_key_value(k))
        {
            put_row(&mut part, k, cur);
        }
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend(part);
    }
    let mut hashes = records.changed_from_memo();
    hashes.extend(&base.hashes);
    hashes.sort_unstable();
    hashes.dedup();
    if (named + hashes.len()) * CHANGE_AT_MOST > base.rows + base.records {
        return None;
    }
    out.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
    for h in &hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    let summaries = records.of_hashes(&hashes).to_bytes();
    out.extend_from_slice(&(summaries.len() as u64).to_le_bytes());
    out.extend(summaries);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// A change's parts: the three tables', the named record hashes and the summaries.
type ChangeParts<'a> = ([&'a [u8]; 3], &'a [u8], &'a [u8]);

/// A change's parts: the three tables' and the summaries' (named hashes, then summaries), when
/// it is whole and of the base whose checksum is `base_sum`.
fn change_parts(bytes: &[u8], base_sum: u64) -> Option<ChangeParts<'_>> {
    let body = bytes.get(..bytes.len().checked_sub(8)?)?;
    if xxhash_rust::xxh3::xxh3_64(body) != checksum_of(bytes)? || !body.starts_with(CHANGE_MAGIC) {
        return None;
    }
    let mut r = Reader::new(body);
    r.pos = CHANGE_MAGIC.len();
    if r.u32().ok()? != CHANGE_FORMAT || r.u64().ok()? != base_sum {
        return None;
    }
    let mut part = || {
        let len = usize::try_from(r.u64().ok()?).ok()?;
        r.take(len).ok()
    };
    let tables = [part()?, part()?, part()?];
    let n = usize::try_from(r.u64().ok()?).ok()?;
    let hashes = r.take(n.checked_mul(8)?).ok()?;
    let summaries = {
        let len = usize::try_from(r.u64().ok()?).ok()?;
        r.take(len).ok()?
    };
    (r.pos == body.len()).then_some((tables, hashes, summaries))
}

/// The labels a change has (`None`: not a whole change of the base whose checksum is
/// `base_sum`).
fn change_labels(bytes: &[u8], base_sum: u64) -> Option<[Label; 3]> {
    labels_of(change_parts(bytes, base_sum)?.0)
}

/// `engines` and `records` (a base's) with the change in `bytes` applied; `base` learns what
/// it named.
fn apply_change(
    bytes: &[u8],
    engines: &mut [Scd2; 3],
    records: Records,
    base: &mut Base,
) -> std::result::Result<Records, Unused> {
    let damaged = |why: &str| Unused::Damaged(format!("change: {why}"));
    let (tables, hashes, summaries) =
        change_parts(bytes, base.sum).ok_or_else(|| damaged("not of this base"))?;
    for (((name, engine), part), keys) in (TABLES.iter().zip(engines.iter_mut()))
        .zip(tables)
        .zip(base.keys.iter_mut())
    {
        let mut r = Reader::new(part);
        if r.text()? != *name {
            return Err(damaged("table order"));
        }
        r.take(16)?;
        let texts = r.texts(engine)?;
        for _ in 0..r.u64()? {
            let tag = r.u8()?;
            let key = r.key(tag)?;
            engine.state.swap_remove(&key);
            keys.push(key);
        }
        for _ in 0..r.u64()? {
            let row = r.row(&texts)?;
            keys.push(row.key.clone());
            row.load(engine);
        }
        if r.pos != part.len() {
            return Err(damaged("trailing bytes"));
        }
    }
    base.hashes = (hashes.chunks_exact(8))
        .map(|h| u64::from_le_bytes(h.try_into().unwrap_or_default()))
        .collect();
    if !base.hashes.is_sorted() {
        return Err(damaged("hashes out of order"));
    }
    let summaries = Records::decode(summaries, &|_| {}).ok_or_else(|| damaged("summaries"))?;
    Ok(records.changed(&base.hashes, summaries))
}

/// Writes the change since the state file (docs/ARCHITECTURE.md, "The current state").
pub async fn put_change(ctx: &RunContext, bytes: Vec<u8>) -> Result<()> {
    crate::storage::put(&change_url(ctx), bytes).await
}

/// Removes the change beside the state file (a new base was written: it is of the old one).
pub async fn drop_change(ctx: &RunContext) -> Result<()> {
    crate::storage::delete(&change_url(ctx)).await
}

/// Writes the state file from the parts [`encode_each`] hands on, as they come; it is made only
/// when `whole` says every part was handed on (else nothing is written).
pub async fn put_each(
    ctx: &RunContext,
    parts: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    whole: impl std::future::Future<Output = bool>,
) -> Result<()> {
    crate::storage::put_received(&url(ctx), parts, whole).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines() -> [Scd2; 3] {
        let mut e: [Scd2; 3] = Default::default();
        e[0].load_current("46591", 7, 10, Some("vigilo"), Some("46591"), None);
        for i in 0..50u128 {
            let id = uuid::Uuid::from_u128(i * 7919 + 1).to_string();
            let parent = uuid::Uuid::from_u128(i + 99).to_string();
            e[1].load_current(&id, i, 20 + i as i64, Some("vigilo"), None, None);
            e[2].load_current(
                &id,
                i << 64,
                30,
                Some("vigilo"),
                Some("46591"),
                Some(&parent),
            );
        }
        e[1].load_current("not-a-uuid", 1, 2, None, None, None);
        e[1].load_entry(Key::of("staged"), 3, 4, None, None, None, 5);
        e
    }

    fn same(a: &Scd2, b: &Scd2) -> bool {
        a.state.len() == b.state.len()
            && a.state.iter().all(|(k, c)| {
                b.state.get(k).is_some_and(|d| {
                    let text = |e: &Scd2, t: Option<Text>| t.map(|t| e.text(t).to_string());
                    (
                        c.hash(),
                        c.valid_from,
                        text(a, c.kildesystem),
                        text(a, c.skolenummer),
                        &c.parent,
                        c.staged,
                    ) == (
                        d.hash(),
                        d.valid_from,
                        text(b, d.kildesystem),
                        text(b, d.skolenummer),
                        &d.parent,
                        d.staged,
                    )
                })
            })
    }

    #[test]
    fn the_state_reads_back_as_written() {
        let e = engines();
        let v = [Some((3, 1)), Some((5, 2)), None];
        let records = Records {
            schools: vec!["46591".into()],
            entries: vec![(
                77,
                crate::carried::Entry {
                    id: [5, 6],
                    pupil: (9u128 << 80).into(),
                    school: 0,
                    nulls: 0b101,
                },
            )],
        };
        let parts = encode([&e[0], &e[1], &e[2]], v, &records);
        let bytes = parts.concat();
        // Handed on in parts of a few rows, the file is the same.
        let small = encode_by([&e[0], &e[1], &e[2]], v, &records, 40);
        assert!(small.len() > parts.len() + 20, "{} parts", small.len());
        assert_eq!(small.concat(), bytes);
        let (back, memo) = decode(&bytes, v).unwrap();
        for i in 0..3 {
            assert!(same(&e[i], &back[i]), "table {}", TABLES[i]);
        }
        assert_eq!(back[1].state.len(), 52);
        assert_eq!(back[1].state[&Key::of("staged")].staged, 5);
        let found = memo.join(&[(77, 0)]);
        assert_eq!(found, [(0, 0)]);
        assert_eq!(memo.entry(0), &records.entries[0].1);
        assert_eq!(memo.school(memo.entry(0)), Some("46591"));
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn a_state_of_other_versions_or_damaged_is_not_used() {
        let e = engines();
        let v = [Some((3, 1)), Some((5, 2)), Some((5, 3))];
        let bytes = encode([&e[0], &e[1], &e[2]], v, &Records::default()).concat();
        assert_eq!(
            decode(&bytes, [Some((3, 1)), Some((6, 2)), Some((5, 3))]).err(),
            Some(Unused::OtherVersions)
        );
        // The same version of a table made anew (another id).
        assert_eq!(
            decode(&bytes, [Some((3, 1)), Some((5, 9)), Some((5, 3))]).err(),
            Some(Unused::OtherVersions)
        );
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert_eq!(
            decode(&flipped, v).err(),
            Some(Unused::Damaged("checksum".into()))
        );
        assert!(decode(&bytes[..bytes.len() - 3], v).is_err());
        // A part's length that runs past the end, with a checksum that matches: refused, no
        // panic.
        let mut long = bytes[..bytes.len() - 8].to_vec();
        let at = MAGIC.len() + 4;
        long[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&long);
        long.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(
            decode(&long, v).err(),
            Some(Unused::Damaged("ends too early".into()))
        );
        assert!(decode(b"", v).is_err());
        assert!(decode(b"{\"not\": \"a state\"}", v).is_err());
    }

    /// A summary of school `school` (an index into the records' schools).
    fn entry(id: u64, school: u32) -> crate::carried::Entry {
        crate::carried::Entry {
            id: [id, id + 1],
            pupil: u128::from(id).into(),
            school,
            nulls: id,
        }
    }

    /// A day applied to the engines: one key closed, one changed, one new, one restaged.
    fn day(e: &mut [Scd2; 3], n: u128, as_of: i64) {
        use super::super::scd2::{Scope, SnapshotRow};
        let id = |i: u128| uuid::Uuid::from_u128(i * 7919 + 1).to_string();
        let (changed, new, restaged) = (id(n), id(1000 + n), id(n + 1));
        let row = |key: &str, hash: u128, staged: u64| SnapshotRow {
            key: Box::leak(key.to_string().into_boxed_str()),
            hash,
            kildesystem: Some("vigilo"),
            skolenummer: Some("46599"),
            parent: None,
            staged,
        };
        let rows = [
            row(&changed, 1 << 100 | n, 9),
            row(&new, 7, 8),
            row(&restaged, n + 1, 4242),
        ];
        e[1].apply(0, as_of, &rows, Scope::None);
        e[1].close_key(&Key::of(&id(n + 2)), as_of);
        e[2].close_key(&Key::of(&id(n + 3)), as_of);
    }

    #[test]
    fn a_base_and_its_change_read_back_as_the_state_they_were_made_of() {
        let base_engines = engines();
        let v0 = [Some((3, 1)), Some((5, 2)), Some((5, 3))];
        let schools = vec!["46591".to_string(), "46592".to_string()];
        let r0 = Records {
            schools: schools.clone(),
            entries: vec![(66, entry(1, 0)), (77, entry(2, 1)), (99, entry(3, 0))],
        };
        let bytes = encode(
            [&base_engines[0], &base_engines[1], &base_engines[2]],
            v0,
            &r0,
        )
        .concat();

        // Day one on the base: the state as read, changed, written as a change.
        let (mut e, memo) = decode(&bytes, v0).unwrap();
        let mut base = Base::of(&bytes, &e, &r0);
        day(&mut e, 10, 100);
        // Record 66 is gone, 77 read again with another school, 88 new, 99 carried unread.
        let read = Records {
            schools: vec!["46593".into()],
            entries: vec![(77, entry(2, 0)), (88, entry(4, 0))],
        };
        let v1 = [Some((3, 1)), Some((6, 2)), Some((6, 3))];
        let next = Next::merge([(read.clone(), vec![2])], Some(&memo));
        let day1 = change([&e[0], &e[1], &e[2]], v1, &base, &next).unwrap();
        assert!(day1.len() < bytes.len() / 2, "{} bytes", day1.len());
        assert_eq!(change_labels(&day1, base.sum), Some(v1));
        // Of another base, or damaged: not used.
        assert_eq!(change_labels(&day1, base.sum ^ 1), None);
        let mut flipped = day1.clone();
        flipped[40] ^= 1;
        assert_eq!(change_labels(&flipped, base.sum), None);

        let read_back = |change: &[u8]| {
            let (mut back, records) = decode_records(&bytes, v0, &|_| {}).unwrap();
            let mut base = Base::of(&bytes, &back, &records);
            let records = apply_change(change, &mut back, records, &mut base).unwrap();
            (back, records, base)
        };
        let (back, records, base1) = read_back(&day1);
        for i in 0..3 {
            assert!(same(&e[i], &back[i]), "day one, table {}", TABLES[i]);
        }
        let school = |r: &Records, h: u64| {
            let (_, e) = r.entries.iter().find(|(x, _)| *x == h).unwrap();
            r.schools[e.school as usize].clone()
        };
        let hashes: Vec<u64> = records.entries.iter().map(|(h, _)| *h).collect();
        assert_eq!(hashes, [77, 88, 99]);
        assert_eq!(school(&records, 77), "46593");
        assert_eq!(school(&records, 99), "46591");

        // Day two on the same base: the change names day one's keys and records again. (The
        // base is counted as a large one: this one is of a few rows, and two days touch more
        // than one in eight of them.)
        base = base1;
        base.rows = 1000;
        let memo = crate::carried::Memo::new(records);
        day(&mut e, 20, 200);
        let read = Records {
            schools: vec!["46591".into()],
            entries: vec![(55, entry(5, 0))],
        };
        // 77 and 99 carried (places 0 and 2 of the memo), 88 gone.
        let next = Next::merge([(read, vec![0, 2])], Some(&memo));
        let v2 = [Some((3, 1)), Some((7, 2)), Some((7, 3))];
        let day2 = change([&e[0], &e[1], &e[2]], v2, &base, &next).unwrap();
        let (back, records, _) = read_back(&day2);
        for i in 0..3 {
            assert!(same(&e[i], &back[i]), "day two, table {}", TABLES[i]);
        }
        let hashes: Vec<u64> = records.entries.iter().map(|(h, _)| *h).collect();
        assert_eq!(hashes, [55, 77, 99]);
        assert_eq!(school(&records, 77), "46593");
        assert_eq!(school(&records, 55), "46591");

        // A change that would name more than one in eight of the base's rows is not made.
        let mut big = Base::of(&bytes, &back, &records);
        (big.rows, big.records) = (8, 0);
        assert!(change([&e[0], &e[1], &e[2]], v2, &big, &next).is_none());
    }
}
