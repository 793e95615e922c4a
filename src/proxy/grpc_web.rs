//! gRPC-Web (grpc/grpc PROTOCOL-WEB.md) translated to gRPC, so browsers
//! can call gRPC services through Portico over HTTP/1.1 or HTTP/2.
//!
//! A gRPC-Web request is a gRPC request with another content type, and in
//! `-text` mode a base64 body. Its answer cannot use HTTP trailers (browsers
//! do not expose them), so the service's trailers travel as a last message
//! in the body, flagged 0x80. Requests are translated only for upstreams
//! that speak HTTP/2; an HTTP/1.1 upstream gets gRPC-Web as it came (it is
//! then a gRPC-Web server itself).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::HeaderMap;

/// The two gRPC-Web encodings of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto]`: gRPC's framing as it is.
    Binary,
    /// `application/grpc-web-text[+proto]`: the same, base64-encoded.
    Text,
}

/// The gRPC-Web mode of a request, from its content type.
pub fn mode(headers: &HeaderMap) -> Option<Mode> {
    let content_type = headers.get(CONTENT_TYPE)?.as_bytes();
    let lower =
        |prefix: &[u8]| content_type.len() >= prefix.len() && content_type[..prefix.len()].eq_ignore_ascii_case(prefix);
    if lower(b"application/grpc-web-text") {
        Some(Mode::Text)
    } else if lower(b"application/grpc-web") {
        Some(Mode::Binary)
    } else {
        None
    }
}

/// Turns a gRPC-Web request head into a gRPC one: the content type (its
/// `+proto`/`+json` suffix kept), `TE: trailers`, and no length when the
/// body will be decoded from base64.
pub fn to_grpc_request(headers: &mut HeaderMap, mode: Mode) {
    let suffix = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.find('+').map(|at| v[at..].to_string()))
        .unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(&format!("application/grpc{suffix}")) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if mode == Mode::Text {
        headers.remove(CONTENT_LENGTH);
    }
}

