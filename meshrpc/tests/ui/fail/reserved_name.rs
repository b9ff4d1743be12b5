use meshrpc::Status;

#[meshrpc::service]
trait Factory {
    async fn new(&self) -> Result<u64, Status>;
}

fn main() {}
