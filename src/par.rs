//! Work spread over the machine's cores with scoped threads (no pool: the stages hand large,
//! independent pieces of work to at most a few threads).

use std::ops::Range;

/// Number of cores to use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `f` over `items` on every core (at most one thread per item), results in order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = cores().min(items.len());
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker's panic is a bug: it goes on in the caller rather than losing results.
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// [`map`] over items given by value (each to one call of `f`), results in order.
pub fn map_owned<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let items: Vec<std::sync::Mutex<Option<T>>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new(Some(t)))
        .collect();
    // Each item is taken once, by the one call `map` makes for it.
    let take = |m: &std::sync::Mutex<Option<T>>| {
        m.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    map(&items, |m| take(m).map(&f))
        .into_iter()
        .flatten()
        .collect()
}

/// `a` and `b` at the same time, `a` on a second thread. A panic in either goes on in the caller.
pub fn both<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|scope| {
        let a = scope.spawn(a);
        let b = b();
        (a.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), b)
    })
}

/// The fewest rows per-row work hands to a thread of its own (fewer are not worth one).
pub const ROWS_PER_THREAD: usize = 50_000;

/// How `n` items are split for per-row work: (parts, items per part), one part per core with
/// at least [`ROWS_PER_THREAD`] items each.
fn split(n: usize) -> (usize, usize) {
    let parts = cores().min(n.div_ceil(ROWS_PER_THREAD)).max(1);
    (parts, n.div_ceil(parts).max(1))
}

/// `f` over consecutive ranges of `0..n`, one per core, concatenated in order. For per-row work
/// on large columns.
pub fn chunks<R: Send>(n: usize, f: impl Fn(Range<usize>) -> Vec<R> + Sync) -> Vec<R> {
    let (parts, size) = split(n);
    let ranges: Vec<Range<usize>> = (0..parts)
        .map(|p| p * size..((p + 1) * size).min(n))
        .collect();
    let mut parts = map(&ranges, |r| f(r.clone()));
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    // Made at its size, not grown by doubling: each part is given back as it is moved, so that
    // the parts and the whole are held at once for a moment at most, never the copies of a
    // growing list too (a million 16-byte items a list at 1M).
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend(part);
    }
    out
}

/// `f` over consecutive parts of `items` (split as `chunks` splits), given each part's first
/// index and the part to change; results in order.
pub fn parts_mut<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let (parts, size) = split(items.len());
    if parts == 1 {
        return vec![f(0, items)];
    }
    std::thread::scope(|scope| {
        let f = &f;
        let workers: Vec<_> = items
            .chunks_mut(size)
            .enumerate()
            .map(|(p, part)| scope.spawn(move || f(p * size, part)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Drops `value` on a thread of its own: freeing millions of small allocations need not hold
/// up the caller (at the end of a run, the process may exit before it is done, which is fine).
pub fn drop_aside<T: Send + 'static>(value: T) {
    // Without a thread to be had, the value is dropped here, with the failed spawn.
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// The result of a spawned task; a task that panicked or was cancelled is an internal error.
pub async fn joined<T>(
    task: tokio::task::JoinHandle<crate::Result<T>>,
    what: &str,
) -> crate::Result<T> {
    task.await
        .map_err(|e| crate::Error::Internal(format!("{what}: {e}")))?
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_cover_every_index_in_order() {
        for n in [0, 1, 49_999, 50_001, 123_457] {
            let v = super::chunks(n, |r| r.collect());
            assert_eq!(v, (0..n).collect::<Vec<_>>());
        }
    }
}
