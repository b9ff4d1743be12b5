//! [`Service`]: untyped registration of `Service.Method` handlers, like Go's net/rpc.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Context;
use super::call::Replier;
use crate::codec::Codec;
use crate::status::Status;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A call as a handler receives it: the payload, its codec and where the reply goes.
pub(crate) struct IncomingCall {
    pub(crate) codec: Codec,
    pub(crate) payload: Bytes,
    pub(crate) replier: Replier,
}

/// A type-erased handler: decodes the payload, runs the user's function and answers a
/// successful call itself (encoded straight into the connection's write queue).
/// An `Err` is answered by the caller of `call`.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, ctx: Context, call: IncomingCall) -> BoxFuture<Result<(), Status>>;
}

struct FnHandler<F, A, R> {
    f: F,
    _types: PhantomData<fn(A) -> R>,
}

impl<F, Fut, A, R> ErasedHandler for FnHandler<F, A, R>
where
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Status>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    fn call(&self, ctx: Context, call: IncomingCall) -> BoxFuture<Result<(), Status>> {
        let args = match call.codec.decode::<A>(&call.payload) {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("cannot decode the arguments of {}: {e}", ctx.method());
                return Box::pin(std::future::ready(Err(Status::invalid_argument(msg))));
            }
        };
        let fut = (self.f)(ctx, args);
        let replier = call.replier;
        Box::pin(async move {
            let reply = fut.await?;
            replier.send_ok(&reply);
            Ok(())
        })
    }
}

/// A named service: a set of methods registered by name, served by a [`super::Server`].
///
/// Each method is an async function of a [`Context`] and the decoded arguments,
/// returning `Result<Reply, Status>`; the wire name is `Service.Method`.
#[must_use]
pub struct Service {
    name: String,
    methods: Vec<Method>,
}

/// One registered method of a [`Service`].
struct Method {
    name: String,
    handler: Arc<dyn ErasedHandler>,
    /// Never polled inline on the connection's reader (see [`Service::method_on_task`]).
    on_task: bool,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("methods", &self.methods.iter().map(|m| m.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl Service {
    /// A service with no methods yet. `name` is the wire (and registry) name.
    pub fn new(name: impl Into<String>) -> Service {
        Service { name: name.into(), methods: Vec::new() }
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers `method` (called as `Service.method` on the wire).
    ///
    /// The handler is polled once right away, on the connection's reader task (most
    /// handlers finish there, without a task switch); only if it is still pending does
    /// it move to a task of its own. A first poll that holds the reader longer than
    /// [`ServerConfig::inline_poll_limit`](super::ServerConfig::inline_poll_limit)
    /// (blocking or CPU-heavy work before the first `.await`) moves the method to its
    /// own task for every later call (logged once, counted in
    /// `meshrpc_server_methods_moved_to_task`); [`Service::method_on_task`] does so from
    /// the start. Use futures that re-register the waker on every poll, as tokio's and
    /// `futures`' do.
    pub fn method<F, Fut, A, R>(self, method: impl Into<String>, f: F) -> Service
    where
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.register(method.into(), Arc::new(FnHandler { f, _types: PhantomData }), false)
    }

    /// Registers `method` like [`Service::method`], but its calls always run on a task
    /// of their own, never on the connection's reader: for handlers that block or
    /// compute before their first `.await`, so they never delay the connection's other
    /// calls (Go's one goroutine per request). Costs a task spawn per call.
    pub fn method_on_task<F, Fut, A, R>(self, method: impl Into<String>, f: F) -> Service
    where
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.register(method.into(), Arc::new(FnHandler { f, _types: PhantomData }), true)
    }

    fn register(mut self, name: String, handler: Arc<dyn ErasedHandler>, on_task: bool) -> Service {
        self.methods.push(Method { name, handler, on_task });
        self
    }

    /// The full names (`Service.Method`) of the registered methods.
    pub fn method_names(&self) -> impl Iterator<Item = String> + '_ {
        self.methods.iter().map(move |m| format!("{}.{}", self.name, m.name))
    }
}

/// A registered method: its full name (shared with each call's [`Context`]) and handler.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    /// Built-in methods (health) that are answered even at the in-flight limits.
    pub(crate) exempt: bool,
    /// Its place in the router (and its row in the server's metrics).
    pub(crate) index: u32,
    /// Calls run on a task of their own, never polled inline on the reader: set at
    /// registration, or once a first poll held the reader too long.
    pub(crate) on_task: Arc<AtomicBool>,
}

/// The names of the services a server serves.
pub(crate) type ServiceNames = Arc<std::collections::HashSet<String>>;

/// Method lookup by full name; built once, read-only while serving. Keyed by the
/// name's bytes, so a lookup needs no UTF-8 check of the request's method (~2 % of
/// server CPU at add c=256): only a valid name can match.
#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: HashMap<Box<[u8]>, Route>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.routes.values().map(|r| &*r.name)).finish()
    }
}

impl Router {
    /// Adds every method of `service`; a name registered twice is an error, and so is
    /// a user service in the reserved `meshrpc.` namespace.
    pub(crate) fn add(&mut self, service: Service) -> Result<(), String> {
        if service.name == "meshrpc" || service.name.starts_with("meshrpc.") {
            return Err(format!("service name {:?} is in the reserved `meshrpc.` namespace", service.name));
        }
        self.insert(service, false)
    }

    /// Adds a built-in service (exempt from the in-flight limits).
    pub(crate) fn add_builtin(&mut self, service: Service) -> Result<(), String> {
        self.insert(service, true)
    }

    /// The names of the services registered so far.
    pub(crate) fn service_names(&self) -> ServiceNames {
        Arc::new(
            self.routes
                .values()
                .filter_map(|r| r.name.rsplit_once('.').map(|(s, _)| s.to_string()))
                .collect(),
        )
    }

    fn insert(&mut self, service: Service, exempt: bool) -> Result<(), String> {
        for Method { name: m, handler, on_task } in service.methods {
            let full = format!("{}.{m}", service.name);
            if self.routes.contains_key(full.as_bytes()) {
                return Err(format!("method {full} is registered twice"));
            }
            let name: Arc<str> = Arc::from(full.as_str());
            let index = u32::try_from(self.routes.len()).map_err(|_| "too many methods".to_string())?;
            let route = Route { name, handler, exempt, index, on_task: Arc::new(AtomicBool::new(on_task)) };
            self.routes.insert(full.into_bytes().into_boxed_slice(), route);
        }
        Ok(())
    }

    /// The route of `method` (the request's name bytes, not yet checked as UTF-8).
    pub(crate) fn get(&self, method: &[u8]) -> Option<&Route> {
        self.routes.get(method)
    }

    /// Registered method names in route-index order.
    pub(crate) fn indexed_names(&self) -> Vec<Arc<str>> {
        let mut v: Vec<&Route> = self.routes.values().collect();
        v.sort_unstable_by_key(|r| r.index);
        v.into_iter().map(|r| r.name.clone()).collect()
    }

    /// Registered method names, sorted.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.routes.values().map(|r| &*r.name).collect();
        v.sort_unstable();
        v
    }

    /// The NOT_FOUND status for an unknown method, listing what exists.
    pub(crate) fn not_found(&self, method: &str) -> Status {
        let names = self.names();
        let shown: Vec<&str> = names.iter().take(20).copied().collect();
        let more = if names.len() > shown.len() {
            format!(" and {} more", names.len() - shown.len())
        } else {
            String::new()
        };
        let method: String = method.chars().take(200).collect();
        Status::not_found(format!("unknown method {method:?}; this server has: {}{more}", shown.join(", ")))
    }
}
