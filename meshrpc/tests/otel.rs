//! The `otel` feature: call spans exported through OpenTelemetry (the SDK's in-memory
//! exporter) form one trace across A → B → C, with each hop's parent link.

mod support;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::chain::{Seen, chain};
use tracing_subscriber::layer::SubscriberExt as _;

fn find<'a>(spans: &'a [SpanData], kind: SpanKind, name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.span_kind == kind && s.name == name).collect();
    assert_eq!(found.len(), 1, "one {kind:?} span named {name}: {spans:#?}");
    found[0]
}

#[tokio::test]
async fn spans_of_a_b_c_share_one_trace_with_parent_links() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("meshrpc-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only global subscriber of this test binary");

    let seen = Arc::new(Seen::default());
    let (b, c, to_b) = chain(seen.clone()).await;
    to_b.call::<_, ()>("B.Middle", &()).await.expect("the chain answers");
    // Server spans end when their call's state is dropped, just after the reply.
    let mut spans = Vec::new();
    for _ in 0..100 {
        provider.force_flush().expect("flush");
        spans = exporter.get_finished_spans().expect("the exporter's spans");
        if spans.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_client = find(&spans, SpanKind::Client, "B.Middle");
    let b_server = find(&spans, SpanKind::Server, "B.Middle");
    let b_client = find(&spans, SpanKind::Client, "C.Leaf");
    let c_server = find(&spans, SpanKind::Server, "C.Leaf");
    let trace = a_client.span_context.trace_id();
    for s in [b_server, b_client, c_server] {
        assert_eq!(s.span_context.trace_id(), trace, "{} is in A's trace", s.name);
    }
    assert_eq!(
        b_server.parent_span_id,
        a_client.span_context.span_id(),
        "B's server span is A's call's child"
    );
    assert_eq!(b_client.parent_span_id, b_server.span_context.span_id(), "B's call runs in B's server span");
    assert_eq!(
        c_server.parent_span_id,
        b_client.span_context.span_id(),
        "C's server span is B's call's child"
    );
    // What the handlers saw on the wire agrees with what was exported.
    let seen = seen.0.lock().unwrap().clone();
    let trace_hex = format!("{trace}");
    for (who, ctx, _) in &seen {
        assert_eq!(ctx.map(|t| t.trace_id_hex()), Some(trace_hex.clone()), "{who}");
    }
    b.shutdown().await;
    c.shutdown().await;
}
