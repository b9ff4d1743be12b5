#[meshrpc::service]
trait Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64, String>;
}

fn main() {}
