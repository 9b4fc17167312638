//! Source exports read mapped, with a guard (docs/ARCHITECTURE.md, "Reading local files").
//! Copying an export into memory costs the kernel a fresh zeroed page for every 4 KiB of it,
//! half a gigabyte a day at 1M pupils; a mapping hands out the page cache's own pages.
//!
//! An export's producer may still be writing it, or cut it short. A plain mapping of a file cut
//! short kills its reader with `SIGBUS` at the first byte past the new end. Here such a fault is
//! caught: the rest of that mapping becomes zero pages, the read carries on, and the mapping is
//! marked as cut. Whoever reads the bytes asks [`Watch::unchanged`] once it is done with them
//! (and before anything read from them is committed): a file cut, or whose size or modification
//! time changed since it was listed, is not taken for what it was. A fault outside the mappings
//! made here goes to the handler that was there before (Rust's own, or the default: the process
//! ends as it always would).
//!
//! Linux only; elsewhere, and when a file cannot be mapped or all guard slots are taken, the
//! export is copied as before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;

/// A mapped export, registered with the guard while it lives.
struct Guarded {
    map: memmap2::Mmap,
    file: std::fs::File,
    /// Size and modification time when it was mapped (equal to the listing's).
    seen: (u64, SystemTime),
    slot: usize,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Out of the guard before the mapping goes (the map field is dropped after this).
        SLOTS[self.slot].release();
    }
}

/// The bytes of a [`Guarded`] as a [`Bytes`] owner.
struct Owner(Arc<Guarded>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

/// Asks whether a mapped export is still the file that was listed; it keeps the mapping alive.
#[derive(Clone)]
pub struct Watch(Arc<Guarded>);

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watch({} bytes)", self.0.seen.0)
    }
}

impl Watch {
    /// Whether the file is as it was listed: never cut short under the mapping, and of the same
    /// size and modification time now. Ask once the bytes have been read.
    pub fn unchanged(&self) -> bool {
        let g = &self.0;
        !SLOTS[g.slot].cut.load(Ordering::Acquire)
            && g.file
                .metadata()
                .is_ok_and(|m| m.modified().is_ok_and(|t| (m.len(), t) == g.seen))
    }

    /// Gives the mapping's resident pages back to the system (docs/ARCHITECTURE.md, "Reading
    /// local files"): they stay in the page cache but no longer count to this process. A later
    /// read through the mapping faults them in again — on ext4 a whole large folio (up to 2 MiB)
    /// at a time, so a few scattered reads bring most of a file back: read those with
    /// [`Watch::read_again`] instead.
    pub fn give_back(&self) {
        let map = &self.0.map;
        let start = map.as_ptr() as usize;
        let end = (start + map.len()).next_multiple_of(super::mapped::page_size());
        // SAFETY: the range is this live mapping's own (to the end of its last page). It is a
        // shared read-only mapping of a file (or, past a cut end, private zero pages): a read
        // finds the same bytes in the page cache (or zeros) again.
        unsafe { super::mapped::give_back(start, end) };
    }

    /// `text`'s bytes read again from the file (not through the mapping) when it lies in this
    /// mapping; `None` when it does not, or the file is shorter now or has no text there — the
    /// caller then reads `text` itself. A file changed in any other way is not seen here but by
    /// [`Watch::unchanged`], which its reader asks before it uses what it read.
    pub fn read_again(&self, text: &str) -> Option<String> {
        let map = &self.0.map;
        let start = (text.as_ptr() as usize).checked_sub(map.as_ptr() as usize)?;
        if start + text.len() > map.len() {
            return None;
        }
        let mut out = vec![0; text.len()];
        #[cfg(unix)]
        std::os::unix::fs::FileExt::read_exact_at(&self.0.file, &mut out, start as u64).ok()?;
        #[cfg(not(unix))]
        return None;
        String::from_utf8(out).ok()
    }
}

