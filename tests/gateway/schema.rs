//! The config's JSON Schema: `portico schema` prints the one the docs ship,
//! and every example config an editor opens checks clean against it.

use std::path::Path;

fn generated() -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_shipped_schema_is_the_generated_one() {
    let shipped = std::fs::read_to_string("docs/schema/portico.schema.json").unwrap();
    assert!(
        shipped == generated(),
        "docs/schema/portico.schema.json is out of date: run\n  cargo run -q -- schema > docs/schema/portico.schema.json"
    );
}

#[test]
fn every_example_config_checks_clean_against_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut checked = 0;
    for dir in ["examples", "packaging"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let config: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&config)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}:\n{}", path.display(), errors.join("\n"));
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} configs");
    assert!(Path::new("docs/schema/portico.schema.json").exists());
}
