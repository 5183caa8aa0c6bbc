//! The stack's outputs: what `stevedore --stack` reads (the names in
//! `cli/src/stack.rs`) is there, and nothing secret is output or exported.

use std::path::PathBuf;

use serde_yaml::Value as Yaml;

fn template() -> Yaml {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

#[test]
fn the_outputs_the_cli_reads_are_there_and_none_is_secret_or_exported() {
    let t = template();
    let outputs = t["Outputs"].as_mapping().expect("Outputs");
    // cli/src/stack.rs: OUTPUT_MARKER (with OUTPUTS_VERSION), OUTPUT_STATE_MACHINE,
    // OUTPUT_TABLE, OUTPUT_CLUSTER.
    for name in [
        "StevedoreStack",
        "StateMachineArn",
        "RunsTableName",
        "ClusterArn",
    ] {
        assert!(outputs.contains_key(name), "output {name} is missing");
    }
    assert_eq!(t["Outputs"]["StevedoreStack"]["Value"].as_str(), Some("1"));
    // Parameters that may hold secrets (NoEcho) or point at one.
    let params = t["Parameters"].as_mapping().unwrap();
    let secretish: Vec<String> = params
        .iter()
        .filter(|(k, v)| {
            v["NoEcho"].as_bool() == Some(true) || k.as_str().unwrap_or("").contains("Secret")
        })
        .map(|(k, _)| k.as_str().unwrap().to_string())
        .collect();
    assert!(
        !secretish.is_empty(),
        "the Slack webhook secret parameter is found"
    );
    for (name, out) in outputs {
        let name = name.as_str().unwrap();
        assert!(
            out.get("Export").is_none(),
            "{name} is exported: outputs stay in the stack"
        );
        let value = format!("{:?}", out["Value"]);
        for p in &secretish {
            assert!(!value.contains(p.as_str()), "{name} outputs {p}");
        }
    }
}
