//! The clocks the gateway reads. Monotonic time is tokio's
//! (`tokio::time::Instant`), which a test may pause and advance. Wall-clock
//! time, which limits, cache freshness and token expiry are counted in (it is
//! what other nodes and HTTP dates share), follows tokio's clock too: the
//! system's time, moved by however far tokio's clock has been advanced past
//! the real one. Unpaused, the two clocks agree and this is the system time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time of day, as tokio's clock has it.
pub fn system_now() -> SystemTime {
    let paused_ahead = tokio::time::Instant::now().into_std();
    let real = std::time::Instant::now();
    let system = SystemTime::now();
    match paused_ahead.checked_duration_since(real) {
        Some(ahead) => system + ahead,
        None => system - real.duration_since(paused_ahead),
    }
}

/// [`system_now`] since the Unix epoch.
pub fn since_epoch() -> Duration {
    system_now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_wall_clock_moves_with_tokio_s_paused_clock() {
        let before = since_epoch();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = since_epoch();
        let moved = after - before;
        // Within a millisecond: the three clocks are read one after another.
        assert!(
            moved.abs_diff(Duration::from_secs(3600)) < Duration::from_millis(1),
            "{moved:?}"
        );
    }

    #[tokio::test]
    async fn unpaused_it_is_the_system_time() {
        let ours = since_epoch();
        let system = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let apart = ours.abs_diff(system);
        assert!(apart < Duration::from_millis(50), "{apart:?}");
    }
}
