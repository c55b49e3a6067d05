//! Which PostgreSQL to use and how to reach it: `--store postgres://USER@HOST:PORT/DB`
//! with the password from a file, `PGPASSWORD` or `~/.pgpass` (never the URL, which
//! is on a command line every user of the host can read), and TLS (rustls) when
//! the URL says `sslmode=require`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

/// A PostgreSQL database, ready to connect to.
#[derive(Clone)]
pub struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL without any secret, for messages.
    pub shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The parameters a `--store` URL may carry.
const KNOWN: &[&str] = &["sslmode", "sslrootcert", "host", "connect_timeout", "application_name"];

impl Target {
    /// Reads `--store URL` and finds the password (`password_file`, then
    /// `PGPASSWORD`, then `PGPASSFILE` or `~/.pgpass`).
    pub fn parse(url: &str, password_file: Option<&Path>) -> Result<Target, String> {
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("--store: {url:?} is not a URL ({e}); give postgres://USER@HOST:PORT/DB"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "--store: {:?} is not a PostgreSQL URL: give postgres://USER@HOST:PORT/DB, or sqlite",
                parsed.scheme()
            ));
        }
        if parsed.password().is_some() {
            return Err("--store: the URL holds a password, and a command line is readable by every user of the host: put it in PGPASSWORD, a --store-password-file or ~/.pgpass".into());
        }
        let user = decode(parsed.username());
        if user.is_empty() {
            return Err("--store: name the database user: postgres://USER@HOST:PORT/DB".into());
        }
        let db = decode(parsed.path().trim_start_matches('/'));
        let db = if db.is_empty() { user.clone() } else { db };
        let mut host = parsed.host_str().map(decode).unwrap_or_default();
        let port = parsed.port().unwrap_or(5432);
        let mut sslmode = None;
        let mut rootcert = None;
        let mut config = tokio_postgres::Config::new();
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("corral-coordinator");
        // The server's notices ("already exists, skipping") are not the operator's.
        config.options("-c client_min_messages=warning");
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => sslmode = Some(value.to_string()),
                "sslrootcert" => rootcert = Some(PathBuf::from(value.as_ref())),
                "host" => host = value.to_string(),
                "connect_timeout" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| format!("--store: connect_timeout={value} is not a number of seconds"))?;
                    config.connect_timeout(Duration::from_secs(secs.max(1)));
                }
                "application_name" => {
                    config.application_name(value.as_ref());
                }
                other => {
                    return Err(format!(
                        "--store: unknown parameter {other:?} (Corral understands {})",
                        KNOWN.join(", ")
                    ));
                }
            }
        }
        if host.is_empty() {
            host = "localhost".into();
        }
        let socket = host.starts_with('/');
        let loopback =
            socket || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let tls = match sslmode.as_deref() {
            Some("require" | "verify-ca" | "verify-full") => {
                let mut rustls = corral_proto::tls::ClientTls { ca_cert: rootcert, ca_fingerprint: None }
                    .config()
                    .map_err(|e| format!("--store: {e}"))?;
                rustls.alpn_protocols.clear();
                config.ssl_mode(SslMode::Require);
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(rustls))
            }
            Some("disable") => None,
            None if loopback => None,
            None => {
                return Err(format!("--store: PostgreSQL on {host} is beyond this host, and without TLS the password and every task would cross the network in the clear: add ?sslmode=require (or sslmode=disable on a network you trust)"));
            }
            Some(other) => {
                return Err(format!("--store: sslmode={other} is not supported: use require (TLS, the server's certificate checked against the system's roots or sslrootcert=FILE) or disable"));
            }
        };
        if tls.is_none() {
            config.ssl_mode(SslMode::Disable);
        }
        config.user(&user).dbname(&db).port(port);
        if socket {
            config.host_path(&host);
        } else {
            config.host(&host);
        }
        if let Some(password) = password(password_file, &host, port, &db, &user)? {
            config.password(password);
        }
        let shown = match socket {
            true => format!("postgres://{user}@{}:{port}/{db}", host),
            false => format!("postgres://{user}@{host}:{port}/{db}"),
        };
        Ok(Target { config, tls, shown })
    }

    /// The database's name and the user, for messages.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    /// Where the server is, for messages.
    pub fn server(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => format!("{host}:{port}"),
            Some(Host::Unix(dir)) => format!("{}/.s.PGSQL.{port}", dir.display()),
            None => format!("localhost:{port}"),
        }
    }
}

/// A URL part with its `%XX` escapes undone.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The password, from the first place that has one.
fn password(file: Option<&Path>, host: &str, port: u16, db: &str, user: &str) -> Result<Option<String>, String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--store-password-file: cannot read {}: {e}", file.display()))?;
        let password = text.lines().next().unwrap_or_default().to_string();
        if password.is_empty() {
            return Err(format!("--store-password-file: {} is empty", file.display()));
        }
        return Ok(Some(password));
    }
    if let Ok(password) = std::env::var("PGPASSWORD") {
        if !password.is_empty() {
            return Ok(Some(password));
        }
    }
    let passfile = match std::env::var_os("PGPASSFILE") {
        Some(path) => PathBuf::from(path),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&passfile) else { return Ok(None) };
    // libpq matches a socket as "localhost".
    let host = if host.starts_with('/') { "localhost" } else { host };
    Ok(pgpass_lookup(&text, host, &port.to_string(), db, user))
}

/// The password of the first `host:port:database:user:password` line of a
/// `.pgpass` that matches (`*` matches anything; `\:` and `\\` are escapes).
pub fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        let wanted = [host, port, db, user];
        if fields[..4].iter().zip(wanted).all(|(f, w)| f == "*" || f == w) {
            return Some(fields.pop().unwrap_or_default());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:ann:nope\nlocalhost:5432:corral:ann:s\\:cret\n*:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(text, "localhost", "5432", "corral", "ann").as_deref(), Some("s:cret"));
        assert_eq!(pgpass_lookup(text, "db.example", "6543", "x", "bob").as_deref(), Some("fallback"));
        assert_eq!(pgpass_lookup("a:b:c:d", "a", "b", "c", "d"), None);
    }

    #[test]
    fn a_url_is_refused_with_the_reason() {
        let err = |url: &str| Target::parse(url, None).err().unwrap_or_default();
        assert!(
            err("postgres://ann:secret@localhost/db").contains("holds a password"),
            "{}",
            err("postgres://ann:secret@localhost/db")
        );
        assert!(err("postgres://localhost/db").contains("name the database user"));
        assert!(err("mysql://ann@localhost/db").contains("not a PostgreSQL URL"));
        assert!(err("postgres://ann@db.example.com/db").contains("sslmode=require"));
        assert!(err("postgres://ann@localhost/db?sslmode=prefer").contains("sslmode=prefer is not supported"));
        assert!(err("postgres://ann@localhost/db?pool=3").contains("unknown parameter \"pool\""));
        let ok = Target::parse("postgres://ann@127.0.0.1:6000/jobs", None).unwrap();
        assert_eq!((ok.user(), ok.database(), ok.server().as_str()), ("ann", "jobs", "127.0.0.1:6000"));
        let socket = Target::parse("postgres://ann@%2Ftmp%2Fpg/jobs", None).unwrap();
        assert_eq!(socket.server(), "/tmp/pg/.s.PGSQL.5432");
        assert!(Target::parse("postgres://ann@db.example.com/db?sslmode=disable", None).is_ok());
    }
}
