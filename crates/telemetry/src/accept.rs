//! Accept loops that neither spin nor flood the log when `accept` fails — out of file
//! descriptors above all (EMFILE at systemd's default soft limit of 1,024): the loop pauses,
//! doubling from 10 ms to 1 s while failures go on, and warns at most once every 10 s with the
//! number of failures since its last warning. Servers that know which of their connections are
//! idle also shed the oldest of them when out of descriptors ([`crate::Connections`]).

use std::time::{Duration, Instant};

use tracing::warn;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// `EMFILE` and `ENFILE` (the same numbers on Linux, the BSDs and macOS).
const OUT_OF_FDS: [i32; 2] = [24, 23];

/// Whether an `accept` error means the process (EMFILE) or the system (ENFILE) is out of file
/// descriptors, the case where closing an idle connection lets the next accept succeed.
pub fn is_out_of_fds(error: &std::io::Error) -> bool {
    error.raw_os_error().is_some_and(|code| OUT_OF_FDS.contains(&code))
}

/// The state of one accept loop's failures.
#[derive(Debug)]
pub struct AcceptBackoff {
    server: &'static str,
    pause: Duration,
    last_warning: Option<Instant>,
    unreported: u64,
}

impl AcceptBackoff {
    /// For the loop of `server` (named in the warnings).
    pub fn new(server: &'static str) -> Self {
        Self { server, pause: FIRST_PAUSE, last_warning: None, unreported: 0 }
    }

    /// An accept succeeded: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.pause = FIRST_PAUSE;
    }

    /// An accept failed with `error`: warns (rate-limited), then pauses.
    pub async fn failed(&mut self, error: &std::io::Error) {
        self.unreported += 1;
        if self.last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            warn!(
                server = self.server,
                error = %error,
                failures = self.unreported,
                pause_ms = u64::try_from(self.pause.as_millis()).unwrap_or(u64::MAX),
                "Cannot accept connections (out of file descriptors?); pausing, warning at most every 10 s."
            );
            self.last_warning = Some(Instant::now());
            self.unreported = 0;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
    }

    /// The pause the next failure will take.
    pub fn pause(&self) -> Duration {
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_double_the_pause_up_to_a_second_and_success_resets_it() {
        let mut b = AcceptBackoff::new("test");
        let e = std::io::Error::from_raw_os_error(24);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            b.failed(&e).await;
        }
        // 10 + 20 + … + 640 ms, then 1 s three times.
        assert_eq!(start.elapsed(), Duration::from_millis(1270 + 3000));
        assert_eq!(b.pause(), LONGEST_PAUSE);
        b.succeeded();
        assert_eq!(b.pause(), FIRST_PAUSE);
        // Nine of the ten were not warned about (they fell within 10 s of the first).
        assert_eq!(b.unreported, 9);
    }
}
