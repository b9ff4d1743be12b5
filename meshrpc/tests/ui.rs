//! Compile-time behaviour of `#[meshrpc::service]`: every misuse is a clear, spanned
//! error (each `fail/` case pins its message in a `.stderr` file), and the `pass/`
//! cases compile and run.

#[test]
fn service_macro() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
