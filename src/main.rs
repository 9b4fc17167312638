//! The `elevflyt` binary: a thin shell over the library (see `cli.rs`).

/// mimalloc: the pipeline allocates and frees millions of small strings per snapshot, which
/// glibc's allocator handles several times slower (see the performance notes in README.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(elevflyt::cli::main());
}
