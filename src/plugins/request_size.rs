//! `request_size`: limits on a request's body, per route and per consumer:
//! on the bytes as sent (`max`), and on what a compressed body expands to
//! (`max_decompressed`, so that a small gzip "bomb" cannot reach a service
//! that inflates it). A declared length over the limit is refused from the
//! head, before any byte is read; a body without one, or a compressed one,
//! is counted as it streams and cut off with a 413 where it passes.

use super::{BodyFilter, Decision, FilterError, Phase, Plugin, Refusal, RequestContext, Setup};
use crate::config::units::ByteSize;
use crate::error::{ErrorKind, ProxyError};
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
use http::HeaderValue;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::io::Write;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The largest body, as sent.
    max: Option<ByteSize>,
    /// The largest body once its `Content-Encoding` is undone. Codings
    /// that cannot be undone here are refused (415).
    max_decompressed: Option<ByteSize>,
    /// Consumers with their own limits; a limit they leave out is the route's.
    #[serde(default)]
    consumers: IndexMap<String, Limits>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Limits {
    max: Option<ByteSize>,
    max_decompressed: Option<ByteSize>,
}

pub struct RequestSize {
    limits: Limits,
    consumers: IndexMap<String, Limits>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    if config.max.is_none() && config.max_decompressed.is_none() && config.consumers.is_empty() {
        errors.push(setup.error("", "sets no limit: give `max`, `max_decompressed`, or `consumers`"));
    }
    let mut consumers = IndexMap::new();
    for (name, limits) in &config.consumers {
        if setup.context.consumers.find(name).is_none() {
            errors.push(setup.error(
                &format!("consumers.{name}"),
                format!("no consumer is named {name:?}: declare it under `consumers`"),
            ));
        }
        // What a consumer leaves out is the route's.
        let limits = Limits {
            max: limits.max.or(config.max),
            max_decompressed: limits.max_decompressed.or(config.max_decompressed),
        };
        consumers.insert(name.clone(), limits);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Arc::new(RequestSize {
        limits: Limits {
            max: config.max,
            max_decompressed: config.max_decompressed,
        },
        consumers,
    }))
}

/// The codings whose sizes can be measured, as `Accept-Encoding` lists them.
const DECODABLE: &str = "gzip, deflate, br, zstd";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Br,
    Zstd,
}

/// What the request's body is measured by.
enum Plan {
    /// Its declared length is over the limit.
    TooLong { length: u64, limit: u64 },
    /// Its `Content-Encoding` cannot be undone here.
    Unsupported(String),
    /// Counted as it streams: `None` where nothing needs counting.
    Count(Option<Box<Counter>>),
}

impl RequestSize {
    fn limits_for(&self, ctx: &RequestContext<'_>) -> (Limits, &'static str) {
        let own = ctx.identity.as_ref().and_then(|who| self.consumers.get(&*who.name));
        match own {
            Some(limits) => (*limits, "the consumer's"),
            None => (self.limits, "the route's"),
        }
    }

    fn plan(&self, request: &http::request::Parts, limits: Limits) -> Plan {
        let max = limits.max.map(ByteSize::get);
        let length = request
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(length), Some(limit)) = (length, max) {
            if length > limit {
                return Plan::TooLong { length, limit };
            }
        }
        let coding = match limits.max_decompressed {
            None => None,
            Some(decompressed) => match coding_of(&request.headers) {
                Ok(None) => None,
                Ok(Some(coding)) => Some((coding, decompressed.get())),
                Err(named) => return Plan::Unsupported(named),
            },
        };
        // An identity body is its own decompressed size.
        let max = match (coding, limits.max_decompressed) {
            (None, Some(decompressed)) => Some(max.map_or(decompressed.get(), |m| m.min(decompressed.get()))),
            _ => max,
        };
        // A declared length within `max` needs no count: the connection's
        // framing holds the client to it.
        let max = max.filter(|_| length.is_none());
        if max.is_none() && coding.is_none() {
            return Plan::Count(None);
        }
        Plan::Count(Some(Box::new(Counter {
            max,
            seen: 0,
            decoder: coding.map(|(coding, limit)| Decoder::new(coding, limit)),
        })))
    }
}

