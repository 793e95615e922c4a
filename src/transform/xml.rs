//! XML ↔ JSON, by one documented mapping that reads back what it writes:
//!
//! - an element is a key named as written, prefix included (`soap:Body`);
//! - an element holding only text is that text: `<id>7</id>` → `"id": "7"`;
//! - an empty element is `null`: `<note/>` → `"note": null` (and
//!   `<note></note>` is `""`, so that each reads back as it was written);
//! - attributes are `@name` keys, namespace declarations too (`@xmlns:soap`);
//! - text beside attributes or child elements is `#text`;
//! - repeated elements are an array, in document order; elements named in
//!   `arrays` are arrays even when they occur once;
//! - elements are written in the order of the JSON text's keys (`KeyOrder`);
//! - comments, processing instructions and the DOCTYPE are dropped; CDATA
//!   is text; only the five predefined entities and character references
//!   are known (no DTD is read, so no entity can expand or fetch anything);
//! - text is a string, unless `infer_types`: then `true`, `false` and
//!   numbers that write back the same (`7`, `-1.5`, not `007`) are JSON ones.
//!
//! The document's root element is the JSON's one key, or, with `root`, is
//! implied: its content is the whole JSON, and `root` names it in the XML.
//! Mixed content (text between child elements) is the one thing the mapping
//! cannot keep in order: its pieces are joined into one `#text`.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer, XmlVersion};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashSet;

/// Deeper documents are refused: they are attacks, not data.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, Default)]
pub struct XmlOptions {
    /// The root element's name when it is implied (absent from the JSON).
    pub root: Option<String>,
    /// Elements that are always arrays, even when they occur once.
    pub arrays: HashSet<String>,
    pub infer_types: bool,
}

/// An element being read: its attributes and children so far, and its text.
struct Open {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

impl Open {
    /// Its JSON value; `empty` for `<a/>`. Text that is only whitespace is
    /// indentation beside children and attributes, data on its own.
    fn into_value(self, empty: bool, options: &XmlOptions) -> Value {
        if empty && self.fields.is_empty() {
            return Value::Null;
        }
        if self.fields.is_empty() {
            return scalar(self.text, options);
        }
        let mut fields = self.fields;
        if !self.text.trim().is_empty() {
            fields.insert("#text".into(), scalar(self.text, options));
        }
        Value::Object(fields)
    }
}

fn scalar(text: String, options: &XmlOptions) -> Value {
    if options.infer_types {
        match text.as_str() {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {
                if let Ok(number) = text.parse::<serde_json::Number>() {
                    if number.to_string() == text {
                        return Value::Number(number);
                    }
                }
            }
        }
    }
    Value::String(text)
}

/// Adds a child under its name: the second of a name makes an array.
fn insert(fields: &mut Map<String, Value>, name: String, value: Value, options: &XmlOptions) {
    match fields.get_mut(&name) {
        // Elements' own values are never arrays, so an array here is repetition.
        Some(Value::Array(items)) => items.push(value),
        Some(first) => {
            let first = first.take();
            fields.insert(name, Value::Array(vec![first, value]));
        }
        None if options.arrays.contains(&name) => {
            fields.insert(name, Value::Array(vec![value]));
        }
        None => {
            fields.insert(name, value);
        }
    }
}

/// Reads an XML document into JSON. Errors say what is wrong and where.
pub fn to_json(xml: &[u8], options: &XmlOptions) -> Result<Value, String> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let at = |reader: &Reader<&[u8]>| reader.buffer_position();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("not well-formed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(format!("a second root element at byte {}", at(&reader)));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                stack.push(open(&start, &reader)?);
            }
            Event::Empty(start) => {
                let element = open(&start, &reader)?;
                let name = element.name.clone();
                close(&mut stack, &mut root, name, element.into_value(true, options), options);
            }
            Event::End(_) => {
                // The reader has checked that the end tag matches its start.
                if let Some(element) = stack.pop() {
                    let name = element.name.clone();
                    close(&mut stack, &mut root, name, element.into_value(false, options), options);
                }
            }
            Event::Text(text) => {
                let content = text.xml10_content().map_err(|e| e.to_string())?;
                push_text(&mut stack, &content, at(&reader))?;
            }
            Event::CData(data) => {
                let content = data.xml10_content().map_err(|e| e.to_string())?;
                push_text(&mut stack, &content, at(&reader))?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = reference.decode().map_err(|e| e.to_string())?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name}; (only the five XML ones are known)"))?
                            .to_string()
                    }
                };
                push_text(&mut stack, &resolved, at(&reader))?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{}> is never closed", open.name));
    }
    let (name, value) = root.ok_or("no root element")?;
    Ok(match options.root {
        Some(_) => value,
        None => Value::Object(Map::from_iter([(name, value)])),
    })
}

