//! The in-repo mock provider as a standalone server, for load tests:
//! `cargo run --release --example mock_provider -- 127.0.0.1:9000`.
//! Prints `listening on ADDR` and serves until killed.

#[path = "../tests/mock/mod.rs"]
mod mock;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1);
    let m = match addr {
        Some(a) => mock::MockProvider::start_on(&a).await,
        None => mock::MockProvider::start().await,
    };
    println!("listening on {}", m.addr);
    // Serve until the process is killed.
    std::future::pending::<()>().await;
}
