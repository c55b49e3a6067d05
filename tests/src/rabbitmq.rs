//! A throwaway RabbitMQ node per test (Debian's `rabbitmq-server`, run from
//! `/usr/lib/rabbitmq/bin` as the user it is: its own free ports for AMQP, the
//! Erlang distribution and epmd, its data and cookie in a temp dir), stopped
//! when dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

pub struct Rabbit {
    pub port: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

impl Rabbit {
    pub fn start() -> Rabbit {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        let mut rabbit = Rabbit { port: free_port(), epmd_port: free_port(), dir, child: None };
        rabbit.spawn();
        rabbit
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", d)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_NODENAME", format!("rabbit{}@localhost", self.port))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start rabbitmq-server (Debian's rabbitmq-server package)");
        self.child = Some(child);
        // The port opens while the node still boots (an AMQP handshake then is
        // aborted): ready is a whole connection opened and closed.
        let (url, rt) = (self.url(), tokio::runtime::Builder::new_current_thread().enable_all().build());
        let rt = rt.expect("a runtime for the readiness check");
        wait_until(Duration::from_secs(60), "rabbitmq to take AMQP connections", || {
            rt.block_on(async {
                let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.ok()?;
                conn.close(0, "ready".into()).await.ok()
            })
            .is_some()
        });
    }

    pub fn url(&self) -> String {
        format!("amqp://guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node (its whole process group: the shell, beam.smp, epmd).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        // epmd daemonized out of the group: found by the port it was given.
        let mark = format!("ERL_EPMD_PORT={}", self.epmd_port);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|var| var == mark.as_bytes()) {
                // SAFETY: kill(2) on a process this test's node started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.stop();
    }
}
