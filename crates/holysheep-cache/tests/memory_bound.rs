//! The memory tier's bound is the heap it holds: the bookkeeping it counts per entry covers what
//! moka and the store really keep per entry, measured by a counting global allocator.
//!
//! A test binary of its own, so the counting allocator sees only this test's allocations.

use std::alloc::System;
use std::time::Duration;

use bytes::Bytes;
use holysheep_cache::{CacheStore, MemoryStore};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::test(flavor = "current_thread")]
async fn the_heap_held_by_entries_stays_within_what_is_weighed() {
    // Entries the size of a small cached answer, and tiny ones, where the bookkeeping dominates.
    for value_len in [600, 8] {
        let store = MemoryStore::new(1 << 34);
        let entries = 20_000u64;
        let region = Region::new(GLOBAL);
        for i in 0..entries {
            let key = format!("holysheep:v1:tenant:{i:064x}");
            let value = Bytes::from(vec![b'x'; value_len]);
            store
                .put(&key, value, Duration::from_secs(3600))
                .await
                .unwrap();
        }
        store.run_pending_tasks().await;
        let change = region.change();
        let held = change
            .bytes_allocated
            .saturating_sub(change.bytes_deallocated) as u64;
        let weighed = store.weighted_size();
        assert_eq!(store.entry_count(), entries);
        assert!(
            held <= weighed,
            "{value_len}-byte values: {held} bytes held, {weighed} weighed ({} per entry unweighed)",
            (held as i64 - weighed as i64) / entries as i64
        );
        // And not far over-counted either: the bound is not a much smaller cache in disguise.
        assert!(
            held * 10 >= weighed * 8,
            "{value_len}-byte values: {held} bytes held, {weighed} weighed"
        );
        drop(store);
    }
}
