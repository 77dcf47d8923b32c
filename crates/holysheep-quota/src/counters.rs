//! A tenant's metric handles, resolved once (at its first request under a policy) instead of a
//! label set built for every request.

use std::fmt;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, SharedString, counter};

use crate::names;

/// The counters of one tenant label, each registered with the recorder the first time it
/// counts (as the `counter!` of each request did before), then only incremented.
///
/// Handles belong to the recorder in place when they were resolved: install the recorder
/// before the first request (the gateway does), as for `MetricsLayer`.
pub(crate) struct TenantCounters {
    label: SharedString,
    allowed: OnceLock<Counter>,
    tokens: OnceLock<Counter>,
    cost: OnceLock<Counter>,
}

impl TenantCounters {
    pub(crate) fn new(label: SharedString) -> Arc<Self> {
        Arc::new(Self {
            label,
            allowed: OnceLock::new(),
            tokens: OnceLock::new(),
            cost: OnceLock::new(),
        })
    }

    /// The `tenant` label: a listed tenant's name, or `other`.
    pub(crate) fn label(&self) -> &SharedString {
        &self.label
    }

    /// Requests allowed.
    pub(crate) fn allowed(&self) -> &Counter {
        self.allowed.get_or_init(
            || counter!(names::REQUESTS, "tenant" => self.label.clone(), "result" => "allowed"),
        )
    }

    /// Tokens charged.
    pub(crate) fn tokens(&self) -> &Counter {
        self.tokens
            .get_or_init(|| counter!(names::TOKENS, "tenant" => self.label.clone()))
    }

    /// Dollars charged, in micro-USD.
    pub(crate) fn cost(&self) -> &Counter {
        self.cost
            .get_or_init(|| counter!(names::COST, "tenant" => self.label.clone()))
    }
}

impl fmt::Debug for TenantCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCounters")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}