/// The body's one coding (`Ok(None)` for none or `identity`); `Err` names
/// a coding that cannot be measured, or a list of several, which is refused
/// rather than undone layer by layer.
fn coding_of(headers: &http::HeaderMap) -> Result<Option<Coding>, String> {
    let mut named = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| "a coding that is not text".to_string())?;
        named.extend(
            text.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    match named.as_slice() {
        [] => Ok(None),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Br)),
            "zstd" => Ok(Some(Coding::Zstd)),
            other => Err(format!("{other:?}")),
        },
        several => Err(format!("several codings ({})", several.join(", "))),
    }
}

impl Plugin for RequestSize {
    fn name(&self) -> &'static str {
        "request_size"
    }

    fn phase(&self) -> Phase {
        Phase::Limit
    }

    fn request_body_filter(
        &self,
        request: &http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Option<Box<dyn BodyFilter>>, ProxyError> {
        let (limits, _) = self.limits_for(ctx);
        match self.plan(request, limits) {
            Plan::TooLong { length, limit } => Err(ProxyError::rejected(
                ErrorKind::PayloadTooLarge,
                "request_size",
                "too_large",
                format!("the request body ({length} bytes) is larger than the limit of {limit} bytes"),
            )),
            Plan::Unsupported(named) => {
                ctx.response_headers
                    .push((ACCEPT_ENCODING, HeaderValue::from_static(DECODABLE)));
                Err(ProxyError::rejected(
                    ErrorKind::UnsupportedMediaType,
                    "request_size",
                    "unsupported_encoding",
                    format!("the request body's Content-Encoding is {named}; send one of {DECODABLE}, or none"),
                ))
            }
            Plan::Count(counter) => Ok(counter.map(|c| c as Box<dyn BodyFilter>)),
        }
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let (limits, whose) = self.limits_for(ctx);
        let said = |size: Option<ByteSize>| size.map_or("none".to_string(), |s| format!("{} bytes", s.get()));
        let limits_text = format!(
            "{whose} limits: {} as sent, {} decompressed",
            said(limits.max),
            said(limits.max_decompressed)
        );
        match self.plan(request, limits) {
            Plan::TooLong { length, limit } => Decision::deny(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("{limits_text}; the declared {length} bytes are over {limit}"),
            ),
            Plan::Unsupported(named) => Decision::deny(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{limits_text}; the Content-Encoding {named} cannot be measured"),
            ),
            Plan::Count(_) => Decision::pass(format!("{limits_text}; counted as the body streams")),
        }
    }
}

/// Counts a body as it streams, and what it decodes to; passes every byte on
/// as it came.
struct Counter {
    /// The most bytes as sent, where the length is not declared.
    max: Option<u64>,
    seen: u64,
    decoder: Option<Decoder>,
}

impl BodyFilter for Counter {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError> {
        self.seen += chunk.len() as u64;
        if self.max.is_some_and(|max| self.seen > max) {
            return Err(Refusal::TooLarge.into());
        }
        if let Some(decoder) = &mut self.decoder {
            decoder.write(&chunk)?;
        }
        Ok(chunk)
    }

    fn end(&mut self) -> Result<Bytes, FilterError> {
        if let Some(decoder) = &mut self.decoder {
            decoder.finish()?;
        }
        Ok(Bytes::new())
    }

    fn keeps_bytes(&self) -> bool {
        true
    }
}

/// Decodes a body only to count what it expands to; nothing is kept.
enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Tally>),
    Deflate(flate2::write::ZlibDecoder<Tally>),
    Br(Box<brotli::DecompressorWriter<Tally>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Tally>>),
    /// Finished, or failed to start.
    Done,
}

