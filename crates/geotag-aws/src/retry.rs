//! Retrying partial batch writes within an invocation's time budget.
//!
//! BatchWriteItem may succeed while leaving some items unprocessed (the table
//! or a partition is throttled), and may fail outright with throttling or a
//! 5xx. Both are retried here with exponential backoff and full jitter (AWS
//! Architecture Blog, "Exponential Backoff and Jitter"), but only while the
//! invocation has time left: what is still pending at the deadline is handed
//! back so that the caller can report it as a batch item failure and let SQS
//! deliver it again, rather than let Lambda time the whole batch out.

use std::future::Future;
use std::time::Duration;

use geotag::store::StoreError;
use tokio::time::Instant;

/// Exponential backoff with full jitter: attempt `n` waits a uniformly random
/// time in `[0, min(cap, base * 2^n)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// Worth another try in this invocation (throttling, 5xx, timeouts).
    Transient(StoreError),
    /// Retrying now cannot help (validation, missing table, access denied).
    Permanent(StoreError),
}

/// Counters of one [`drive`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub requests: u32,
    pub retries: u32,
}

/// Sends `pending` with `send` until nothing is left, a permanent error, or
/// the deadline. `send` returns the entries it did not process, or on error
/// all the entries it was given, beside the error.
/// On failure, returns the entries never written, with the last error.
pub async fn drive<T, F, Fut>(
    mut pending: Vec<T>,
    backoff: Backoff,
    deadline: Instant,
    attempts: &mut Attempts,
    mut send: F,
) -> Result<(), (Vec<T>, StoreError)>
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, (Vec<T>, AttemptError)>>,
{
    let mut attempt = 0;
    loop {
        attempts.requests += 1;
        let error = match send(pending).await {
            Ok(unprocessed) if unprocessed.is_empty() => return Ok(()),
            Ok(unprocessed) => {
                pending = unprocessed;
                StoreError::OutOfTime
            }
            Err((unsent, AttemptError::Transient(error))) => {
                pending = unsent;
                error
            }
            Err((unsent, AttemptError::Permanent(error))) => return Err((unsent, error)),
        };
        let delay = backoff.delay(attempt);
        if Instant::now() + delay >= deadline {
            return Err((pending, error));
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
        attempts.retries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn delays_grow_and_are_capped() {
        let backoff = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        };
        for _ in 0..1000 {
            assert!(backoff.delay(0) <= Duration::from_millis(10));
            assert!(backoff.delay(3) <= Duration::from_millis(80));
            assert!(backoff.delay(40) <= Duration::from_millis(100));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_items_are_retried_until_written() {
        let calls = RefCell::new(Vec::new());
        let mut attempts = Attempts::default();
        let outcome = drive(
            (0..25).collect::<Vec<u32>>(),
            Backoff::default(),
            Instant::now() + Duration::from_secs(10),
            &mut attempts,
            |batch: Vec<u32>| {
                calls.borrow_mut().push(batch.len());
                // The store takes the first 10 of whatever it is sent.
                let rest = batch.into_iter().skip(10).collect();
                async move { Ok(rest) }
            },
        )
        .await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(*calls.borrow(), vec![25, 15, 5]);
        assert_eq!(
            attempts,
            Attempts {
                requests: 3,
                retries: 2
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_back_what_is_pending_at_the_deadline() {
        let mut attempts = Attempts::default();
        let start = Instant::now();
        let outcome = drive(
            vec![1, 2, 3],
            Backoff::default(),
            start + Duration::from_secs(3),
            &mut attempts,
            |batch: Vec<i32>| {
                let first_two = batch.into_iter().take(2).collect();
                async move { Ok(first_two) }
            },
        )
        .await;
        assert_eq!(outcome, Err((vec![1, 2], StoreError::OutOfTime)));
        assert!(attempts.retries > 3, "{attempts:?}");
        assert!(Instant::now() < start + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_permanent_ones_are_not() {
        let throttle = || StoreError::Service {
            code: "ThrottlingException".into(),
            message: "slow down".into(),
        };
        let mut calls = 0;
        let mut attempts = Attempts::default();
        let outcome = drive(
            vec!['a'],
            Backoff::default(),
            Instant::now() + Duration::from_secs(10),
            &mut attempts,
            |batch: Vec<char>| {
                calls += 1;
                let result = if calls < 3 {
                    Err((batch, AttemptError::Transient(throttle())))
                } else {
                    Ok(Vec::new())
                };
                async move { result }
            },
        )
        .await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(calls, 3);

        let denied = StoreError::Service {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        let outcome = drive(
            vec!['b'],
            Backoff::default(),
            Instant::now() + Duration::from_secs(10),
            &mut attempts,
            |batch: Vec<char>| {
                let error = AttemptError::Permanent(denied.clone());
                async move { Err::<Vec<char>, _>((batch, error)) }
            },
        )
        .await;
        assert_eq!(outcome, Err((vec!['b'], denied)));
    }
}
