//! The `elevflyt` binary: a thin shell over the library (see `cli.rs`).

fn main() {
    std::process::exit(elevflyt::cli::main());
}
