//! The demo services: `Calculator.Add`, `Counter.Inc`/`Counter.Value`, `Echo.Echo`,
//! `Greeter.Hello`: the scenarios of the Go articles meshrpc grew from.

use std::sync::Arc;
use std::sync::Mutex;

use meshrpc::{Blob, Context, Service, Status};
use serde::{Deserialize, Serialize};

/// `Calculator.Add` arguments.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct AddArgs {
    pub(crate) a: i64,
    pub(crate) b: i64,
}

/// `Echo.Echo` arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EchoArgs {
    pub(crate) data: Blob,
}

/// `Greeter.Hello` arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelloArgs {
    pub(crate) name: String,
}

/// `Greeter.Hello` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelloReply {
    pub(crate) message: String,
}

/// `Counter.Inc` arguments (the amount defaults to 1).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct IncArgs {
    #[serde(default = "one")]
    pub(crate) by: i64,
}

fn one() -> i64 {
    1
}

/// `Calculator`: `Add(a, b) → a + b` (overflow is an error, not a wrap).
pub(crate) fn calculator() -> Service {
    Service::new("Calculator").method("Add", |_ctx: Context, args: AddArgs| async move {
        args.a.checked_add(args.b).ok_or_else(|| {
            Status::invalid_argument(format!("{} + {} overflows a 64-bit integer", args.a, args.b))
        })
    })
}

/// `Counter`: the seeds' SafeCounter as a service; a mutex guards the shared value.
pub(crate) fn counter() -> Service {
    let value = Arc::new(Mutex::new(0i64));
    let inc = value.clone();
    Service::new("Counter")
        .method("Inc", move |_ctx: Context, args: IncArgs| {
            let v = inc.clone();
            async move {
                let mut guard = v.lock().map_err(|_| Status::internal("the counter's lock is poisoned"))?;
                *guard += args.by;
                Ok::<_, Status>(*guard)
            }
        })
        .method("Value", move |_ctx: Context, _args: ()| {
            let v = value.clone();
            async move { v.lock().map(|g| *g).map_err(|_| Status::internal("the counter's lock is poisoned")) }
        })
}

/// `Echo`: `Echo(data) → data` (bytes; base64 in JSON).
pub(crate) fn echo() -> Service {
    Service::new("Echo")
        .method("Echo", |_ctx: Context, args: EchoArgs| async move { Ok::<_, Status>(args.data) })
}

/// `Greeter`: `Hello(name) → {message: "Hello, <name>!"}`, tagged with `instance`.
pub(crate) fn greeter(instance: &str) -> Service {
    let instance = instance.to_string();
    Service::new("Greeter").method("Hello", move |_ctx: Context, args: HelloArgs| {
        let instance = instance.clone();
        async move { Ok::<_, Status>(HelloReply { message: format!("Hello, {}! (from {instance})", args.name) }) }
    })
}

/// Every demo service, for `meshrpc demo --listen`.
pub(crate) fn all(instance: &str) -> Vec<Service> {
    vec![calculator(), counter(), echo(), greeter(instance)]
}
