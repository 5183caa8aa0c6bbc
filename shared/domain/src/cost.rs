//! The cost of a run: Fargate bills vCPU and memory per second, from the
//! start of the image pull to the task's stop, with a one-minute minimum.
//! Prices are data (`data/fargate-prices.json`), not code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::task::TaskDescription;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    pub vcpu_hour: f64,
    pub gb_hour: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceTable {
    pub currency: String,
    pub minimum_billed_seconds: u64,
    pub default_region: String,
    /// region -> `x86_64` | `arm64` | `x86_64-spot` | `arm64-spot` -> rates
    pub regions: BTreeMap<String, BTreeMap<String, Rates>>,
}

/// The prices shipped with Stevedore.
pub const DEFAULT_PRICES_JSON: &str = include_str!("../data/fargate-prices.json");

impl PriceTable {
    pub fn from_json(text: &str) -> Result<PriceTable, String> {
        let table: PriceTable =
            serde_json::from_str(text).map_err(|e| format!("the price table is not valid: {e}"))?;
        if !table.regions.contains_key(&table.default_region) {
            return Err(format!(
                "the price table's defaultRegion `{}` has no prices",
                table.default_region
            ));
        }
        Ok(table)
    }

    pub fn builtin() -> PriceTable {
        // The file is part of the crate and checked by a test.
        PriceTable::from_json(DEFAULT_PRICES_JSON).unwrap_or_else(|_| PriceTable {
            currency: "USD".into(),
            minimum_billed_seconds: 60,
            default_region: String::new(),
            regions: BTreeMap::new(),
        })
    }

    /// Rates for a region (the default region's when unknown), architecture and capacity.
    pub fn rates(&self, region: &str, architecture: &str, spot: bool) -> Option<(Rates, bool)> {
        let (prices, exact) = match self.regions.get(region) {
            Some(p) => (p, true),
            None => (self.regions.get(&self.default_region)?, false),
        };
        let arch = if architecture == "arm64" {
            "arm64"
        } else {
            "x86_64"
        };
        let key = if spot {
            format!("{arch}-spot")
        } else {
            arch.to_string()
        };
        prices.get(&key).map(|r| (*r, exact))
    }

    /// Estimates what a stopped task cost. `None` when the task lacks the
    /// timestamps or sizes to bill it (it never started).
    pub fn estimate_task(&self, region: &str, task: &TaskDescription) -> Option<CostEstimate> {
        let start = task
            .pull_started_at
            .or(task.started_at)
            .or(task.created_at)?;
        let stop = task.stopped_at?;
        let vcpu = task.cpu.as_deref()?.parse::<f64>().ok()? / 1024.0;
        let memory_gb = task.memory.as_deref()?.parse::<f64>().ok()? / 1024.0;
        let seconds = (stop - start).whole_milliseconds().max(0) as u64;
        let seconds = seconds.div_ceil(1000);
        self.estimate(
            region,
            task.architecture().unwrap_or("x86_64"),
            task.on_spot(),
            vcpu,
            memory_gb,
            seconds,
        )
    }

    pub fn estimate(
        &self,
        region: &str,
        architecture: &str,
        spot: bool,
        vcpu: f64,
        memory_gb: f64,
        seconds: u64,
    ) -> Option<CostEstimate> {
        let (rates, exact) = self.rates(region, architecture, spot)?;
        let billed_seconds = seconds.max(self.minimum_billed_seconds);
        let hours = billed_seconds as f64 / 3600.0;
        let usd = hours * (vcpu * rates.vcpu_hour + memory_gb * rates.gb_hour);
        Some(CostEstimate {
            usd: (usd * 1e6).round() / 1e6,
            billed_seconds,
            vcpu,
            memory_gb,
            spot,
            architecture: if architecture == "arm64" {
                "arm64"
            } else {
                "x86_64"
            }
            .to_string(),
            region: if exact {
                region.to_string()
            } else {
                self.default_region.clone()
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostEstimate {
    pub usd: f64,
    pub billed_seconds: u64,
    pub vcpu: f64,
    pub memory_gb: f64,
    pub spot: bool,
    pub architecture: String,
    /// The region whose prices were used.
    pub region: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Attribute;
    use time::macros::datetime;

    #[test]
    fn the_shipped_table_parses_and_covers_every_kind() {
        let t = PriceTable::from_json(DEFAULT_PRICES_JSON).unwrap();
        for (region, prices) in &t.regions {
            for key in ["x86_64", "arm64", "x86_64-spot", "arm64-spot"] {
                let r = prices
                    .get(key)
                    .unwrap_or_else(|| panic!("{region} lacks {key}"));
                assert!(r.vcpu_hour > 0.0 && r.gb_hour > 0.0);
            }
        }
    }

    #[test]
    fn billing_is_per_second_with_a_one_minute_minimum() {
        let t = PriceTable::builtin();
        // us-east-1 x86: 1 vCPU + 2 GB for one hour.
        let hour = t
            .estimate("us-east-1", "x86_64", false, 1.0, 2.0, 3600)
            .unwrap();
        assert!(
            (hour.usd - (0.04048 + 2.0 * 0.004445)).abs() < 1e-6,
            "{hour:?}"
        );
        let ten_s = t
            .estimate("us-east-1", "x86_64", false, 1.0, 2.0, 10)
            .unwrap();
        let minute = t
            .estimate("us-east-1", "x86_64", false, 1.0, 2.0, 60)
            .unwrap();
        assert_eq!(ten_s.billed_seconds, 60);
        assert_eq!(ten_s.usd, minute.usd);
        let spot = t
            .estimate("us-east-1", "arm64", true, 1.0, 2.0, 3600)
            .unwrap();
        assert!(spot.usd < hour.usd / 2.0);
        let unknown = t
            .estimate("ap-nowhere-9", "x86_64", false, 1.0, 2.0, 3600)
            .unwrap();
        assert_eq!(unknown.region, "us-east-1");
    }

    #[test]
    fn a_task_is_billed_from_image_pull_to_stop() {
        let task = TaskDescription {
            cpu: Some("1024".into()),
            memory: Some("4096".into()),
            attributes: vec![Attribute {
                name: "ecs.cpu-architecture".into(),
                value: Some("arm64".into()),
            }],
            pull_started_at: Some(datetime!(2026-11-24 06:10:05.2 UTC)),
            started_at: Some(datetime!(2026-11-24 06:10:21 UTC)),
            stopped_at: Some(datetime!(2026-11-24 06:20:05 UTC)),
            ..Default::default()
        };
        let est = PriceTable::builtin()
            .estimate_task("eu-west-1", &task)
            .unwrap();
        assert_eq!(est.billed_seconds, 600);
        assert_eq!(est.architecture, "arm64");
        assert_eq!(est.memory_gb, 4.0);
        let never_started = TaskDescription {
            stopped_at: None,
            ..task
        };
        assert!(PriceTable::builtin()
            .estimate_task("eu-west-1", &never_started)
            .is_none());
    }
}
