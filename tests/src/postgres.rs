//! A throwaway PostgreSQL server per test: `initdb` in a temp dir (as the
//! `postgres` user when the tests run as root, since the server refuses root),
//! listening only on a Unix socket in that dir, so tests run in parallel without
//! ports to fight over; stopped with SIGINT (a fast shutdown) and removed on drop.
//! Its superuser `corral` has a password ([`PASSWORD`]), so every test goes through
//! the password path a real deployment uses.
//!
//! Self-contained (std, libc, tempfile): the coordinator's own tests of the store
//! include this file too (`#[path]`), so both run one harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The password of the server's user `corral`.
pub const PASSWORD: &str = "corral-test-password";

/// A running PostgreSQL server.
pub struct Postgres {
    dir: tempfile::TempDir,
    server: Option<Child>,
    bin: PathBuf,
    /// The port (the socket's name; on 127.0.0.1 too when it serves TLS).
    port: u16,
    /// Settings it was started with, for a restart.
    settings: Vec<String>,
}

/// The directory of the newest installed PostgreSQL's server programs.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").is_file())
        .collect();
    found.sort();
    match found.pop() {
        Some((version, bin)) if version >= 15 => bin,
        _ => panic!("PostgreSQL 15 or later is not installed: apt-get install postgresql (.ci/run does)"),
    }
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Postgres {
    /// Starts a fresh server; ready when this returns.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// Starts a fresh server that also serves TLS on 127.0.0.1 (on a free port) with
    /// this certificate chain and key (PEM); see [`Postgres::tcp_url`].
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let files = tempfile::Builder::new().prefix("pgtls").tempdir_in("/tmp").expect("temp dir");
        let (cert, key) = (files.path().join("server.crt"), files.path().join("server.key"));
        std::fs::write(&cert, cert_pem).expect("certificate");
        std::fs::write(&key, key_pem).expect("key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(files.path()).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the certificate to postgres");
        }
        let settings = [
            "listen_addresses=127.0.0.1".to_string(),
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ];
        let pg = Postgres::launch(port, &settings);
        // The files must outlive the server; they go with the process's temp dir.
        std::mem::forget(files);
        pg
    }

    /// A `--store` URL for database `db` over TCP to `localhost` (for TLS).
    pub fn tcp_url(&self, db: &str) -> String {
        format!("postgres://corral@localhost:{}/{db}", self.port)
    }

    /// Starts a fresh server with extra `-c name=value` settings.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        Postgres::launch(5432, &settings)
    }

    fn launch(port: u16, settings: &[String]) -> Postgres {
        let bin = bin_dir();
        // Short: the socket's path must stay under 107 bytes.
        let dir = tempfile::Builder::new().prefix("pg").tempdir_in("/tmp").expect("temp dir");
        std::fs::write(dir.path().join("pw"), PASSWORD).expect("password file");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the temp dir to postgres");
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "corral", "-N", "-E", "UTF8", "--locale=C", "--auth=scram-sha-256", "--pwfile"])
            .arg(dir.path().join("pw"))
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { dir, server: None, bin, port, settings: settings.to_vec() };
        pg.serve();
        pg
    }

    /// Starts the server on its data and socket, and waits until it answers.
    fn serve(&mut self) {
        let port = self.port.to_string();
        let mut server = as_postgres(&self.bin.join("postgres"));
        server.arg("-D").arg(self.dir.path().join("data")).arg("-k").arg(self.dir.path());
        server.args(["-c", "listen_addresses=", "-p", &port, "-c", "fsync=off", "-c", "full_page_writes=off"]);
        for s in &self.settings {
            server.args(["-c", s]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        self.server = Some(server.stdout(Stdio::null()).stderr(log).spawn().expect("start postgres"));
        wait_until(Duration::from_secs(30), "PostgreSQL to accept connections", || {
            Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &port, "-U", "corral", "-d", "postgres", "-q"])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// A `--store` URL for database `db` (made by [`Postgres::create`]).
    pub fn url(&self, db: &str) -> String {
        let dir = self.dir.path().display().to_string().replace('/', "%2F");
        format!("postgres://corral@{dir}:{}/{db}", self.port)
    }

    /// Creates an empty database; returns its `--store` URL.
    pub fn create(&self, db: &str) -> String {
        let out = self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        assert!(out.0, "CREATE DATABASE {db}: {}", out.1);
        self.url(db)
    }

    /// Runs SQL with psql; (ok, output and errors).
    pub fn psql(&self, db: &str, sql: &str) -> (bool, String) {
        let out = Command::new("psql")
            .env("PGPASSWORD", PASSWORD)
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "corral", "-d", db, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql])
            .output()
            .expect("run psql");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text.trim().to_string())
    }

    /// An open psql session on `db`, driven a statement at a time (to hold a lock
    /// while something else runs).
    pub fn session(&self, db: &str) -> Session {
        let mut child = Command::new("psql")
            .env("PGPASSWORD", PASSWORD)
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "corral", "-d", db, "-v", "ON_ERROR_STOP=1", "-XAtq"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run psql");
        let stdin = child.stdin.take().expect("psql's stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("psql's stdout"));
        Session { child, stdin, stdout }
    }

    /// Stops the server at once (SIGINT: a fast shutdown), as a database that
    /// goes away does.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SAFETY: kill(2) has no memory effects.
            unsafe {
                libc::kill(server.id() as libc::pid_t, libc::SIGINT);
            }
            let _ = server.wait();
        }
    }

    /// Starts the server again on the same data and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }
}

/// A command run as the `postgres` user when this is root (the server refuses
/// root); `setpriv` execs it, so the child's PID is the program's.
fn as_postgres(program: &Path) -> Command {
    match is_root() {
        true => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]).arg(program);
            c
        }
        false => Command::new(program),
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A psql session kept open ([`Postgres::session`]); it ends when dropped.
pub struct Session {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Session {
    /// Runs a statement and returns the first line it prints (a statement that
    /// prints nothing would wait forever: end it with a `SELECT`).
    pub fn run(&mut self, sql: &str) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{sql}").expect("write to psql");
        self.stdin.flush().expect("write to psql");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read psql");
        line.trim().to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of a server's socket that a test can cut, as a network would:
/// the coordinator given [`Proxy::url`] reaches the database through it, and
/// [`Proxy::cut`] breaks every session and refuses new ones.
pub struct Proxy {
    dir: tempfile::TempDir,
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl Postgres {
    /// A proxy in front of this server's socket.
    pub fn proxy(&self) -> Proxy {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().expect("proxy dir");
        let name = format!(".s.PGSQL.{}", self.port);
        let listener = UnixListener::bind(dir.path().join(&name)).expect("proxy socket");
        let target = self.dir.path().join(&name);
        let proxy = Proxy { dir, port: self.port, cut: Default::default(), open: Default::default() };
        let (cut, open) = (proxy.cut.clone(), proxy.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = UnixStream::connect(&target) else { continue };
                let mut held = open.lock().unwrap();
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        held.push(clone);
                    }
                }
                for (mut from, mut to) in
                    [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())]
                        .into_iter()
                        .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }
}

impl Proxy {
    /// A `--store` URL for database `db` through the proxy.
    pub fn url(&self, db: &str) -> String {
        let dir = self.dir.path().display().to_string().replace('/', "%2F");
        format!("postgres://corral@{dir}:{}/{db}", self.port)
    }

    /// Lets new sessions through again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Breaks every session through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
