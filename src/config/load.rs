//! From text to the typed file model: YAML syntax, top-level keys, `${env:...}`,
//! then each listener, upstream and route on its own, so that one typo does
//! not hide the errors after it.

use super::error::{suggestion, ConfigErrors};
use super::model::*;
use super::{env, yaml_syntax};
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

/// What could be read of a config: every block that fits, the errors of
/// those that do not, and the names of upstreams that did not fit (so that
/// routes naming them are not also reported as naming an unknown upstream).
pub struct Partial {
    pub file: ConfigFile,
    pub errors: ConfigErrors,
    pub unparsed_upstreams: Vec<String>,
}

pub fn parse(text: &str) -> Result<Partial, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut root: Value = match serde_yaml_ng::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            errors.push_error(yaml_syntax::describe(text, &e));
            return Err(errors);
        }
    };
    env::interpolate(&mut root, &mut String::new(), &mut errors);
    let Value::Mapping(mut root) = root else {
        errors.push(
            "",
            "the config must be a mapping with at least `listeners` and `routes`",
        );
        return Err(errors);
    };
    let mut unparsed_upstreams = Vec::new();
    for key in root.keys() {
        let key = key.as_str().unwrap_or("?");
        if !TOP_LEVEL_KEYS.contains(&key) {
            errors.push(
                key,
                format!(
                    "unknown key{}; the top level takes {}",
                    suggestion(key, TOP_LEVEL_KEYS.iter().copied()),
                    TOP_LEVEL_KEYS.join(", ")
                ),
            );
        }
    }
    let mut config = ConfigFile::default();
    match root.remove("listeners") {
        Some(Value::Sequence(items)) if !items.is_empty() => {
            config.listeners = each_item(items, "listeners", &mut errors);
        }
        _ => errors.push(
            "listeners",
            "at least one listener is needed, like `listeners: [{ name: public, addr: 127.0.0.1:8080 }]`",
        ),
    }
    if let Some(value) = root.remove("upstreams") {
        for (name, value) in mapping(value, "upstreams", &mut errors) {
            let path = format!("upstreams.{name}");
            match typed(value, &path, &mut errors) {
                Some(upstream) => {
                    config.upstreams.insert(name, upstream);
                }
                None => unparsed_upstreams.push(name),
            }
        }
    }
    match root.remove("routes") {
        Some(Value::Sequence(items)) => config.routes = each_item(items, "routes", &mut errors),
        Some(Value::Null) | None => {}
        Some(_) => errors.push("routes", "`routes` must be a list of routes"),
    }
    if let Some(value) = root.remove("plugins") {
        config.plugins = mapping(value, "plugins", &mut errors).into_iter().collect();
    }
    if let Some(value) = root.remove("shutdown") {
        config.shutdown = typed(value, "shutdown", &mut errors).unwrap_or_default();
    }
    if let Some(value) = root.remove("access_log") {
        config.access_log = typed(value, "access_log", &mut errors).unwrap_or_default();
    }
    if let Some(value) = root.remove("admin") {
        config.admin = typed(value, "admin", &mut errors);
    }
    match root.remove("consumers") {
        Some(Value::Sequence(items)) => config.consumers = each_item(items, "consumers", &mut errors),
        Some(Value::Null) | None => {}
        Some(_) => errors.push("consumers", "`consumers` must be a list of consumers"),
    }
    if let Some(value) = root.remove("cluster") {
        config.cluster = typed(value, "cluster", &mut errors);
    }
    if let Some(value) = root.remove("tracing") {
        config.tracing = typed(value, "tracing", &mut errors);
    }
    Ok(Partial {
        file: config,
        errors,
        unparsed_upstreams,
    })
}

fn each_item<T: DeserializeOwned>(items: Vec<Value>, section: &str, errors: &mut ConfigErrors) -> Vec<T> {
    // Sized once: grown by doubling, a list of 10,000 routes took up to
    // twice its size, and a copy of itself, at the peak of a config's read.
    let mut typed_items = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(item) = typed(item, &format!("{section}[{i}]"), errors) {
            typed_items.push(item);
        }
    }
    typed_items
}

fn mapping(value: Value, section: &str, errors: &mut ConfigErrors) -> Vec<(String, Value)> {
    match value {
        Value::Mapping(map) => string_keys(map, section, errors),
        Value::Null => Vec::new(),
        _ => {
            errors.push(section, format!("`{section}` must be a mapping of names to blocks"));
            Vec::new()
        }
    }
}

fn string_keys(map: Mapping, section: &str, errors: &mut ConfigErrors) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        match key {
            Value::String(name) => out.push((name, value)),
            other => errors.push(section, format!("names must be strings, found {other:?}")),
        }
    }
    out
}

/// Deserializes one block, recording its error (with the full path) if it does not fit.
fn typed<T: DeserializeOwned>(value: Value, path: &str, errors: &mut ConfigErrors) -> Option<T> {
    match block(value, path) {
        Ok(typed) => Some(typed),
        Err((full, message)) => {
            errors.push(full, message);
            None
        }
    }
}

/// Deserializes a block found at `path`; the error is the full path of the
/// bad key and what is wrong with it (with a did-you-mean). Plugins read
/// their blocks with it.
pub fn block<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let mut full = path.to_string();
        if inner != "." {
            if !inner.starts_with('[') {
                full.push('.');
            }
            full.push_str(&inner);
        }
        explain_serde_error(full, e.into_inner().to_string())
    })
}

/// serde says "unknown field `pth`, expected one of `path`, ..."; Portico
/// suggests the key (or value) that was meant. The path already ends at the bad key.
fn explain_serde_error(path: String, message: String) -> (String, String) {
    let (what, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
        ("key", rest)
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        ("value", rest)
    } else {
        return (path, message);
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return (path, message);
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let message = format!(
        "unknown {what} `{given}`{}; expected one of {}",
        suggestion(given, known.iter().copied()),
        known.join(", ")
    );
    (path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let errors = match parse(text) {
            Ok(partial) => partial.errors,
            Err(errors) => errors,
        };
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn every_bad_block_is_reported_with_its_path() {
        let found = errors(
            "listeners: [{name: a, addr: '127.0.0.1:1', colour: red}]\n\
             routes:\n  - {name: r, match: {pth: /x}}\n  - {name: s, match: {path: /x}, preserve_host: maybe}\n\
             upstreams: {u: {targets: [], timeouts: {connect: 5}}, v: {targets: [], balance: round_robbin}}\n",
        );
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found.iter().any(
            |e| e.starts_with("upstreams.v.balance: unknown value `round_robbin` (did you mean \"round_robin\"?)")
        ));
        assert!(found
            .iter()
            .any(|e| e.starts_with("listeners[0].colour: unknown key `colour`")));
        assert!(found
            .iter()
            .any(|e| e.starts_with("routes[0].match.pth: unknown key `pth` (did you mean \"path\"?)")));
        assert!(found.iter().any(|e| e.starts_with("routes[1].preserve_host:")));
        assert!(found
            .iter()
            .any(|e| e.starts_with("upstreams.u.timeouts.connect: duration 5 has no unit")));
    }

    #[test]
    fn unknown_top_level_keys_and_missing_listeners() {
        let found = errors("routs: []\n");
        assert!(
            found[0].contains("routs: unknown key (did you mean \"routes\"?)"),
            "{found:?}"
        );
        assert!(found[1].starts_with("listeners: at least one listener"));
    }

    #[test]
    fn yaml_syntax_errors_carry_line_and_column() {
        let found = errors("listeners:\n  - name: a\n   addr: x\n");
        assert!(found[0].contains("line 3"), "{found:?}");
    }
}
