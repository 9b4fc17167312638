//! `[quality]` of the pipeline file: which rules are relaxed or tightened. Kept with the rules
//! it configures, so that `quality` needs nothing from `config`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Severity;

/// `[quality]`: rule settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QualityConfig {
    /// Accept synthetic test numbers (Tenor month+80, NAV month+40). Test environments only.
    #[serde(default)]
    pub allow_synthetic_fnr: bool,
    /// Repair a 10-digit fødselsnummer by adding the lost leading zero, when the result is valid.
    #[serde(default)]
    pub repair_leading_zero: bool,
    /// Rule overrides: `rule_name = "warn" | "drop" | "fail"`, or for rules with a threshold
    /// `rule_name = { alvorsgrad = "fail", terskel = 0.05 }`.
    #[serde(flatten)]
    pub overrides: BTreeMap<String, toml::Value>,
}

impl QualityConfig {
    /// The severity configured for a rule, if overridden.
    pub fn severity_override(&self, rule: &str) -> Option<Severity> {
        let v = self.overrides.get(rule)?;
        v.as_str()
            .or_else(|| v.get("alvorsgrad").and_then(|a| a.as_str()))
            .and_then(|s| s.parse().ok())
    }

    /// The threshold configured for a rule, if any.
    pub fn threshold_override(&self, rule: &str) -> Option<f64> {
        let t = self.overrides.get(rule)?.get("terskel")?;
        t.as_float().or_else(|| t.as_integer().map(|i| i as f64))
    }
}
