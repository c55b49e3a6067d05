//! Queue triggers end to end, with a real Redis (Debian's `redis-server`, one per
//! test): a job per message, each with its message as the payload, none twice
//! (also across coordinator SIGKILLs); a refused message dead-lettered while the
//! queue flows on; backpressure; a broker that goes away and comes back.

use std::collections::BTreeSet;
use std::time::Duration;

use corral_tests::redis_server::Redis;
use corral_tests::*;
use redis::Commands;

const MINUTE: Duration = Duration::from_secs(60);

/// A cluster with a pool of one agent, a template whose tasks append their
/// payload and color to `seen`, and a trigger on `redis`'s stream `orders`.
fn setup(redis: &Redis, seen: &std::path::Path, extra: &[&str]) -> Cluster {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let script = format!("printf '%s %s\\n' \"$(cat payload)\" \"$CORRAL_META_color\" >> {}", seen.display());
    c.json(&["template", "create", "order", "--pool", "cpu", "--meta-required", "color", "--", "sh", "-c", &script]);
    let source = format!("{}?stream=orders&group=corral", redis.url());
    let mut args = vec!["trigger", "create", "orders", "--template", "order", "--source", &source];
    args.extend_from_slice(extra);
    c.json(&args);
    c
}

fn publish(conn: &mut redis::Connection, from: usize, to: usize) {
    for i in from..to {
        let _: String =
            conn.xadd("orders", "*", &[("payload", format!("order-{i}")), ("color", "red".into())]).unwrap();
    }
}

fn trigger(c: &Cluster) -> serde_json::Value {
    c.json(&["trigger", "show", "orders"])
}

/// Messages taken but not acknowledged by the group.
fn pending(conn: &mut redis::Connection) -> u64 {
    let reply: redis::Value = redis::cmd("XPENDING").arg("orders").arg("corral").query(conn).unwrap();
    match reply {
        redis::Value::Array(items) => {
            items.first().and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok()).unwrap_or(0)
        }
        _ => 0,
    }
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn each_message_makes_one_job_with_it_as_the_payload() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let c = setup(&redis, &seen, &[]);
    let mut conn = redis.conn();
    publish(&mut conn, 0, 1000);
    // The same message sent twice under the producer's id makes one job.
    for _ in 0..2 {
        let fields = [("payload", "twice"), ("color", "blue"), ("message_id", "order-twice")];
        let _: String = conn.xadd("orders", "*", &fields).unwrap();
    }
    wait_until(2 * MINUTE, "1001 jobs made and run", || lines(&seen).len() >= 1001 && trigger(&c)["fired"] == 1001);
    let got = lines(&seen);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!((got.len(), distinct.len()), (1001, 1001), "each message's job ran once");
    for i in [0, 499, 999] {
        assert!(distinct.contains(&format!("order-{i} red")), "{i}");
    }
    assert!(distinct.contains(&"twice blue".to_string()));
    wait_until(MINUTE, "every message acknowledged", || pending(&mut conn) == 0);
    // Idle, it stays connected: a read that waits for messages is no failure.
    std::thread::sleep(Duration::from_millis(2500));
    let t = trigger(&c);
    assert_eq!((t["connected"].clone(), t["failed"].clone()), (true.into(), 0.into()), "{t}");
    assert_eq!(t["taken"], 1002, "{t}");
}

#[test]
fn a_coordinator_sigkilled_while_messages_flow_makes_each_job_once() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let mut c = setup(&redis, &seen, &[]);
    let url = redis.url();
    let producer = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        for from in (0..500).step_by(50) {
            publish(&mut conn, from, from + 50);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        c.restart_coordinator();
    }
    producer.join().unwrap();
    let mut conn = redis.conn();
    wait_until(2 * MINUTE, "500 jobs made and run", || lines(&seen).len() >= 500 && pending(&mut conn) == 0);
    assert_eq!(trigger(&c)["fired"], 500, "one job per message");
    let got = lines(&seen);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!((got.len(), distinct.len()), (500, 500), "each ran once");
}

