//! `X-Request-Id`: kept from the client when it is a sane value, else generated.

use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

pub fn from_request(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        // Copied: the client's value is a slice of the buffer its head was
        // read into, and the id outlives the request (the live view's
        // recent requests keep it), which would keep that whole buffer.
        Some(id) if is_sane(id.as_bytes()) => {
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(id.as_bytes())).unwrap_or_else(|_| generate())
        }
        _ => generate(),
    }
}

/// Ids travel into logs, headers and problem bodies: only characters that
/// are harmless in all three are accepted.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// A random (version 4) UUID. Unpredictability is not needed here, only
/// uniqueness, so it comes from the fast thread-local generator. The text
/// is one shared allocation, so the copies that go upstream, to the client
/// and to the log only count references.
fn generate() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(from_request(&headers), "abc-123");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("<script>"));
        assert_ne!(from_request(&headers), "<script>");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_str(&"a".repeat(200)).unwrap());
        assert_eq!(from_request(&headers).len(), 36);
        let a = from_request(&HeaderMap::new());
        let b = from_request(&HeaderMap::new());
        assert_ne!(a, b);
        assert_eq!(a.to_str().unwrap().as_bytes()[14], b'4');
    }

    #[test]
    fn a_client_s_id_is_copied_out_of_its_head() {
        let head = bytes::Bytes::from_static(b"x-request-id: trace-42\r\n");
        let mut headers = HeaderMap::new();
        headers.insert(
            &X_REQUEST_ID,
            HeaderValue::from_maybe_shared(head.slice(14..22)).unwrap(),
        );
        let id = from_request(&headers);
        assert_eq!(id, "trace-42");
        assert!(!std::ptr::eq(
            id.as_bytes().as_ptr(),
            headers[&X_REQUEST_ID].as_bytes().as_ptr()
        ));
    }
}
