//! TLS on both ports: `--tls auto` with the CLI, static and local agents and the
//! dashboard; a CA that is not the coordinator's refused; plaintext to a TLS port
//! and TLS to a plaintext port refused with messages that say what to do; and no
//! listening beyond loopback in the clear unless asked.

use std::process::Command;
use std::time::Duration;

use corral_tests::{bin, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

/// `corral pool list` at `url` with the admin token in `token_file`, and only the
/// trust settings given (flags before the subcommand, or `CORRAL_CA_*` variables).
fn pool_list(url: &str, token_file: &std::path::Path, env: &[(&str, &str)], flags: &[&str]) -> std::process::Output {
    Command::new(bin("corral"))
        .env("CORRAL_TOKEN_FILE", token_file)
        .env_remove("CORRAL_CA_CERT")
        .env_remove("CORRAL_CA_FINGERPRINT")
        .envs(env.iter().copied())
        .args(["--coordinator", url])
        .args(flags)
        .args(["pool", "list"])
        .output()
        .unwrap()
}

/// Starts a coordinator that must refuse to start; returns what it said. One that
/// starts after all is killed, and the test fails instead of hanging.
fn refused_start(args: &[&str]) -> String {
    let mut child = Command::new(bin("corral-coordinator"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the coordinator started with {args:?}; it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_tls_coordinator_runs_jobs_for_the_cli_static_and_local_agents_and_the_dashboard() {
    let mut c = Cluster::start(&["--tls", "auto", "--agent-bin", bin("corral-agent").to_str().unwrap()]);
    assert!(c.url.starts_with("https://"), "{}", c.url);
    // A static agent trusting the CA file, a local pool whose agents the
    // coordinator starts with the CA pinned.
    c.static_pool("cpu", 1, 2);
    c.json(&["pool", "create", "loc", "--provider", "local", "--nodes", "1", "--slots-per-node", "2"]);
    c.wait_nodes("loc", "idle", 1);
    for pool in ["cpu", "loc"] {
        let job =
            c.submit(&["--pool", pool, "--array", "1-20"], &["sh", "-c", "echo task $CORRAL_TASK_INDEX over TLS"]);
        assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
        c.assert_each_succeeded_once(job);
        assert_eq!(c.logs(job, 7, false), "task 7 over TLS\n");
    }
    // Pinning the fingerprint works as well as the CA file.
    let pin = c.ca_fingerprint().unwrap();
    let out = pool_list(&c.url, &c.admin_token_file(), &[], &["--ca-fingerprint", &pin]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The coordinator said the fingerprint in its log.
    assert!(c.coordinator_log().contains(&pin), "the log names the fingerprint");
    // The dashboard is served over TLS too, with a Secure cookie.
    assert!(c.http_url().starts_with("https://"));
    assert_eq!(c.http_get("/api/pools").0, 200);
    let reader = c.token("reader", "read", &[]);
    let resp =
        c.http_client().post(format!("{}/login", c.http_url())).form(&[("token", reader.as_str())]).send().unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-corral_session=") && cookie.contains("Secure"), "{cookie}");
    // The CA stays across restarts, so pins stay true.
    c.restart_coordinator();
    assert_eq!(c.ca_fingerprint().unwrap(), pin);
    c.wait_nodes("cpu", "idle", 1);
}

#[test]
fn a_ca_that_is_not_the_coordinators_is_refused() {
    let c = Cluster::start(&["--tls", "auto"]);
    let other = Cluster::start(&["--tls", "auto"]);
    let other_ca = other.ca_file().unwrap();
    let out = pool_list(&c.url, &c.admin_token_file(), &[("CORRAL_CA_CERT", other_ca.to_str().unwrap())], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the coordinator's certificate is not trusted"), "{err}");
    let other_pin = other.ca_fingerprint().unwrap();
    let out = pool_list(&c.url, &c.admin_token_file(), &[], &["--ca-fingerprint", &other_pin]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not trusted"));
    // An agent with the wrong CA never joins: it stops and says why.
    let (admin, ca) = (c.admin_token_file(), other.ca_file().unwrap());
    let env = [("CORRAL_TOKEN_FILE", admin.to_str().unwrap()), ("CORRAL_CA_CERT", ca.to_str().unwrap())];
    let err = c.agent_refused(&c.url, "cpu", &env);
    assert!(err.contains("the coordinator's certificate is not trusted"), "{err}");
    assert!(c.json(&["node", "list"]).as_array().unwrap().is_empty());
}

#[test]
fn plaintext_to_a_tls_port_and_tls_to_a_plaintext_port_are_refused_clearly() {
    let tls = Cluster::start(&["--tls", "auto"]);
    let plain = Cluster::start(&[]);
    let http_to_tls = tls.url.replacen("https://", "http://", 1);
    let out = pool_list(&http_to_tls, &tls.admin_token_file(), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("this port serves TLS: use https://"), "{err}");
    // A browser or curl gets the same words.
    let dashboard = tls.http_url().replacen("https://", "http://", 1);
    let body = reqwest::blocking::get(format!("{dashboard}/healthz")).unwrap().text().unwrap();
    assert!(body.contains("this port serves TLS"), "{body}");

    let https_to_plain = plain.url.replacen("http://", "https://", 1);
    let tls_ca = tls.ca_file().unwrap();
    let out =
        pool_list(&https_to_plain, &plain.admin_token_file(), &[("CORRAL_CA_CERT", tls_ca.to_str().unwrap())], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is it serving TLS there? An http:// coordinator cannot be reached with https://"), "{err}");
    // An agent pointed at a TLS port with http:// stops and says why, instead of retrying forever.
    let admin = tls.admin_token_file();
    let err = tls.agent_refused(&http_to_tls, "cpu", &[("CORRAL_TOKEN_FILE", admin.to_str().unwrap())]);
    assert!(err.contains("this port serves TLS"), "{err}");
}

#[test]
fn listening_beyond_loopback_needs_tls_or_a_plain_word() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let err = refused_start(&["--listen", "0.0.0.0:0", "--http", "off", "--data-dir", data]);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without TLS") && err.contains("--tls auto"), "{err}");
    assert!(!dir.path().join("admin.token").exists(), "nothing was set up");
    let err = refused_start(&["--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", "--data-dir", data]);
    assert!(err.contains("without TLS"), "{err}");
    // With the plain word it starts.
    let mut child = Command::new(bin("corral-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--http", "off", "--allow-plaintext", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    corral_tests::wait_until(Duration::from_secs(20), "it to listen", || dir.path().join("coordinator.addr").is_file());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_operators_own_certificate_is_served_and_a_chain_without_its_ca_refused() {
    // A certificate chain and key made elsewhere: here, by another coordinator's CA.
    let issuer = Cluster::start(&["--tls", "auto"]);
    let tls_dir = issuer.data_dir().join("tls");
    let (chain, key) = (tls_dir.join("server.pem"), tls_dir.join("server.key"));
    let c = Cluster::start(&["--tls-cert", chain.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    // (The harness knows TLS by `--tls` only, so this one is asked over https by hand.)
    let https = c.url.replacen("http://", "https://", 1);
    let issuer_ca = issuer.ca_file().unwrap();
    let out = pool_list(&https, &c.admin_token_file(), &[], &["--ca-cert", issuer_ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Only the server's own certificate, without what signed it: refused, with why.
    let pem = std::fs::read_to_string(&chain).unwrap();
    let leaf_end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let leaf_only = issuer.dir.path().join("leaf.pem");
    std::fs::write(&leaf_only, &pem[..leaf_end]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("corral-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "off", "--tls-cert", leaf_only.to_str().unwrap()])
        .args(["--tls-key", key.to_str().unwrap(), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("followed by the CA"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
