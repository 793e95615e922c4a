//! What attackers do to hide a payload, undone before detection: percent
//! encoding (repeated, for double encoding), `%uXXXX`, overlong UTF-8,
//! fullwidth forms, HTML entities, NUL bytes; then, for the keyword rules,
//! case, comments and whitespace.

use std::borrow::Cow;

/// Percent-decoding rounds: `%252e` is `%2e` after one, `.` after two.
const DECODE_ROUNDS: usize = 3;

/// The value as an application would finally read it: decoded until it no
/// longer changes (at most three rounds), `%uXXXX` and overlong UTF-8
/// sequences included, HTML entities resolved, fullwidth forms and NUL
/// bytes folded away.
pub fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| matches!(b, b'%' | b'&' | b'+' | 0) || b >= 0x80) {
        return Cow::Borrowed(raw);
    }
    let mut text = raw.to_string();
    for _ in 0..DECODE_ROUNDS {
        let next = percent_decode(&text);
        if next == text {
            break;
        }
        text = next;
    }
    let text = html_escape::decode_html_entities(&text).into_owned();
    Cow::Owned(fold_unicode(&text))
}

/// The decoded value in one canonical spelling for keyword rules:
/// lowercase, comments (`/*…*/`) as a space, runs of whitespace as one
/// space, backslashes as slashes.
pub fn canonical(decoded: &str) -> Cow<'_, str> {
    // Most values are canonical already: no copy for them.
    let already = decoded
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase() && b != b'\\' && (b == b' ' || !b.is_ascii_whitespace()))
        && !decoded.contains("/*")
        && !decoded.contains("  ");
    if already {
        return Cow::Borrowed(decoded);
    }
    let lower = decoded.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut rest = lower.as_str();
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        out.push(' ');
        rest = match rest[start + 2..].find("*/") {
            Some(end) => &rest[start + 2 + end + 2..],
            None => "",
        };
    }
    out.push_str(rest);
    let mut compressed = String::with_capacity(out.len());
    let mut space = false;
    for c in out.chars() {
        let c = if c == '\\' { '/' } else { c };
        if c.is_whitespace() {
            if !space {
                compressed.push(' ');
            }
            space = true;
        } else {
            compressed.push(c);
            space = false;
        }
    }
    Cow::Owned(compressed)
}

/// One round of `%XX`, `%uXXXX` and `+` decoding; overlong UTF-8 sequences
/// (`%c0%ae`) read as the ASCII they spell; what is not valid UTF-8 after
/// that is kept as replacement characters.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 5 < bytes.len() && matches!(bytes[i + 1], b'u' | b'U') => {
                match std::str::from_utf8(&bytes[i + 2..i + 6])
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                {
                    Some(code) => {
                        let c = char::from_u32(code).unwrap_or('\u{fffd}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 6;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    fold_overlong(&out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Overlong two-byte UTF-8 (`C0 AE` for `.`, `C0 AF` for `/`) as the ASCII
/// it spells, which strict decoders refuse and lax ones accept.
fn fold_overlong(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], 0xC0 | 0xC1) && bytes.get(i + 1).is_some_and(|b| b & 0xC0 == 0x80) {
            out.push(((bytes[i] & 0x1F) << 6) | (bytes[i + 1] & 0x3F));
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fullwidth forms (`＜script＞`) as ASCII; NUL bytes dropped (they cut
/// strings in C, so `..%00/` is `../` to many backends).
fn fold_unicode(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '\0')
        .map(|c| match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_undone() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("%252e%252e%252f"), "../", "double encoding");
        assert_eq!(decode("%c0%ae%c0%ae%c0%af"), "../", "overlong UTF-8");
        assert_eq!(decode("%u003cscript%u003e"), "<script>");
        assert_eq!(decode("&lt;img src=x&#x3e;"), "<img src=x>");
        assert_eq!(decode("＜script＞"), "<script>");
        assert_eq!(decode("..%00/"), "../");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert!(matches!(decode("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_canonical_form_drops_case_comments_and_spacing() {
        assert_eq!(canonical("UNION/**/SeLeCt\t\n 1"), "union select 1");
        assert_eq!(canonical("..\\..\\windows"), "../../windows");
        assert_eq!(canonical("a /* open"), "a ");
    }
}
