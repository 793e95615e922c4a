//! Where each value of the YAML document sits (line and column), by config path.
//!
//! serde works on a tree without positions, so errors found after parsing (a
//! typed field that does not fit, an unknown upstream) would lose their place.
//! This map is built from the parser's marked events and answers "where is
//! `routes[2].upstream`?" for any error, whichever step found it.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A place in the config file, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Config path (`routes[2].match.path`) to the place where its key or item starts.
#[derive(Debug, Default)]
pub struct SourceMap {
    places: HashMap<String, Location>,
}

impl SourceMap {
    /// Builds the map; a document the parser rejects gives an empty map (the
    /// parse error itself is reported by the typed parser with its own place).
    pub fn build(text: &str) -> SourceMap {
        let mut builder = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        SourceMap { places: builder.places }
    }

    /// The place of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(place) = self.places.get(path) {
                return Some(*place);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    places: HashMap<String, Location>,
}

impl Builder {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some(key) } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Map { key: None } => {}
                Frame::Seq { index } => {
                    path.push('[');
                    path.push_str(&index.to_string());
                    path.push(']');
                }
            }
        }
        path
    }

    fn record(&mut self, mark: Marker) {
        let place = Location {
            line: mark.line(),
            column: mark.col() + 1,
        };
        self.places.entry(self.path()).or_insert(place);
    }

    /// True when the next scalar in the current mapping is a key.
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None }))
    }

    /// A value has been read completely: the parent moves to its next key or item.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }

    fn start_value(&mut self, mark: Marker) {
        if matches!(self.stack.last(), Some(Frame::Seq { .. })) {
            self.record(mark);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) if self.expecting_key() => {
                if let Some(Frame::Map { key }) = self.stack.last_mut() {
                    *key = Some(text);
                }
                self.record(mark);
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.start_value(mark);
                self.value_done();
            }
            Event::MappingStart(..) => {
                self.start_value(mark);
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.start_value(mark);
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_and_items() {
        let text = "listeners:\n  - name: a\n    addr: 1\nroutes:\n  - name: r\n    match: { path: /x }\n    upstream: users\n";
        let map = SourceMap::build(text);
        assert_eq!(map.locate("routes[0].upstream"), Some(Location { line: 7, column: 5 }));
        assert_eq!(map.locate("listeners[0].addr").map(|l| l.line), Some(3));
        assert_eq!(map.locate("routes[0].match.path").map(|l| l.line), Some(6));
        // Unknown paths fall back to their nearest known ancestor.
        assert_eq!(map.locate("routes[0].match.nope").map(|l| l.line), Some(6));
    }
}
