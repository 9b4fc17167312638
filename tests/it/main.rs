//! Integration tests: one binary, a module per story.

mod apis;
mod bergen;
mod cli;
mod common;
mod crash;
mod docs;
mod failing;
mod fixtures;
mod fleet;
mod incremental;
mod oneroster;
mod operator;
mod ops;
mod property;
mod quality;
mod scenarios;
mod sharing;
mod trust;
mod voss;
