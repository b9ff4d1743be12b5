//! `#[meshrpc::service]`: turns a trait into a typed client and server.
//!
//! Use it through the `meshrpc` crate (`meshrpc::service`); see its docs for an example.

mod expand;
mod parse;

use proc_macro::TokenStream;

/// Turns a service trait into a typed client (`{Trait}Client`) and server (`{Trait}Server`).
///
/// Every method must be `async fn name(&self, arg: Type, ...) -> Result<T, meshrpc::Status>`;
/// its wire name is `Trait.Name` (PascalCase) and its arguments travel as a map of the
/// named parameters. `#[meshrpc(idempotent)]` on a method marks it safe to retry;
/// `#[meshrpc(on_task)]` runs its calls on a task of their own, never inline on the
/// connection's reader (for methods that block or compute before their first `.await`).
/// `#[meshrpc::service(name = "pkg.Name")]` overrides the service's wire name.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = proc_macro2::TokenStream::from(item);
    match parse::parse(attr, item) {
        Ok(service) => expand::expand(&service).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
