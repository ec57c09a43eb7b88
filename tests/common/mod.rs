//! Test harness: llmtap (the real `run`, a real store) in front of the
//! in-repo mock provider, both on ephemeral loopback ports, and a real HTTP
//! client (hyper's).
//!
//! The store is a SQLite file in a temp dir, or, when
//! `LLMTAP_TEST_DATABASE_URL` names a PostgreSQL server
//! (`scripts/pg_test.sh` starts one), a fresh database on that server per
//! harness. `read_spans(&h.db)` / `h.spans(n)` read either: the SQLite file
//! directly, or PostgreSQL through the store's own read path
//! (`Store::all_spans`), as the same JSON objects (flags as 0/1, as SQLite's
//! `json_object` gives them).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
pub use llmtap::record::span::schema::COLUMNS;

pub struct Harness {
    pub mock: MockProvider,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The SQLite file (never created when running on PostgreSQL; it then
    /// only names the harness's database for `read_spans`).
    pub db: PathBuf,
    /// The `database_url` llmtap runs with (SQLite or PostgreSQL).
    pub database_url: String,
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
        let database_url = test_database_url(&db).await;
        let mut config = Config {
            database_url: database_url.clone(),
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
            database_url,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Opens the harness's store (beside llmtap's own), for tests that
    /// write or query it directly.
    pub async fn store(&self) -> llmtap::output::store::Store {
        let url = llmtap::output::store::StoreUrl::parse(&self.database_url).unwrap();
        llmtap::output::store::Store::open(&url).await.unwrap()
    }

    /// Whether this harness runs on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
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

/// `LLMTAP_TEST_DATABASE_URL`: a PostgreSQL server to run the tests on
/// (a URL to any existing database there, used to create fresh ones).
pub fn pg_server() -> Option<String> {
    std::env::var("LLMTAP_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// A fresh, empty database on the PostgreSQL server at `server`; returns
/// its URL.
pub async fn fresh_pg_database(server: &str) -> String {
    use sqlx::Connection;
    let name = format!("llmtap_t_{}", &llmtap::record::span::new_trace_id()[..16]);
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // Same server and user, the new database (query parameters kept).
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// PostgreSQL databases of the harnesses, by their `db` path.
static PG_DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);

/// The `database_url` for a harness whose SQLite file would be `db`: that
/// file, or a fresh PostgreSQL database registered under `db`.
pub async fn test_database_url(db: &Path) -> String {
    match pg_server() {
        None => format!("sqlite://{}", db.display()),
        Some(server) => {
            let url = fresh_pg_database(&server).await;
            PG_DATABASES
                .lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(db.to_path_buf(), url.clone());
            url
        }
    }
}

/// A span as the JSON object `read_spans` gives (SQLite's `json_object` of
/// the row: flags as 0/1, `properties` as its text).
pub fn span_json(s: &llmtap::record::span::Span) -> Value {
    use llmtap::record::span::schema::Value as V;
    let mut row = serde_json::Map::new();
    for c in COLUMNS {
        let v = match (c.get)(s) {
            V::Text(t) => serde_json::json!(t),
            V::Int(v) => serde_json::json!(v),
            V::Real(v) => serde_json::json!(v),
            V::Bool(v) => serde_json::json!(i64::from(v)),
        };
        row.insert(c.name.to_string(), v);
    }
    Value::Object(row)
}

/// All spans of a harness's store (`db` is `Harness::db`), as JSON objects
/// keyed by column, by start time.
pub async fn read_spans(db: &Path) -> Vec<Value> {
    let pg = PG_DATABASES
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(db).cloned());
    if let Some(url) = pg {
        // A store of its own per read, closed after: no connection outlives
        // the test's runtime.
        let store = llmtap::output::store::Store::open(
            &llmtap::output::store::StoreUrl::parse(&url).unwrap(),
        )
        .await
        .unwrap();
        let spans = store.all_spans().await.unwrap();
        store.close().await;
        return spans.iter().map(span_json).collect();
    }
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
    let fields: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("'{0}', {0}", c.name))
        .collect();
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
