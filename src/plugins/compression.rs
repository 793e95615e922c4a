//! `compression`: answers compressed with gzip, brotli or zstd, as the
//! client's `Accept-Encoding` allows, while they stream: never a whole body
//! held. An answer is left as it is when it is already encoded, says
//! `Cache-Control: no-transform`, is a range (`206`, or a request with
//! `Range`), is of a type not listed, or declares a length under `min_size`.
//! Every answer the choice could apply to says `Vary: Accept-Encoding`, so
//! that caches keep the encodings apart.

use super::{BodyFilter, Decision, FilterError, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::config::units::ByteSize;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::io::Write;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The codings offered, in the gateway's order of preference where the
    /// client rates several alike.
    #[serde(default = "default_encodings")]
    encodings: Vec<Coding>,
    /// Answers that declare a smaller length go as they are: below it, the
    /// coding's own framing eats the gain.
    #[serde(default = "default_min_size")]
    min_size: ByteSize,
    /// Media types compressed (`text/*` for a whole type).
    #[serde(default = "default_types")]
    content_types: Vec<String>,
}

fn default_encodings() -> Vec<Coding> {
    vec![Coding::Zstd, Coding::Br, Coding::Gzip]
}

fn default_min_size() -> ByteSize {
    ByteSize(256)
}

