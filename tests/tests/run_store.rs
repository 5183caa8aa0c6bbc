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

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    run_store_contract(&stevedore_local::SqliteRunStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract_on_disk_across_connections() {
    let dir = std::env::temp_dir().join(stevedore_integration_tests::unique("stevedore-db"));
    let path = dir.join("runs.db");
    run_store_contract(&stevedore_local::SqliteRunStore::open(&path).unwrap()).await;
    // A second connection sees what the first wrote.
    let reopened = stevedore_local::SqliteRunStore::open(&path).unwrap();
    assert!(!reopened.list_all(None, 100).unwrap().is_empty());
    std::fs::remove_dir_all(dir).ok();
}
