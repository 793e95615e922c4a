//! One access-log line per request, written when its response is done.
//!
//! Lines are serialised straight into the batched stdout buffer rather than
//! through a `tracing` event: the schema is fixed, and a generic event
//! formatter cost more CPU per line than proxying a small request does
//! (bench/RESULTS.md). Portico's diagnostics still go through `tracing`.

use super::log_sink::LogSink;
use super::metrics::RouteMetrics;
use super::traces::RequestSpan;
use crate::config::model::{LogField, LogFormat};
use http::{HeaderValue, Method, Version};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Every field, in the default order.
pub const ALL_FIELDS: &[LogField] = &[
    LogField::Timestamp,
    LogField::RequestId,
    LogField::Client,
    LogField::Method,
    LogField::Path,
    LogField::Route,
    LogField::Upstream,
    LogField::Target,
    LogField::Status,
    LogField::BytesIn,
    LogField::BytesOut,
    LogField::DurationMs,
    LogField::UpstreamMs,
    LogField::Error,
    LogField::UserAgent,
    LogField::Referer,
    LogField::TraceId,
];

/// The compiled `access_log` block.
#[derive(Debug, PartialEq)]
pub struct AccessLog {
    pub format: LogFormat,
    pub fields: Vec<LogField>,
}

/// What one upstream exchange did: where it went, how long it took. The
/// exchange writes it straight into the request's entry (an aggregate's or a
/// refresh's calls into their own).
#[derive(Debug)]
pub struct UpstreamCall {
    pub upstream: Option<Arc<str>>,
    pub target: Option<Arc<str>>,
    pub upstream_latency: Option<Duration>,
    /// Counted by the request body as it streams; `None` for bodyless requests.
    pub bytes_in: Option<Arc<crate::body::BodyProgress>>,
    /// Whether the upstream's and target's names are kept: only the access
    /// log writes them, and each is a reference count up and down.
    pub keep_names: bool,
}

impl Default for UpstreamCall {
    fn default() -> UpstreamCall {
        UpstreamCall {
            upstream: None,
            target: None,
            upstream_latency: None,
            bytes_in: None,
            keep_names: true,
        }
    }
}

/// What is known of a request by the time its response starts. Finishing it
/// counts the request in the route's metrics and writes its log line.
#[derive(Debug)]
pub struct Entry {
    pub started: Instant,
    pub request_id: HeaderValue,
    pub client: SocketAddr,
    pub method: Method,
    pub version: Version,
    /// Path only: query strings often carry tokens and never reach the log.
    pub path: String,
    pub route: Option<Arc<str>>,
    pub call: UpstreamCall,
    pub status: u16,
    pub error: Option<&'static str>,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub trace_id: Option<String>,
    /// The request's server span, ended with the response.
    pub span: Option<RequestSpan>,
    /// The route's series; set once routed, or to the unmatched series when
    /// the request is answered unrouted (set once: a reference count each).
    pub metrics: Option<Arc<RouteMetrics>>,
    /// `None` when the access log is off.
    pub log: Option<Arc<AccessLog>>,
    /// The dashboard's live view, when the admin API serves one.
    pub live: Option<Arc<crate::telemetry::live::Live>>,
}

impl crate::body::OnDone for Entry {
    fn done(&mut self, bytes_out: u64, error: Option<&'static str>) {
        if error.is_some() {
            self.error = error;
        }
        self.finish(bytes_out);
    }

    fn replaced_by(&mut self, status: u16) {
        self.status = status;
    }
}

impl Entry {
    /// Records the finished request: metrics, trace, log line, live view.
    pub fn finish(&mut self, bytes_out: u64) {
        let elapsed = self.started.elapsed();
        let bytes_in = self.call.bytes_in.as_ref().map_or(0, |n| n.received());
        if let Some(metrics) = &self.metrics {
            metrics.request(&self.method, self.status, elapsed.as_secs_f64(), bytes_in, bytes_out);
        }
        if let Some(span) = &self.span {
            span.finish(self.status, self.error);
        }
        self.write_line(elapsed, bytes_in, bytes_out);
        if let Some(live) = &self.live {
            let recent = crate::telemetry::live::Recent {
                at: crate::telemetry::live::now_ms(),
                method: self.method.clone(),
                // The log line is written: the path can move.
                path: std::mem::take(&mut self.path),
                route: self.route.clone(),
                status: self.status,
                // Microseconds, shown as milliseconds.
                latency_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
                request_id: self.request_id.clone(),
                error: self.error,
            };
            live.record(elapsed, self.status >= 500, Some(recent));
        }
    }

