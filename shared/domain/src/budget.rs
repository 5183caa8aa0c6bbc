//! What one run-job execution may spend, in time and in history events, so
//! that the spec parser, launch-run and the state machine agree: a spec the
//! parser accepts always fits in the execution's `TimeoutSeconds` and in Step
//! Functions' 25,000-event history.

/// run-job's `TimeoutSeconds` (a test checks the ASL says the same). Ninety
/// days covers the worst spec the parser accepts (ten attempts of seven days,
/// with their retry delays and overheads); standard workflows allow a year.
pub const EXECUTION_TIMEOUT_SECONDS: u64 = 90 * 86_400;

/// Time an attempt may need beyond its own timeout: launch retries (Lambda
/// and throttling back-off), the stop after the deadline (ECS waits up to
/// 120 s for the container), the event's delivery and the record.
pub const ATTEMPT_OVERHEAD_SECONDS: u64 = 3_600;

/// Step Functions fails an execution whose history reaches 25,000 events.
pub const HISTORY_EVENT_LIMIT: u64 = 25_000;

/// Wake-ups of "Wait for task" (each a poll, about six history events) that
/// one execution may make over all its attempts: 12,000 events at most,
/// leaving the rest of the 25,000 for the other states and Lambda retries.
pub const MAX_CHECKS_PER_EXECUTION: u64 = 2_000;

/// Seconds between polls while a run waits: the configured interval, made
/// longer when the whole execution (every attempt running to its timeout)
/// would otherwise wake up more than [`MAX_CHECKS_PER_EXECUTION`] times; then
/// shortened so the attempt's timeout divides into equal intervals and the
/// last wake-up falls on the deadline.
pub fn check_seconds(timeout: u64, interval: u64, max_attempts: u32) -> u64 {
    let per_attempt = (MAX_CHECKS_PER_EXECUTION / u64::from(max_attempts.max(1))).max(1);
    let interval = interval.max(timeout.div_ceil(per_attempt)).max(1);
    let checks = timeout.div_ceil(interval).max(1);
    timeout.div_ceil(checks).max(1)
}

/// The longest one execution can take: every attempt runs to its timeout,
/// with its overhead, and waits the given delays in between.
pub fn worst_case_seconds(timeout: u64, max_attempts: u32, retry_delays: u64) -> u64 {
    u64::from(max_attempts) * (timeout + ATTEMPT_OVERHEAD_SECONDS) + retry_delays
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_intervals_end_on_the_deadline() {
        assert_eq!(check_seconds(2700, 300, 1), 300);
        assert_eq!(check_seconds(2820, 300, 1), 282);
        assert_eq!(check_seconds(60, 300, 3), 60);
        assert_eq!(check_seconds(7 * 86_400, 300, 1), 303);
        for (t, i, a) in [
            (2820, 300, 1),
            (3601, 300, 3),
            (61, 60, 10),
            (86_399, 3600, 2),
        ] {
            let c = check_seconds(t, i, a);
            assert!(c <= i.max(t.div_ceil(MAX_CHECKS_PER_EXECUTION / u64::from(a))));
            assert!(t.div_ceil(c) * c >= t);
        }
    }

    #[test]
    fn a_whole_execution_wakes_up_at_most_the_budget() {
        for timeout in [10, 59, 3_600, 86_400, 7 * 86_400] {
            for attempts in 1..=10u32 {
                let c = check_seconds(timeout, 60, attempts);
                let wakeups = u64::from(attempts) * timeout.div_ceil(c);
                assert!(
                    wakeups <= MAX_CHECKS_PER_EXECUTION + u64::from(attempts),
                    "timeout {timeout}, {attempts} attempts: {wakeups} wake-ups"
                );
            }
        }
        // A short job keeps the interval it was given.
        assert_eq!(check_seconds(3_600, 900, 3), 900);
    }
}
