use meshrpc::Status;

#[meshrpc::service]
trait Greeter {
    async fn hello(&self, name: &str) -> Result<String, Status>;
}

fn main() {}