/// The file at `path`, mapped and guarded, with its watch; `None` when it cannot be (not Linux,
/// not mappable, no free guard slot), or when its size or modification time is not `listed`
/// (it changed since it was listed).
pub fn map(
    path: &std::path::Path,
    listed: (u64, chrono::DateTime<chrono::Utc>),
) -> std::io::Result<Option<(Bytes, Watch)>> {
    if !cfg!(target_os = "linux") || !install() {
        return Ok(None);
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let seen = (meta.len(), meta.modified()?);
    if (seen.0, chrono::DateTime::<chrono::Utc>::from(seen.1)) != listed || seen.0 == 0 {
        return Ok(None);
    }
    // SAFETY: the mapping is read-only and its bytes are never mutated through it. Another
    // process may change or cut the file while it is mapped: a read past a cut end is caught by
    // the guard (it reads zeros, see the module's documentation), and a change is found by
    // `Watch::unchanged`, which every reader asks before it uses what it read.
    let Ok(map) = (unsafe { memmap2::MmapOptions::new().map(&file) }) else {
        return Ok(None);
    };
    if map.len() as u64 != seen.0 {
        return Ok(None);
    }
    let range = map.as_ptr() as usize..map.as_ptr() as usize + map.len();
    let Some(slot) = SLOTS.iter().position(|s| s.claim(range.clone())) else {
        return Ok(None);
    };
    let guarded = Arc::new(Guarded {
        map,
        file,
        seen,
        slot,
    });
    let watch = Watch(guarded.clone());
    Ok(Some((Bytes::from_owner(Owner(guarded)), watch)))
}

/// One guarded mapping's address range (`start == 0`: free) and whether a read past its file's
/// end was caught. Atomics only: the signal handler reads them.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    cut: AtomicBool,
}

impl Slot {
    const fn free() -> Slot {
        Slot {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
        }
    }

    fn claim(&self, range: std::ops::Range<usize>) -> bool {
        let taken = (self.start)
            .compare_exchange(0, range.start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if taken {
            self.cut.store(false, Ordering::Release);
            self.end.store(range.end, Ordering::Release);
        }
        taken
    }

    fn release(&self) {
        self.end.store(0, Ordering::Release);
        self.start.store(0, Ordering::Release);
    }
}

/// As many exports as may be mapped at once (one pipeline maps a few; a fleet in one process
/// maps a few per pipeline running); more are copied.
const SLOT_COUNT: usize = 256;

static SLOTS: [Slot; SLOT_COUNT] = [const { Slot::free() }; SLOT_COUNT];

/// Installs the handler once; whether it is installed.
#[cfg(target_os = "linux")]
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let Ok(page) = usize::try_from(page) else {
            return false;
        };
        PAGE.store(page, Ordering::Release);
        // SAFETY: a zeroed `sigaction` is a valid value of the C struct; both calls get valid
        // pointers to it; the handler only touches atomics and async-signal-safe system calls.
        unsafe {
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut ours.sa_mask);
            let mut before: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &ours, &mut before) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(before);
        }
        true
    })
}

#[cfg(not(target_os = "linux"))]
fn install() -> bool {
    false
}

static PAGE: AtomicUsize = AtomicUsize::new(4096);

