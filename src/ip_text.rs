//! An IP address's text, as `Display` writes it, without the formatter for
//! IPv4 (which supports padding and costs several times more): rate-limit
//! keys and access-log lines write one on every request.

use std::io::Write;
use std::net::IpAddr;

/// The longest text of an IP address (an IPv6 one with an IPv4 tail).
pub const MAX_LEN: usize = 45;

/// Writes `ip` to `out`; an IPv4 address number by number, an IPv6 one by
/// `Display`.
pub fn write(out: &mut impl Write, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut number = itoa::Buffer::new();
            for (at, octet) in v4.octets().into_iter().enumerate() {
                if at > 0 {
                    let _ = out.write_all(b".");
                }
                let _ = out.write_all(number.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip`'s text in `buffer`, on the stack.
pub fn in_buffer(ip: IpAddr, buffer: &mut [u8; MAX_LEN]) -> &[u8] {
    let mut rest = &mut buffer[..];
    write(&mut rest, ip);
    let written = MAX_LEN - rest.len();
    &buffer[..written]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_s_text_is_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "203.0.113.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:203.0.113.7",
            "1234:5678:9abc:def0:1234:5678:9abc:def0",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buffer = [0u8; MAX_LEN];
            assert_eq!(in_buffer(ip, &mut buffer), ip.to_string().as_bytes());
            let mut line = Vec::new();
            write(&mut line, ip);
            assert_eq!(line, ip.to_string().as_bytes());
        }
    }
}