impl Decoder {
    fn new(coding: Coding, limit: u64) -> Decoder {
        let tally = Tally { count: 0, limit };
        match coding {
            Coding::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(tally)),
            Coding::Deflate => Decoder::Deflate(flate2::write::ZlibDecoder::new(tally)),
            Coding::Br => Decoder::Br(Box::new(brotli::DecompressorWriter::new(tally, 16 * 1024))),
            Coding::Zstd => match zstd::stream::write::Decoder::new(tally) {
                Ok(decoder) => Decoder::Zstd(Box::new(decoder)),
                Err(_) => Decoder::Done,
            },
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let written = match self {
            Decoder::Gzip(d) => d.write_all(chunk),
            Decoder::Deflate(d) => d.write_all(chunk),
            Decoder::Br(d) => d.write_all(chunk),
            Decoder::Zstd(d) => d.write_all(chunk),
            Decoder::Done => return Err(Refusal::Undecodable),
        };
        written.map_err(|e| refusal(&e))
    }

    /// The body ended: it must have ended its coding too.
    fn finish(&mut self) -> Result<(), Refusal> {
        let finished = match std::mem::replace(self, Decoder::Done) {
            // A body too short to hold a gzip header decodes to nothing, without an error.
            Decoder::Gzip(mut d) => d.try_finish().and_then(|()| match d.header() {
                Some(_) => Ok(()),
                None => Err(std::io::ErrorKind::InvalidData.into()),
            }),
            Decoder::Deflate(d) => d.finish().map(drop),
            Decoder::Br(d) => d.into_inner().map(drop).map_err(|_| std::io::ErrorKind::InvalidData.into()),
            Decoder::Zstd(mut d) => d.flush(),
            Decoder::Done => Ok(()),
        };
        finished.map_err(|e| refusal(&e))
    }
}

/// A write failed: over the limit (the tally said so), or not the coding it claims.
fn refusal(error: &std::io::Error) -> Refusal {
    if error.get_ref().is_some_and(|inner| inner.is::<OverLimit>()) {
        Refusal::DecompressedTooLarge
    } else {
        Refusal::Undecodable
    }
}

#[derive(Debug, thiserror::Error)]
#[error("decompressed past the limit")]
struct OverLimit;

/// Where decoded bytes go: counted against the limit, then dropped.
struct Tally {
    count: u64,
    limit: u64,
}

impl Write for Tally {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.count += bytes.len() as u64;
        if self.count > self.limit {
            return Err(std::io::Error::other(OverLimit));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn counter(coding: Coding, limit: u64) -> Counter {
        Counter {
            max: None,
            seen: 0,
            decoder: Some(Decoder::new(coding, limit)),
        }
    }

    #[test]
    fn a_bomb_is_refused_once_it_expands_past_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let mut within = counter(Coding::Gzip, 10 << 20);
        for chunk in bomb.chunks(4096) {
            within.data(Bytes::copy_from_slice(chunk)).unwrap();
        }
        within.end().unwrap();

        let mut over = counter(Coding::Gzip, 1 << 20);
        let refused = bomb
            .chunks(4096)
            .find_map(|chunk| over.data(Bytes::copy_from_slice(chunk)).err())
            .expect("refused before the end");
        assert_eq!(refused.downcast_ref::<Refusal>(), Some(&Refusal::DecompressedTooLarge));
    }

    #[test]
    fn a_body_that_is_not_its_coding_or_ends_early_is_undecodable() {
        let mut not_gzip = counter(Coding::Gzip, 1 << 20);
        let error = not_gzip.data(Bytes::from_static(b"plain text, not gzip")).unwrap_err();
        assert_eq!(error.downcast_ref::<Refusal>(), Some(&Refusal::Undecodable));

        let whole = gzip(b"hello hello hello");
        let mut cut = counter(Coding::Gzip, 1 << 20);
        cut.data(Bytes::copy_from_slice(&whole[..whole.len() - 4])).unwrap();
        let error = cut.end().unwrap_err();
        assert_eq!(error.downcast_ref::<Refusal>(), Some(&Refusal::Undecodable));
    }

    #[test]
    fn codings_are_read_case_blind_and_only_one_at_a_time() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
            coding_of(&headers)
        };
        assert_eq!(with("GZIP"), Ok(Some(Coding::Gzip)));
        assert_eq!(with("identity"), Ok(None));
        assert_eq!(with("br"), Ok(Some(Coding::Br)));
        assert!(with("gzip, gzip").is_err());
        assert!(with("compress").is_err());
    }
}