/// Envoy's compressor's list: text formats that compress well.
fn default_types() -> Vec<String> {
    [
        "text/html",
        "text/plain",
        "text/css",
        "text/xml",
        "application/json",
        "application/problem+json",
        "application/javascript",
        "application/xml",
        "application/xhtml+xml",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Coding {
    Gzip,
    Br,
    Zstd,
}

impl Coding {
    fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }
}

pub struct Compression {
    encodings: Vec<Coding>,
    min_size: u64,
    /// Lower-case media types; `text/` for `text/*`.
    content_types: Vec<String>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    if config.encodings.is_empty() {
        errors.push(setup.error("encodings", "lists no coding: name gzip, br or zstd"));
    }
    let mut content_types = Vec::new();
    for (i, media) in config.content_types.iter().enumerate() {
        let media = media.trim().to_ascii_lowercase();
        match media.split_once('/') {
            Some((kind, "*")) if !kind.is_empty() => content_types.push(format!("{kind}/")),
            Some((kind, sub)) if !kind.is_empty() && !sub.is_empty() && !media.contains([';', ' ', '*']) => {
                content_types.push(media)
            }
            _ => errors.push(setup.error(
                &format!("content_types[{i}]"),
                format!("{media:?} is not a media type: write `type/subtype` or `type/*`"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Arc::new(Compression {
        encodings: config.encodings,
        min_size: config.min_size.get(),
        content_types,
    }))
}

/// What the request asked for, noted for its answer.
#[derive(Clone, Copy)]
struct Asked {
    /// The coding chosen from `Accept-Encoding`, if any is acceptable.
    coding: Option<Coding>,
    head: bool,
    /// The client asked for a range: its answer is left untouched.
    range: bool,
}

impl Compression {
    fn asked(&self, request: &http::request::Parts) -> Asked {
        Asked {
            coding: negotiate(&request.headers, &self.encodings),
            head: request.method == Method::HEAD,
            range: request.headers.contains_key(RANGE),
        }
    }

    /// Whether the answer may be compressed, whatever the client accepts.
    fn applies_to(&self, response: &http::response::Parts) -> bool {
        let headers = &response.headers;
        let status = response.status;
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return false;
        }
        let encoded = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let no_transform = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"));
        if encoded || no_transform || headers.contains_key(CONTENT_RANGE) {
            return false;
        }
        let small = declared_length(headers).is_some_and(|length| length < self.min_size);
        !small && self.compresses_type(headers)
    }

    fn compresses_type(&self, headers: &HeaderMap) -> bool {
        let Some(media) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        self.content_types
            .iter()
            .any(|listed| *listed == media || (listed.ends_with('/') && media.starts_with(listed.as_str())))
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The offered coding the client rates highest (RFC 9110 section 12.5.3):
/// `q=0` refuses one, `*` rates the ones not named, ties go by `offered`'s
/// order. No `Accept-Encoding` at all asks for nothing.
fn negotiate(headers: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    let mut named: Vec<(&str, u16)> = Vec::new();
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let mut weight = 1000;
            for parameter in parts {
                if let Some((name, value)) = parameter.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        weight = qvalue(value.trim()).unwrap_or(0);
                    }
                }
            }
            named.push((token, weight));
        }
    }
    let weight_of = |coding: Coding| {
        let token = coding.token();
        let exact = named.iter().find(|(name, _)| {
            name.eq_ignore_ascii_case(token) || (coding == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
        });
        exact.or_else(|| named.iter().find(|(name, _)| *name == "*")).map_or(0, |(_, q)| *q)
    };
    let mut best: Option<(Coding, u16)> = None;
    for &coding in offered {
        let weight = weight_of(coding);
        if weight > 0 && best.is_none_or(|(_, top)| weight > top) {
            best = Some((coding, weight));
        }
    }
    best.map(|(coding, _)| coding)
}

/// A qvalue in thousandths: `0`, `0.5`, `1.000`; anything else is not one.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl Plugin for Compression {
    fn name(&self) -> &'static str {
        "compression"
    }

    fn phase(&self) -> Phase {
        Phase::TransformResponse
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        ctx.notes.insert(self.asked(request));
        at_once(Ok(super::Flow::Continue))
    }

    fn response_body_filter(
        &self,
        response: &mut http::response::Parts,
        ctx: &RequestContext<'_>,
    ) -> Option<Box<dyn BodyFilter>> {
        let asked = *ctx.notes.get::<Asked>()?;
        if asked.range || !self.applies_to(response) {
            return None;
        }
        let headers = &mut response.headers;
        let varies = headers
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|name| name.trim() == "*" || name.trim().eq_ignore_ascii_case("accept-encoding"));
        if !varies {
            headers.append(VARY, HeaderValue::from_static("accept-encoding"));
        }
        let coding = asked.coding?;
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        headers.remove(CONTENT_LENGTH);
        // Ranges of the encoded form are not what the upstream's ranges meant.
        headers.remove(ACCEPT_RANGES);
        // The bytes differ from the upstream's: a strong validator would lie
        // (RFC 9110 section 8.8.3), a weak one still matches its meaning.
        if let Some(etag) = headers.get(ETAG).filter(|e| !e.as_bytes().starts_with(b"W/")) {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                headers.insert(ETAG, weak);
            }
        }
        if asked.head {
            return None;
        }
        Encoder::new(coding).map(|encoder| Box::new(encoder) as Box<dyn BodyFilter>)
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> super::Decision {
        let asked = self.asked(request);
        match asked.coding {
            _ if asked.range => Decision::pass("leaves the answer as it is: the client asks for a range"),
            Some(coding) => Decision::pass(format!(
                "{} for answers of the listed types from {} bytes",
                coding.token(),
                self.min_size
            )),
            None => Decision::pass("leaves the answer as it is: the client accepts none of the offered codings"),
        }
    }
}

/// One answer's compressor, writing into a buffer drained after each chunk.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(Option<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

/// Brotli quality 4 and a 256 KiB window, zstd level 3, gzip level 6:
/// the levels servers use for answers made on the fly (not the archive
/// levels, whose CPU cost a proxy cannot pay per request).
const BROTLI_QUALITY: u32 = 4;
const BROTLI_WINDOW_BITS: u32 = 18;
const ZSTD_LEVEL: i32 = 3;

