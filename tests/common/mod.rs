//! Test harness: llmtap (the real `run`, a real SQLite file) in front of the
//! in-repo mock provider, both on ephemeral loopback ports, and a real HTTP
//! client (hyper's).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmtap::config::{Config, Format, RouteConfig};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::mock::MockProvider;

/// Every column of the span record.
pub use llmtap::store::SPAN_COLUMNS as COLUMNS;

pub struct Harness {
    pub mock: MockProvider,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), llmtap::RunError>>>,
}

/// Routes: `/v1` → mock (OpenAI), `/anthropic` → mock (stripped).
pub fn mock_routes(mock_url: &str) -> Vec<RouteConfig> {
    vec![
        RouteConfig {
            prefix: "/v1".into(),
            upstream: mock_url.into(),
            format: Format::Openai,
            strip_prefix: false,
            provider: None,
            allow_insecure: false,
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
        },
        RouteConfig {
            prefix: "/anthropic".into(),
            upstream: mock_url.into(),
            format: Format::Anthropic,
            strip_prefix: true,
            provider: None,
            allow_insecure: false,
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
        },
    ]
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Starts with test defaults (fast flushes, a temp database), after
    /// `tweak` has had its say.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let mock = MockProvider::start().await;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/llmtap.db");
        let mut config = Config {
            database_url: format!("sqlite://{}", db.display()),
            ..Config::default()
        };
        config.tracing.batch_interval_ms = 20;
        config.tracing.api_key_salt = "test-salt".into();
        config.shutdown.drain_timeout_ms = 5_000;
        config.routes = mock_routes(&mock.url());
        tweak(&mut config);
        config.validate().unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(llmtap::run(
            llmtap::Listeners {
                proxy,
                admin: Some(admin),
            },
            async move {
                let _ = rx.await;
            },
            config,
        ));
        Harness {
            mock,
            addr,
            admin: admin_addr,
            db,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn direct(&self, path: &str) -> String {
        format!("{}{}", self.mock.url(), path)
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("llmtap did not stop within 20 s")
                .unwrap()
                .unwrap();
        }
    }

    /// Waits (bounded) until at least `n` spans are stored, then returns all
    /// spans ordered by start time.
    pub async fn spans(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rows = read_spans(&self.db).await;
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} spans, found {} after 15 s",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for exactly one span and returns it.
    pub async fn one_span(&self) -> Value {
        let rows = self.spans(1).await;
        // Give a wrongly duplicated span a chance to show up.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let rows2 = read_spans(&self.db).await;
        assert_eq!(rows2.len(), 1, "expected exactly one span: {rows2:#?}");
        rows.into_iter().next().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// All spans in a database file, as JSON objects keyed by column.
pub async fn read_spans(db: &std::path::Path) -> Vec<Value> {
    if !db.exists() {
        return Vec::new();
    }
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let fields: Vec<String> = COLUMNS.iter().map(|c| format!("'{c}', {c}")).collect();
    let sql = format!(
        "SELECT json_object({}) FROM spans ORDER BY start_time, rowid",
        fields.join(", ")
    );
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read whole.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Got {
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(client: &HttpClient, url: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    send(client, request(Method::POST, url, &h, body.to_string())).await
}

/// A chat request body.
pub fn chat_body(stream: bool, include_usage: bool) -> String {
    let mut v = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say some words, please."}
        ],
    });
    if stream {
        v["stream"] = true.into();
        if include_usage {
            v["stream_options"] = serde_json::json!({"include_usage": true});
        }
    }
    v.to_string()
}
