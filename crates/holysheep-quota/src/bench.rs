//! Not part of the API: lets the crate's benches time the check alone (`benches/quota.rs`,
//! `quota/check_*`), apart from the rest of what the layer does for a request.

use std::sync::Arc;

use holysheep_core::signal::Namespace;

use crate::decision::Check;
use crate::estimate;
use crate::layer::QuotaLayer;
use crate::service::Shared;

/// The decision of a [`QuotaLayer`] on one request, without a request: the tenant's limits
/// looked up in the policy, its tokens estimated from the body, the backend's check (which
/// charges a request that passes, as the layer's does).
#[derive(Debug)]
pub struct Checker {
    shared: Arc<Shared>,
}

impl Checker {
    /// The checker of `layer`'s policy and backend.
    pub fn new(layer: &QuotaLayer) -> Self {
        Self {
            shared: layer.shared(),
        }
    }

    /// Whether a request of `tenant` with this body passes (and is charged). A tenant without
    /// limits passes without a check.
    pub async fn check(&self, tenant: &Namespace, body: &[u8]) -> bool {
        let policy = self.shared.policy();
        let limits = policy.lookup(Some(tenant.as_str())).limits;
        if limits.is_unlimited() {
            return true;
        }
        let check = Check {
            tokens: match limits.tokens_per_minute {
                Some(_) => estimate::reserve(body, self.shared.completion_reserve),
                None => 0,
            },
            now_ms: self.shared.clock.now_ms(),
            may_cost: !body.is_empty(),
        };
        self.shared
            .backend
            .check(&tenant.0, &limits, check)
            .await
            .allowed()
    }
}

/// The tokens the layer reserves for a request with this body, with the default completion
/// reserve (the estimate is part of [`Checker::check`]).
pub fn estimate(body: &[u8]) -> u64 {
    estimate::reserve(body, QuotaLayer::DEFAULT_COMPLETION_RESERVE)
}
