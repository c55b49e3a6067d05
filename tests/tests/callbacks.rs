//! Completion callbacks (`job submit --notify URL`) against a real HTTP endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_tests::{wait_until, Cluster};
use serde_json::Value;

/// One post the endpoint received, and the status it answered.
#[derive(Debug, Clone)]
struct Post {
    status: u16,
    job_header: String,
    signature: String,
    raw: Vec<u8>,
    body: Value,
}

/// An HTTP endpoint that answers 500 to its first `failures` posts and 200 after.
fn endpoint(failures: usize) -> (String, Arc<Mutex<Vec<Post>>>) {
    serve(move |n| if n < failures { 500 } else { 200 })
}

/// An HTTP endpoint that answers post number `n` (from 0) with `answer(n)`.
fn serve(answer: impl Fn(usize) -> u16 + Send + 'static) -> (String, Arc<Mutex<Vec<Post>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hooks/job-done", listener.local_addr().expect("addr"));
    let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
    let seen = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut length, mut job_header, mut signature) = (0usize, String::new(), String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("corral-job:") {
                    job_header = v.trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("corral-signature:") {
                    signature = v.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut posts = seen.lock().unwrap();
            let status = answer(posts.len());
            let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
            posts.push(Post { status, job_header, signature, raw: body, body: parsed });
            let reason = if status == 200 { "OK" } else { "Internal Server Error" };
            let _ = write!(stream, "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, posts)
}

/// Whether `post` carries the HMAC-SHA256 of its body under `secret`.
fn signed_with(secret: &str, post: &Post) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let Some(hex) = post.signature.strip_prefix("sha256=") else { return false };
    let tag: Vec<u8> =
        (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    ring::hmac::verify(&key, &post.raw, &tag).is_ok()
}

#[test]
fn a_callback_that_fails_twice_is_delivered_exactly_once() {
    let (url, posts) = endpoint(2);
    // The receiver is on this machine: loopback callbacks must be allowed.
    let mut cluster = Cluster::start(&["--notify-backoff", "100ms", "--notify-allow-private"]);
    cluster.static_pool("cpu", 1, 2);
    let job = cluster.submit(&["--pool", "cpu", "--array", "1-3", "--notify", &url], &["true"]);
    assert_eq!(cluster.wait_job(job, Duration::from_secs(30))["state"], "completed");
    wait_until(Duration::from_secs(20), "the callback to be accepted", || {
        cluster.job(job)["notify"]["delivered"] == true
    });

    let got = posts.lock().unwrap().clone();
    assert_eq!(got.iter().map(|p| p.status).collect::<Vec<_>>(), [500, 500, 200], "{got:?}");
    let accepted = &got[2];
    assert_eq!(accepted.job_header, job.to_string());
    assert_eq!(accepted.body["job"], job);
    assert_eq!(accepted.body["state"], "completed");
    assert_eq!(accepted.body["counts"]["succeeded"], 3);
    assert_eq!(accepted.body["event"], "job.finished");
    // The receiver can check that it came from this coordinator: the signature is
    // the HMAC-SHA256 of the body under the secret an admin reads.
    let secret = cluster.json(&["notify-secret"])["secret"].as_str().unwrap().to_string();
    assert!(signed_with(&secret, accepted), "the signature does not verify");
    assert!(!signed_with(&secret, &Post { raw: b"{\"forged\": true}".to_vec(), ..accepted.clone() }));
    let reader = cluster.token("reader", "read", &[]);
    let out = cluster.corral_as(Some(&reader), &["notify-secret"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs an admin token"));

    // The failures are on the job, and in its events.
    let notify = cluster.job(job)["notify"].clone();
    assert_eq!(notify["attempts"], 3, "{notify}");
    assert!(notify["last_error"].as_str().is_some_and(|e| e.contains("500")), "{notify}");
    let shown = String::from_utf8_lossy(&cluster.corral(&["job", "show", &job.to_string()]).stdout).into_owned();
    assert!(shown.contains("delivered") && shown.contains("after 3 post(s)"), "{shown}");
    let out = cluster.corral(&["-o", "json", "events", "--job", &job.to_string()]);
    let states: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "job")
        .map(|e| e["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(states, ["active", "completed", "notify_failed", "notify_failed", "notified"]);

    // Accepted is durable: a restarted coordinator does not post it again.
    cluster.restart_coordinator();
    assert_eq!(cluster.job(job)["notify"]["delivered"], true);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(posts.lock().unwrap().len(), 3, "posted again after a restart");
}

#[test]
fn an_unreachable_callback_shows_why_and_a_bad_url_is_refused() {
    // A port nobody listens on (privileged, so no other test's server can take
    // it meanwhile, as a freed port 0 could be): the post fails with the
    // connection's error.
    let closed = "127.0.0.1:1";
    let mut cluster = Cluster::start(&["--notify-backoff", "100ms", "--notify-allow-private"]);
    cluster.static_pool("cpu", 1, 1);
    let job = cluster.submit(&["--pool", "cpu", "--notify", &format!("http://{closed}/done")], &["true"]);
    cluster.wait_job(job, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "two failed posts", || {
        cluster.job(job)["notify"]["attempts"].as_u64().unwrap_or(0) >= 2
    });
    let notify = cluster.job(job)["notify"].clone();
    assert_eq!(notify["delivered"], false, "{notify}");
    assert!(notify["last_error"].as_str().is_some_and(|e| e.contains("connect")), "{notify}");

    let err = cluster.fails(&["job", "submit", "--pool", "cpu", "--notify", "ftp://example.com/x", "--", "true"]);
    assert!(err.contains("notify_url") && err.contains("http"), "{err}");
    let err = cluster.fails(&["job", "submit", "--pool", "cpu", "--notify", "not a url", "--", "true"]);
    assert!(err.contains("notify_url"), "{err}");
}

#[test]
fn callbacks_into_the_coordinators_own_network_are_refused_by_default() {
    let (url, posts) = endpoint(0);
    let mut cluster = Cluster::start(&[]);
    cluster.static_pool("cpu", 1, 1);
    for target in [url.as_str(), "http://localhost:9/x", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/"] {
        let err = cluster.fails(&["job", "submit", "--pool", "cpu", "--notify", target, "--", "true"]);
        assert!(err.contains("invalid notify_url") && err.contains("--notify-allow-private"), "{target}: {err}");
    }
    assert!(cluster.json(&["job", "list"]).as_array().unwrap().is_empty(), "nothing was submitted");
    assert!(posts.lock().unwrap().is_empty());
}

/// A callback still failing when the leader is SIGKILLed is not lost: the standby
/// that takes over posts it (signed with the same key) until it is accepted, and
/// records it delivered.
#[test]
fn a_callback_pending_when_the_leader_dies_is_delivered_by_the_next() {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepting = open.clone();
    let (url, posts) = serve(move |_| if accepting.load(std::sync::atomic::Ordering::SeqCst) { 200 } else { 503 });
    let mut c = Cluster::start_on_postgres(&["--lease", "1s", "--notify-backoff", "100ms", "--notify-allow-private"]);
    let standby = c.standby(0, &[]);
    c.coordinators = Some(format!("{},{}", c.url, c.standby_url(standby)));
    c.static_pool("cpu", 1, 2);
    let secret = c.json(&["notify-secret"])["secret"].as_str().unwrap().to_string();
    let job = c.submit(&["--pool", "cpu", "--notify", &url], &["true"]);
    assert_eq!(c.wait_job(job, Duration::from_secs(30))["state"], "completed");
    wait_until(Duration::from_secs(20), "the callback to fail twice", || posts.lock().unwrap().len() >= 2);
    c.kill_coordinator();
    c.take_over(standby);
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_until(Duration::from_secs(30), "the new leader to deliver it", || c.job(job)["notify"]["delivered"] == true);
    let got = posts.lock().unwrap().clone();
    let accepted: Vec<&Post> = got.iter().filter(|p| p.status == 200).collect();
    assert_eq!(accepted.len(), 1, "{got:?}");
    assert_eq!(
        (accepted[0].job_header.as_str(), &accepted[0].body["state"]),
        (job.to_string().as_str(), &Value::from("completed"))
    );
    assert!(signed_with(&secret, accepted[0]), "the new leader signs with another key");
}
