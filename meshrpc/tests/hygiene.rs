//! Generated code uses absolute paths only: it compiles and works next to user items
//! whose names clash with everything it refers to.

#[allow(dead_code, non_camel_case_types, unreachable_pub, missing_docs)]
mod clash {
    // Shadows of prelude and std names...
    pub struct Result;
    pub struct Option;
    pub struct Ok;
    pub struct Err;
    pub struct Some;
    pub struct None;
    pub struct Vec;
    pub struct String;
    pub struct Box;
    pub struct Arc;
    pub struct Send;
    pub struct Sync;
    pub struct Future;
    pub struct Clone;
    pub struct Debug;
    pub struct From;
    pub struct Into;
    // ...of meshrpc's own names...
    pub struct Client;
    pub struct Service;
    pub struct CallOptions;
    pub struct Context;
    pub struct Status;
    pub struct Serialize;
    pub struct Deserialize;
    // ...and of the crates the generated code names.
    pub mod std {}
    pub mod core {}
    pub mod serde {}
    pub mod meshrpc {}
    pub mod tokio {}

    /// A calculator defined among the clashing names.
    #[::meshrpc::service]
    pub trait Calculator {
        /// Adds.
        #[meshrpc(idempotent)]
        async fn add(&self, a: i64, b: i64) -> ::core::result::Result<i64, ::meshrpc::Status>;
    }

    pub struct Calc;

    impl Calculator for Calc {
        async fn add(&self, a: i64, b: i64) -> ::core::result::Result<i64, ::meshrpc::Status> {
            ::core::result::Result::Ok(a + b)
        }
    }
}

#[tokio::test]
async fn generated_code_ignores_clashing_user_names() {
    let server = meshrpc::Server::builder()
        .add_service(clash::CalculatorServer::new(clash::Calc))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let calc = clash::CalculatorClient::connect(server.local_addr()).await.unwrap();
    assert_eq!(calc.add(20, 22).await.unwrap(), 42);
    server.shutdown().await;
}