#[test]
fn a_message_the_template_refuses_is_dead_lettered_and_the_queue_flows_on() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let c = setup(&redis, &seen, &[]);
    let mut conn = redis.conn();
    // No color: the template requires it.
    let bad: String = conn.xadd("orders", "*", &[("payload", "colorless")]).unwrap();
    publish(&mut conn, 0, 3);
    wait_until(MINUTE, "the good ones run", || lines(&seen).len() == 3);
    let dead: redis::streams::StreamRangeReply = conn.xrange_all("orders:dead").unwrap();
    assert_eq!(dead.ids.len(), 1, "{dead:?}");
    let field = |k: &str| redis::from_redis_value::<String>(dead.ids[0].map[k].clone()).unwrap();
    assert_eq!(field("payload"), "colorless");
    assert_eq!(field("corral_entry"), bad);
    assert_eq!(field("corral_trigger"), "orders");
    assert!(field("corral_error").contains("requires meta 'color'"), "{}", field("corral_error"));
    assert_eq!(pending(&mut conn), 0);
    let t = trigger(&c);
    assert_eq!((t["fired"].clone(), t["failed"].clone()), (3.into(), 1.into()), "{t}");
}

#[test]
fn max_active_keeps_the_rest_in_the_broker() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 8);
    let script = format!("sleep 0.5; cat payload >> {}; echo >> {}", seen.display(), seen.display());
    c.json(&["template", "create", "slow", "--pool", "cpu", "--", "sh", "-c", &script]);
    let source = format!("{}?stream=orders&group=corral", redis.url());
    c.json(&["trigger", "create", "orders", "--template", "slow", "--source", &source, "--max-active", "2"]);
    let mut conn = redis.conn();
    for i in 0..10 {
        let _: String = conn.xadd("orders", "*", &[("payload", format!("m{i}"))]).unwrap();
    }
    let mut most = 0;
    wait_until(MINUTE, "all ten run", || {
        let active = c.json(&["job", "list", "--state", "active"]).as_array().map_or(0, Vec::len);
        most = most.max(active);
        lines(&seen).len() == 10
    });
    assert!(most <= 2, "at most 2 active at once, saw {most}");
    assert_eq!(trigger(&c)["fired"], 10);
}

#[test]
fn a_broker_that_goes_away_is_waited_for_and_nothing_is_lost() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let c = setup(&redis, &seen, &[]);
    publish(&mut redis.conn(), 0, 5);
    wait_until(MINUTE, "the first five", || lines(&seen).len() == 5);
    redis.stop();
    wait_until(MINUTE, "the trigger says it backs off", || {
        let t = trigger(&c);
        t["connected"] == false && t["backing_off_until_ms"].as_u64().is_some() && t["last_error"].is_string()
    });
    redis.restart();
    publish(&mut redis.conn(), 5, 10);
    wait_until(2 * MINUTE, "the next five", || lines(&seen).len() == 10);
    assert_eq!(trigger(&c)["connected"], true);
    assert_eq!(trigger(&c)["fired"], 10);
}