    fn write_line(&self, elapsed: Duration, bytes_in: u64, bytes_out: u64) {
        let (Some(log), Some(sink)) = (&self.log, LogSink::get()) else {
            return;
        };
        let line = Line {
            entry: self,
            fields: &log.fields,
            timestamp: SystemTime::now(),
            bytes_in,
            bytes_out,
            elapsed,
        };
        match log.format {
            LogFormat::Json => sink.write_line(|buffer| line.json(buffer)),
            LogFormat::Combined => sink.write_line(|buffer| line.combined(buffer)),
        }
    }
}

/// One line being written.
struct Line<'a> {
    entry: &'a Entry,
    fields: &'a [LogField],
    timestamp: SystemTime,
    bytes_in: u64,
    bytes_out: u64,
    elapsed: Duration,
}

impl Line<'_> {
    /// One JSON object. The keys are Portico's own and written as they are; a
    /// value that may hold a quote, a backslash or a control character goes
    /// through serde_json's escaping, the rest (numbers, addresses, the
    /// timestamp, most paths) is copied: escaping every byte of the line was
    /// about half of what writing it cost.
    fn json(&self, out: &mut Vec<u8>) -> bool {
        let e = self.entry;
        let mut object = JsonObject { out, empty: true };
        for field in self.fields {
            let name = field_name(*field);
            match field {
                LogField::Timestamp => object.written(name, |out| write_timestamp(out, self.timestamp)),
                LogField::RequestId => object.string(name, Some(e.request_id.to_str().unwrap_or_default())),
                LogField::Client => object.written(name, |out| write_socket_addr(out, e.client)),
                LogField::Method => object.string(name, Some(e.method.as_str())),
                LogField::Path => object.string(name, Some(&e.path)),
                LogField::Route => object.string(name, e.route.as_deref()),
                LogField::Upstream => object.string(name, e.call.upstream.as_deref()),
                LogField::Target => object.string(name, e.call.target.as_deref()),
                LogField::Status => object.integer(name, u64::from(e.status)),
                LogField::BytesIn => object.integer(name, self.bytes_in),
                LogField::BytesOut => object.integer(name, self.bytes_out),
                LogField::DurationMs => object.written(name, |out| write_millis(out, self.elapsed)),
                LogField::UpstreamMs => {
                    if let Some(latency) = e.call.upstream_latency {
                        object.written(name, |out| write_millis(out, latency))
                    }
                }
                LogField::Error => object.string(name, e.error),
                LogField::UserAgent => object.string(name, text(&e.user_agent)),
                LogField::Referer => object.string(name, text(&e.referer).map(without_query)),
                LogField::TraceId => object.string(name, e.trace_id.as_deref()),
            }
        }
        if object.empty {
            object.out.push(b'{');
        }
        object.out.push(b'}');
        true
    }

    /// `client - - [day/Mon/year:h:m:s +0000] "METHOD path HTTP/x" status bytes "referer" "agent"`
    fn combined(&self, buffer: &mut Vec<u8>) -> bool {
        let e = self.entry;
        let mut line = String::with_capacity(160);
        let quoted = |value: Option<&str>| value.map_or_else(|| "-".to_string(), |v| v.replace('"', "\\\""));
        let _ = write!(
            line,
            "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\"",
            e.client.ip(),
            clf_time(self.timestamp),
            e.method,
            quoted(Some(&e.path)),
            e.version,
            e.status,
            self.bytes_out,
            quoted(text(&e.referer).map(without_query)),
            quoted(text(&e.user_agent)),
        );
        buffer.extend_from_slice(line.as_bytes());
        true
    }
}

