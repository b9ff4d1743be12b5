//! Encoding [`CallSnapshot`]s as Prometheus families through `prometheus-client`'s
//! encoder (no hand-written exposition format).

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::call_stats::{CallSnapshot, LATENCY_BUCKETS};
use crate::status::Code;

/// One method's row: its service, its full name, and its numbers.
pub(crate) struct MethodRow<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) stats: CallSnapshot,
}

/// The rows of `snaps` (full method names and their numbers); the `sentinel` row
/// (`<unknown>`, `<other>`) is its own service too.
pub(crate) fn rows<'a>(snaps: &'a [(String, CallSnapshot)], sentinel: &'a str) -> Vec<MethodRow<'a>> {
    snaps
        .iter()
        .map(|(m, s)| MethodRow {
            service: if m == sentinel { sentinel } else { super::service_of(m) },
            method: m,
            stats: s.clone(),
        })
        .collect()
}

/// Writes the call families of one side (`server` or `client`): calls by status, the
/// latency histogram, and calls in flight.
pub(crate) fn encode_calls(
    encoder: &mut DescriptorEncoder<'_>,
    side: &str,
    rows: &[MethodRow<'_>],
) -> Result<(), std::fmt::Error> {
    let who = if side == "server" { "served" } else { "made" };
    {
        let name = format!("{side}_calls");
        let help = format!("Calls {who}, by service, method and status code (gRPC names).");
        let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
        for r in rows {
            for code in Code::ALL {
                let n = r.stats.by_code[code as usize];
                // OK is always shown (so `increase()` sees the first call); other codes
                // once they happened.
                if n > 0 || code == Code::Ok {
                    let labels = [("service", r.service), ("method", r.method), ("code", code.as_str())];
                    family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
    }
    {
        let name = format!("{side}_call_duration_seconds");
        let help = format!("Latency of calls {who}, from request to reply, in seconds.");
        let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Histogram)?;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().map(|b| (*b, 0)).collect();
        buckets.push((f64::INFINITY, 0));
        for r in rows {
            for (out, n) in buckets.iter_mut().zip(r.stats.buckets) {
                out.1 = n;
            }
            let labels = [("service", r.service), ("method", r.method)];
            let sum = r.stats.sum_ns as f64 / 1e9;
            family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                sum,
                r.stats.observed(),
                &buckets,
                None,
            )?;
        }
    }
    {
        let name = format!("{side}_calls_in_flight");
        let help = format!("Calls {who} that have started and not finished.");
        let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Gauge)?;
        for r in rows {
            let labels = [("service", r.service), ("method", r.method)];
            ConstGauge::new(i64::try_from(r.stats.in_flight).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Writes one unlabelled gauge.
pub(crate) fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Writes one unlabelled counter.
pub(crate) fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// Writes the byte counters of one side (`server` or `client`), counted per socket
/// read and write.
pub(crate) fn encode_bytes(
    encoder: &mut DescriptorEncoder<'_>,
    side: &str,
    received: u64,
    sent: u64,
) -> Result<(), std::fmt::Error> {
    let help = "Bytes read from connections (frames of every kind).";
    encode_counter(encoder, &format!("{side}_received_bytes"), help, received)?;
    let help = "Bytes written to connections (frames of every kind).";
    encode_counter(encoder, &format!("{side}_sent_bytes"), help, sent)
}
