//! Giving the system back heap memory that a burst of work used and freed.
//!
//! glibc's allocator returns memory to the system only from the top of a heap. What a burst of
//! connections allocated and freed in the middle (TLS handshakes, authentication, the first
//! queries) stays resident for as long as one live allocation sits above it: after a thousand
//! clients reconnect at once, a few hundred KiB to several MiB that the server no longer uses.
//! [`Trimmer`] watches for such bursts and, once the server has been quiet for a moment, asks
//! the allocator to release every whole free page (`malloc_trim`), in all its heaps.

use crate::CancellationToken;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Events (connections opened or closed) after which freed memory is worth giving back.
pub const BURST: usize = 32;

/// How long no event may have happened before the memory is given back.
pub const QUIET: Duration = Duration::from_millis(500);

/// Counts events that allocate and free memory, and gives freed memory back after bursts.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// Events since the memory was last given back.
    events: AtomicUsize,
    wake: Notify,
}

impl Trimmer {
    /// Notes one event (a connection opened or closed). Cheap: an atomic add, and a wake-up
    /// of the waiting task when a burst is complete.
    pub fn note(&self) {
        if self.events.fetch_add(1, Ordering::Relaxed) + 1 == BURST {
            self.wake.notify_one();
        }
    }

    /// Waits for bursts of at least [`BURST`] events and gives freed memory back [`QUIET`]
    /// after each one's last event, until `shutdown`. Sleeps while nothing happens.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            let mut seen = self.events.load(Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(QUIET) => {}
                }
                let now = self.events.load(Ordering::Relaxed);
                if now == seen {
                    break;
                }
                seen = now;
            }
            // Events that arrive from here on count towards the next burst.
            self.events.fetch_sub(seen, Ordering::Relaxed);
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(release_free_memory)
                .await
                .unwrap_or(false);
            tracing::debug!(
                events = seen,
                released,
                micros = started.elapsed().as_micros() as u64,
                "gave freed heap memory back"
            );
        }
    }
}

/// Asks the allocator to return every whole free page of its heaps to the system; true if it
/// returned any. Does nothing where the allocator is not glibc's.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and is thread-safe: it locks each arena while
        // it walks the arena's free chunks and advises the kernel that their pages are unused.
        #[allow(unsafe_code)]
        let r = unsafe { libc::malloc_trim(0) };
        r == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident set size of this process, KiB.
    fn rss_kib() -> u64 {
        crate::procstat::self_usage()
            .map(|u| u.rss_bytes / 1024)
            .unwrap_or(0)
    }

    #[test]
    fn freed_memory_in_the_middle_of_the_heap_is_given_back() {
        // 16 MiB in 64 KiB blocks (below the size glibc maps on its own), every other one
        // freed: none of it at the top of a heap, so none of it goes back by itself.
        let mut blocks: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 64 * 1024]).collect();
        let mut kept = Vec::with_capacity(blocks.len() / 2);
        for (i, b) in blocks.drain(..).enumerate() {
            if i % 2 == 0 {
                kept.push(b);
            }
        }
        let before = rss_kib();
        let released = release_free_memory();
        let after = rss_kib();
        assert!(released, "malloc_trim released nothing");
        // 8 MiB were freed; all but a page of each block can go back. Other tests of this
        // crate may allocate meanwhile, so ask for half.
        assert!(
            before.saturating_sub(after) > 4096,
            "rss {before} KiB -> {after} KiB"
        );
        assert_eq!(kept.len(), 128);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_trimmed_once_it_is_quiet_and_a_trickle_is_not() {
        let t = std::sync::Arc::new(Trimmer::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let t = t.clone();
            let s = shutdown.clone();
            async move { t.run(s).await }
        });
        for _ in 0..BURST - 1 {
            t.note();
        }
        tokio::time::sleep(QUIET * 4).await;
        assert_eq!(t.events.load(Ordering::Relaxed), BURST - 1, "a trickle");
        // The burst completes, and goes on for a while: nothing happens until it stops.
        for _ in 0..5 {
            t.note();
            tokio::time::sleep(QUIET / 2).await;
        }
        assert_eq!(t.events.load(Ordering::Relaxed), BURST + 4, "still busy");
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(
            t.events.load(Ordering::Relaxed),
            0,
            "trimmed after the burst"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}