/// A field's JSON key, quoted and with its colon: copied whole.
fn field_name(field: LogField) -> &'static str {
    match field {
        LogField::Timestamp => r#""timestamp":"#,
        LogField::RequestId => r#""request_id":"#,
        LogField::Client => r#""client":"#,
        LogField::Method => r#""method":"#,
        LogField::Path => r#""path":"#,
        LogField::Route => r#""route":"#,
        LogField::Upstream => r#""upstream":"#,
        LogField::Target => r#""target":"#,
        LogField::Status => r#""status":"#,
        LogField::BytesIn => r#""bytes_in":"#,
        LogField::BytesOut => r#""bytes_out":"#,
        LogField::DurationMs => r#""duration_ms":"#,
        LogField::UpstreamMs => r#""upstream_ms":"#,
        LogField::Error => r#""error":"#,
        LogField::UserAgent => r#""user_agent":"#,
        LogField::Referer => r#""referer":"#,
        LogField::TraceId => r#""trace_id":"#,
    }
}

/// A JSON object being written: its `{` and the commas between members.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl JsonObject<'_> {
    /// `{"name":` or `,"name":`, `key` being `"name":` (see [`field_name`]).
    fn key(&mut self, key: &str) {
        self.out.push(if std::mem::take(&mut self.empty) { b'{' } else { b',' });
        self.out.extend_from_slice(key.as_bytes());
    }

    /// A string member; none when the value is absent.
    fn string(&mut self, name: &str, value: Option<&str>) {
        let Some(value) = value else { return };
        self.key(name);
        if needs_escaping(value.as_bytes()) {
            let _ = serde_json::to_writer(&mut *self.out, value);
        } else {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        }
    }

    /// A member whose value `write` writes, quotes and all: text that never
    /// needs escaping (an address, a timestamp).
    fn written(&mut self, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.key(name);
        write(self.out);
    }

    fn integer(&mut self, name: &str, value: u64) {
        self.key(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
}

/// Whether JSON needs `text` escaped: a control character, a quote or a
/// backslash in it. Eight bytes at a time (the values are short and rarely
/// need it; a byte at a time was a tenth of the line's cost).
fn needs_escaping(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // Some byte of `word` is below `n` (n <= 128), exactly.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS != 0;
    let has = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    let mut words = text.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let word = u64::from_le_bytes(eight);
        if below(word, 0x20) || has(word, b'"') || has(word, b'\\') {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `write!` straight into the line's bytes.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn text(value: &Option<HeaderValue>) -> Option<&str> {
    value.as_ref().and_then(|v| v.to_str().ok())
}

/// A referring URL's query may hold tokens, as the request's own may.
fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Milliseconds with microsecond precision (`1.494`, not
/// `1.4936839999999998`), as serde_json writes the f64 `micros / 1000.0`: no
/// trailing zeros, but one digit after the point (`12.0`). Written from the
/// integer: float formatting was the costliest part of a line.
fn write_millis(out: &mut Vec<u8>, duration: Duration) {
    let micros = duration.as_micros();
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let fraction = (micros % 1000) as u16; // under 1000
    let digits = [
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let mut len = digits.len();
    while len > 2 && digits[len - 1] == b'0' {
        len -= 1;
    }
    out.extend_from_slice(&digits[..len]);
}

/// `"2026-12-04T05:06:07.123456Z"`, as `humantime::format_rfc3339_micros`
/// writes it. The date and time of day are formatted once a second and kept
/// per thread (as nginx keeps its time strings); a line adds only its
/// microseconds. (The formatter's timestamp and the client address through
/// `Display` were together a third of a line's instructions.)
fn write_timestamp(out: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        /// The second last formatted, and `2026-12-04T05:06:07` for it.
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    out.push(b'"');
    SECOND.with_borrow_mut(|(formatted_second, text)| {
        if *formatted_second != second {
            *formatted_second = second;
            *text = humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(second)).to_string();
            text.pop(); // its `Z`: the microseconds go before it
        }
        out.extend_from_slice(text.as_bytes());
    });
    let mut micros = since_epoch.subsec_micros();
    let mut digits = *b".000000Z\"";
    for digit in digits[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&digits);
}

/// `"203.0.113.7:51234"`, as `SocketAddr`'s `Display` writes it (an IPv6
/// address in brackets, with its scope).
fn write_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    out.push(b'"');
    match addr {
        SocketAddr::V4(v4) => {
            crate::ip_text::write(out, std::net::IpAddr::V4(*v4.ip()));
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(Bytes(out), "{v6}");
        }
    }
    out.push(b'"');
}

/// `24/Nov/2026:13:55:36 +0000`, from the RFC 3339 form humantime writes.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string(); // 2026-11-24T13:55:36Z
    let month = rfc3339
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    match (rfc3339.get(0..4), rfc3339.get(8..10), rfc3339.get(11..19)) {
        (Some(year), Some(day), Some(clock)) => format!("{day}/{month}/{year}:{clock} +0000"),
        _ => rfc3339,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_is_what_display_writes() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:9",
            "203.0.113.255:65535",
            "[::1]:8080",
            "[2001:db8::7%3]:443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut line = Vec::new();
            write_socket_addr(&mut line, addr);
            assert_eq!(String::from_utf8(line).unwrap(), format!("\"{addr}\""));
        }
    }

    #[test]
    fn a_timestamp_is_what_humantime_writes_within_and_across_seconds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_824_767_999_998);
        for step in [0, 1, 2, 3, 1_000_000, 86_400_000_000, 1] {
            let at = start + Duration::from_micros(step);
            let mut line = Vec::new();
            write_timestamp(&mut line, at);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                format!("\"{}\"", humantime::format_rfc3339_micros(at))
            );
        }
    }

    #[test]
    fn a_json_line_escapes_what_json_needs_and_copies_the_rest() {
        let mut line = Vec::new();
        let mut object = JsonObject {
            out: &mut line,
            empty: true,
        };
        let hostile = "/a\"b\\c\nd\u{1}é";
        object.string("\"path\":", Some(hostile));
        object.string("\"route\":", None);
        object.string("\"upstream\":", Some("plain"));
        object.written("\"client\":", |out| {
            write_socket_addr(out, "127.0.0.1:9".parse().unwrap())
        });
        object.integer("\"status\":", 200);
        object.written("\"duration_ms\":", |out| write_millis(out, Duration::from_micros(1500)));
        line.push(b'}');
        let text = String::from_utf8(line).unwrap();
        assert_eq!(
            text,
            r#"{"path":"/a\"b\\c\nd\u0001é","upstream":"plain","client":"127.0.0.1:9","status":200,"duration_ms":1.5}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["path"], hostile);
    }

    #[test]
    fn escaping_is_needed_exactly_for_control_characters_quotes_and_backslashes() {
        for byte in 0..=255u8 {
            let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
            for at in 0..20 {
                // The byte at every place of a word and of the remainder.
                let mut text = vec![b'a'; 20];
                text[at] = byte;
                assert_eq!(needs_escaping(&text), expected, "byte {byte:#x} at {at}");
            }
        }
        // Neighbours that borrow and carry across bytes, mixed.
        let alphabet = [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let text: Vec<u8> = (0..16)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Mostly harmless bytes, so that both answers come up.
                    if seed % 4 == 0 {
                        alphabet[(seed >> 8) as usize % alphabet.len()]
                    } else {
                        0x21 + (seed >> 16) as u8 % 0x3b
                    }
                })
                .collect();
            let expected = text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escaping(&text), expected, "{text:?}");
        }
        assert!(!needs_escaping(b""));
        assert!(!needs_escaping("/caf\u{e9}/\u{7f}\u{80}".as_bytes()));
    }

    #[test]
    fn milliseconds_are_what_serde_json_writes_for_the_float() {
        let edges = [
            0,
            1,
            9,
            10,
            100,
            999,
            1000,
            1001,
            1010,
            1100,
            1494,
            12_000,
            999_999,
            86_400_000_000,
        ];
        let sweep = (0..200_000).step_by(7);
        for micros in edges.into_iter().chain(sweep) {
            let mut ours = Vec::new();
            write_millis(&mut ours, Duration::from_micros(micros));
            let float = serde_json::to_string(&(micros as f64 / 1000.0)).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), float, "{micros} µs");
        }
    }

    #[test]
    fn combined_log_time() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_960_536);
        assert_eq!(clf_time(time), "29/Nov/2026:13:55:36 +0000");
    }
}
