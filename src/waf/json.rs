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
    fn what_is_not_json_is_an_error() {
        for body in [r#"{"a":"b""#, "{'a':1}", r#"{"a":1} trailing"#, &"[".repeat(1000)] {
            assert!(!visited(body).1, "{body}");
        }
    }
}
