//! `portico schema`: the config file's JSON Schema, generated from the types
//! that read it (the file model in `config::model`, and each plugin's config
//! type named in the plugin registry), so that editors complete and check
//! Portico files as they are typed (yaml-language-server, VS Code, IntelliJ).

use crate::config::model::ConfigFile;
use crate::plugins::{PluginFactory, REGISTRY};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

/// The schema, as draft-07 (what editors read most widely).
pub fn config_schema() -> Value {
    config_schema_of(REGISTRY)
}

fn config_schema_of(registry: &[PluginFactory]) -> Value {
    let mut generator = SchemaSettings::draft07().into_generator();
    // Each plugin's block, by its name; the definitions they refer to land
    // with the file model's.
    let blocks: Map<String, Value> = registry
        .iter()
        .map(|factory| (factory.name.to_string(), (factory.schema)(&mut generator).to_value()))
        .collect();
    let mut root = generator.into_root_schema_for::<ConfigFile>().to_value();
    let plugins = json!({
        "type": "object",
        "description": "Plugins by name; the order of execution is fixed by phase, not by position.",
        "properties": blocks,
        "additionalProperties": false,
    });
    root["title"] = json!("Portico configuration");
    // The loader reads the top level section by section: only `listeners`
    // is required, and unknown sections are refused.
    root["required"] = json!(["listeners"]);
    root["additionalProperties"] = json!(false);
    root["properties"]["plugins"] = plugins.clone();
    root["definitions"]["RouteConfig"]["properties"]["plugins"] = plugins;
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_has_its_block_and_unknown_keys_are_refused() {
        let schema = config_schema();
        let blocks = schema["properties"]["plugins"]["properties"].as_object().unwrap();
        for factory in REGISTRY {
            assert!(blocks.contains_key(factory.name), "{}", factory.name);
        }
        let validator = jsonschema::validator_for(&schema).unwrap();
        let good = json!({
            "listeners": [{ "name": "public", "addr": "127.0.0.1:8080" }],
            "routes": [{ "name": "r", "match": { "path": "/" }, "respond": { "status": 200 },
                         "plugins": { "compression": { "min_size": "1KiB" } } }],
        });
        assert!(
            validator.is_valid(&good),
            "{:?}",
            validator.iter_errors(&good).map(|e| e.to_string()).collect::<Vec<_>>()
        );
        for bad in [
            json!({ "routes": [] }),
            json!({ "listeners": [{ "name": "p", "addr": "x", "adress": "y" }] }),
            json!({ "listeners": [{ "name": "p", "addr": "x" }], "plugins": { "compresion": {} } }),
            json!({ "listeners": [{ "name": "p", "addr": "x" }], "plugins": { "compression": { "min_size": true } } }),
            json!({ "listeners": [{ "name": "p", "addr": "x" }], "extra": 1 }),
        ] {
            assert!(!validator.is_valid(&bad), "{bad}");
        }
    }
}