#[cfg(target_os = "linux")]
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A `SIGBUS` inside a guarded mapping: the file was cut short under it. The mapping from the
/// faulting page to its end becomes zero pages, the slot is marked cut, and the read is retried.
/// Anything else goes to the handler before ours, or ends the process as by default.
#[cfg(target_os = "linux")]
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Acquire);
    for slot in &SLOTS {
        let (start, end) = (
            slot.start.load(Ordering::Acquire),
            slot.end.load(Ordering::Acquire),
        );
        if start <= addr && addr < end {
            let from = addr & !(page - 1);
            // SAFETY: the range lies inside a live mapping of ours (its slot is registered
            // only while it is mapped); it is replaced by private zero pages, read-only.
            let zeroed = unsafe {
                libc::mmap(
                    from as *mut libc::c_void,
                    end - from,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if zeroed != libc::MAP_FAILED {
                slot.cut.store(true, Ordering::Release);
                return;
            }
        }
    }
    // SAFETY: calls the handler that was installed before ours the way it asked to be called,
    // or puts the default back (the access then faults again and ends the process).
    unsafe {
        match PREVIOUS.get() {
            Some(prev)
                if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN =>
            {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(prev.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
                    f(sig);
                }
            }
            _ => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `n` bytes, each its position modulo 251, and its listing (size, time).
    fn export(
        dir: &std::path::Path,
        n: usize,
    ) -> (std::path::PathBuf, (u64, chrono::DateTime<chrono::Utc>)) {
        let p = dir.join("users.json");
        std::fs::write(&p, (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        (p, (m.len(), m.modified().unwrap().into()))
    }

    #[test]
    fn an_export_cut_short_under_its_mapping_reads_zeros_and_is_not_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let n = 5 << 20 | 123;
        let (p, listed) = export(dir.path(), n);
        let (bytes, watch) = map(&p, listed).unwrap().expect("mapped");
        assert_eq!(bytes.len(), n);
        assert_eq!(bytes[n - 1], ((n - 1) % 251) as u8);
        assert!(watch.unchanged());
        // Its producer cuts it to one megabyte and a bit while it is mapped.
        let cut = (1 << 20) + 10;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        // Reading it all does not kill the process: what is left is the file's, the rest zeros
        // (from the page the file's new end is on).
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        assert!(sum > 0);
        assert_eq!(bytes[cut - 1], ((cut - 1) % 251) as u8);
        assert!(bytes[(cut + 4096)..].iter().all(|&b| b == 0));
        assert!(!watch.unchanged(), "a cut export is not unchanged");
        // A clone of the bytes outlives the watch; the slot is freed with the last of them.
        drop(watch);
        let slot = SLOTS
            .iter()
            .position(|s| s.start.load(Ordering::Acquire) == bytes.as_ptr() as usize)
            .expect("registered while its bytes live");
        drop(bytes);
        assert_eq!(SLOTS[slot].end.load(Ordering::Acquire), 0);
    }

    /// The resident size of the mapping that starts at `start`, from `/proc/self/smaps`.
    fn resident_kb(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        assert!(lines.next().is_some(), "the mapping is listed");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_mapping_given_back_is_not_resident_and_its_texts_are_read_again_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = 8 << 20;
        let (p, listed) = export(dir.path(), n);
        let (bytes, watch) = map(&p, listed).unwrap().expect("mapped");
        let start = bytes.as_ptr() as usize;
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        assert!(resident_kb(start) >= 8 << 10, "read whole, it is resident");
        watch.give_back();
        assert_eq!(resident_kb(start), 0, "given back");
        // A text inside it (bytes 0..100: one-byte UTF-8) is read from the file, and the mapping
        // stays given back.
        let at = 5 * 251 * 4096;
        // SAFETY: the bytes at `at..at + 100` are `0..100` (the file's byte `i` is `i % 251`):
        // ASCII. The slice is made without reading them.
        let inside = unsafe { std::str::from_utf8_unchecked(&bytes[at..at + 100]) };
        let again = watch.read_again(inside).expect("inside the mapping");
        assert_eq!(again.as_bytes(), (0..100).collect::<Vec<u8>>());
        assert_eq!(
            resident_kb(start),
            0,
            "read from the file, not through the mapping"
        );
        // A text elsewhere is not this mapping's.
        assert_eq!(watch.read_again("elsewhere"), None);
        // Read through the mapping again, it is the same file.
        assert_eq!(bytes.iter().map(|&b| u64::from(b)).sum::<u64>(), sum);
        assert!(resident_kb(start) > 0);
    }

    #[test]
    fn an_export_rewritten_in_place_or_since_its_listing_is_not_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (p, listed) = export(dir.path(), 2 << 20);
        let (bytes, watch) = map(&p, listed).unwrap().expect("mapped");
        assert_eq!(&bytes[..3], &[0, 1, 2]);
        // Rewritten in place, same size, a later modification time.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::io::Write::write_all(&mut &f, b"xyz").unwrap();
        f.set_modified(later).unwrap();
        assert!(!watch.unchanged(), "a rewritten export is not unchanged");
        // Mapped again against the old listing: it changed since, so it is not mapped.
        assert!(map(&p, listed).unwrap().is_none());
        // A file replaced by a rename leaves the mapping on the file it was made of.
        let dir2 = tempfile::tempdir().unwrap();
        let (q, listed) = export(dir2.path(), 2 << 20);
        let (bytes, watch) = map(&q, listed).unwrap().expect("mapped");
        let other = dir2.path().join("next.json");
        std::fs::write(&other, vec![b'x'; 10]).unwrap();
        std::fs::rename(&other, &q).unwrap();
        assert!(watch.unchanged());
        assert_eq!(&bytes[..3], &[0, 1, 2]);
    }
}
