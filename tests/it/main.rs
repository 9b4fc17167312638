//! Integration tests: one binary, a module per story.

mod common;
mod bergen;
mod voss;
mod failing;
mod cli;
mod docs;
