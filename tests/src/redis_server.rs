//! A throwaway Redis server per test (Debian's `redis-server`, on a free port of
//! loopback, its data in a temp dir), stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

impl Redis {
    /// Starts a server that keeps its data across a restart (append-only file,
    /// written at each command).
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = Redis { port: free_port(), dir, child: None };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (Debian's redis-server package)");
        self.child = Some(child);
        wait_until(Duration::from_secs(10), "redis to answer", || {
            self.conn_now().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok()).is_some()
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn conn_now(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        client.get_connection_with_timeout(Duration::from_secs(2)).ok()
    }

    pub fn conn(&self) -> redis::Connection {
        self.conn_now().expect("connect to the test's redis")
    }

    /// Stops the server (SIGKILL: its file has every write).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
