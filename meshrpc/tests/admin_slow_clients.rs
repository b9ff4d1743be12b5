//! The admin endpoint against clients that send half a request or nothing: each is
//! closed after the header-read timeout (10 s; tokio's clock is paused and jumps), at
//! most 256 are held at once, and the endpoint answers again once they are gone.

use std::time::Duration;

use meshrpc::{Server, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 GET; the status code, or None if the connection was closed.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// True once the server has closed `s` (a read returns end of file or an error).
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b).await, Ok(0) | Err(_))
}

#[tokio::test(start_paused = true)]
async fn half_requests_are_cut_off_and_the_connection_cap_holds() {
    let server = Server::builder()
        .add_service(
            Service::new("Nop")
                .method("Nop", |_c: meshrpc::Context, _a: ()| async { Ok::<_, meshrpc::Status>(()) }),
        )
        .admin("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let admin = server.admin_addr().unwrap();
    let handle = server.spawn();
    assert_eq!(status_of(admin, "/healthz").await, Some(200));
    // 256 connections that send half a request, and one that sends nothing.
    let mut slow = Vec::new();
    for _ in 0..256 {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(s);
    }
    // Let the endpoint accept them all (the clock does not move while tasks can run).
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The 257th is closed at once: the cap holds.
    let mut over = TcpStream::connect(admin).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(1), closed_by_server(&mut over)).await;
    assert_eq!(closed, Ok(true), "a connection over the cap of 256 is closed at once");
    // After the header-read timeout every slow one is cut off, and the endpoint answers.
    tokio::time::sleep(Duration::from_secs(11)).await;
    for (i, s) in slow.iter_mut().enumerate() {
        let closed = tokio::time::timeout(Duration::from_secs(1), closed_by_server(s)).await;
        assert_eq!(closed, Ok(true), "slow connection {i} is closed after the header-read timeout");
    }
    assert_eq!(status_of(admin, "/healthz").await, Some(200));
    handle.shutdown().await;
}
