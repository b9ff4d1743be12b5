//! A chain of calls A → B → C for trace-context tests: C answers, B calls C from its
//! handler, the test plays A. Each server records the trace it saw.

use std::sync::{Arc, Mutex};

use meshrpc::trace::{TRACEPARENT, TraceContext};
use meshrpc::{Client, Context, Server, ServerHandle, Service, Status};

/// What one server of the chain saw: who it is, its call's trace, the raw header.
pub type Sighting = (String, Option<TraceContext>, Option<String>);

/// Records the trace each call of a chain saw.
#[derive(Default)]
pub struct Seen(pub Mutex<Vec<Sighting>>);

impl Seen {
    pub fn push(&self, who: &str, ctx: &Context) {
        let header = ctx.metadata().get_str(TRACEPARENT).map(str::to_string);
        self.0.lock().unwrap().push((who.to_string(), ctx.trace(), header));
    }
}

/// C answers; B calls C from its handler; the test plays A.
pub async fn chain(seen: Arc<Seen>) -> (ServerHandle, ServerHandle, Client) {
    let s = seen.clone();
    let c = Server::builder()
        .add_service(Service::new("C").method("Leaf", move |ctx: Context, _: ()| {
            s.push("C", &ctx);
            async { Ok::<_, Status>(()) }
        }))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let to_c = Client::connect(c.local_addr()).await.unwrap();
    let s = seen.clone();
    let b = Server::builder()
        .add_service(Service::new("B").method("Middle", move |ctx: Context, _: ()| {
            s.push("B", &ctx);
            let to_c = to_c.clone();
            async move { to_c.call::<_, ()>("C.Leaf", &()).await }
        }))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let to_b = Client::connect(b.local_addr()).await.unwrap();
    (b, c, to_b)
}
