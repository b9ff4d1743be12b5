use meshrpc::Status;

#[meshrpc::service]
trait Counter {
    async fn inc(&mut self) -> Result<i64, Status>;
}

fn main() {}
