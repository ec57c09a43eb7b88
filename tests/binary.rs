//! The shipped binary, run as a user runs it: from a working directory with
//! `config/llmtap.toml`, creating `data/llmtap.db` on first start, stopped
//! by SIGTERM. SQLite only, on purpose (also under scripts/pg_test.sh):
//! it checks the default store, the file a first start creates.

mod common;
mod mock;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn llmtap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmtap"))
}

#[tokio::test]
async fn runs_from_config_creates_the_store_and_stops_cleanly_on_sigterm() {
    let mock = mock::MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    // The shipped config with its routes pointed at the mock.
    let shipped = include_str!("../config/llmtap.toml")
        .replace("https://api.openai.com", &mock.url())
        .replace("https://api.anthropic.com", &mock.url())
        .replace("listen = \"127.0.0.1:4000\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "admin_listen = \"127.0.0.1:4001\"",
            "admin_listen = \"127.0.0.1:0\"",
        );
    std::fs::write(dir.path().join("config/llmtap.toml"), shipped).unwrap();

    let mut child = llmtap()
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("ENABLE_TRACING")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The ready line names the bound address.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("llmtap printed no ready line within 30 s");
        if let Some(rest) = line.split("listen=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(dir.path().join("data/llmtap.db").exists());

    let c = client();
    let got = post(
        &c,
        &format!("http://{addr}/v1/chat/completions"),
        &[],
        &chat_body(false, false),
    )
    .await;
    assert_eq!(got.status, http::StatusCode::OK);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "llmtap did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    let spans = read_spans(&dir.path().join("data/llmtap.db")).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["status"], "completed");
    assert_eq!(spans[0]["output_tokens"], 8);
}

#[test]
fn unknown_config_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[tracing]\nbatch_sise = 5\n").unwrap();
    let out = llmtap().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_sise"), "{err}");
}

#[test]
fn invalid_env_value_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = llmtap()
        .current_dir(dir.path())
        .env("TRACE_BATCH_SIZE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TRACE_BATCH_SIZE"), "{err}");
}

/// `--healthcheck` (the container health check) exits 0 against a running
/// llmtap, reaching an unspecified bind address through loopback, and 1 when
/// nothing answers.
#[test]
fn healthcheck_flag_reports_a_running_llmtap() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = format!("0.0.0.0:{port}");
    let mut child = llmtap()
        .current_dir(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", &admin])
        .env("LLMTAP_ADMIN_TOKEN", "a-token-for-the-non-loopback-bind")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let check = || {
        llmtap()
            .current_dir(dir.path())
            .args(["--healthcheck", "--admin-listen", &admin])
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = check();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthcheck never succeeded: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = check();
    assert!(!out.status.success(), "healthcheck passed with llmtap gone");
}
