//! A local file system whose reads map the file into memory instead of copying it
//! (docs/ARCHITECTURE.md, "Reading local files"). Reading a file into a fresh buffer costs the
//! kernel twice: every page of the buffer is zeroed at its first touch, then the file's bytes
//! are copied into it. A mapping hands out the page cache's own pages. A next day at 1M pupils
//! reads about half a gigabyte of its own files this way (the state file, the files of current
//! rows, `elev_id`).
//!
//! Only for files nothing rewrites in place: the tables' files (Parquet and the log are never
//! changed once written) and the state file (replaced by a rename). A mapped file cut short by
//! another process would fault the reader, so source exports, which their producer may still be
//! writing, are mapped under a guard instead (`super::guarded`, [`super::read_unchanged`]). A
//! file that cannot be mapped is read the usual way.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// [`LocalFileSystem`] with mapped reads; everything else is the local file system's own.
#[derive(Debug, Default)]
pub struct MappedLocal(LocalFileSystem);

impl fmt::Display for MappedLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedLocal({})", self.0)
    }
}

/// Reads shorter than this are copied: a mapping costs two system calls and a fault of its own,
/// more than copying a few pages; and the small files a table has besides its data (the log's
/// `_last_checkpoint`, which another writer may rewrite in place) are never mapped.
const MAP_FROM: u64 = 1 << 20;

/// The bytes of `file` in `range`, mapped; `None` when the range is short or the file cannot be
/// mapped.
fn map(file: &std::fs::File, range: &Range<u64>) -> Option<Bytes> {
    if range.end.saturating_sub(range.start) < MAP_FROM {
        return None;
    }
    let len = usize::try_from(range.end - range.start).ok()?;
    let start = usize::try_from(range.start).ok()?;
    // SAFETY: the mapping is read-only and only of files that are never written in place once
    // they exist (see the module's documentation); the bytes it hands out are never mutated.
    let mapped = unsafe { memmap2::MmapOptions::new().map(file) }.ok()?;
    // The file may have grown since its size was read: only the range asked for is handed out,
    // and only when the mapping covers it.
    let end = start.checked_add(len)?;
    (end <= mapped.len()).then(|| Bytes::from_owner(mapped).slice(start..end))
}

#[async_trait]
impl ObjectStore for MappedLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let got = self.0.get_opts(location, options).await?;
        if head {
            return Ok(got);
        }
        let GetResult {
            payload,
            meta,
            range,
            attributes,
        } = got;
        let payload = match payload {
            GetResultPayload::File(file, path) => match map(&file, &range) {
                Some(bytes) => GetResultPayload::Stream(Box::pin(futures::stream::once(
                    futures::future::ready(Ok(bytes)),
                ))),
                None => GetResultPayload::File(file, path),
            },
            stream => stream,
        };
        Ok(GetResult {
            payload,
            meta,
            range,
            attributes,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let Some(whole) = ranges.iter().map(|r| r.end).max() else {
            return Ok(Vec::new());
        };
        if ranges.iter().any(|r| r.start > r.end) {
            // Backwards: the local file system's own answer (its error).
            return self.0.get_ranges(location, ranges).await;
        }
        // One mapping for all the ranges (a Parquet reader asks for a file's column chunks).
        let got = self.get_opts(location, GetOptions::default()).await?;
        if got.meta.size < whole {
            // Past the end: the local file system's own answer (its error).
            return self.0.get_ranges(location, ranges).await;
        }
        match got.payload {
            GetResultPayload::Stream(_) => {
                let all = got.bytes().await?;
                Ok(ranges
                    .iter()
                    .map(|r| all.slice(r.start as usize..r.end as usize))
                    .collect())
            }
            GetResultPayload::File(..) => self.0.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.0.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.0.rename_opts(from, to, options).await
    }
}

/// A giver-back of the pages of bytes a read of a local file handed out mapped, for a reader
/// that passes through them once (the state file, a file of current rows being rewritten):
/// their resident pages leave this process as it goes, and stay in the page cache. `None` when
/// the bytes are not all of one file's mapping (bytes an object store copied to the heap must
/// keep their pages).
pub fn pages_of(bytes: &[u8]) -> Option<impl Fn(&[u8]) + Sync> {
    let (from, to) = (
        bytes.as_ptr() as usize,
        bytes.as_ptr() as usize + bytes.len(),
    );
    file_backed(from, to).then_some(move |part: &[u8]| {
        let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
        if start < from || end > to {
            return;
        }
        // SAFETY: `from..to` is one read-only mapping of a file (`file_backed`), of the files
        // the module's documentation names: none is written in place once it exists.
        unsafe { give_back(start, end) };
    })
}

/// Whether `from..to` lies in one mapping of a file (`/proc/self/maps`: a line with an inode).
#[cfg(target_os = "linux")]
fn file_backed(from: usize, to: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    maps.lines().any(|line| {
        let mut f = line.split_ascii_whitespace();
        let range = f.next().and_then(|r| r.split_once('-'));
        let inode = f.nth(3);
        let Some((a, b)) = range else { return false };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            return false;
        };
        a <= from && to <= b && inode.is_some_and(|i| i != "0")
    })
}

#[cfg(not(target_os = "linux"))]
fn file_backed(_: usize, _: usize) -> bool {
    false
}

