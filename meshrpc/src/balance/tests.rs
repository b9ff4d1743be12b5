//! Balancer behaviour, deterministic: picks are counted directly, and latencies are
//! simulated under tokio's paused clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Balanced, Endpoint, Picker, Strategy};
use crate::client::ClientConfig;
use crate::discovery::{Instance, MemoryRegistry};

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let inst = Instance::new("Calculator", format!("calc-{i}"), format!("127.0.0.1:{}", 7000 + i));
            Arc::new(Endpoint::new(inst, &ClientConfig::default()))
        })
        .collect()
}

fn owners(p: &Picker, keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| {
            let i = p.pick(Some(format!("user-{k}").as_bytes()), &[], Instant::now()).unwrap();
            p.endpoints[i].instance.id.clone()
        })
        .collect()
}

#[tokio::test]
async fn consistent_hashing_is_balanced_and_moves_about_one_nth_of_keys_when_one_is_added() {
    const KEYS: usize = 20_000;
    for n in [3usize, 5, 8] {
        let eps = endpoints(n + 1);
        let before = Picker::new(Strategy::ConsistentHash, eps[..n].to_vec());
        let after = Picker::new(Strategy::ConsistentHash, eps.clone());
        let (a, b) = (owners(&before, KEYS), owners(&after, KEYS));
        let mut per: HashMap<&str, usize> = HashMap::new();
        for o in &a {
            *per.entry(o).or_default() += 1;
        }
        let (max, min) = (*per.values().max().unwrap(), *per.values().min().unwrap());
        assert_eq!(per.len(), n);
        assert!(max as f64 / min as f64 <= 1.3, "n={n}: max/min keys per instance {max}/{min}");
        let moved: Vec<usize> = (0..KEYS).filter(|&k| a[k] != b[k]).collect();
        let share = moved.len() as f64 / KEYS as f64;
        let ideal = 1.0 / (n + 1) as f64;
        assert!((share - ideal).abs() < ideal * 0.3, "n={n}: {share:.3} of keys moved, ideal {ideal:.3}");
        let newcomer = &eps[n].instance.id;
        assert!(moved.iter().all(|&k| &b[k] == newcomer), "keys only move to the new instance");
    }
}

#[tokio::test]
async fn round_robin_and_weighted_round_robin_spread_as_configured() {
    let rr = Picker::new(Strategy::RoundRobin, endpoints(3));
    let picks: Vec<usize> = (0..6).map(|_| rr.pick(None, &[], Instant::now()).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    let eps: Vec<Arc<Endpoint>> = [5u32, 1, 1]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let inst = Instance::new("S", format!("s{i}"), format!("127.0.0.1:{}", 7100 + i))
                .with_meta("weight", w.to_string());
            Arc::new(Endpoint::new(inst, &ClientConfig::default()))
        })
        .collect();
    let wrr = Picker::new(Strategy::WeightedRoundRobin, eps);
    let picks: Vec<usize> = (0..7).map(|_| wrr.pick(None, &[], Instant::now()).unwrap()).collect();
    let count = |x| picks.iter().filter(|&&p| p == x).count();
    assert_eq!((count(0), count(1), count(2)), (5, 1, 1));
    assert!(
        picks.windows(2).filter(|w| w[0] == 0 && w[1] == 0).count() < 4,
        "smooth, not a burst: {picks:?}"
    );
}

#[tokio::test]
async fn picks_skip_ejected_retired_and_tried_instances() {
    let eps = endpoints(3);
    let p = Picker::new(Strategy::RoundRobin, eps.clone());
    let now = Instant::now();
    eps[0].eject(now);
    for _ in 0..10 {
        assert!(!eps[0].failed(now), "failures while ejected do not eject it again");
    }
    eps[1].retired.store(true, Ordering::Relaxed);
    for _ in 0..5 {
        assert_eq!(p.pick(None, &[], now), Some(2));
    }
    // Only the ejected one is left once 2 was tried: ejection is relaxed, retirement never.
    assert_eq!(p.pick(None, &[eps[2].clone()], now), Some(0));
    assert_eq!(Picker::new(Strategy::P2cEwma, Vec::new()).pick(None, &[], now), None);
}

