//! The `notify-failure` binary starts as Lambda starts it, without calling
//! AWS. An event it cannot read is still alerted (nothing is lost): it
//! publishes, and here, where every AWS endpoint is the test's Runtime API,
//! the publish fails with the function's own error name.

use stevedore_lambda::testing::assert_starts_and_answers_a_bad_event;

#[test]
fn the_binary_starts_without_calling_aws_and_alerts_even_a_bad_event() {
    let check = assert_starts_and_answers_a_bad_event(env!("CARGO_BIN_EXE_notify-failure"));
    assert!(
        check.requests.iter().any(|r| r.starts_with("POST / ")),
        "it tried to publish the alert: {:?}",
        check.requests
    );
    assert_eq!(check.error_type(), Some("ConfigurationError"), "{check:?}");
}
