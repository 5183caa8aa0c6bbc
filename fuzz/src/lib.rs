//! Structured fuzzing of everything Stevedore reads from outside: job
//! specs, JSONPath, intrinsic functions, state machine definitions, whole
//! executions, ECS task events and alerts.
//!
//! Every input is a JSON value made by a target's generator from one seed,
//! so an input is both replayable (target, seed) and savable (its JSON).
//! Generators build inputs from the grammar of what they feed (a valid job
//! spec, a path made of segments, a state machine of states) and then
//! mutate them, so most inputs get past the first check and reach deep code.
//! A target's `check` runs the code under test and says whether an
//! invariant broke; a panic is caught by the driver.

pub mod gen;
pub mod targets;

use serde_json::Value;

/// One thing to fuzz.
pub struct Target {
    pub name: &'static str,
    /// A new input from the generator's random source.
    pub generate: fn(&mut gen::Gen) -> Value,
    /// Runs the code under test on `input`: `Err` when an invariant broke.
    pub check: fn(&Value) -> Result<(), String>,
}

/// Every target, in the order the driver runs them.
pub fn targets() -> Vec<Target> {
    targets::all()
}

pub fn target(name: &str) -> Option<Target> {
    targets().into_iter().find(|t| t.name == name)
}

/// The seed of input `i` of a run seeded with `seed` (so a crashed child's
/// input can be made again from the two numbers).
pub fn input_seed(seed: u64, i: u64) -> u64 {
    // SplitMix64 of the pair: neighbouring inputs share nothing.
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `check` on `input`, a panic reported as an error (with its message).
pub fn run_one(target: &Target, input: &Value) -> Outcome {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.check)(input))) {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(why)) => Outcome::Violation(why),
        Err(p) => Outcome::Panic(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into()),
        ),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok,
    Violation(String),
    Panic(String),
}