#[test]
fn bad_sources_are_refused_naming_the_field_and_an_unreachable_broker_is_accepted() {
    let c = Cluster::start(&[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    c.json(&["template", "create", "t", "--pool", "cpu", "--", "true"]);
    let create = |source: &str, more: &[&str]| {
        let mut args = vec!["trigger", "create", "q", "--template", "t", "--source", source];
        args.extend_from_slice(more);
        c.fails(&args)
    };
    let said = create("kafka://h:1/0?stream=s&group=g", &[]);
    assert!(said.contains("source: has scheme 'kafka'"), "{said}");
    let said = create("not a url", &[]);
    assert!(said.contains("source: is not a URL"), "{said}");
    let said = create("redis://:hunter2@127.0.0.1:1/0?stream=s&group=g", &[]);
    assert!(said.contains("source: holds a password") && !said.contains("hunter2"), "{said}");
    let said = create("redis://127.0.0.1:1/0?stream=s", &[]);
    assert!(said.contains("source: needs group=NAME"), "{said}");
    let said = create("redis://127.0.0.1:1/0?stream=s&group=g", &["--secret-env", "HOME"]);
    assert!(
        said.contains("secret_env: must name an environment variable of the coordinator starting with CORRAL_SECRET_"),
        "{said}"
    );
    // Only an admin points the coordinator at a host (and at its secrets).
    let submitter = c.token("app", "submit", &[]);
    let args = ["trigger", "create", "q", "--template", "t", "--source", "redis://127.0.0.1:1/0?stream=s&group=g"];
    let out = c.corral_as(Some(&submitter), &args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("needs an admin token"), "{said}");
    assert!(c.json(&["trigger", "list"]).as_array().is_some_and(Vec::is_empty), "nothing was made");
    // Nothing listens there: accepted, and shown backing off with the reason.
    c.json(&["trigger", "create", "q", "--template", "t", "--source", "redis://127.0.0.1:1/0?stream=s&group=g"]);
    wait_until(MINUTE, "backing off", || {
        let t = c.json(&["trigger", "show", "q"]);
        t["backing_off_until_ms"].as_u64().is_some()
            && t["last_error"].as_str().is_some_and(|e| e.contains("connecting"))
    });
}

#[test]
fn with_ack_on_complete_a_poison_message_gets_its_deliveries_then_is_dead_lettered() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let script =
        format!("p=$(cat payload); echo \"$p $CORRAL_TRIGGER_DELIVERY\" >> {}; [ \"$p\" != poison ]", seen.display());
    c.json(&["template", "create", "t", "--pool", "cpu", "--", "sh", "-c", &script]);
    let source = format!("{}?stream=orders&group=corral", redis.url());
    let args = ["trigger", "create", "orders", "--template", "t", "--source", &source];
    c.json(&[&args[..], &["--ack-on", "complete", "--max-deliveries", "3"]].concat());
    let mut conn = redis.conn();
    let poison: String = conn.xadd("orders", "*", &[("payload", "poison")]).unwrap();
    wait_until(MINUTE, "the poison's first delivery failed", || lines(&seen).contains(&"poison 1".to_string()));
    // A restart goes on counting from the jobs it holds.
    c.restart_coordinator();
    for i in 0..3 {
        let _: String = conn.xadd("orders", "*", &[("payload", format!("good-{i}"))]).unwrap();
    }
    let dead = || -> redis::streams::StreamRangeReply { redis.conn().xrange_all("orders:dead").unwrap() };
    wait_until(2 * MINUTE, "the poison dead-lettered and the rest done", || {
        dead().ids.len() == 1 && (0..3).all(|i| lines(&seen).contains(&format!("good-{i} 1")))
    });
    let got = lines(&seen);
    let poisoned: Vec<&String> = got.iter().filter(|l| l.starts_with("poison")).collect();
    assert_eq!(poisoned, ["poison 1", "poison 2", "poison 3"], "three deliveries, one job each");
    let dead = dead();
    let field = |k: &str| redis::from_redis_value::<String>(dead.ids[0].map[k].clone()).unwrap();
    assert_eq!((field("payload"), field("corral_entry")), ("poison".to_string(), poison));
    let error = field("corral_error");
    assert!(error.contains("exited with code 1") && error.contains("--max-deliveries is 3"), "{error}");
    let job: u64 = field("corral_job").parse().unwrap();
    assert_eq!(c.job(job)["state"], "failed");
    wait_until(MINUTE, "nothing left pending", || pending(&mut conn) == 0);
    let t = trigger(&c);
    assert_eq!((t["ack_on"].clone(), t["max_deliveries"].clone()), ("complete".into(), 3.into()), "{t}");
}
