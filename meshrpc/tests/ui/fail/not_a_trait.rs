#[meshrpc::service]
struct Calculator;

fn main() {}
