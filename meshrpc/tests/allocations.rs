//! Heap allocations per `Calculator.Add` call at steady state, counted per thread by a
//! counting global allocator: the server and the client each run on their own
//! single-threaded runtime, so each side's count is exact and deterministic.

// A global allocator is an `unsafe impl`; the workspace denies unsafe code everywhere
// else. The impl only forwards to `System` and bumps a thread-local counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use meshrpc::demo::{Calc, CalculatorClient, CalculatorServer};
use meshrpc::{CallOptions, Client, Server};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

const CALLS: u64 = 20_000;
const CONCURRENCY: u64 = 8;

#[test]
fn calculator_add_allocates_at_most_four_times_per_call_on_each_side() {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Sender<u64>>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let server =
                Server::builder().add_service(CalculatorServer::new(Calc)).bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(server.local_addr()).unwrap();
            let handle = server.spawn();
            // Answer "how many allocations so far on the server thread?" until told to stop.
            while let Some(tx) = count_rx.recv().await {
                let _ = tx.send(allocs());
            }
            handle.abort();
        });
    });
    let addr = addr_rx.recv().unwrap();
    let server_allocs = |count_tx: &tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Sender<u64>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        count_tx.send(tx).unwrap();
        rx.recv().unwrap()
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client_per_call, server_per_call) = rt.block_on(async {
        let calc = CalculatorClient::new(Client::connect(addr).await.unwrap());
        let opts = CallOptions::new().timeout(Duration::from_secs(5));
        let run = |n: u64| {
            let calc = calc.clone();
            let opts = opts.clone();
            async move {
                let workers = (0..CONCURRENCY).map(|w| {
                    let (calc, opts) = (calc.clone(), opts.clone());
                    async move {
                        for i in 0..n / CONCURRENCY {
                            let (a, b) = (w as i64 * 1000 + i as i64, i as i64);
                            assert_eq!(calc.add_with(opts.clone(), a, b).await.unwrap(), a + b);
                        }
                    }
                });
                futures_util::future::join_all(workers).await;
            }
        };
        run(CALLS).await; // warm up: buffers, tables and pools reach their steady size
        let (c0, s0) = (allocs(), server_allocs(&count_tx));
        run(CALLS).await;
        let (c1, s1) = (allocs(), server_allocs(&count_tx));
        ((c1 - c0) as f64 / CALLS as f64, (s1 - s0) as f64 / CALLS as f64)
    });
    drop(count_tx);
    server.join().unwrap();
    println!(
        "heap allocations per Calculator.Add call: client {client_per_call:.2}, server {server_per_call:.2}"
    );
    assert!(server_per_call <= 4.0, "server: {server_per_call:.2} allocations per call");
    assert!(client_per_call <= 4.0, "client: {client_per_call:.2} allocations per call");
}
