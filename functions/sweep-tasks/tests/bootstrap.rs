//! The `sweep-tasks` binary starts as Lambda starts it, without calling AWS, and
//! answers an event it cannot use with its own error name.

use stevedore_lambda::testing::assert_starts_and_answers_a_bad_event;

#[test]
fn the_binary_starts_without_calling_aws_and_names_a_bad_event() {
    let check = assert_starts_and_answers_a_bad_event(env!("CARGO_BIN_EXE_sweep-tasks"));
    assert_eq!(check.error_type(), Some("InvalidInput"), "{check:?}");
}
