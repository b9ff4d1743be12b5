//! Fan-out and balancing costs: `fanout::all` over 1, 10 and 100 RPC calls against the
//! same calls made one by one, the combinator alone over ready futures, and one pick of
//! each balancing strategy over 10 instances.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use meshrpc::balance::{Picker, Strategy};
use meshrpc::discovery::Instance;
use meshrpc::{Client, Server, Status, fanout};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn rpc_fanout(c: &mut Criterion) {
    let rt = runtime();
    let (server, client) = rt.block_on(async {
        let mut b = Server::builder();
        for s in meshrpc::demo::services("bench") {
            b = b.add_service(s);
        }
        let server = b.bind("127.0.0.1:0").await.expect("bind").spawn();
        let client = Client::connect(server.local_addr()).await.expect("connect");
        (server, client)
    });
    let calc = meshrpc::demo::CalculatorClient::new(client);
    let mut g = c.benchmark_group("rpc_fanout");
    g.measurement_time(Duration::from_secs(3));
    for n in [1usize, 10, 100] {
        g.bench_with_input(BenchmarkId::new("fanout_all", n), &n, |b, &n| {
            b.iter(|| {
                rt.block_on(async {
                    let calls = (0..n as i64).map(|i| calc.add(i, 1));
                    let r = fanout::all(calls).deadline(Duration::from_secs(5)).await;
                    assert!(r.iter().all(Result::is_ok));
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("one_by_one", n), &n, |b, &n| {
            b.iter(|| {
                rt.block_on(async {
                    for i in 0..n as i64 {
                        black_box(calc.add(i, 1).await.expect("a reply"));
                    }
                })
            })
        });
    }
    g.finish();
    rt.block_on(server.shutdown());
}

fn combinator_alone(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut g = c.benchmark_group("fanout_combinator");
    for n in [1usize, 10, 100] {
        g.bench_with_input(BenchmarkId::new("all_ready", n), &n, |b, &n| {
            b.iter(|| {
                rt.block_on(async {
                    let futs = (0..n).map(|i| std::future::ready(Ok::<usize, Status>(i)));
                    black_box(fanout::all(futs).run().await)
                })
            })
        });
    }
    g.finish();
}

fn balancer_pick(c: &mut Criterion) {
    let instances: Vec<Instance> = (0..10)
        .map(|i| {
            Instance::new("Calculator", format!("calc-{i}"), format!("127.0.0.1:{}", 7000 + i))
                .with_meta("weight", (1 + i % 3).to_string())
        })
        .collect();
    let mut g = c.benchmark_group("balancer_pick_10_instances");
    for (name, strategy) in [
        ("round_robin", Strategy::RoundRobin),
        ("weighted_round_robin", Strategy::WeightedRoundRobin),
        ("random", Strategy::Random),
        ("p2c_ewma", Strategy::P2cEwma),
        ("consistent_hash", Strategy::ConsistentHash),
    ] {
        let picker = Picker::for_instances(strategy, instances.clone());
        let mut k = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                let key = k.to_le_bytes();
                black_box(picker.pick_instance(Some(&key)).map(|i| i.id.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, rpc_fanout, combinator_alone, balancer_pick);
criterion_main!(benches);
