//! `#[meshrpc::service]`: typed clients and servers, wire names, idempotency, codecs.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};

use meshrpc::{Blob, CallOptions, Client, Code, Codec, Context, Server, Status};
use support::{assert_no_stray_panics, watch_panics};

/// A calculator.
#[meshrpc::service]
trait Calculator {
    /// Adds two numbers.
    #[meshrpc(idempotent)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status>;

    /// Divides, failing on zero.
    async fn checked_div(&self, a: i64, b: i64) -> meshrpc::Result<i64>;

    /// Reports what the handler saw of its call.
    async fn whoami(&self) -> Result<(bool, String), Status>;

    /// Sums a list and echoes bytes, to exercise compound arguments.
    async fn summarize(
        &self,
        values: Vec<i64>,
        tag: Option<String>,
        blob: Blob,
    ) -> Result<(i64, String, Blob), Status>;
}

#[derive(Default)]
struct Calc {
    calls: AtomicI64,
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(a + b)
    }

    async fn checked_div(&self, a: i64, b: i64) -> meshrpc::Result<i64> {
        a.checked_div(b).ok_or_else(|| Status::invalid_argument("division by zero"))
    }

    async fn whoami(&self) -> Result<(bool, String), Status> {
        let ctx = Context::current().ok_or_else(|| Status::internal("no call context"))?;
        Ok((ctx.is_idempotent(), ctx.method().to_string()))
    }

    async fn summarize(
        &self,
        values: Vec<i64>,
        tag: Option<String>,
        blob: Blob,
    ) -> Result<(i64, String, Blob), Status> {
        Ok((values.iter().sum(), tag.unwrap_or_default(), blob))
    }
}

async fn serve() -> meshrpc::ServerHandle {
    watch_panics();
    Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
}

#[tokio::test]
async fn typed_calls_round_trip_in_every_codec() {
    let server = serve().await;
    for codec in [Codec::MessagePack, Codec::Json, Codec::Binary] {
        let client = Client::builder().codec(codec).connect(server.local_addr()).await.unwrap();
        let calc = CalculatorClient::new(client);
        assert_eq!(calc.add(10, 5).await.unwrap(), 15, "{codec:?}");
        let err = calc.checked_div(1, 0).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "division by zero"));
        let (sum, tag, blob) =
            calc.summarize(vec![1, 2, 3], Some("t".into()), Blob::from(&b"\x00\xff"[..])).await.unwrap();
        assert_eq!((sum, tag.as_str(), &blob[..]), (6, "t", &b"\x00\xff"[..]), "{codec:?}");
    }
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn wire_names_are_pascal_case_and_arguments_are_named() {
    let server = serve().await;
    assert_eq!(CalculatorClient::SERVICE_NAME, "Calculator");
    let client = Client::connect(server.local_addr()).await.unwrap();
    let raw = client
        .call_raw("Calculator.Add", Codec::Json, br#"{"a":10,"b":5}"#, &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&raw[..], b"15");
    let raw = client
        .call_raw("Calculator.CheckedDiv", Codec::Json, br#"{"b":4,"a":12}"#, &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&raw[..], b"3", "arguments are matched by name, not position");
    let raw = client.call_raw("Calculator.Whoami", Codec::Json, b"{}", &CallOptions::new()).await.unwrap();
    assert_eq!(&raw[..], br#"[false,"Calculator.Whoami"]"#);
    let err = client.call_raw("Calculator.add", Codec::Json, b"{}", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the wire name is PascalCase");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn idempotent_methods_mark_their_calls() {
    let server = serve().await;
    let calc = CalculatorClient::connect(server.local_addr()).await.unwrap();
    // `whoami` is not idempotent; `whoami_with` lets the caller mark a call by hand.
    assert!(!calc.whoami().await.unwrap().0);
    let marked = calc.whoami_with(CallOptions::new().idempotent(true)).await.unwrap();
    assert!(marked.0, "the flag travels to the server");
    // `add` is declared idempotent in the trait: the generated client sets the flag.
    let options = CallOptions::new().timeout(std::time::Duration::from_secs(1));
    assert_eq!(calc.add_with(options, 1, 2).await.unwrap(), 3);
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn the_server_sees_the_idempotent_flag_of_generated_calls() {
    /// Echoes back whether the call was marked idempotent.
    #[meshrpc::service]
    trait Probe {
        #[meshrpc(idempotent)]
        async fn pure(&self) -> Result<bool, Status>;
        async fn effect(&self) -> Result<bool, Status>;
    }
    struct P;
    impl Probe for P {
        async fn pure(&self) -> Result<bool, Status> {
            Ok(Context::current().is_some_and(|c| c.is_idempotent()))
        }
        async fn effect(&self) -> Result<bool, Status> {
            Ok(Context::current().is_some_and(|c| c.is_idempotent()))
        }
    }
    let server =
        Server::builder().add_service(ProbeServer::new(P)).bind("127.0.0.1:0").await.unwrap().spawn();
    let probe = ProbeClient::connect(server.local_addr()).await.unwrap();
    assert!(probe.pure().await.unwrap());
    assert!(!probe.effect().await.unwrap());
    server.shutdown().await;
}

#[tokio::test]
async fn a_custom_wire_name_and_a_shared_implementation() {
    /// Named explicitly on the wire.
    #[meshrpc::service(name = "acme.Store")]
    trait Store {
        async fn put(&self, key: String, value: i64) -> Result<(), Status>;
        async fn get(&self, key: String) -> Result<Option<i64>, Status>;
    }
    #[derive(Default)]
    struct Mem(std::sync::Mutex<std::collections::HashMap<String, i64>>);
    impl Store for Mem {
        async fn put(&self, key: String, value: i64) -> Result<(), Status> {
            self.0.lock().unwrap().insert(key, value);
            Ok(())
        }
        async fn get(&self, key: String) -> Result<Option<i64>, Status> {
            Ok(self.0.lock().unwrap().get(&key).copied())
        }
    }
    let shared = std::sync::Arc::new(Mem::default());
    let server = Server::builder()
        .add_service(StoreServer::from_arc(shared.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let store = StoreClient::connect(server.local_addr()).await.unwrap();
    store.put("k".into(), 7).await.unwrap();
    assert_eq!(store.get("k".into()).await.unwrap(), Some(7));
    assert_eq!(shared.0.lock().unwrap().get("k"), Some(&7), "the server used the shared instance");
    let raw =
        store.inner().call_raw("acme.Store.Get", Codec::Json, br#"{"key":"k"}"#, &CallOptions::new()).await;
    assert_eq!(&raw.unwrap()[..], b"7");
    server.shutdown().await;
}
