use meshrpc::Status;

#[meshrpc::service]
trait Calculator {
    #[meshrpc(retry)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status>;
}

fn main() {}
