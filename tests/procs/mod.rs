//! Helpers for the tests that run the shipped binary (secrets, shutdown):
//! a config pointed at the mock, the process with its output in a file, a
//! plain HTTP client, and raw reads of the SQLite file.

#![allow(dead_code)]

pub mod pg;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running llmtap binary.
pub struct Llmtap {
    pub child: Child,
    pub dir: PathBuf,
    pub addr: String,
    pub admin: String,
    pub log: PathBuf,
}

impl Llmtap {
    /// Starts the binary in `dir` with `config` (TOML) and `env`; its
    /// stdout and stderr go to `dir/llmtap.log`. Waits for the ready line.
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Llmtap {
        let admin_port = free_port();
        let config = config.replace("ADMIN_PORT", &admin_port.to_string());
        let cfg = dir.join("llmtap.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("llmtap.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmtap"));
        cmd.current_dir(dir)
            .arg("--config")
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .env_remove("ENABLE_TRACING")
            .env_remove("LLMTAP_ADMIN_TOKEN")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut me = Llmtap {
            child,
            dir: dir.to_path_buf(),
            addr: String::new(),
            admin: format!("127.0.0.1:{admin_port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "no ready line in 60 s: {}",
                me.log_text()
            );
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("llmtap exited ({status}) at start: {}", me.log_text());
            }
            let text = me.log_text();
            if let Some(line) = text.lines().find(|l| l.contains("llmtap ready")) {
                if let Some(rest) = line.split("listen=").nth(1) {
                    me.addr = rest.split_whitespace().next().unwrap().to_string();
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to this process only, by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "llmtap did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Llmtap {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config with the mock as every route's upstream. `tracing_extra` is
/// appended to `[tracing]`.
pub fn config(mock_url: &str, db: &Path, tracing_extra: &str, shutdown: &str) -> String {
    config_for(
        mock_url,
        &format!("sqlite://{}", db.display()),
        tracing_extra,
        shutdown,
    )
}

/// [`config`] with any `database_url` (PostgreSQL, say).
pub fn config_for(
    mock_url: &str,
    database_url: &str,
    tracing_extra: &str,
    shutdown: &str,
) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:ADMIN_PORT"
database_url = "{database_url}"

[tracing]
capture_bodies = true
batch_interval_ms = 100
{tracing_extra}

[shutdown]
{shutdown}

[[routes]]
prefix = "/v1"
upstream = "{mock_url}"
format = "openai"
provider = "openai"

[[routes]]
prefix = "/anthropic"
upstream = "{mock_url}"
format = "anthropic"
strip_prefix = true
provider = "anthropic"

[[routes]]
prefix = "/azure"
upstream = "{mock_url}"
format = "openai"
strip_prefix = true
provider = "azure.ai.openai"

[[routes]]
prefix = "/gemini"
upstream = "{mock_url}/v1beta/openai"
format = "openai"
strip_prefix = true
provider = "gcp.gemini"
"#
    )
}

/// A response read whole.
pub struct Got {
    pub status: StatusCode,
    pub body: Bytes,
}

pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got { status, body }
}

pub async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Got {
    send(client, Method::GET, url, headers, "").await
}

pub async fn post_json(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    send(client, Method::POST, url, &h, body).await
}

/// Opens the SQLite file read-write (for checkpoints and integrity checks).
pub async fn sqlite(db: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

pub async fn count_spans(db: &Path) -> i64 {
    let mut c = sqlite(db).await;
    sqlx::query_scalar("SELECT count(*) FROM spans")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// Appends a line to a file (debug notes from a test).
pub fn note(path: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Lines of a file.
pub fn lines(path: &Path) -> Vec<String> {
    match std::fs::File::open(path) {
        Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}
