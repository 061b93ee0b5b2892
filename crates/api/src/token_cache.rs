//! The cache of validated Keystone tokens: each entry lives until the token
//! expires or the TTL cap passes, and concurrent lookups of one uncached token
//! share one validation (single-flight). Knows no HTTP and no Keystone: it
//! caches whatever outcome the validation it is handed produces.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

/// What a validation concluded, cached until `until`. An outcome that
/// reports no expiry is kept for the TTL cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated<V> {
    pub outcome: V,
    /// When the token itself stops being valid (`None`: unknown).
    pub expires: Option<Instant>,
}

type Flight<V, E> = Shared<BoxFuture<'static, Result<Validated<V>, E>>>;

enum Slot<V, E> {
    /// A validation in flight; every caller of this token awaits the same one.
    Pending(Flight<V, E>),
    Done {
        outcome: V,
        until: Instant,
    },
}

pub struct TokenCache<V, E> {
    slots: Mutex<HashMap<String, Slot<V, E>>>,
    capacity: usize,
    ttl: Duration,
}

impl<V, E> TokenCache<V, E>
where
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// At most `capacity` tokens, each kept at most `ttl`: the cap bounds how
    /// long a token revoked in Keystone still works here.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TokenCache {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The cached outcome for `token`, or the outcome of `validate` (run at
    /// most once at a time per token). Errors are shared by the callers that
    /// waited on them but not cached: the next caller asks again.
    pub async fn get<F, Fut>(&self, token: &str, validate: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Validated<V>, E>> + Send + 'static,
    {
        let flight = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.get(token) {
                Some(Slot::Done { outcome, until }) if Instant::now() < *until => {
                    return Ok(outcome.clone());
                }
                Some(Slot::Pending(flight)) => flight.clone(),
                _ => {
                    let flight = validate().boxed().shared();
                    self.make_room(&mut slots);
                    slots.insert(token.to_owned(), Slot::Pending(flight.clone()));
                    flight
                }
            }
        };
        let result = flight.clone().await;
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // The first waiter to finish records the result; later ones find the
        // slot already replaced (or replaced by a newer flight) and leave it.
        let ours =
            matches!(slots.get(token), Some(Slot::Pending(current)) if current.ptr_eq(&flight));
        if ours {
            let now = Instant::now();
            let until = result.as_ref().ok().map(|v| {
                let cap = now + self.ttl;
                v.expires.map_or(cap, |e| e.min(cap))
            });
            match (&result, until) {
                (Ok(v), Some(until)) if until > now => {
                    let outcome = v.outcome.clone();
                    slots.insert(token.to_owned(), Slot::Done { outcome, until });
                }
                // An error, or a token already expired: ask again next time.
                _ => {
                    slots.remove(token);
                }
            }
        }
        result.map(|v| v.outcome)
    }

    /// Keep the map under `capacity`: drop expired entries first, then, if
    /// still full, arbitrary finished ones down to three quarters, so the
    /// O(n) sweep runs once per n/4 inserts at worst. Flights in progress stay.
    fn make_room(&self, slots: &mut HashMap<String, Slot<V, E>>) {
        if slots.len() < self.capacity {
            return;
        }
        let now = Instant::now();
        slots.retain(|_, s| !matches!(s, Slot::Done { until, .. } if *until <= now));
        let target = self.capacity * 3 / 4;
        if slots.len() > target {
            let mut excess = slots.len() - target;
            slots.retain(|_, s| {
                if excess > 0 && matches!(s, Slot::Done { .. }) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    //! These run on a fake validation (a closure that counts its calls):
    //! the real Keystone cannot make a validation slow on purpose (needed to
    //! make calls overlap), nor let a test step over a token's expiry
    //! without waiting for it in real time.
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Cache = TokenCache<String, String>;

    async fn counted(
        calls: Arc<AtomicUsize>,
        result: Result<Validated<String>, String>,
        delay: Duration,
    ) -> Result<Validated<String>, String> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        result
    }

    fn valid(who: &str, expires: Option<Instant>) -> Result<Validated<String>, String> {
        Ok(Validated {
            outcome: who.to_owned(),
            expires,
        })
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_token_validate_once() {
        let cache = Arc::new(Cache::new(100, Duration::from_secs(300)));
        let calls = Arc::new(AtomicUsize::new(0));
        let lookups = (0..50).map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get("tok", || {
                        counted(
                            calls.clone(),
                            valid("alice", None),
                            Duration::from_millis(50),
                        )
                    })
                    .await
            })
        });
        for r in futures::future::join_all(lookups).await {
            assert_eq!(r.expect("task"), Ok("alice".to_owned()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // And the result is cached for the next caller.
        let again = cache
            .get("tok", || {
                counted(calls.clone(), valid("bob", None), Duration::ZERO)
            })
            .await;
        assert_eq!(again, Ok("alice".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_entry_lives_until_the_token_expires_or_the_cap() {
        let calls = Arc::new(AtomicUsize::new(0));
        // The token expires before the cap: the token's expiry wins.
        let cache = Cache::new(100, Duration::from_secs(300));
        let soon = Instant::now() + Duration::from_millis(40);
        let lookup = |who: &'static str, exp| {
            let calls = calls.clone();
            move || counted(calls.clone(), valid(who, exp), Duration::ZERO)
        };
        assert_eq!(
            cache.get("t", lookup("a", Some(soon))).await,
            Ok("a".into())
        );
        assert_eq!(
            cache.get("t", lookup("b", Some(soon))).await,
            Ok("a".into())
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get("t", lookup("c", None)).await, Ok("c".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // The cap is shorter than the token's life: the cap wins.
        let capped = Cache::new(100, Duration::from_millis(40));
        let later = Some(Instant::now() + Duration::from_secs(3600));
        assert_eq!(capped.get("t", lookup("a", later)).await, Ok("a".into()));
        assert_eq!(capped.get("t", lookup("b", later)).await, Ok("a".into()));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(capped.get("t", lookup("c", later)).await, Ok("c".into()));
    }

    #[tokio::test]
    async fn an_already_expired_outcome_is_not_cached() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(100, Duration::from_secs(300));
        let past = Some(Instant::now());
        for _ in 0..3 {
            let r = cache
                .get("t", || {
                    counted(calls.clone(), valid("a", past), Duration::ZERO)
                })
                .await;
            assert_eq!(r, Ok("a".into()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn errors_are_shared_by_waiters_but_not_cached() {
        let cache = Arc::new(Cache::new(100, Duration::from_secs(300)));
        let calls = Arc::new(AtomicUsize::new(0));
        let lookups = (0..10).map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get("t", || {
                        counted(calls.clone(), Err("down".into()), Duration::from_millis(30))
                    })
                    .await
            })
        });
        for r in futures::future::join_all(lookups).await {
            assert_eq!(r.expect("task"), Err("down".to_owned()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let r = cache
            .get("t", || {
                counted(calls.clone(), valid("a", None), Duration::ZERO)
            })
            .await;
        assert_eq!(r, Ok("a".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(100, Duration::from_secs(300));
        for i in 0..1000 {
            let token = format!("t{i}");
            let r = cache
                .get(&token, || {
                    counted(calls.clone(), valid("a", None), Duration::ZERO)
                })
                .await;
            assert_eq!(r, Ok("a".into()));
            assert!(cache.len() <= 100, "{} entries", cache.len());
        }
    }

    #[tokio::test]
    async fn a_cancelled_first_caller_does_not_strand_the_others() {
        let cache = Arc::new(Cache::new(100, Duration::from_secs(300)));
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get("t", || {
                        counted(calls.clone(), valid("a", None), Duration::from_millis(50))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let r = cache
            .get("t", || {
                counted(calls.clone(), valid("b", None), Duration::ZERO)
            })
            .await;
        // The second caller drives the first caller's flight to its end.
        assert_eq!(r, Ok("a".into()));
    }
}
