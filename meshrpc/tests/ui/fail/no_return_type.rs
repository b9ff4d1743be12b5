#[meshrpc::service]
trait Calculator {
    async fn reset(&self);
}

fn main() {}
