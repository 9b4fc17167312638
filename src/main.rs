//! The `elevflyt` binary: a thin shell over the library (see `cli.rs`).

/// mimalloc: the pipeline allocates and frees millions of small strings per snapshot, which
/// glibc's allocator handles several times slower (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    no_huge_pages();
    std::process::exit(elevflyt::cli::main());
}

/// Turns off transparent huge pages for this process. mimalloc asks for them, and the kernel
/// then zeroes 2 MB at every first touch of a page: a 1M-pupil load spent about a third of its
/// cycles (5 s of system time) zeroing memory it mostly did not use. Measured in docs/PERFORMANCE.md.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
