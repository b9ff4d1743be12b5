//! Background traffic for `meshrpc demo --listen`: a gentle, varying stream of demo
//! calls (a few percent of them failing on purpose), so the dashboard and `/metrics`
//! show something alive from the first seconds.

use std::f64::consts::TAU;
use std::time::Duration;

use meshrpc::demo::{CalculatorClient, CounterClient, GreeterClient};
use meshrpc::{CallOptions, Client, Codec};
use tokio::time::Instant;

/// The rate swings between 40 % and 160 % of the asked mean over this period.
const PERIOD: Duration = Duration::from_secs(20);

/// Sends about `rate` calls per second through `client` until the task is dropped.
pub(crate) async fn run(client: Client, rate: f64) {
    let start = Instant::now();
    let opts = CallOptions::new().timeout(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        let phase = start.elapsed().as_secs_f64() / PERIOD.as_secs_f64() * TAU;
        let now_rate = (rate * (1.0 + 0.6 * phase.sin())).max(0.1);
        tokio::time::sleep(Duration::from_secs_f64(1.0 / now_rate)).await;
        n += 1;
        let client = client.clone();
        let opts = opts.clone();
        // Each call on its own task: a slow replica does not slow the stream down.
        tokio::spawn(async move {
            let a = (n % 1000) as i64;
            let _ = match n % 50 {
                // About 2 %: arguments the method cannot decode (INVALID_ARGUMENT).
                0 => client.call_raw("Calculator.Add", Codec::Json, br#"{"a":"x"}"#, &opts).await.map(drop),
                1..=9 => GreeterClient::new(client).hello_with(opts, "dashboard".to_string()).await.map(drop),
                10..=14 => CounterClient::new(client).inc_with(opts).await.map(drop),
                _ => CalculatorClient::new(client).add_with(opts, a, 1).await.map(drop),
            };
        });
    }
}
