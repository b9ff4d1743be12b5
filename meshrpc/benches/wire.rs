//! Microbenchmarks: frame encode/decode and each payload codec, on the two workloads of
//! the peer harness (Calculator.Add's two i64, and a 1 KiB echo).
//! Run: `cargo bench -p meshrpc --bench wire`

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshrpc::wire::{self, Frame, Metadata};
use meshrpc::{Blob, Codec};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Serialize, Deserialize)]
struct EchoArgs {
    data: Blob,
}

fn request_bytes(payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    let head = wire::encode_request_head(
        &mut buf,
        42,
        0,
        Codec::MessagePack.id(),
        Some(Duration::from_secs(5)),
        b"Calculator.Add",
        &Metadata::new(),
    );
    buf.extend_from_slice(payload);
    head.finish(&mut buf, u32::MAX).unwrap();
    buf
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let args = rmp_serde::to_vec_named(&AddArgs { a: 10, b: 5 }).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_request_add", |b| {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            buf.clear();
            let head = wire::encode_request_head(
                &mut buf,
                black_box(42),
                0,
                Codec::MessagePack.id(),
                Some(Duration::from_secs(5)),
                b"Calculator.Add",
                &Metadata::new(),
            );
            buf.extend_from_slice(&args);
            head.finish(&mut buf, u32::MAX).unwrap();
            black_box(buf.len())
        })
    });
    let encoded = request_bytes(&args).freeze();
    g.bench_function("decode_request_add", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            black_box(wire::decode(&mut buf, wire::DEFAULT_MAX_FRAME_SIZE).unwrap())
        })
    });
    let body = encoded.slice(wire::LENGTH_PREFIX..);
    g.bench_function("decode_request_body_zero_copy", |b| {
        b.iter(|| black_box(wire::decode_frame(black_box(body.clone())).unwrap()))
    });
    // A read buffer holding 64 requests, decoded one after another (the reader's loop).
    let mut batch = BytesMut::new();
    for _ in 0..64 {
        batch.extend_from_slice(&encoded);
    }
    let batch = batch.freeze();
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_batch_of_64", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&batch[..]);
            let mut n = 0;
            while let Some(Frame::Request(r)) = wire::decode(&mut buf, wire::DEFAULT_MAX_FRAME_SIZE).unwrap()
            {
                n += r.payload.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let add = AddArgs { a: 1_000_003, b: -77 };
    let echo = EchoArgs { data: Blob(Bytes::from(vec![7u8; 1024])) };
    for codec in [Codec::MessagePack, Codec::Json, Codec::Binary] {
        let mut g = c.benchmark_group(format!("codec/{}", codec.name()));
        g.throughput(Throughput::Elements(1));
        let mut out = BytesMut::with_capacity(4096);
        g.bench_function("encode_add", |b| {
            b.iter(|| {
                out.clear();
                codec.encode(black_box(&add), &mut out).unwrap();
                black_box(out.len())
            })
        });
        out.clear();
        codec.encode(&add, &mut out).unwrap();
        let add_bytes = out.clone().freeze();
        g.bench_function("decode_add", |b| {
            b.iter(|| black_box(codec.decode::<AddArgs>(&add_bytes).unwrap().a))
        });
        g.throughput(Throughput::Bytes(1024));
        g.bench_function("encode_echo1k", |b| {
            b.iter(|| {
                out.clear();
                codec.encode(black_box(&echo), &mut out).unwrap();
                black_box(out.len())
            })
        });
        out.clear();
        codec.encode(&echo, &mut out).unwrap();
        let echo_bytes = out.clone().freeze();
        g.bench_function("decode_echo1k", |b| {
            b.iter(|| black_box(codec.decode::<EchoArgs>(&echo_bytes).unwrap().data.len()))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = frames, codecs
}
criterion_main!(benches);