/// Turns a gRPC answer's head into a gRPC-Web one: its body will carry the
/// trailers, so its length changes.
pub fn to_web_response(headers: &mut HeaderMap, mode: Mode) {
    let content_type = match mode {
        Mode::Binary => "application/grpc-web+proto",
        Mode::Text => "application/grpc-web-text+proto",
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.remove(CONTENT_LENGTH);
}

/// The content type of a gRPC-Web answer the gateway makes itself.
pub fn content_type(mode: Mode) -> HeaderValue {
    match mode {
        Mode::Binary => HeaderValue::from_static("application/grpc-web+proto"),
        Mode::Text => HeaderValue::from_static("application/grpc-web-text+proto"),
    }
}

/// The trailers as gRPC-Web's last message: flag 0x80, a 4-byte length,
/// then `name: value\r\n` lines.
fn trailer_message(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut message = BytesMut::with_capacity(5 + block.len());
    message.put_u8(0x80);
    message.put_u32(block.len() as u32);
    message.extend_from_slice(&block);
    message.freeze()
}

/// Base64 of a body that arrives in pieces: each piece is decoded up to its
/// last whole 4-character group, the rest waits for the next. Padded groups
/// may appear mid-stream (a client that encodes each message on its own).
#[derive(Debug, Default)]
pub struct TextDecoder {
    pending: Vec<u8>,
}

impl TextDecoder {
    pub fn decode(&mut self, piece: &[u8]) -> Result<Bytes, base64::DecodeError> {
        self.pending.extend(piece.iter().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        let mut start = 0;
        for (i, group) in self.pending[..whole].chunks(4).enumerate() {
            if group.contains(&b'=') {
                STANDARD.decode_vec(&self.pending[start..(i + 1) * 4], &mut out)?;
                start = (i + 1) * 4;
            }
        }
        if start < whole {
            STANDARD.decode_vec(&self.pending[start..whole], &mut out)?;
        }
        self.pending.drain(..whole);
        Ok(Bytes::from(out))
    }

    /// At the body's end: nothing may be left over.
    pub fn finish(&self) -> Result<(), base64::DecodeError> {
        match self.pending.len() {
            0 => Ok(()),
            n => Err(base64::DecodeError::InvalidLength(n)),
        }
    }
}

/// Base64 of an answer sent in pieces as one base64 text: bytes that do
/// not fill a 3-byte group wait for the next piece, or the end.
#[derive(Debug, Default)]
pub struct TextEncoder {
    pending: Vec<u8>,
}

impl TextEncoder {
    pub fn encode(&mut self, piece: &[u8]) -> Bytes {
        self.pending.extend_from_slice(piece);
        let whole = self.pending.len() / 3 * 3;
        let text = STANDARD.encode(&self.pending[..whole]);
        self.pending.drain(..whole);
        Bytes::from(text)
    }

    /// What is left, padded.
    pub fn finish(&mut self) -> Bytes {
        let text = STANDARD.encode(&self.pending);
        self.pending.clear();
        Bytes::from(text)
    }
}

/// What turns an upstream's gRPC answer into gRPC-Web as it streams.
#[derive(Debug)]
pub struct Encoder {
    text: Option<TextEncoder>,
}

impl Encoder {
    pub fn new(mode: Mode) -> Encoder {
        Encoder {
            text: (mode == Mode::Text).then(TextEncoder::default),
        }
    }

    /// A piece of the body as the client gets it.
    pub fn data(&mut self, bytes: Bytes) -> Bytes {
        match &mut self.text {
            Some(text) => text.encode(&bytes),
            None => bytes,
        }
    }

    /// The trailers as the body's last message, and the end of the text.
    pub fn trailers(&mut self, trailers: &HeaderMap) -> Bytes {
        let message = trailer_message(trailers);
        match &mut self.text {
            Some(text) => {
                let mut out = BytesMut::from(&text.encode(&message)[..]);
                out.extend_from_slice(&text.finish());
                out.freeze()
            }
            None => message,
        }
    }

    /// The end of a body without trailers: what base64 still holds.
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = self.text.as_mut()?.finish();
        (!rest.is_empty()).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_come_from_the_content_type() {
        let mut headers = HeaderMap::new();
        for (content_type, expected) in [
            ("application/grpc-web", Some(Mode::Binary)),
            ("application/grpc-web+proto", Some(Mode::Binary)),
            ("application/grpc-web-text", Some(Mode::Text)),
            ("Application/GRPC-Web-Text+proto", Some(Mode::Text)),
            ("application/grpc", None),
            ("application/json", None),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            assert_eq!(mode(&headers), expected, "{content_type}");
        }
    }

    #[test]
    fn request_heads_become_grpc() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text+proto"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        to_grpc_request(&mut headers, Mode::Text);
        assert_eq!(headers[CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(headers[TE], "trailers");
        assert!(headers.get(CONTENT_LENGTH).is_none());
    }

    #[test]
    fn base64_is_decoded_across_pieces_and_padded_groups() {
        let mut decoder = TextDecoder::default();
        let text = STANDARD.encode(b"hello, grpc-web");
        let (a, b) = text.split_at(5);
        let mut out = decoder.decode(a.as_bytes()).unwrap().to_vec();
        out.extend_from_slice(&decoder.decode(b.as_bytes()).unwrap());
        decoder.finish().unwrap();
        assert_eq!(out, b"hello, grpc-web");
        // Two messages encoded one by one, padding between them.
        let joined = format!("{}{}", STANDARD.encode(b"ab"), STANDARD.encode(b"cde"));
        assert_eq!(&decoder.decode(joined.as_bytes()).unwrap()[..], b"abcde");
        assert!(decoder.decode(b"!!!!").is_err());
        let mut cut = TextDecoder::default();
        cut.decode(b"aGVsbG8").unwrap();
        assert!(cut.finish().is_err(), "a body that ends mid-group");
    }

    #[test]
    fn answers_are_one_base64_text_ending_with_the_trailers() {
        let mut encoder = Encoder::new(Mode::Text);
        let mut text = Vec::new();
        for piece in [&b"\x00\x00\x00\x00\x02hi"[..], b"\x00\x00\x00\x00\x01", b"!"] {
            text.extend_from_slice(&encoder.data(Bytes::copy_from_slice(piece)));
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        text.extend_from_slice(&encoder.trailers(&trailers));
        let body = STANDARD.decode(&text).unwrap();
        let mut expected = b"\x00\x00\x00\x00\x02hi\x00\x00\x00\x00\x01!".to_vec();
        expected.extend_from_slice(b"\x80\x00\x00\x00\x10grpc-status: 0\r\n");
        assert_eq!(body, expected);

        let mut binary = Encoder::new(Mode::Binary);
        assert_eq!(&binary.data(Bytes::from_static(b"raw"))[..], b"raw");
        assert_eq!(&binary.trailers(&trailers)[..5], b"\x80\x00\x00\x00\x10");
        assert_eq!(binary.finish(), None);
    }
}
