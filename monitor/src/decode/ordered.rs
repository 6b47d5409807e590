//! Work items run in parallel on the shared thread pool and folded in
//! index order as they finish, so the fold overlaps the work.
//!
//! ```text
//!  thread 1:  item 0 ──────┐ item 2 ────┐ item 4 ...
//!  thread 2:  item 1 ──┐   │ item 3 ──┐ │
//!                      ▼   ▼          ▼ ▼
//!  fold (under a lock, by whichever thread finished):
//!             1 waits, 0 arrives: fold 0, fold 1; 3 waits; 2 arrives: fold 2, 3 ...
//! ```
//!
//! Each thread takes the next item as soon as it finishes one; the thread
//! that finishes the item the fold waits for folds it and every item
//! already waiting after it. A thread does not start an item more than
//! `2 × threads` ahead of the fold, so at most that many results wait.
//! The result depends on the items, never on the threads or their timing:
//! the fold sees the items in index order. Of failed items, the error of
//! the first in index order is returned.
//!
//! (The simpler scheme, waves of `threads` items each folded after the
//! wave, leaves cores idle while the slowest item of a wave finishes and
//! while the wave is folded.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

struct Fold<T, E> {
    /// The next item to fold.
    next: usize,
    waiting: BTreeMap<usize, T>,
    acc: Option<T>,
    /// The failed item first in index order, and its error.
    failed: Option<(usize, E)>,
    /// An item or the fold panicked: the others stop (the scope then
    /// carries the panic on) instead of waiting for an item that never
    /// comes.
    panicked: bool,
}

/// Wakes the waiting threads when the thread holding it unwinds.
struct OnPanic<'a, T, E> {
    state: &'a Mutex<Fold<T, E>>,
    moved: &'a Condvar,
}

impl<T, E> Drop for OnPanic<'_, T, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .panicked = true;
            self.moved.notify_all();
        }
    }
}

/// Run `work(i)` for `i` in `0..n` on the current rayon pool and fold the
/// results in index order with `fold(acc, next)` (the first result is the
/// initial accumulator). `None` when `n` is 0.
pub fn fold_in_order<T, E>(
    n: usize,
    work: impl Fn(usize) -> Result<T, E> + Sync,
    fold: impl Fn(&mut T, T) -> Result<(), E> + Sync,
) -> Result<Option<T>, E>
where
    T: Send,
    E: Send,
{
    let threads = rayon::current_num_threads().max(1);
    let window = 2 * threads;
    let state = Mutex::new(Fold {
        next: 0,
        waiting: BTreeMap::new(),
        acc: None,
        failed: None,
        panicked: false,
    });
    let moved = Condvar::new();
    let taken = AtomicUsize::new(0);
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    rayon::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|_| {
                loop {
                    let i = taken.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let _wake = OnPanic {
                        state: &state,
                        moved: &moved,
                    };
                    {
                        let mut st = lock();
                        // the item the fold waits for is taken (i > next)
                        // and being worked on: it will move the fold
                        while i >= st.next + window && st.failed.is_none() && !st.panicked {
                            st = moved.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        if st.failed.is_some() || st.panicked {
                            return;
                        }
                    }
                    let result = work(i);
                    let mut st = lock();
                    match result {
                        Ok(r) => {
                            st.waiting.insert(i, r);
                        }
                        Err(e) => {
                            if st.failed.as_ref().is_none_or(|(f, _)| i < *f) {
                                st.failed = Some((i, e));
                            }
                        }
                    }
                    while st.failed.is_none() {
                        let at = st.next;
                        let Some(r) = st.waiting.remove(&at) else {
                            break;
                        };
                        let folded = match st.acc.as_mut() {
                            None => {
                                st.acc = Some(r);
                                Ok(())
                            }
                            Some(acc) => fold(acc, r),
                        };
                        if let Err(e) = folded {
                            st.failed = Some((at, e));
                        }
                        st.next += 1;
                    }
                    moved.notify_all();
                }
            });
        }
    });
    let st = state.into_inner().unwrap_or_else(|p| p.into_inner());
    match st.failed {
        Some((_, e)) => Err(e),
        None => Ok(st.acc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use std::time::Duration;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Items that take random times on 1 to 4 threads fold in index order,
    /// and no item starts more than `2 × threads` ahead of the fold.
    #[test]
    fn results_fold_in_index_order_whatever_finishes_first() {
        for threads in 1..=4 {
            let folded = AtomicUsize::new(1);
            let most_ahead = AtomicUsize::new(0);
            let got = pool(threads)
                .install(|| {
                    fold_in_order(
                        40,
                        |i| {
                            // items before `folded` are folded (the first is
                            // the accumulator)
                            let ahead = i.saturating_sub(folded.load(Ordering::SeqCst));
                            most_ahead.fetch_max(ahead, Ordering::SeqCst);
                            // item 0 slow: the others run ahead until the bound
                            let ms = if i == 0 {
                                30
                            } else {
                                rand::rng().random_range(0..4)
                            };
                            std::thread::sleep(Duration::from_millis(ms));
                            Ok::<_, String>(vec![i])
                        },
                        |acc, mut next| {
                            acc.append(&mut next);
                            folded.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        },
                    )
                })
                .unwrap()
                .unwrap();
            assert_eq!(got, (0..40).collect::<Vec<_>>(), "{threads} threads");
            let ahead = most_ahead.load(Ordering::SeqCst);
            assert!(ahead < 2 * threads, "{threads} threads: {ahead} ahead");
            if threads > 1 {
                assert!(ahead > 0, "{threads} threads ran ahead of the fold");
            }
        }
    }

    /// Of several failures, the first in index order is returned, however
    /// the threads ran; a fold that fails stops the run too.
    #[test]
    fn the_first_failure_in_index_order_is_returned() {
        for threads in 1..=4 {
            let err = pool(threads).install(|| {
                fold_in_order(
                    30,
                    |i| {
                        std::thread::sleep(Duration::from_millis(((30 - i) % 3) as u64));
                        if i == 7 || i == 9 { Err(i) } else { Ok(i) }
                    },
                    |acc, next| {
                        *acc += next;
                        Ok(())
                    },
                )
            });
            assert_eq!(err, Err(7), "{threads} threads");
            let err = pool(threads).install(|| {
                fold_in_order(10, Ok::<usize, usize>, |_, next| {
                    if next == 4 { Err(100 + next) } else { Ok(()) }
                })
            });
            assert_eq!(err, Err(104), "{threads} threads");
        }
        assert_eq!(fold_in_order(0, Ok::<usize, u8>, |_, _| Ok(())), Ok(None));
    }

    /// An item that panics makes the call panic (on every thread count)
    /// instead of leaving the other threads waiting for it.
    #[test]
    fn a_panicking_item_ends_the_run_with_its_panic() {
        for threads in 1..=3 {
            let run = std::panic::catch_unwind(|| {
                pool(threads).install(|| {
                    fold_in_order(
                        40,
                        |i| {
                            if i == 0 {
                                std::thread::sleep(Duration::from_millis(20));
                                panic!("item 0");
                            }
                            Ok::<_, ()>(i)
                        },
                        |acc, next| {
                            *acc += next;
                            Ok(())
                        },
                    )
                })
            });
            assert!(run.is_err(), "{threads} threads");
        }
    }
}