fn open(start: &BytesStart<'_>, reader: &Reader<&[u8]>) -> Result<Open, String> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut fields = Map::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| format!("a broken attribute in <{name}>: {e}"))?;
        let value = attribute
            .decoded_and_normalized_value(XmlVersion::Implicit1_0, reader.decoder())
            .map_err(|e| format!("a broken attribute in <{name}>: {e}"))?;
        let key = format!("@{}", String::from_utf8_lossy(attribute.key.as_ref()));
        fields.insert(key, Value::String(value.into_owned()));
    }
    Ok(Open {
        name,
        fields,
        text: String::new(),
    })
}

fn close(stack: &mut [Open], root: &mut Option<(String, Value)>, name: String, value: Value, options: &XmlOptions) {
    match stack.last_mut() {
        Some(parent) => insert(&mut parent.fields, name, value, options),
        None => *root = Some((name, value)),
    }
}

fn push_text(stack: &mut [Open], text: &str, at: u64) -> Result<(), String> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(format!("text outside the root element at byte {at}")),
    }
}

/// The order of a JSON text's object keys. A `serde_json` map is sorted by
/// key, and XML elements have an order (a schema's `sequence`): the order is
/// read from the text the JSON came from. Keys the text did not have (added
/// or renamed by transforms) follow, sorted.
#[derive(Debug, Default)]
pub struct KeyOrder<'t> {
    /// Borrowed from the text, unless escaped there.
    keys: Vec<(Cow<'t, str>, KeyOrder<'t>)>,
    items: Vec<KeyOrder<'t>>,
}

static NO_ORDER: KeyOrder<'static> = KeyOrder {
    keys: Vec::new(),
    items: Vec::new(),
};

impl<'t> KeyOrder<'t> {
    /// The order of `text`'s keys; none if it is not JSON.
    pub fn of(text: &'t [u8]) -> KeyOrder<'t> {
        serde_json::from_slice(text).unwrap_or_default()
    }

    fn of_key(&self, key: &str) -> &KeyOrder<'t> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&NO_ORDER, |(_, order)| order)
    }

    /// `fields` in this order, each with its own.
    fn arrange<'v>(&'v self, fields: &'v Map<String, Value>) -> Vec<(&'v String, &'v Value, &'v KeyOrder<'t>)> {
        let mut out: Vec<_> = self
            .keys
            .iter()
            .filter_map(|(key, order)| fields.get_key_value(key.as_ref()).map(|(k, v)| (k, v, order)))
            .collect();
        if out.len() < fields.len() {
            out.extend(
                fields
                    .iter()
                    .filter(|(k, _)| !self.keys.iter().any(|(known, _)| known == *k))
                    .map(|(k, v)| (k, v, &NO_ORDER)),
            );
        }
        out
    }
}

/// A key of the text, borrowed when it has no escapes.
struct Key<'t>(Cow<'t, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

