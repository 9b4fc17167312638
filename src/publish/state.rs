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
    put_bytes(&mut head, name.as_bytes());
    put_label(&mut head, version);
    // Source names and school numbers repeat on every row: the engine's table of them first,
    // each row then has their places in it.
    let texts: Vec<&str> = engine.texts().collect();
    head.extend_from_slice(&(texts.len() as u32).to_le_bytes());
    for t in &texts {
        put_bytes(&mut head, t.as_bytes());
    }
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
}

/// What a state file holds: the engines, and the summaries of records carried unread.
pub type Decoded = ([Scd2; 3], Memo);

/// The engines and summaries in `bytes`, when they are of exactly these table versions. The
/// tables' parts are read on every core.
#[cfg(test)]
pub fn decode(bytes: &[u8], versions: [Label; 3]) -> std::result::Result<Decoded, Unused> {
    decode_releasing(bytes, versions, &|_| {})
}

/// [`decode`], with each part of `bytes` handed to `release` once it is read (the checksum reads
/// them all first, then the parts are read once more): a mapped file's pages are given back as
/// the reads pass, so that the file is never resident whole beside the state it becomes (225 MB
/// of it at 1M pupils; docs/ARCHITECTURE.md, "The current state").
pub fn decode_releasing(
    bytes: &[u8],
    versions: [Label; 3],
    release: Release<'_>,
) -> std::result::Result<Decoded, Unused> {
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
    Ok((engines, Memo::new(records)))
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
    let n = r.u32()? as usize;
    let texts: Vec<Text> = (0..n)
        .map(|_| r.text().map(|t| engine.intern(t)))
        .collect::<std::result::Result<_, _>>()?;
    let text = |i: u32| -> std::result::Result<Option<Text>, Unused> {
        match i {
            u32::MAX => Ok(None),
            i => texts
                .get(i as usize)
                .map(|t| Some(*t))
                .ok_or_else(|| damaged("text index")),
        }
    };
    let rows = r.u64()? as usize;
    engine.state.reserve(rows.min(b.len() / 40));
    for _ in 0..rows {
        let tag = r.u8()?;
        let key = r.key(tag)?;
        let hash = r.u128()?;
        let valid_from = r.u64()? as i64;
        let kildesystem = text(r.u32()?)?;
        let skolenummer = text(r.u32()?)?;
        let parent = match r.u8()? {
            2 => None,
            tag => Some(r.key(tag)?),
        };
        let staged = r.u64()?;
        engine.load_interned(
            key,
            hash,
            valid_from,
            kildesystem,
            skolenummer,
            parent,
            staged,
        );
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

/// The engines as the state file has them for these table versions, or why it could not be
/// used. A store that cannot be read is an error.
pub async fn read(
    ctx: &RunContext,
    versions: [Label; 3],
) -> Result<std::result::Result<Decoded, Unused>> {
    let Some(bytes) = crate::storage::get(&url(ctx)).await? else {
        return Ok(Err(Unused::Missing));
    };
    let versions = match stored_labels(&bytes) {
        Some(stored) if stored != versions => accepted(ctx, stored, versions).await?,
        _ => versions,
    };
    tokio::task::spawn_blocking(move || {
        // The file's pages are given back as they are read when it is mapped (a local
        // warehouse); bytes an object store copied to the heap are left alone.
        match crate::storage::pages_of(&bytes) {
            Some(release) => decode_releasing(&bytes, versions, &release),
            None => decode_releasing(&bytes, versions, &|_| {}),
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("reading the state file: {e}")))
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
}
