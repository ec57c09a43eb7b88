//! A PostgreSQL cluster of the test's own, for tests that stop and start
//! the server (a store outage): `initdb` into a temp dir, `pg_ctl start` on
//! a free loopback port, stopped and removed on drop. As root the server
//! runs as the `postgres` user (as `scripts/pg_cluster.sh` does); nothing
//! outside the temp dir is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::free_port;

/// Debian's newest PostgreSQL `bin` directory, when one is installed.
pub fn pg_bin() -> Option<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    // Versions are whole numbers (15, 16, ...): newest last.
    bins.sort_by_key(|b| {
        b.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    bins.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_root: bool,
    running: bool,
}

impl PgCluster {
    /// Creates and starts a cluster (trust auth, user `postgres`).
    pub fn start(bin: &Path) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("llmtap-pg-test")
            .tempdir()
            .unwrap();
        let as_root = is_root();
        if as_root {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres: {}", dir.path().display());
        }
        let mut me = PgCluster {
            bin: bin.to_path_buf(),
            dir,
            port: free_port(),
            as_root,
            running: false,
        };
        let data = me.data();
        let out = me.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        assert!(out.status.success(), "initdb: {out:?}");
        me.resume();
        me
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).output().unwrap()
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn resume(&mut self) {
        let opts = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {out:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server: `fast` ends every session at once (the store's
    /// connections are cut), as when a database host goes away.
    pub fn stop(&mut self) {
        let data = self.data();
        let out = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
        self.running = false;
    }

    /// The URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        self.url(name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
    }
}