impl<'de> serde::Deserialize<'de> for KeyOrder<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<KeyOrder<'de>, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = KeyOrder<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeyOrder<'de>, A::Error> {
                let mut keys = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    keys.push((key, map.next_value::<KeyOrder<'de>>()?));
                }
                Ok(KeyOrder {
                    keys,
                    items: Vec::new(),
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyOrder<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<KeyOrder<'de>>()? {
                    items.push(item);
                }
                Ok(KeyOrder {
                    keys: Vec::new(),
                    items,
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<KeyOrder<'de>, E> {
                Ok(KeyOrder::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<KeyOrder<'de>, E> {
                Ok(KeyOrder::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<KeyOrder<'de>, E> {
                Ok(KeyOrder::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<KeyOrder<'de>, E> {
                Ok(KeyOrder::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<KeyOrder<'de>, E> {
                Ok(KeyOrder::default())
            }
            fn visit_unit<E>(self) -> Result<KeyOrder<'de>, E> {
                Ok(KeyOrder::default())
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Writes JSON as an XML document (UTF-8, with a declaration), its
/// elements in `order`.
pub fn from_json(json: &Value, options: &XmlOptions, order: &KeyOrder<'_>) -> Result<Vec<u8>, String> {
    let mut writer = Writer::new(Vec::with_capacity(256));
    write(&mut writer, Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let one_root = |name: &str, value: &Value| match value.is_array() {
        true => Err(format!(
            "the root element {name:?} cannot be an array: an XML document has one root"
        )),
        false => Ok(()),
    };
    match (&options.root, json) {
        (Some(root), _) => {
            one_root(root, json)?;
            element(&mut writer, root, json, order, &Place::root(root), 0)?;
        }
        (None, Value::Object(map)) if map.len() == 1 => {
            for (name, value) in map {
                one_root(name, value)?;
                element(&mut writer, name, value, order.of_key(name), &Place::root(name), 0)?;
            }
        }
        (None, _) => {
            return Err(
                "an XML document has one root element: send an object with one key (or configure `xml.root`)".into(),
            )
        }
    }
    Ok(writer.into_inner())
}

fn write(writer: &mut Writer<Vec<u8>>, event: Event<'_>) -> Result<(), String> {
    // Writing to a Vec cannot fail; the error type is io's.
    writer.write_event(event).map_err(|e| e.to_string())
}

/// A place in the JSON, for errors: written out only when one happens.
struct Place<'a> {
    parent: Option<&'a Place<'a>>,
    key: &'a str,
}

impl<'a> Place<'a> {
    fn root(key: &'a str) -> Place<'a> {
        Place { parent: None, key }
    }

    fn child(&'a self, key: &'a str) -> Place<'a> {
        Place {
            parent: Some(self),
            key,
        }
    }
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        f.write_str(self.key)
    }
}

/// Writes `<name>` for `value`; `at` is its place in the JSON.
fn element(
    writer: &mut Writer<Vec<u8>>,
    name: &str,
    value: &Value,
    order: &KeyOrder<'_>,
    at: &Place<'_>,
    depth: usize,
) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("{at}: nested deeper than {MAX_DEPTH}"));
    }
    check_name(name, at)?;
    match value {
        Value::Null => write(writer, Event::Empty(BytesStart::new(name))),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_array() {
                    return Err(format!("{at}: an array inside an array has no XML form"));
                }
                element(
                    writer,
                    name,
                    item,
                    order.items.get(i).unwrap_or(&NO_ORDER),
                    at,
                    depth + 1,
                )?;
            }
            Ok(())
        }
        Value::Object(fields) => {
            let fields = order.arrange(fields);
            let mut start = BytesStart::new(name);
            let mut text = None;
            for &(key, field, _) in &fields {
                if let Some(attribute) = key.strip_prefix('@') {
                    let place = at.child(key);
                    check_name(attribute, &place)?;
                    let value = text_of(field)
                        .ok_or_else(|| format!("{place}: an attribute is a string, number or boolean"))?;
                    check_chars(&value, &place)?;
                    start.push_attribute((attribute.as_bytes(), escape(&value, true).as_bytes()));
                } else if key == "#text" {
                    text =
                        Some(text_of(field).ok_or_else(|| format!("{at}.#text: text is a string, number or boolean"))?);
                }
            }
            let children: Vec<_> = fields
                .iter()
                .filter(|(k, _, _)| !k.starts_with('@') && *k != "#text")
                .collect();
            if children.is_empty() && text.is_none() {
                return write(writer, Event::Empty(start));
            }
            write(writer, Event::Start(start))?;
            if let Some(text) = text {
                check_chars(&text, at)?;
                write(writer, Event::Text(BytesText::from_escaped(escape(&text, false))))?;
            }
            for &&(key, child, order) in &children {
                element(writer, key, child, order, &at.child(key), depth + 1)?;
            }
            write(writer, Event::End(BytesEnd::new(name)))
        }
        scalar => {
            let text = text_of(scalar).unwrap_or_default();
            check_chars(&text, at)?;
            write(writer, Event::Start(BytesStart::new(name)))?;
            write(writer, Event::Text(BytesText::from_escaped(escape(&text, false))))?;
            write(writer, Event::End(BytesEnd::new(name)))
        }
    }
}

fn text_of(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Escapes markup, and the characters a reader would otherwise normalise
/// away (`\r` in text; `\t`, `\n`, `\r` in attributes), so they read back.
fn escape(text: &str, attribute: bool) -> Cow<'_, str> {
    let special = |c: char| matches!(c, '<' | '>' | '&' | '\r') || (attribute && matches!(c, '"' | '\n' | '\t'));
    if !text.contains(special) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' if attribute => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// XML 1.0 cannot carry most control characters, even escaped.
fn check_chars(text: &str, at: impl std::fmt::Display) -> Result<(), String> {
    match text
        .chars()
        .find(|&c| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}')
    {
        Some(c) => Err(format!("{at}: holds {c:?}, which XML cannot carry")),
        None => Ok(()),
    }
}

/// An XML name: a letter, `_` or `:` first, then letters, digits, `-`, `.`,
/// `_` or `:` (the spec's ranges, by Unicode class).
pub fn check_name(name: &str, at: impl std::fmt::Display) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '\u{B7}')) {
        Ok(())
    } else {
        Err(format!(
            "{at}: {name:?} is not an XML name (start with a letter or _, then letters, digits, -, . or _)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options() -> XmlOptions {
        XmlOptions::default()
    }

    #[test]
    fn reads_the_documented_mapping() {
        let xml = br#"<?xml version="1.0"?>
            <!-- a comment -->
            <soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
              <soap:Body>
                <order id="7" state="open">
                  <item sku="a">Tea &amp; cake</item>
                  <item sku="b"><![CDATA[<raw>]]></item>
                  <note/>
                  <total currency="EUR">12.50</total>
                </order>
              </soap:Body>
            </soap:Envelope>"#;
        let json = to_json(xml, &options()).unwrap();
        assert_eq!(
            json,
            json!({"soap:Envelope": {
                "@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
                "soap:Body": {"order": {
                    "@id": "7", "@state": "open",
                    "item": [{"@sku": "a", "#text": "Tea & cake"}, {"@sku": "b", "#text": "<raw>"}],
                    "note": null,
                    "total": {"@currency": "EUR", "#text": "12.50"}
                }}
            }})
        );
    }

    #[test]
    fn round_trips_xml_through_json() {
        let json =
            json!({"a": {"@x": "1\t2\n", "b": ["one", "two\r\n"], "c": null, "d": {"#text": "<&>\"", "@q": "\"'"}}});
        let xml = from_json(&json, &options(), &NO_ORDER).unwrap();
        assert_eq!(to_json(&xml, &options()).unwrap(), json);
    }

    #[test]
    fn arrays_and_types_and_implied_root() {
        let options = XmlOptions {
            root: Some("user".into()),
            arrays: HashSet::from(["role".to_string()]),
            infer_types: true,
        };
        let json = to_json(
            b"<user><id>7</id><zip>007</zip><admin>true</admin><role>x</role></user>",
            &options,
        )
        .unwrap();
        assert_eq!(json, json!({"id": 7, "zip": "007", "admin": true, "role": ["x"]}));
        // Elements keep the order of the JSON text they are written from.
        let order = KeyOrder::of(br#"{"id": 7, "zip": "007", "admin": true, "role": ["x"]}"#);
        let xml = String::from_utf8(from_json(&json, &options, &order).unwrap()).unwrap();
        assert!(
            xml.ends_with("<user><id>7</id><zip>007</zip><admin>true</admin><role>x</role></user>"),
            "{xml}"
        );
    }

    #[test]
    fn refuses_what_has_no_form() {
        for (json, needle) in [
            (json!({"a": 1, "b": 2}), "one root element"),
            (json!([1]), "one root element"),
            (json!({"a": [1, 2]}), "cannot be an array"),
            (json!({"a": {"b": [[1]]}}), "array inside an array"),
            (json!({"a": {"first name": 1}}), "not an XML name"),
            (json!({"a": {"@x": {"y": 1}}}), "attribute is a string"),
            (json!({"a": "bell\u{7}"}), "XML cannot carry"),
        ] {
            let error = from_json(&json, &options(), &NO_ORDER).unwrap_err();
            assert!(error.contains(needle), "{json}: {error}");
        }
        for (xml, needle) in [
            (&b"<a><b></a>"[..], "well-formed"),
            (b"<a>", "never closed"),
            (b"<a/><b/>", "second root"),
            (b"text", "outside the root"),
            (b"", "no root"),
            (b"<!DOCTYPE a [<!ENTITY x \"boom\">]><a>&x;</a>", "unknown entity"),
        ] {
            let error = to_json(xml, &options()).unwrap_err();
            assert!(error.contains(needle), "{}: {error}", String::from_utf8_lossy(xml));
        }
        let deep = "<a>".repeat(200) + &"</a>".repeat(200);
        assert!(to_json(deep.as_bytes(), &options()).unwrap_err().contains("deeper"));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Text XML can carry, not only whitespace (which beside children
        /// is indentation).
        fn text() -> impl Strategy<Value = String> {
            "[ a-zA-Z0-9<>&\"'\r\n\té-]{0,6}[a-z<&]"
        }

        fn name() -> impl Strategy<Value = String> {
            "[a-z_][a-z0-9._-]{0,3}(:[a-z][a-z0-9]{0,2})?"
        }

        /// JSON in the shape the mapping writes: what should read back equal.
        fn element() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                "[a-z ]{0,4}".prop_map(Value::String),
                text().prop_map(Value::String)
            ];
            leaf.prop_recursive(4, 40, 4, |inner| {
                let child = prop_oneof![
                    3 => inner.clone(),
                    1 => prop::collection::vec(inner, 2..4).prop_map(Value::Array),
                ];
                (
                    prop::collection::btree_map(name(), "[a-z&\"<\t\n]{0,4}", 0..3),
                    prop::option::of(text()),
                    prop::collection::btree_map(name(), child, 1..4),
                )
                    .prop_map(|(attributes, text, children)| {
                        let mut map = Map::new();
                        for (k, v) in attributes {
                            map.insert(format!("@{k}"), Value::String(v));
                        }
                        if let Some(text) = text {
                            map.insert("#text".into(), Value::String(text));
                        }
                        for (k, v) in children {
                            map.insert(k, v);
                        }
                        Value::Object(map)
                    })
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(crate::transform::fuzz::cases()))]

            #[test]
            fn reading_key_order_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = KeyOrder::of(&bytes);
            }

            #[test]
            fn reading_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = to_json(&bytes, &XmlOptions::default());
            }

            #[test]
            fn reading_xml_like_text_never_panics(text in "(<[a-z/!?]{0,3}|[a-z =\"&;#x0-9]{0,4}|>|<!\\[CDATA\\[|\\]\\]>){0,30}") {
                let _ = to_json(text.as_bytes(), &XmlOptions::default());
            }

            #[test]
            fn writing_any_json_never_panics(doc in crate::transform::fuzz::json()) {
                let _ = from_json(&doc, &XmlOptions::default(), &NO_ORDER);
                let _ = from_json(&doc, &XmlOptions { root: Some("r".into()), ..XmlOptions::default() }, &NO_ORDER);
            }

            #[test]
            fn what_is_written_reads_back_the_same(root in name(), value in element()) {
                let doc = Value::Object(Map::from_iter([(root, value)]));
                let text = doc.to_string();
                let xml = from_json(&doc, &XmlOptions::default(), &KeyOrder::of(text.as_bytes()))
                    .map_err(TestCaseError::fail)?;
                let back = to_json(&xml, &XmlOptions::default())
                    .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&xml))))?;
                prop_assert_eq!(back, doc, "{}", String::from_utf8_lossy(&xml));
            }
        }
    }
}
