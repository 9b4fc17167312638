//! Integration tests: one binary, a module per story.

mod bergen;
mod cli;
mod common;
mod docs;
mod failing;
mod oneroster;
mod voss;
