//! User-defined argument and reply types, a private trait, and a custom wire name.
use meshrpc::Status;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
}

#[derive(Serialize, Deserialize)]
enum Verdict {
    Accepted { eta_minutes: u32 },
    Rejected(String),
}

#[meshrpc::service(name = "shop.Orders")]
trait Orders {
    async fn place(&self, order: Order, rush: bool) -> Result<Verdict, Status>;
}

struct Shop;

impl Orders for Shop {
    async fn place(&self, order: Order, rush: bool) -> Result<Verdict, Status> {
        if order.items.is_empty() {
            return Ok(Verdict::Rejected(format!("order {} is empty", order.id)));
        }
        Ok(Verdict::Accepted { eta_minutes: if rush { 10 } else { 30 } })
    }
}

fn main() {
    let service: meshrpc::Service = OrdersServer::new(Shop).into();
    assert_eq!(service.name(), "shop.Orders");
    assert_eq!(service.method_names().collect::<Vec<_>>(), ["shop.Orders.Place"]);
}
