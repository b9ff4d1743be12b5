//! Spans and traces with a subscriber that records `rpc.client` spans (set once for
//! this whole test binary: a scoped subscriber races other test threads over tracing's
//! per-callsite interest cache).

mod support;

use std::sync::Once;

use support::chain::{Seen, chain};

fn debug_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
}

#[tokio::test]
async fn a_subscriber_that_records_client_spans_starts_traces_itself() {
    debug_subscriber();
    let seen = std::sync::Arc::new(Seen::default());
    let (b, c, to_b) = chain(seen.clone()).await;
    to_b.call::<_, ()>("B.Middle", &()).await.unwrap();
    to_b.call::<_, ()>("B.Middle", &()).await.unwrap();
    let seen = seen.0.lock().unwrap().clone();
    let ids: Vec<u128> = seen.iter().map(|(_, t, _)| t.expect("a trace").trace_id).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], ids[1], "the first chain is one trace");
    assert_eq!(ids[2], ids[3], "so is the second");
    assert_ne!(ids[0], ids[2], "each root call starts its own trace");
    b.shutdown().await;
    c.shutdown().await;
}
