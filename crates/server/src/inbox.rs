//! A session's inbox: the bounded queue between the router and one session task.
//!
//! Every bound session has one, idle or not, so it is built to cost little while empty: a
//! `VecDeque` that allocates only while stanzas wait (and gives the room back once drained)
//! behind a mutex, where a `tokio::sync::mpsc` channel keeps a preallocated block of slots and a
//! cache-line-aligned state for each session. There is one sender (the router's entry) and one
//! receiver (the session task); the receiver sees the end of the queue when the sender is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Queues that held more than this many stanzas give the room back when they drain.
const KEEP_CAPACITY: usize = 8;

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver's waker, while it waits.
    waker: Option<Waker>,
    /// The sender is gone: nothing more will come.
    sender_gone: bool,
    /// The receiver closed the queue: nothing more is accepted.
    receiver_closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half (kept by the router).
pub struct InboxSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half (owned by the session task).
pub struct Inbox<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("waiting", &self.shared.lock().queue.len())
            .finish()
    }
}

/// Why a value was not queued; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// `capacity` values are waiting already (a stuck client).
    Full(T),
    /// The receiver closed the queue or is gone.
    Closed(T),
}

/// A queue holding at most `capacity` values.
pub fn inbox<T>(capacity: usize) -> (InboxSender<T>, Inbox<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_closed: false,
        }),
        capacity,
    });
    (
        InboxSender {
            shared: Arc::clone(&shared),
        },
        Inbox { shared },
    )
}

impl<T> InboxSender<T> {
    /// Queues `value` without waiting.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut st = self.shared.lock();
            if st.receiver_closed {
                return Err(TrySendError::Closed(value));
            }
            if st.queue.len() >= self.shared.capacity {
                return Err(TrySendError::Full(value));
            }
            st.queue.push_back(value);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            st.sender_gone = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Inbox<T> {
    /// The next value; `None` once the sender is gone and the queue is empty. Cancel-safe: a
    /// value is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(v) = take(&mut st) {
                return Poll::Ready(Some(v));
            }
            if st.sender_gone {
                return Poll::Ready(None);
            }
            match &mut st.waker {
                Some(w) => w.clone_from(cx.waker()),
                None => st.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next value if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        take(&mut self.shared.lock())
    }

    /// Refuses further values; those already queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().receiver_closed = true;
    }
}

fn take<T>(st: &mut State<T>) -> Option<T> {
    let v = st.queue.pop_front()?;
    if st.queue.is_empty() && st.queue.capacity() > KEEP_CAPACITY {
        st.queue = VecDeque::new();
    }
    Some(v)
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn values_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = inbox(4);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_closed_one_too() {
        let (tx, mut rx) = inbox(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        rx.close();
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
        // What was queued before the close is still there.
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        drop(rx);
        assert_eq!(tx.try_send(5), Err(TrySendError::Closed(5)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_and_by_the_sender_going() {
        let (tx, mut rx) = inbox::<u32>(8);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("receiver woken")
            .expect("task");
        assert_eq!(got, (Some(7), None));
    }

    #[tokio::test]
    async fn a_cancelled_receive_loses_nothing() {
        let (tx, mut rx) = inbox(8);
        // Cancelled while waiting.
        assert!(tokio::time::timeout(Duration::from_millis(10), rx.recv())
            .await
            .is_err());
        tx.try_send("a").unwrap();
        assert_eq!(rx.recv().await, Some("a"));
    }

    #[test]
    fn a_drained_queue_gives_its_room_back() {
        let (tx, mut rx) = inbox(512);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.lock().queue.capacity(), 0);
    }
}