/// The system's page size in bytes.
pub(super) fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page).unwrap_or(4096).max(1)
    }
    #[cfg(not(unix))]
    4096
}

/// The whole pages in `start..end` given back (`MADV_DONTNEED`): they stay in the page cache,
/// and a later read faults them in again.
///
/// # Safety
/// `start..end` lies in one live read-only mapping of a file that nothing writes in place (or of
/// zero pages put under a cut file): after `MADV_DONTNEED` a read finds the same bytes again, so
/// nothing is lost. Of a private writable mapping, written pages would be.
pub(super) unsafe fn give_back(start: usize, end: usize) {
    #[cfg(unix)]
    {
        let page = page_size();
        let (start, end) = (start.next_multiple_of(page), end / page * page);
        if start < end {
            // SAFETY: the caller's range is as this function's documentation asks.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (start, end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// A file of `n` bytes, each its position modulo 251, and the store's path to it.
    fn file(dir: &std::path::Path, name: &str, n: usize) -> (Vec<u8>, Path) {
        let bytes: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        (bytes, Path::from_absolute_path(&p).unwrap())
    }

    #[tokio::test]
    async fn mapped_reads_are_the_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = MappedLocal::default();
        let (big, big_path) = file(dir.path(), "big.parquet", 3 << 20 | 17);
        let (small, small_path) = file(dir.path(), "small.json", 100);
        // Whole files, large (mapped) and small (copied).
        let got = store.get(&big_path).await.unwrap();
        assert!(matches!(got.payload, GetResultPayload::Stream(_)));
        assert_eq!(got.bytes().await.unwrap(), big);
        let got = store.get(&small_path).await.unwrap();
        assert!(matches!(got.payload, GetResultPayload::File(..)));
        assert_eq!(got.bytes().await.unwrap(), small);
        // A range, and ranges as a Parquet reader asks for them.
        let r = (1 << 20) + 5..(2 << 20) + 99;
        let got = store.get_range(&big_path, r.clone()).await.unwrap();
        assert_eq!(got, big[r.start as usize..r.end as usize]);
        let ranges = [0..10, 5..(3 << 20), (3 << 20)..(3 << 20 | 17), 7..7];
        let got = store.get_ranges(&big_path, &ranges).await.unwrap();
        for (r, g) in ranges.iter().zip(&got) {
            assert_eq!(g, &big[r.start as usize..r.end as usize]);
        }
        // What the file system says is kept: the size, a missing file, a range past the end.
        assert_eq!(store.head(&big_path).await.unwrap().size, 3 << 20 | 17);
        let missing = Path::from_absolute_path(dir.path().join("missing")).unwrap();
        assert!(matches!(
            store.get(&missing).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let past_end = vec![0..(4 << 20), 0..1];
        assert!(store.get_ranges(&big_path, &past_end).await.is_err());
        // A single range past the end is cut at the end, as the local file system cuts it.
        let plain = LocalFileSystem::new();
        let cut = plain.get_range(&big_path, 9..(4 << 20)).await.unwrap();
        assert_eq!(store.get_range(&big_path, 9..(4 << 20)).await.unwrap(), cut);
        assert!(store
            .get_range(&big_path, (4 << 20)..(5 << 20))
            .await
            .is_err());
        // Writes, renames and listings are the local file system's.
        let moved = Path::from_absolute_path(dir.path().join("moved")).unwrap();
        store.rename(&small_path, &moved).await.unwrap();
        assert_eq!(
            store.get(&moved).await.unwrap().bytes().await.unwrap(),
            small
        );
        use futures::TryStreamExt;
        let prefix = Path::from_absolute_path(dir.path()).unwrap();
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        assert_eq!(listed.len(), 2);
    }

    #[tokio::test]
    async fn a_file_replaced_while_mapped_leaves_the_mapping_as_it_was() {
        // The state file is replaced by a rename: bytes read before keep the old file's.
        let dir = tempfile::tempdir().unwrap();
        let store = MappedLocal::default();
        let (old, path) = file(dir.path(), "current.state", 2 << 20);
        let before = store.get(&path).await.unwrap().bytes().await.unwrap();
        store
            .put(&path, PutPayload::from(vec![7u8; 2 << 20]))
            .await
            .unwrap();
        assert_eq!(before, old);
        let after = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert!(after.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn a_mapped_files_pages_are_given_back_and_read_the_same_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = MappedLocal::default();
        let (big, big_path) = file(dir.path(), "current.state", 5 << 20 | 3);
        let got = store.get(&big_path).await.unwrap().bytes().await.unwrap();
        let release = pages_of(&got).expect("a mapped file's bytes");
        // Given back part by part, and whole, the bytes read the same (from the page cache).
        for part in got.chunks(1 << 20) {
            assert_eq!(part[0], big[part.as_ptr() as usize - got.as_ptr() as usize]);
            release(part);
        }
        release(&got);
        assert_eq!(got, big);
        // Bytes outside the mapping it was made for are not touched.
        let heap = big.clone();
        release(&heap);
        assert_eq!(heap, big);
        // Heap bytes (an object store's copy) have no pages to give back.
        assert!(pages_of(&heap).is_none());
    }
}
