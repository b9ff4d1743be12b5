use meshrpc::Status;

#[meshrpc::service]
trait Calculator {
    async fn add(&self, (a, b): (i64, i64)) -> Result<i64, Status>;
}

fn main() {}
