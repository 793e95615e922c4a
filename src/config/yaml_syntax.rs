//! YAML syntax errors in words a config author can act on.
//!
//! The parser reports what its grammar expected ("did not find expected '-'
//! indicator"); the author needs what is wrong with their line and how to fix
//! it. The common slips (a tab, an item without `- `, a line indented one
//! space off, an unclosed quote or bracket) each get their own fix; anything
//! else keeps the parser's words. The offending line is shown with a caret.

use super::error::ConfigError;
use super::source_map::Location;

/// The error for text the YAML parser refused.
pub fn describe(text: &str, error: &serde_yaml_ng::Error) -> ConfigError {
    let location = error.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let raw = error.to_string();
    let line_text = location.and_then(|l| text.lines().nth(l.line.saturating_sub(1)));
    let fix = explain(&raw, line_text, location);
    ConfigError {
        path: String::new(),
        message: format!("invalid YAML: {fix}"),
        location,
        excerpt: location.zip(line_text).map(|(l, line)| excerpt(line, l)),
    }
}

/// What is wrong and how to fix it, from the parser's message and the line.
fn explain(raw: &str, line: Option<&str>, location: Option<Location>) -> String {
    let what = raw.split(" at line ").next().unwrap_or(raw);
    // "…, while parsing a block collection at line 2 column 3": where the
    // enclosing list or mapping started.
    let opened_at = raw
        .split(", while ")
        .nth(1)
        .and_then(|s| s.split(" at line ").nth(1))
        .and_then(|s| s.split(' ').next())
        .unwrap_or("?");
    let indent = line.map(|l| &l[..l.len() - l.trim_start().len()]).unwrap_or("");
    let at_tab = line
        .zip(location)
        .and_then(|(l, at)| l.chars().nth(at.column.saturating_sub(1)))
        == Some('\t');
    if indent.contains('\t') || at_tab {
        return "a tab in the indentation: YAML indents with spaces only; replace the tab with spaces".into();
    }
    match what {
        "did not find expected '-' indicator" => format!(
            "this line is inside the list that starts at line {opened_at} but is not one of its items: \
             to add a key to the item above, indent it like that item's other keys; \
             to start a new item, begin it with `- ` in the same column as the other items"
        ),
        "did not find expected key" => format!(
            "this line's indentation matches no key of the block that starts at line {opened_at}: \
             line it up with the keys beside it"
        ),
        "mapping values are not allowed in this context" => {
            "a `key:` where none can start: this line is indented deeper than the key before it \
             (line it up with its siblings), or a value holds `: ` and needs quotes, like \"a: b\""
                .into()
        }
        "could not find expected ':'" => "a key without its `:`: write `key: value`, or `key:` with an indented block \
             under it"
            .into(),
        "found unexpected end of stream" if raw.contains("quoted scalar") => {
            format!("the quoted string that starts at line {opened_at} is never closed: add its closing quote")
        }
        _ if what.starts_with("did not find expected ',' or ") => format!(
            "the bracketed list or mapping that starts at line {opened_at} is not closed: \
             separate its items with `,` and close it with `]` or `}}`"
        ),
        _ if what.starts_with("duplicate entry with key") => {
            format!("{what}: each key may appear once in a mapping; remove or rename one")
        }
        _ => raw.to_string(),
    }
}

/// The line, numbered, with a caret under the column.
fn excerpt(line: &str, at: Location) -> String {
    let number = at.line.to_string();
    let gutter = " ".repeat(number.len());
    // Tabs are shown as one space so the caret lines up in any terminal.
    let shown: String = line.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
    let caret = " ".repeat(at.column.saturating_sub(1).min(shown.chars().count()));
    format!("{gutter} |\n{number} | {shown}\n{gutter} | {caret}^")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_for(text: &str) -> ConfigError {
        let error = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).expect_err("the YAML is broken");
        describe(text, &error)
    }

    #[test]
    fn a_tab_is_named_with_its_fix() {
        let error = error_for("routes:\n\t- name: a\n");
        assert!(error.message.contains("a tab in the indentation"), "{}", error.message);
        assert_eq!(error.location, Some(Location { line: 2, column: 1 }));
    }

    #[test]
    fn a_key_outside_its_list_item_says_how_to_indent_or_add_a_dash() {
        let error = error_for("routes:\n  - name: a\n  upstream: b\n");
        assert!(
            error.message.contains("inside the list that starts at line 2"),
            "{}",
            error.message
        );
        assert!(error.message.contains("begin it with `- `"), "{}", error.message);
        assert_eq!(error.excerpt.as_deref(), Some("  |\n3 |   upstream: b\n  |   ^"));
    }

    #[test]
    fn a_line_indented_too_deep_is_told_to_line_up() {
        let error = error_for("routes:\n  - name: a\n     upstream: x\n");
        assert!(
            error.message.contains("indented deeper than the key before it"),
            "{}",
            error.message
        );
    }

    #[test]
    fn unclosed_quotes_and_brackets_point_at_their_start() {
        assert!(error_for("routes:\n  - name: \"a\n")
            .message
            .contains("starts at line 2 is never closed"));
        assert!(error_for("routes: [a, b\n")
            .message
            .contains("starts at line 1 is not closed"));
    }

    #[test]
    fn a_missing_colon_is_named() {
        let error = error_for("listeners:\n  - name: a\nroutes\n  - name: b\n");
        assert!(error.message.contains("a key without its `:`"), "{}", error.message);
    }

    #[test]
    fn other_errors_keep_the_parsers_words() {
        let error = error_for("a: &x 1\nb: *y\n");
        assert!(
            error.message.starts_with("invalid YAML: unknown anchor"),
            "{}",
            error.message
        );
    }
}
