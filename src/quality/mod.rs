//! Data quality, pure (no I/O): identifier validation, code lists, the rule catalogue, the
//! deviation (`avvik`) collector and how deviations are resolved. Not here: where rules are
//! applied and `avvik` is written (standardize), how metrics are stored (`crate::metrics`).

pub mod avvik;
pub mod fnr;
pub mod kommuner;
pub mod rules;
mod settings;

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fint::Origin;
pub use settings::QualityConfig;

/// Severity of a broken rule, as Databricks expectations: keep and report, drop the record,
/// or stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warn,
    Drop,
    Fail,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Drop => "drop",
            Severity::Fail => "fail",
        }
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "warn" => Ok(Severity::Warn),
            "drop" => Ok(Severity::Drop),
            "fail" => Ok(Severity::Fail),
            _ => Err(format!("unknown severity `{s}` (warn, drop or fail)")),
        }
    }
}

/// Where a record came from, for the deviation list.
#[derive(Debug, Clone, Default)]
pub struct RecordRef {
    pub kildesystem: String,
    pub kjelde: String,
    pub rad: i64,
    pub skolenummer: Option<String>,
    pub system_id: Option<String>,
}

/// The owned provenance of a row, for a deviation that outlives the raw text.
fn record_of(o: &Origin<'_>) -> RecordRef {
    RecordRef {
        kildesystem: o.kildesystem.to_string(),
        kjelde: o.kjelde.to_string(),
        rad: o.rad,
        skolenummer: o.skolenummer.as_deref().map(str::to_string),
        system_id: o.system_id.as_deref().map(str::to_string),
    }
}

/// One deviation: a rule broken by one record. `verdi` is already masked.
#[derive(Debug, Clone)]
pub struct Avvik {
    pub record: RecordRef,
    /// The snapshot the record belongs to: (omfang, as_of).
    pub omfang: Option<String>,
    pub as_of: i64,
    pub regel: &'static str,
    pub alvorsgrad: Severity,
    pub felt: Option<&'static str>,
    pub verdi: Option<String>,
    pub melding: String,
}

/// Applies the pipeline's severities and collects deviations and per-rule counts.
#[derive(Debug)]
pub struct Checker {
    pub allow_synthetic_fnr: bool,
    pub repair_leading_zero: bool,
    severities: BTreeMap<&'static str, Severity>,
    thresholds: BTreeMap<&'static str, Option<f64>>,
    pub avvik: Vec<Avvik>,
    /// The snapshot being checked: (omfang, as_of), stamped on each deviation.
    pub snapshot: (Option<String>, i64),
    /// Rule → number of records that broke it.
    pub failed: BTreeMap<&'static str, u64>,
}

impl Checker {
    pub fn new(cfg: &QualityConfig) -> Self {
        let severities = rules::RULES
            .iter()
            .map(|r| (r.name, cfg.severity_override(r.name).unwrap_or(r.default)))
            .collect();
        let thresholds = rules::RULES
            .iter()
            .map(|r| (r.name, cfg.threshold_override(r.name).or(r.threshold)))
            .collect();
        Checker {
            allow_synthetic_fnr: cfg.allow_synthetic_fnr,
            repair_leading_zero: cfg.repair_leading_zero,
            severities,
            thresholds,
            avvik: Vec::new(),
            snapshot: (None, 0),
            failed: BTreeMap::new(),
        }
    }

    /// Threshold of a rule (configured, else its default).
    pub fn threshold(&self, rule: &str) -> Option<f64> {
        self.thresholds.get(rule).copied().flatten()
    }

    /// Records so far with an invalid fødselsnummer (any of the fnr rules).
    pub fn invalid_fnr(&self) -> u64 {
        [
            rules::FNR_UGYLDIG,
            rules::FNR_MANGLAR_NULL,
            rules::FNR_SYNTETISK,
        ]
        .iter()
        .map(|r| self.failed.get(r).copied().unwrap_or(0))
        .sum()
    }

    pub fn severity(&self, rule: &str) -> Severity {
        self.severities.get(rule).copied().unwrap_or(Severity::Drop)
    }

    /// Records a deviation and returns its severity, so the caller can drop the record.
    pub fn report(
        &mut self,
        record: &Origin<'_>,
        regel: &'static str,
        felt: Option<&'static str>,
        verdi: Option<String>,
        melding: impl Into<String>,
    ) -> Severity {
        let alvorsgrad = self.severity(regel);
        *self.failed.entry(regel).or_default() += 1;
        self.avvik.push(Avvik {
            record: record_of(record),
            omfang: self.snapshot.0.clone(),
            as_of: self.snapshot.1,
            regel,
            alvorsgrad,
            felt,
            verdi,
            melding: melding.into(),
        });
        alvorsgrad
    }

    /// A checker with the same rules and snapshot and nothing recorded yet, for checking a part
    /// of the rows on another core; `absorb` takes its findings back.
    pub fn fork(&self) -> Checker {
        Checker {
            allow_synthetic_fnr: self.allow_synthetic_fnr,
            repair_leading_zero: self.repair_leading_zero,
            severities: self.severities.clone(),
            thresholds: self.thresholds.clone(),
            avvik: Vec::new(),
            snapshot: self.snapshot.clone(),
            failed: BTreeMap::new(),
        }
    }

    /// Counts what a forked checker found as found here and returns its deviations, for the
    /// caller to put in order.
    pub fn absorb(&mut self, other: Checker) -> Vec<Avvik> {
        for (rule, n) in other.failed {
            *self.failed.entry(rule).or_default() += n;
        }
        other.avvik
    }

    /// Rules broken with severity `fail`, with counts.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        self.failed
            .iter()
            .filter(|(r, _)| self.severity(r) == Severity::Fail)
            .map(|(r, n)| (*r, *n))
            .collect()
    }
}
