//! Warnings that a peer cannot turn into a log flood: the first of a kind is written, then at
//! most one every period, carrying how many were held back since the last one written.

use std::time::{Duration, Instant};

/// One kind of warning from one source (a session, a loop).
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimiter {
    /// At most one warning every `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, held_back: 0 }
    }

    /// Whether to write this occurrence: `Some(n)` with the `n` held back since the last one
    /// written, or `None` (counted, to be reported with the next one written).
    pub fn admit(&mut self) -> Option<u64> {
        if self.last.is_none_or(|at| at.elapsed() >= self.every) {
            self.last = Some(Instant::now());
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_written_then_the_rest_are_counted() {
        let mut l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.admit(), Some(0));
        for _ in 0..9_999 {
            assert_eq!(l.admit(), None);
        }
        assert_eq!(l.held_back, 9_999);
        let mut now = LogLimiter::new(Duration::ZERO);
        assert_eq!(now.admit(), Some(0));
        assert_eq!(now.admit(), Some(0));
    }
}
