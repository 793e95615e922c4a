//! A JSON body's keys and strings, visited as the document is parsed, each
//! with its dotted path (`user.bio`; array positions are not part of it).
//! No tree is built: strings without escapes are borrowed from the body,
//! and the only allocation is the path.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Calls `visit(path, text, is_key)` for every key and string of `body`;
/// `Err` if it is not JSON (what was visited before the error stays visited).
pub fn walk(body: &[u8], visit: &mut dyn FnMut(&str, &str, bool)) -> Result<(), serde_json::Error> {
    let mut path = String::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Walk { path: &mut path, visit }.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// True when `body` is made only of JSON punctuation, numbers, literals and
/// strings that are each empty or [`super::plainly_safe`] (so no escapes):
/// no rule can match any of it, and it need not be walked. Most API
/// bodies are like this; anything else is walked.
pub fn plainly_safe(body: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        at += match byte {
            b'"' => {
                // A plainly safe string is made of word bytes only (so it
                // has no escapes, and is ASCII): its end is the first other.
                let rest = &body[at + 1..];
                let end = rest
                    .iter()
                    .position(|&b| CLASSES[usize::from(b)] & WORD == 0)
                    .unwrap_or(rest.len());
                if rest.get(end) != Some(&b'"') || (end > 0 && !super::plainly_safe_bytes(&rest[..end])) {
                    return false;
                }
                end + 2
            }
            b't' if body[at..].starts_with(b"true") => 4,
            b'f' if body[at..].starts_with(b"false") => 5,
            b'n' if body[at..].starts_with(b"null") => 4,
            _ if CLASSES[usize::from(byte)] & BETWEEN != 0 => 1,
            _ => return false,
        };
    }
    // Valid, too: as text, `"or"true` is SQL. Checking costs a third of a walk.
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// What a byte may be in a plainly safe document, as bits: part of a
/// string (`WORD`), or of what comes between strings (`BETWEEN`):
/// punctuation, white space, numbers.
const WORD: u8 = 1;
const BETWEEN: u8 = 2;
const CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            table[byte] |= WORD;
        }
        if matches!(
            b,
            b'{' | b'}' | b'[' | b']' | b':' | b',' | b' ' | b'\t' | b'\n' | b'\r' | b'0'
                ..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
        ) {
            table[byte] |= BETWEEN;
        }
        byte += 1;
    }
    table
}

struct Walk<'a> {
    path: &'a mut String,
    visit: &'a mut dyn FnMut(&str, &str, bool),
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        (self.visit)(self.path, text, false);
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items
            .next_element_seed(Walk {
                path: &mut *self.path,
                visit: &mut *self.visit,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        loop {
            let before = self.path.len();
            let key = Key {
                path: &mut *self.path,
                visit: &mut *self.visit,
            };
            if members.next_key_seed(key)?.is_none() {
                return Ok(());
            }
            members.next_value_seed(Walk {
                path: &mut *self.path,
                visit: &mut *self.visit,
            })?;
            self.path.truncate(before);
        }
    }
}

/// A member's name: visited, then appended to the path for its value.
struct Key<'a> {
    path: &'a mut String,
    visit: &'a mut dyn FnMut(&str, &str, bool),
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<(), E> {
        (self.visit)(self.path, name, true);
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visited(body: &str) -> (Vec<(String, String, bool)>, bool) {
        let mut seen = Vec::new();
        let ok = walk(body.as_bytes(), &mut |path, text, key| {
            seen.push((path.to_string(), text.to_string(), key))
        })
        .is_ok();
        (seen, ok)
    }

    #[test]
    fn keys_and_strings_come_with_their_dotted_paths() {
        let (seen, ok) =
            visited(r#"{"user":{"bio":"hi \"there\"","tags":["a",{"k":"v"}],"age":3,"x":null},"top":"t"}"#);
        assert!(ok);
        let expected = [
            ("", "user", true),
            ("user", "bio", true),
            ("user.bio", "hi \"there\"", false),
            ("user", "tags", true),
            ("user.tags", "a", false),
            ("user.tags", "k", true),
            ("user.tags.k", "v", false),
            ("user", "age", true),
            ("user", "x", true),
            ("", "top", true),
            ("top", "t", false),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(p, t, k)| (p.to_string(), t.to_string(), *k))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(
            visited(r#""just a string""#).0,
            [(String::new(), "just a string".to_string(), false)]
        );
    }

    #[test]
    fn plainly_safe_documents_are_made_of_identifiers_numbers_and_literals() {
        for body in [
            r#"{"userId": "user-42", "items": [{"sku": "sku-0001", "qty": 1.5e3}], "note": "", "ok": true, "x": null}"#,
            "[1, -2, false]",
        ] {
            assert!(plainly_safe(body.as_bytes()), "{body}");
        }
        for body in [
            r#"{"q": "select a plan"}"#,
            r#"{"q": "a\u0027b"}"#,
            r#"{"q": "__proto__"}"#,
            r#"{"q": "x"} or 1=1"#,
            r#"{"q": "unterminated}"#,
            r#"{"q": nul}"#,
            "{\"q\": \"caf\u{e9}\"}",
            r#""or"true"#,
            "",
        ] {
            assert!(!plainly_safe(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn what_is_not_json_is_an_error() {
        for body in [r#"{"a":"b""#, "{'a':1}", r#"{"a":1} trailing"#, &"[".repeat(1000)] {
            assert!(!visited(body).1, "{body}");
        }
    }
}
