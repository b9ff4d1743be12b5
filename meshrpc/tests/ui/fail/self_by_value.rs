use meshrpc::Status;

#[meshrpc::service]
trait Calculator {
    async fn add(self, a: i64, b: i64) -> Result<i64, Status>;
}

fn main() {}