/// A closed loop of `c` simulated callers over instances whose answers take the given
/// times; returns how many calls each instance got.
async fn simulate(strategy: Strategy, latencies: &[Duration], c: usize, total: usize) -> Vec<usize> {
    let eps: Vec<Arc<Endpoint>> = endpoints(latencies.len());
    let picker = Arc::new(Picker::new(strategy, eps.clone()));
    let counts: Arc<Vec<std::sync::atomic::AtomicUsize>> =
        Arc::new((0..eps.len()).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect());
    let per_caller = total / c;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (picker, counts, lat) = (picker.clone(), counts.clone(), latencies.to_vec());
        tasks.spawn(async move {
            for _ in 0..per_caller {
                let i = picker.pick(None, &[], Instant::now()).unwrap();
                let e = &picker.endpoints[i];
                counts[i].fetch_add(1, Ordering::Relaxed);
                e.in_flight.fetch_add(1, Ordering::AcqRel);
                let t0 = Instant::now();
                tokio::time::sleep(lat[i]).await;
                e.in_flight.fetch_sub(1, Ordering::AcqRel);
                e.observe(t0.elapsed(), Instant::now(), &Ok(()));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

#[tokio::test(start_paused = true)]
async fn p2c_sends_a_ten_times_slower_instance_well_under_its_fair_share() {
    let fast = Duration::from_millis(1);
    let lat = [fast, fast, fast, fast * 10];
    let counts = simulate(Strategy::P2cEwma, &lat, 32, 20_000).await;
    let total: usize = counts.iter().sum();
    let fair = total as f64 / lat.len() as f64;
    let slow_share = counts[3] as f64 / fair;
    assert!(slow_share < 1.0 / 3.0, "the slow instance got {slow_share:.2} of its fair share: {counts:?}");
    assert!(counts[3] > 0, "it still gets some calls (its estimate must be refreshed)");
    // Round robin, by contrast, gives it exactly its share: the test can tell them apart.
    let rr = simulate(Strategy::RoundRobin, &lat, 32, 20_000).await;
    assert!((rr[3] as f64 / fair - 1.0).abs() < 0.05, "{rr:?}");
}

#[tokio::test]
async fn no_more_than_half_of_the_instances_are_ejected_even_when_all_fail() {
    let reg = MemoryRegistry::new();
    for i in 0..5 {
        let inst = Instance::new("Calculator", format!("c{i}"), format!("127.0.0.1:{}", 7200 + i));
        reg.register_now(&inst, Duration::from_secs(30)).unwrap();
    }
    let b = Balanced::start(
        "Calculator",
        Arc::new(reg),
        Strategy::RoundRobin,
        Default::default(),
        ClientConfig::default(),
    );
    let until = Instant::now() + Duration::from_secs(5);
    while b.picker().endpoints.len() < 5 {
        assert!(Instant::now() < until, "the instance set never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let picker = b.picker();
    let now = Instant::now();
    for _ in 0..20 {
        for i in 0..5 {
            b.failed(&picker, i, now);
        }
    }
    let ejected = picker.endpoints.iter().filter(|e| e.is_ejected(now)).count();
    assert_eq!(ejected, 2, "5 instances: at most 2 ejected at once");
    // Failures of calls still in flight while ejected do not extend the ejection: it
    // ends after its first back-off, and the instance is probed again.
    for _ in 0..50 {
        b.failed(&picker, 0, now + Duration::from_millis(10));
    }
    let later = now + super::endpoint::BASE_EJECTION + Duration::from_millis(1);
    assert_eq!(picker.endpoints.iter().filter(|e| e.is_ejected(later)).count(), 0);
}
