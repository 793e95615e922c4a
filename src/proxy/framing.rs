//! Ambiguous request framing: a head with both `Content-Length` and
//! `Transfer-Encoding`, the classic request-smuggling head.
//!
//! hyper reads such a request by its transfer coding, drops the length and
//! closes the connection after it (RFC 9112 §6.3), so the length is gone
//! before the handler sees the request. The RFC also says such a message
//! "ought to be handled as an error", and that is what Portico does: the
//! connection's byte stream is watched for the two field names while a head
//! is read, and the request is refused with a 400 instead of forwarded.
//!
//! This is not a parser: it only recognises the two field names at the start
//! of a line, up to the blank line that ends the head. hyper (httparse)
//! still parses and validates everything.

/// Watches one request head go by, a read at a time.
#[derive(Debug, Default)]
pub struct HeadScan {
    state: State,
    length: bool,
    coding: bool,
    /// Bytes seen: a head is never longer than hyper's buffer, so past this
    /// it is not a head hyper will read.
    seen: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    /// The rest of a line that is of no interest, the request line first.
    #[default]
    Skip,
    LineStart,
    /// A `\r` at the start of a line: the blank line, if `\n` follows.
    BlankLine,
    /// The line starts with the first `matched` bytes of `field`.
    Name {
        field: Field,
        matched: u8,
    },
}

#[derive(Debug, Clone, Copy)]
enum Field {
    ContentLength,
    TransferEncoding,
}

impl Field {
    fn name(self) -> &'static [u8] {
        match self {
            Field::ContentLength => b"content-length",
            Field::TransferEncoding => b"transfer-encoding",
        }
    }
}

/// The longest head worth watching; hyper refuses longer ones.
const MOST: usize = 128 * 1024;

impl HeadScan {
    /// Feeds the next bytes read. `Some` once the head has ended (or is
    /// past all reason): whether it carried both framing fields.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        let mut rest = bytes;
        while let Some((&byte, after)) = rest.split_first() {
            if self.seen > MOST {
                return Some(false);
            }
            if let State::Skip = self.state {
                // Most of a head is lines of no interest: on to the next one.
                let Some(at) = memchr::memchr(b'\n', rest) else {
                    self.seen += rest.len();
                    return None;
                };
                self.seen += at + 1;
                rest = &rest[at + 1..];
                self.state = State::LineStart;
                continue;
            }
            self.seen += 1;
            rest = after;
            match self.step(byte) {
                Ok(next) => self.state = next,
                Err(head_ended) => return Some(head_ended),
            }
        }
        None
    }

    /// The state after `byte`, or `Err` with the verdict when the head ends.
    /// `feed` jumps over skipped lines itself; here a skipped byte only
    /// looks for the line's end.
    fn step(&mut self, byte: u8) -> Result<State, bool> {
        Ok(match self.state {
            State::Skip if byte == b'\n' => State::LineStart,
            State::Skip => State::Skip,
            State::LineStart => match byte.to_ascii_lowercase() {
                b'\r' => State::BlankLine,
                b'\n' => return Err(self.ambiguous()),
                b'c' => State::Name {
                    field: Field::ContentLength,
                    matched: 1,
                },
                b't' => State::Name {
                    field: Field::TransferEncoding,
                    matched: 1,
                },
                _ => State::Skip,
            },
            State::BlankLine => match byte {
                b'\n' => return Err(self.ambiguous()),
                _ => State::Skip,
            },
            State::Name { field, matched } => {
                let name = field.name();
                let matched = usize::from(matched);
                if byte == b'\n' {
                    State::LineStart
                } else if matched == name.len() {
                    // The whole name, then the colon (hyper refuses a
                    // space before it, but it is still no other field).
                    if matches!(byte, b':' | b' ' | b'\t') {
                        match field {
                            Field::ContentLength => self.length = true,
                            Field::TransferEncoding => self.coding = true,
                        }
                    }
                    State::Skip
                } else if byte.to_ascii_lowercase() == name[matched] {
                    State::Name {
                        field,
                        matched: (matched + 1) as u8,
                    }
                } else {
                    State::Skip
                }
            }
        })
    }

    fn ambiguous(&self) -> bool {
        self.length && self.coding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(head: &[u8], piece: usize) -> Option<bool> {
        let mut scan = HeadScan::default();
        head.chunks(piece).find_map(|chunk| scan.feed(chunk))
    }

    #[test]
    fn both_fields_in_any_case_order_or_split_are_found() {
        let heads: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\ncontent-length: 4\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length : 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n\nbody",
        ];
        for head in heads {
            for piece in [1, 2, 3, 7, head.len()] {
                assert_eq!(
                    scan_in_pieces(head, piece),
                    Some(true),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    #[test]
    fn one_field_or_look_alikes_are_not_ambiguous() {
        let heads: [&[u8]; 5] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /content-length HTTP/1.1\r\nX-Transfer-Encoding: chunked\r\nContent-Lengthy: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\ncontent-type: a\r\n\r\n",
            // A field in the body after the head is not the head's.
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nContent-Length: 1\r\n",
        ];
        for head in heads {
            for piece in [1, 5, head.len()] {
                assert_eq!(
                    scan_in_pieces(head, piece),
                    Some(false),
                    "{:?}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    #[test]
    fn an_unfinished_head_is_undecided() {
        assert_eq!(scan_in_pieces(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n", 4), None);
    }
}
