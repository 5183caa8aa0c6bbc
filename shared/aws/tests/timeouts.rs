//! A stalled AWS endpoint (it accepts the connection and never answers)
//! costs one call at most `OPERATION_TIMEOUT`, then an error the handler can
//! name: it never eats the function's whole timeout.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::Credentials;
use stevedore_aws::{DynamoDbRunStore, OPERATION_TIMEOUT};
use stevedore_domain::ports::RunStore;
use stevedore_domain::FailureClass;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_fails_the_call_within_the_operation_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold every connection, reading nothing, answering nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let sdk = stevedore_aws::sdk_defaults()
        .endpoint_url(format!("http://{addr}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("a", "b", None, None, "test"))
        .load()
        .await;
    let store = DynamoDbRunStore::new(aws_sdk_dynamodb::Client::new(&sdk), "runs");
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(60), store.get_run("r1"))
        .await
        .expect("the call must end on its own, well before the function's timeout");
    let took = started.elapsed();
    let err = answer.expect_err("a stalled endpoint is an error");
    assert_eq!(err.class, FailureClass::Transient, "{err:?}");
    assert!(
        took <= OPERATION_TIMEOUT + Duration::from_secs(3),
        "bounded by the operation timeout: {took:?}"
    );
}
