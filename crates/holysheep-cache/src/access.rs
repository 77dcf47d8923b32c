//! [`CacheAccess`]: what a layer inside the cache may do with the cache's entries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use holysheep_core::signal::CacheOutcome;
use http::{HeaderValue, Response};

use crate::body::ResponseBody;
use crate::control::RequestControl;
use crate::convert::good_entry;
use crate::entry::Entry;
use crate::key::CacheKey;
use crate::service::{Ctx, STATUS_HIT, from_entry};
use crate::shared::Shared;

/// The cache's view of a request it forwards: a request extension that [`Cache`](crate::Cache)
/// puts on every request it sends to its inner service after a miss.
///
/// It lets a layer *inside* the cache (the semantic cache) answer from the cache's own entries
/// without a second store, key scheme or renderer: [`key`](Self::key) is where the answer to
/// this request will be stored, and [`answer_from`](Self::answer_from) serves this request from
/// the entry of another key, in the shape this request asks for (JSON or SSE), exactly as the
/// cache serves its own hits. The cache passes such an answer on untouched (it carries
/// [`CacheOutcome::Hit`]) and does not store it again under this request's key.
#[derive(Clone)]
pub struct CacheAccess {
    shared: Arc<Shared>,
    ctx: Ctx,
}

/// What [`CacheAccess::answer_from`] found.
#[derive(Debug)]
pub enum EntryLookup {
    /// The entry, rendered for this request: a hit.
    Hit(Response<ResponseBody>),
    /// The store has no entry under the key (expired or evicted).
    Missing,
    /// An entry that cannot answer this request: older than its `max-age`, undecodable, or not
    /// renderable in the shape asked for.
    Unusable,
    /// The store failed (logged by the cache, at most once every 10 s at warn).
    StoreFailed,
}

impl CacheAccess {
    pub(crate) fn new(shared: Arc<Shared>, ctx: Ctx) -> Self {
        Self { shared, ctx }
    }

    /// The key the answer to this request is stored under, if it ends well.
    pub fn key(&self) -> &CacheKey {
        &self.ctx.key
    }

    /// The upstream base URL the cache hashes into its keys.
    pub fn upstream(&self) -> &str {
        &self.shared.settings.upstream
    }

    /// The request's `Cache-Control` directives, as the cache read them.
    pub fn control(&self) -> RequestControl {
        self.ctx.control
    }

    /// How long the entry written for this request lives: the layer's TTL, lowered by the
    /// request's `max-age`. `None` when nothing is written.
    pub fn ttl(&self) -> Option<Duration> {
        self.ctx.control.ttl(self.shared.settings.ttl)
    }

    /// Answers this request from the entry stored under `key`, as a hit: `x-cache: HIT`,
    /// `Cache-Status: holysheep; hit; detail=<detail>` (`detail` must be a token, else the
    /// plain `holysheep; hit` is sent), `Age`, and [`CacheOutcome::Hit`] in the extensions.
    pub async fn answer_from(&self, key: &str, detail: &str) -> EntryLookup {
        let value = match self.shared.store.get(key).await {
            Ok(Some(value)) => value,
            Ok(None) => return EntryLookup::Missing,
            Err(error) => {
                self.shared.store_failed("get", &error);
                return EntryLookup::StoreFailed;
            }
        };
        let Some(entry) = Entry::decode(value) else {
            self.shared.invalid_entry(key, "not an entry");
            return EntryLookup::Unusable;
        };
        // The same check as the cache's own reads: a store others write to may hold anything.
        if self.shared.check_reads && !good_entry(self.ctx.endpoint, &entry) {
            self.shared.invalid_entry(key, "not a good answer");
            return EntryLookup::Unusable;
        }
        if !self.ctx.control.accepts_age(entry.age()) {
            return EntryLookup::Unusable;
        }
        let status = HeaderValue::from_str(&format!("holysheep; hit; detail={detail}"))
            .ok()
            .filter(|_| !detail.is_empty() && detail.bytes().all(is_token_byte))
            .unwrap_or(STATUS_HIT);
        match from_entry(&entry, &self.ctx, CacheOutcome::Hit, status) {
            Some(res) => EntryLookup::Hit(res),
            None => EntryLookup::Unusable,
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl fmt::Debug for CacheAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAccess")
            .field("key", &self.ctx.key)
            .finish_non_exhaustive()
    }
}
