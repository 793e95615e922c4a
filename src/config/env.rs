//! `${env:NAME}` references in string values, replaced before the typed parse so
//! that secrets need not be written into the file.
//!
//! Other `${...}` forms are left alone: later steps (templates in transforms and
//! aggregation) give them their own meaning.

use super::error::ConfigErrors;
use serde_yaml_ng::Value;

const OPEN: &str = "${env:";

/// Replaces every `${env:NAME}` in the string values of `value`, reporting each
/// unset variable at its path. The error never shows the value of a variable.
pub fn interpolate(value: &mut Value, path: &mut String, errors: &mut ConfigErrors) {
    match value {
        Value::String(text) if text.contains(OPEN) => match expand(text) {
            Ok(expanded) => *text = expanded,
            Err(message) => errors.push(path.clone(), message),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate(item, path, errors);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                interpolate(item, path, errors);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, errors),
        _ => {}
    }
}

fn expand(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed ${env:...} reference: add the closing `}`".to_string())?;
        let name = &after[..end];
        if name.is_empty() {
            return Err("empty ${env:} reference: name a variable, like ${env:API_KEY}".into());
        }
        let value = std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set: export it before starting portico"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_set_variables_and_reports_unset_ones() {
        std::env::set_var("PORTICO_TEST_SECRET", "s3cret");
        let mut doc: Value = serde_yaml_ng::from_str(
            "a: 'x-${env:PORTICO_TEST_SECRET}'\nb: ['${env:PORTICO_TEST_UNSET}']\nc: '${header.x}'",
        )
        .unwrap();
        let mut errors = ConfigErrors::default();
        interpolate(&mut doc, &mut String::new(), &mut errors);
        assert_eq!(doc["a"].as_str(), Some("x-s3cret"));
        assert_eq!(doc["c"].as_str(), Some("${header.x}"));
        assert_eq!(errors.len(), 1);
        let error = errors.iter().next().unwrap();
        assert_eq!(error.path, "b[0]");
        assert!(error.message.contains("PORTICO_TEST_UNSET is not set"));
    }
}
