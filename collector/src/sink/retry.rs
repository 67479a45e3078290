//! The one way the sink retries: transient errors back off exponentially with jitter (the
//! schedule is `backon`'s), permanent ones are returned at once, and the wait is cut short
//! when the shutdown deadline passes (`abandon`).

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use super::SinkError;

/// Waits between attempts: from `initial`, doubling, never over `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    fn delays(self) -> impl Iterator<Item = Duration> {
        // Jitter adds up to the delay again (so that collectors restarted together do not
        // retry in step): doubling up to `max / 2` keeps every wait under `max`.
        ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay((self.max / 2).max(self.initial))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Runs `attempt` until it succeeds or `abandon` fires (`None`), waiting per `backoff` after
/// each transient failure (`on_retry` hears of each, with the wait). A permanent failure is
/// never retried as such: it goes to `set_aside` (the dead-letter directory), whose success
/// ends the loop and whose failure (e.g. a full disk) is retried like a transient error.
pub async fn retry<T, Fut>(
    backoff: Backoff,
    abandon: &CancellationToken,
    mut attempt: impl FnMut() -> Fut,
    mut set_aside: impl FnMut(SinkError) -> Result<T, SinkError>,
    mut on_retry: impl FnMut(&SinkError, Duration),
) -> Option<T>
where
    Fut: Future<Output = Result<T, SinkError>>,
{
    let mut delays = backoff.delays();
    loop {
        let error = match attempt().await {
            Ok(done) => return Some(done),
            Err(error) if error.is_permanent() => match set_aside(error) {
                Ok(done) => return Some(done),
                Err(error) => error,
            },
            Err(error) => error,
        };
        let delay = delays.next().unwrap_or(backoff.max);
        on_retry(&error, delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = abandon.cancelled() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(3),
    };

    #[test]
    fn delays_grow_with_jitter_and_stay_under_the_cap() {
        let delays: Vec<Duration> = BACKOFF.delays().take(12).collect();
        assert!(delays[0] >= BACKOFF.initial && delays[0] < 2 * BACKOFF.initial);
        assert!(delays.iter().all(|d| *d <= BACKOFF.max), "{delays:?}");
        assert!(delays[11] >= BACKOFF.max / 2, "{delays:?}");
        // Jittered: two schedules differ somewhere.
        let again: Vec<Duration> = BACKOFF.delays().take(12).collect();
        assert_ne!(delays, again);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_permanent_ones_set_aside_once() {
        let abandon = CancellationToken::new();
        let mut calls = 0;
        let mut waits = Vec::new();
        let outcome = retry(
            BACKOFF,
            &abandon,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 4 {
                        Err(SinkError::transient(1, "down"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| panic!("nothing to set aside"),
            |_, wait| waits.push(wait),
        )
        .await;
        assert_eq!(outcome, Some(4));
        assert_eq!(waits.len(), 3);

        let mut calls = 0;
        let mut set_aside = 0;
        let outcome = retry(
            BACKOFF,
            &abandon,
            || {
                calls += 1;
                async { Err::<&str, _>(SinkError::permanent(1, "refused")) }
            },
            |error| {
                assert!(error.is_permanent());
                set_aside += 1;
                Ok("dead-lettered")
            },
            |_, _| panic!("a permanent error is not retried"),
        )
        .await;
        assert_eq!(outcome, Some("dead-lettered"));
        assert_eq!((calls, set_aside), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_cannot_be_set_aside_is_tried_again() {
        let abandon = CancellationToken::new();
        let mut calls = 0;
        let mut set_aside = 0;
        let outcome = retry(
            BACKOFF,
            &abandon,
            || {
                calls += 1;
                async { Err::<(), _>(SinkError::permanent(1, "refused")) }
            },
            |_| {
                set_aside += 1;
                if set_aside < 3 {
                    Err(SinkError::transient(1, "disk full"))
                } else {
                    Ok(())
                }
            },
            |error, _| assert!(!error.is_permanent()),
        )
        .await;
        assert_eq!(outcome, Some(()));
        assert_eq!((calls, set_aside), (3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_ends_the_wait() {
        let abandon = CancellationToken::new();
        abandon.cancel();
        let outcome: Option<()> = retry(
            BACKOFF,
            &abandon,
            || async { Err(SinkError::transient(1, "down")) },
            |_| panic!("nothing to set aside"),
            |_, _| {},
        )
        .await;
        assert_eq!(outcome, None);
    }
}
