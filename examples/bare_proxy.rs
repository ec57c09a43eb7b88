//! The floor under llmtap's proxy: the least a hyper reverse proxy can do,
//! for `scripts/bench.sh` to measure next to llmtap and nginx.
//!
//! `cargo run --release --example bare_proxy -- LISTEN UPSTREAM` (both
//! `host:port`). HTTP/1.1 in, HTTP/1.1 out over hyper-util's pooled client
//! (the same crates llmtap forwards with), bodies streamed both ways. None
//! of llmtap's work is here: no routing table, no header policy, no
//! timeouts, no limits, no metrics, no tracing. What this costs per request
//! is what any proxy built on hyper pays before it does anything else.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;

async fn forward(
    client: Upstream,
    upstream: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{upstream}{path}");
    // A path hyper accepted from the client is a valid URI path.
    *req.uri_mut() = uri.parse::<Uri>().unwrap_or_default();
    client.request(req).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let upstream: &'static str = Box::leak(upstream.into_boxed_str());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream, req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
