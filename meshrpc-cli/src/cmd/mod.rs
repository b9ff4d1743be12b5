//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod call;
pub(crate) mod demo;
pub(crate) mod fanout;
pub(crate) mod registry;
pub(crate) mod target;
pub(crate) mod traffic;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so that `kill PID` also shuts down cleanly
/// (deregistering, draining) instead of vanishing like a crash.
pub(crate) async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => if let Err(e) = r {
            eprintln!("error: cannot wait for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        },
        _ = term => {}
    }
}
