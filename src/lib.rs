//! elevflyt: raw school-system exports → standardized, versioned (SCD2) Delta Lake tables based on
//! the FINT information model, with quality metrics, a deviation list and the county's pupil list.
//!
//! The stages are modules: [`ingest`] → [`standardize`] → [`publish`]; [`run`] ties them together.
//! Input formats are components in [`formats`], table definitions live in [`schema`], rules in
//! [`quality`], Delta access in [`delta`]. The module map and the rules the code keeps:
//! docs/ARCHITECTURE.md.

pub mod carried;
pub mod cli;
pub mod config;
pub mod context;
pub mod delta;
pub mod error;
pub mod fint;
pub mod formats;
pub mod generate;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod ops;
pub mod par;
pub mod publish;
pub mod quality;
pub mod report;
pub mod run;
pub mod schema;
pub mod sharing;
pub mod sort;
pub mod sqlfn;
pub mod standardize;
pub mod storage;

pub use error::{Error, Result};