impl Encoder {
    fn new(coding: Coding) -> Option<Encoder> {
        Some(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6))),
            Coding::Br => Encoder::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                BROTLI_QUALITY,
                BROTLI_WINDOW_BITS,
            )))),
            Coding::Zstd => Encoder::Zstd(Some(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).ok()?)),
        })
    }

    /// What the compressor has written so far.
    fn drain(&mut self) -> Bytes {
        let out = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Br(Some(e)) => e.get_mut(),
            Encoder::Zstd(Some(e)) => e.get_mut(),
            Encoder::Br(None) | Encoder::Zstd(None) => return Bytes::new(),
        };
        Bytes::from(std::mem::take(out))
    }

    fn writer(&mut self) -> Option<&mut dyn Write> {
        match self {
            Encoder::Gzip(e) => Some(e),
            Encoder::Br(e) => e.as_mut().map(|e| &mut **e as &mut dyn Write),
            Encoder::Zstd(e) => e.as_mut().map(|e| e as &mut dyn Write),
        }
    }
}

impl BodyFilter for Encoder {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError> {
        if let Some(writer) = self.writer() {
            writer.write_all(&chunk)?;
        }
        Ok(self.drain())
    }

    fn flush(&mut self) -> Result<Bytes, FilterError> {
        if let Some(writer) = self.writer() {
            writer.flush()?;
        }
        Ok(self.drain())
    }

    fn end(&mut self) -> Result<Bytes, FilterError> {
        let rest = match self {
            Encoder::Gzip(e) => {
                e.try_finish()?;
                std::mem::take(e.get_mut())
            }
            // Closing the stream writes brotli's last block.
            Encoder::Br(e) => e.take().map(|e| e.into_inner()).unwrap_or_default(),
            Encoder::Zstd(e) => match e.take() {
                Some(e) => e.finish()?,
                None => Vec::new(),
            },
        };
        Ok(Bytes::from(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_client_s_weights_choose_and_ties_go_by_the_gateway_s_order() {
        let offered = default_encodings();
        let chosen = |value: &str| negotiate(&accept(value), &offered).map(Coding::token);
        assert_eq!(chosen("gzip, deflate, br"), Some("br"));
        assert_eq!(chosen("gzip;q=1.0, br;q=0.5"), Some("gzip"));
        assert_eq!(chosen("br;q=0, gzip;q=0.1"), Some("gzip"));
        assert_eq!(chosen("*"), Some("zstd"));
        assert_eq!(chosen("*;q=0.5, zstd;q=0"), Some("br"));
        assert_eq!(chosen("X-GZIP"), Some("gzip"));
        assert_eq!(chosen("identity"), None);
        assert_eq!(chosen("gzip;q=0, br;q=0.000, zstd;q=2"), None, "q over 1 is not a weight");
        assert_eq!(chosen("deflate, compress"), None);
        assert_eq!(negotiate(&HeaderMap::new(), &offered), None);
        assert_eq!(negotiate(&accept("gzip, br"), &[Coding::Gzip]), Some(Coding::Gzip));
    }

    #[test]
    fn qvalues_take_three_decimals_at_most() {
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0.0001"), None);
        assert_eq!(qvalue("1.5"), None);
        assert_eq!(qvalue("-0"), None);
    }

    #[test]
    fn every_coding_round_trips_in_chunks() {
        use std::io::Read;
        let text = b"{\"name\":\"portico\",\"says\":\"hello\"}".repeat(500);
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut encoder = Encoder::new(coding).unwrap();
            let mut sent = Vec::new();
            for chunk in text.chunks(1000) {
                sent.extend_from_slice(&encoder.data(Bytes::copy_from_slice(chunk)).unwrap());
            }
            sent.extend_from_slice(&encoder.flush().unwrap());
            sent.extend_from_slice(&encoder.end().unwrap());
            assert!(sent.len() < text.len() / 10, "{coding:?} compressed to {}", sent.len());
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut back).unwrap(),
                Coding::Br => brotli::Decompressor::new(&sent[..], 4096).read_to_end(&mut back).unwrap(),
                Coding::Zstd => zstd::stream::read::Decoder::new(&sent[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap(),
            };
            assert_eq!(back, text, "{coding:?}");
        }
    }
}
