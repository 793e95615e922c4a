//! Header maps kept for reuse on the thread that let go of them. Each
//! proxied HTTP/1.1 request builds two maps (the client's head, the
//! upstream's answer), each two allocations, and drops them once written on
//! (bench/instructions.py: about 900 instructions a request in malloc and
//! free); a worker serves its connections on one thread, so a map written
//! to the upstream or the client is cleared and taken again by the next
//! head read there.

use http::HeaderMap;
use std::cell::RefCell;

/// Maps a thread keeps at most: as many heads as it reads between writes
/// (one per connection with a request in flight) need no more than this to
/// stop allocating; more than that is freed.
const KEPT: usize = 32;

/// A map grown past this many fields (a client that sent a hundred) is
/// freed, not kept: kept maps stay a few KiB each.
const LARGEST: usize = 48;

thread_local! {
    static FREE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`, one given back on this thread if
/// there is one.
pub fn take(fields: usize) -> HeaderMap {
    let kept = FREE.with(|free| free.try_borrow_mut().ok().and_then(|mut free| free.pop()));
    match kept {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives `map` back, its fields dropped, for [`take`] to hand out again.
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    map.clear();
    FREE.with(|free| {
        if let Ok(mut free) = free.try_borrow_mut() {
            if free.len() < KEPT {
                free.push(map);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HOST, USER_AGENT};
    use http::HeaderValue;

    #[test]
    fn a_map_given_back_is_handed_out_empty_with_its_room() {
        let mut map = take(10);
        map.insert(HOST, HeaderValue::from_static("example.com"));
        map.append(USER_AGENT, HeaderValue::from_static("a"));
        map.append(USER_AGENT, HeaderValue::from_static("b"));
        let room = map.capacity();
        give(map);
        let again = take(4);
        assert!(again.is_empty());
        assert_eq!(again.get(HOST), None);
        assert_eq!(again.get_all(USER_AGENT).iter().count(), 0);
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn a_kept_map_grows_to_the_room_asked_for() {
        give(HeaderMap::with_capacity(2));
        let map = take(30);
        assert!(map.capacity() >= 30);
    }

    #[test]
    fn a_large_map_is_not_kept() {
        // Empties this thread's list first: tests share threads.
        while FREE.with(|free| free.borrow_mut().pop()).is_some() {}
        give(HeaderMap::with_capacity(500));
        assert!(FREE.with(|free| free.borrow().is_empty()));
        give(HeaderMap::new());
        assert!(FREE.with(|free| free.borrow().is_empty()));
    }
}
