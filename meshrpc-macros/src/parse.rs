//! Parses and checks a service trait; every misuse is a spanned error.

use proc_macro2::TokenStream;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments, ReturnType,
    TraitItem, Type, Visibility,
};

/// A checked service trait.
pub(crate) struct ServiceDef {
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    pub(crate) wire_name: String,
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) methods: Vec<MethodDef>,
}

/// A checked method.
pub(crate) struct MethodDef {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) ident: Ident,
    pub(crate) wire_name: String,
    pub(crate) idempotent: bool,
    /// `#[meshrpc(on_task)]`: calls always run on a task of their own.
    pub(crate) on_task: bool,
    pub(crate) args: Vec<(Ident, Type)>,
    pub(crate) ok_type: Type,
    pub(crate) result_type: Type,
}

/// Names the generated client already uses for its own methods.
const RESERVED: &[&str] = &["new", "connect", "inner", "into_inner", "service_name"];

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<ServiceDef> {
    let mut wire_name: Option<String> = None;
    if !attr.is_empty() {
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() || lit.value().contains(char::is_whitespace) {
                    return Err(Error::new(lit.span(), "the service name must be non-empty, without spaces"));
                }
                wire_name = Some(lit.value());
                Ok(())
            } else {
                Err(meta.error("unknown service option; expected `name = \"...\"`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
    }
    let item: ItemTrait = syn::parse2(item).map_err(|e| {
        Error::new(e.span(), "#[meshrpc::service] goes on a trait, e.g. `trait Calculator { async fn add(&self, a: i64, b: i64) -> Result<i64, Status>; }`")
    })?;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(Error::new(item.generics.span(), "meshrpc service traits cannot be generic"));
    }
    if !item.supertraits.is_empty() {
        return Err(Error::new(
            item.supertraits.span(),
            "meshrpc service traits cannot have supertraits (the macro adds `Send + Sync + 'static`)",
        ));
    }
    let mut errors: Option<Error> = None;
    let mut push = |e: Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => match method(f) {
                Ok(m) => methods.push(m),
                Err(e) => push(e),
            },
            other => {
                push(Error::new(other.span(), "meshrpc service traits may only contain `async fn` methods"))
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let names: std::collections::HashSet<String> = methods.iter().map(|m| m.ident.to_string()).collect();
    for m in &methods {
        if !seen.insert(m.wire_name.clone()) {
            push(Error::new(m.ident.span(), format!("two methods map to the wire name `{}`", m.wire_name)));
        }
        if let Some(base) = m.ident.to_string().strip_suffix("_with")
            && names.contains(base)
        {
            push(Error::new(
                m.ident.span(),
                format!(
                    "`{}` clashes with the generated `{base}_with` (the call-options variant of `{base}`); rename it",
                    m.ident
                ),
            ));
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }
    Ok(ServiceDef {
        vis: item.vis.clone(),
        wire_name: wire_name.unwrap_or_else(|| item.ident.to_string()),
        ident: item.ident.clone(),
        attrs: item.attrs.clone(),
        methods,
    })
}

fn method(f: &syn::TraitItemFn) -> syn::Result<MethodDef> {
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(sig.fn_token.span, "meshrpc service methods must be `async fn`"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(sig.generics.span(), "meshrpc service methods cannot be generic"));
    }
    if let Some(body) = &f.default {
        return Err(Error::new(body.span(), "meshrpc service methods cannot have a default body"));
    }
    if sig.variadic.is_some() || sig.constness.is_some() || sig.unsafety.is_some() || sig.abi.is_some() {
        return Err(Error::new(sig.span(), "meshrpc service methods must be plain `async fn`s"));
    }
    if RESERVED.contains(&sig.ident.to_string().as_str()) {
        return Err(Error::new(
            sig.ident.span(),
            format!("`{}` clashes with a method of the generated client; rename it", sig.ident),
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r))
            if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) => {
            return Err(Error::new(
                r.span(),
                "meshrpc service methods take `&self` (not `self`, `&mut self` or a typed self)",
            ));
        }
        _ => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                "meshrpc service methods take `&self` as their first parameter",
            ));
        }
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pt) = input else { unreachable!("only the first input can be a receiver") };
        match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                let name = pi.ident.to_string();
                if name.starts_with("__") {
                    return Err(Error::new(
                        pi.ident.span(),
                        "argument names starting with `__` are reserved for generated code",
                    ));
                }
                args.push((pi.ident.clone(), (*pt.ty).clone()));
            }
            other => {
                return Err(Error::new(
                    other.span(),
                    "arguments of meshrpc service methods must be plain names, like `a: i64`",
                ));
            }
        }
        if let Type::Reference(r) = &*pt.ty {
            return Err(Error::new(
                r.span(),
                "arguments of meshrpc service methods must be owned types (they are decoded from the wire)",
            ));
        }
        if let Type::ImplTrait(t) = &*pt.ty {
            return Err(Error::new(t.span(), "meshrpc service methods cannot be generic"));
        }
    }
    let (ok_type, result_type) = match &sig.output {
        ReturnType::Type(_, ty) => (result_ok_type(ty)?, (**ty).clone()),
        ReturnType::Default => {
            return Err(Error::new(
                sig.paren_token.span.close(),
                "meshrpc service methods must return `Result<T, meshrpc::Status>`",
            ));
        }
    };
    let mut idempotent = false;
    let mut on_task = false;
    let mut attrs = Vec::new();
    for attr in &f.attrs {
        if attr.path().is_ident("meshrpc") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("idempotent") {
                    idempotent = true;
                    Ok(())
                } else if meta.path.is_ident("on_task") {
                    on_task = true;
                    Ok(())
                } else {
                    Err(meta.error("unknown meshrpc method option; expected `idempotent` or `on_task`"))
                }
            })?;
        } else {
            attrs.push(attr.clone());
        }
    }
    Ok(MethodDef {
        attrs,
        wire_name: pascal_case(&sig.ident.to_string()),
        ident: sig.ident.clone(),
        idempotent,
        on_task,
        args,
        ok_type,
        result_type,
    })
}

/// `T` from `Result<T, E>` (any path ending in `Result` with one or two type arguments).
fn result_ok_type(ty: &Type) -> syn::Result<Type> {
    let err = || Error::new(ty.span(), "meshrpc service methods must return `Result<T, meshrpc::Status>`");
    let Type::Path(tp) = ty else { return Err(err()) };
    let last = tp.path.segments.last().ok_or_else(err)?;
    if last.ident != "Result" {
        return Err(err());
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return Err(err()) };
    if let Some(GenericArgument::Type(e)) = args.args.iter().nth(1) {
        let is_status =
            matches!(e, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Status"));
        if !is_status {
            return Err(Error::new(
                e.span(),
                "the error type of a meshrpc service method must be `meshrpc::Status`",
            ));
        }
    }
    match args.args.first() {
        Some(GenericArgument::Type(t)) => Ok(t.clone()),
        _ => Err(err()),
    }
}

/// `add` → `Add`, `get_value` → `GetValue`.
pub(crate) fn pascal_case(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}
