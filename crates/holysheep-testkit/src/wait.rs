//! Bounded waits for something a test cannot be told about directly.

use std::time::{Duration, Instant};

/// Checks `done` every millisecond until it holds or `limit` has passed; says whether it held.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_or_gives_up_in_time() {
        let mut calls = 0;
        assert!(
            wait_until(Duration::from_secs(5), || {
                calls += 1;
                calls == 3
            })
            .await
        );
        let started = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || false).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
