//! Resilience: the retry budget behind a client's retries and hedges. Retries themselves
//! live in the client's call path (which knows whether a call is safe to send again);
//! ejection of failing instances lives with the balancer (`crate::balance`).

mod budget;

pub use budget::RetryBudget;
pub(crate) use budget::SAME_INSTANCE_BACKOFF;
