use meshrpc::Status;

#[meshrpc::service]
trait Store {
    async fn put<T: serde::Serialize>(&self, value: T) -> Result<(), Status>;
}

fn main() {}
