//! The README and the book (`docs/src`): every relative link and anchor
//! resolves, every chapter is in the table of contents, the README stays
//! short, and no user doc speaks of the project's own history.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README and every Markdown file of the book, relative to the root.
fn documents() -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("README.md")];
    let mut dirs = vec![PathBuf::from("docs/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root().join(&dir)).unwrap() {
            let path = dir.join(entry.unwrap().file_name());
            if root().join(&path).is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A heading's id as mdBook and GitHub write it: lower case, letters,
/// digits, `-` and `_` kept, spaces to `-`, the rest dropped.
fn heading_id(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

struct Document {
    ids: HashSet<String>,
    links: Vec<String>,
}

fn read(path: &Path) -> Document {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut ids = HashSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(&text, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) if heading.is_some() => heading.as_mut().unwrap().push_str(&t),
            Event::End(TagEnd::Heading(_)) => {
                let id = heading_id(&heading.take().unwrap_or_default());
                // A repeated heading gets `-1`, `-2`, … after the first.
                let n = seen.entry(id.clone()).or_default();
                ids.insert(if *n == 0 { id.clone() } else { format!("{id}-{n}") });
                *n += 1;
            }
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                links.push(dest_url.into_string())
            }
            _ => {}
        }
    }
    Document { ids, links }
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let paths = documents();
    let docs: HashMap<PathBuf, Document> = paths.iter().map(|p| (p.clone(), read(p))).collect();
    let mut broken = Vec::new();
    for (from, doc) in &docs {
        for link in &doc.links {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                from.clone()
            } else {
                normalise(&from.parent().unwrap_or(Path::new("")).join(file))
            };
            // The built book holds only docs/src: a link out of it breaks there.
            if from.starts_with("docs/src") && !target.starts_with("docs/src") {
                broken.push(format!("{}: {link} leaves the book", from.display()));
            } else if !root().join(&target).exists() {
                broken.push(format!("{}: {link}: no file {}", from.display(), target.display()));
            } else if !anchor.is_empty() {
                let ids = docs.get(&target).map(|d| &d.ids);
                if !ids.is_some_and(|ids| ids.contains(anchor)) {
                    broken.push(format!(
                        "{}: {link}: no heading #{anchor} in {}",
                        from.display(),
                        target.display()
                    ));
                }
            }
        }
    }
    broken.sort();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(docs.len() > 40, "found only {} documents", docs.len());
}

/// The parts of the README the book includes (`{{#include ../../README.md:NAME}}`)
/// are read from inside `docs/src` there, so a relative link in them would break.
#[test]
fn the_readme_parts_the_book_includes_have_no_relative_links() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let book = std::fs::read_to_string(root().join("docs/src/getting-started.md")).unwrap();
    for name in ["install", "quickstart", "first-gateway"] {
        assert!(
            book.contains(&format!("{{{{#include ../../README.md:{name}}}}}")),
            "{name} is not included"
        );
        let part = readme
            .split(&format!("<!-- ANCHOR: {name} -->"))
            .nth(1)
            .and_then(|rest| rest.split(&format!("<!-- ANCHOR_END: {name} -->")).next())
            .unwrap_or_else(|| panic!("the README has no part {name}"));
        let relative: Vec<String> = Parser::new(part)
            .filter_map(|event| match event {
                Event::Start(Tag::Link { dest_url, .. }) if !dest_url.contains("://") => Some(dest_url.into_string()),
                _ => None,
            })
            .collect();
        assert!(relative.is_empty(), "README part {name} links {relative:?}");
    }
}

#[test]
fn every_chapter_is_in_the_table_of_contents() {
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    for path in documents().iter().filter(|p| p.starts_with("docs/src")) {
        let chapter = path.strip_prefix("docs/src").unwrap().to_str().unwrap().to_string();
        if chapter != "SUMMARY.md" {
            assert!(
                summary.contains(&format!("]({chapter})")),
                "docs/src/SUMMARY.md lacks {chapter}"
            );
        }
    }
    // Each chapter starts with its one title.
    for path in documents() {
        let text = std::fs::read_to_string(root().join(&path)).unwrap();
        let titles = Parser::new(&text)
            .filter(|e| {
                matches!(
                    e,
                    Event::Start(Tag::Heading {
                        level: HeadingLevel::H1,
                        ..
                    })
                )
            })
            .count();
        let expected = if path.ends_with("SUMMARY.md") { 1..=10 } else { 1..=1 };
        assert!(
            expected.contains(&titles),
            "{} has {titles} top-level titles",
            path.display()
        );
    }
}

#[test]
fn the_readme_is_short_and_the_docs_tell_no_project_history() {
    let readme = std::fs::metadata(root().join("README.md")).unwrap().len();
    assert!(
        readme < 15 * 1024,
        "README.md is {readme} bytes: move detail into docs/"
    );
    for path in documents() {
        let text = std::fs::read_to_string(root().join(&path)).unwrap().to_lowercase();
        for words in [
            "still to come",
            "their issues",
            "from issue",
            "this release is",
            "not here yet",
        ] {
            assert!(!text.contains(words), "{} says {words:?}", path.display());
        }
        for (i, _) in text.match_indices("issue ") {
            let next = text[i + 6..].chars().next();
            assert!(
                !next.is_some_and(|c| c.is_ascii_digit()),
                "{} names an issue number",
                path.display()
            );
        }
    }
}
