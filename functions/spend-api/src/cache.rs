//! What a warm instance remembers between requests. Both caches only save
//! round trips; neither can make an answer wrong.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokenbill::domain::service_key::{KeyHash, ServiceKey};
use tokenbill::domain::{Tokens, UserId};

/// Entries kept at most; a full cache starts over (cheaper than LRU
/// bookkeeping, and a miss costs one read).
const MAX_ENTRIES: usize = 10_000;

/// Service keys by hash, for `ttl`: a revoked key keeps working on a warm
/// instance until its entry lapses (the documented revocation delay).
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<KeyHash, (ServiceKey, Instant)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, hash: &KeyHash) -> Option<ServiceKey> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(key, _)| key.clone())
    }

    pub fn put(&self, key: ServiceKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key.hash.clone(), (key, Instant::now()));
    }
}

/// The available balance each user had after this instance's last write.
/// A spend pins its write to it, so the answer can say the exact balance
/// after; if another writer moved it meanwhile, the failed write hands back
/// the real one and the spend tries again with that.
#[derive(Debug, Default)]
pub struct BalanceCache(Mutex<HashMap<UserId, Tokens>>);

impl BalanceCache {
    pub fn get(&self, user: UserId) -> Option<Tokens> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&user).copied()
    }

    pub fn put(&self, user: UserId, available: Tokens) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(user, available);
    }

    pub fn forget(&self, user: UserId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&user);
    }
}
