//! Request and response transformation: JSON field paths (`path`), value
//! templates (`template`), the operations on headers, query strings and JSON
//! bodies (`ops`), and reading a body whole when one must change.
//!
//! A body is read only when a transform must change it and it is JSON;
//! every other body streams through untouched. (A request body is read like
//! any other one, by the proxy's `RequestBody`, so that limits and byte
//! counts hold.)

pub mod ops;
pub mod path;
pub mod template;
pub mod xml;

use crate::body::{BodyError, ResponseBody};
use crate::error::{ErrorKind, ProxyError};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The body formats transforms read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Xml,
}

impl BodyFormat {
    /// Is the message's body in this format, by its `Content-Type`
    /// (`application/json`, `application/*+json`; `application/xml`,
    /// `text/xml`, `application/*+xml`)?
    pub fn is_in(self, headers: &http::HeaderMap) -> bool {
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| self.is_mime(mime))
    }

    /// Is a media type (without parameters) of this format?
    pub fn is_mime(self, mime: &str) -> bool {
        let mime = mime.trim().to_ascii_lowercase();
        let (exact, suffix, text) = match self {
            BodyFormat::Json => ("application/json", "+json", None),
            BodyFormat::Xml => ("application/xml", "+xml", Some("text/xml")),
        };
        mime == exact || Some(mime.as_str()) == text || (mime.starts_with("application/") && mime.ends_with(suffix))
    }

    pub fn name(self) -> &'static str {
        match self {
            BodyFormat::Json => "JSON",
            BodyFormat::Xml => "XML",
        }
    }

    /// What bodies of this format are sent as, by default.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Json => "application/json",
            BodyFormat::Xml => "application/xml",
        }
    }
}

/// Is the message's body JSON?
pub fn is_json(headers: &http::HeaderMap) -> bool {
    BodyFormat::Json.is_in(headers)
}

/// A body read in one format and written in another (the `format` plugin);
/// the transforms between see JSON.
#[derive(Debug)]
pub struct Conversion {
    pub from: BodyFormat,
    pub to: BodyFormat,
    pub xml: xml::XmlOptions,
    /// What the converted body is sent as.
    pub content_type: http::HeaderValue,
}

impl Conversion {
    pub fn new(
        from: BodyFormat,
        to: BodyFormat,
        xml: xml::XmlOptions,
        content_type: Option<http::HeaderValue>,
    ) -> Conversion {
        Conversion {
            from,
            to,
            xml,
            content_type: content_type.unwrap_or(http::HeaderValue::from_static(to.content_type())),
        }
    }

    /// An empty body is `null`, as for JSON.
    pub fn decode(&self, body: &[u8]) -> Result<serde_json::Value, String> {
        match self.from {
            _ if body.is_empty() => Ok(serde_json::Value::Null),
            BodyFormat::Json => parse_json(body),
            BodyFormat::Xml => xml::to_json(body, &self.xml),
        }
    }

    /// Writes `json`, which was read from `source` (whose key order XML
    /// elements keep).
    pub fn encode(&self, json: &serde_json::Value, source: &[u8]) -> Result<Bytes, String> {
        match (self.from, self.to) {
            (_, BodyFormat::Json) => Ok(serde_json::to_vec(json).map_err(|e| e.to_string())?.into()),
            (BodyFormat::Json, BodyFormat::Xml) => {
                Ok(xml::from_json(json, &self.xml, &xml::KeyOrder::of(source))?.into())
            }
            (BodyFormat::Xml, BodyFormat::Xml) => {
                Ok(xml::from_json(json, &self.xml, &xml::KeyOrder::default())?.into())
            }
        }
    }
}

/// A JSON body; an empty one is `null`.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, String> {
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("not valid JSON (line {}, column {})", e.line(), e.column()))
}

/// An upstream's answer, read to be checked or changed.
pub enum ReadAnswer {
    Whole(Bytes),
    /// Over the cap: what was read, then the rest, to pass on unread.
    TooLarge(ResponseBody),
}

/// Reads an upstream's body up to `cap` bytes. Over it, the answer is a 502
/// when it `must` be read (a response that must be filtered is never passed
/// on unfiltered), else it goes on as it is.
pub async fn read_response(mut body: ResponseBody, cap: u64, must: bool) -> Result<ReadAnswer, ProxyError> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            let detail = match error {
                BodyError::UpstreamIdle(_) => "the upstream stopped sending its answer",
                _ => "the upstream's answer broke off",
            };
            ProxyError::new(ErrorKind::UpstreamBroken, detail)
        })?;
        // Trailers are not kept on a body that is read whole.
        let Ok(data) = frame.into_data() else { continue };
        read.extend_from_slice(&data);
        if read.len() as u64 > cap {
            if must {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamBroken,
                    format!("the upstream's answer must be transformed, and is over {cap} bytes"),
                ));
            }
            return Ok(ReadAnswer::TooLarge(ResponseBody::prefixed(read.freeze(), body)));
        }
    }
    Ok(ReadAnswer::Whole(read.freeze()))
}

/// Property tests: the parsers never panic on any input, and the path
/// operations never panic on any document.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::path::JsonPath;
    use super::template::Template;
    use proptest::prelude::*;
    use serde_json::Value;

    pub(crate) fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(("[a-c]{1,2}", any::<bool>()), 1..4).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(key, each)| if each { format!("{key}[*]") } else { key })
                .collect::<Vec<_>>()
                .join(".")
        })
    }

    /// 2,000 cases in the test suite; `PROPTEST_CASES=500000` for a long run.
    pub(crate) fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let _ = JsonPath::parse(&text);
            let _ = Template::parse(&text, &["id".to_string()]);
        }

        #[test]
        fn path_operations_never_panic(doc in json(), a in path(), b in path()) {
            let (Ok(from), Ok(to)) = (JsonPath::parse(&a), JsonPath::parse(&b)) else { return Ok(()) };
            let mut work = doc.clone();
            let mut values = from.take(&mut work).into_iter();
            to.put(&mut work, &mut || values.next(), false);
            let _ = JsonPath::keep_only(&doc, &[from, to]);
        }

        #[test]
        fn keeping_every_top_level_field_keeps_an_object(doc in json()) {
            if let Value::Object(map) = &doc {
                let paths: Vec<JsonPath> = map.keys().filter_map(|k| JsonPath::parse(k).ok()).collect();
                if !paths.is_empty() && map.keys().all(|k| !k.contains('.') && !k.contains('[')) {
                    prop_assert_eq!(JsonPath::keep_only(&doc, &paths), doc.clone());
                }
            }
        }
    }
}
