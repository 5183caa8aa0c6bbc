//! The run store contract, against DynamoDB Local and the in-memory store.

use stevedore_domain::memory::MemoryRunStore;
use stevedore_integration_tests::contract::run_store_contract;
use stevedore_integration_tests::{emulator, run_store};

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    run_store_contract(&MemoryRunStore::new()).await;
}

#[tokio::test]
async fn dynamodb_store_keeps_the_contract() {
    let Some(ddb) = emulator("STEVEDORE_TEST_DYNAMODB") else {
        return;
    };
    let store = run_store(&ddb).await;
    run_store_contract(&store).await;
}
