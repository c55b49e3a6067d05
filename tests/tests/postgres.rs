//! The coordinator on PostgreSQL (`--store postgres://...`), end to end: each test
//! starts its own server (see `corral_tests::postgres`). Jobs (arrays, graphs,
//! retries) run every task once across a SIGKILL of the coordinator; schedules make
//! no slot twice across restarts; an idempotent submit lands once; tokens survive;
//! retention deletes everything of a job; a database that goes away is waited out;
//! and bad configuration is refused at start with one line naming the cause.

use std::process::Command;
use std::time::Duration;

use corral_tests::postgres::{Postgres, PASSWORD};
use corral_tests::{bin, wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn jobs_run_every_task_once_on_postgres_across_a_coordinator_sigkill() {
    let mut c = Cluster::start_on_postgres(&[]);
    c.static_pool("cpu", 2, 2);
    // Task 3 fails its first attempt: retries are recorded too.
    let array = c.submit(
        &["--pool", "cpu", "--array", "1-30", "--max-retries", "2"],
        &[
            "sh",
            "-c",
            "if [ \"$CORRAL_TASK_INDEX\" = 3 ] && [ \"$CORRAL_ATTEMPT\" = 1 ]; then exit 3; fi; echo out {index}; sleep 0.2",
        ],
    );
    let file = c.dir.path().join("graph.yaml");
    std::fs::write(
        &file,
        "tasks:\n  - id: a\n    command: ['sh', '-c', 'echo a']\n  - id: b\n    command: ['sh', '-c', 'echo b']\n    depends_on: [a]\n",
    )
    .unwrap();
    let graph =
        c.json(&["job", "submit", "--pool", "cpu", "--file", file.to_str().unwrap()])["job_id"].as_u64().unwrap();
    wait_until(MINUTE, "some tasks to finish", || c.job(array)["counts"]["succeeded"].as_u64() >= Some(5));
    c.kill_coordinator();
    c.restart_coordinator();
    for job in [array, graph] {
        let done = c.wait_job(job, MINUTE);
        assert_eq!(done["state"], "completed", "{done}");
        c.assert_each_succeeded_once(job);
    }
    let attempts = c.attempts(array);
    let third = &attempts.iter().find(|(i, _)| *i == 3).unwrap().1;
    assert_eq!(third.len(), 2, "{third:?}");
    assert_eq!(third[0]["outcome"], "failed");
    assert_eq!(c.logs(array, 17, false), "out 17\n");
    assert_eq!(c.logs(graph, 1, false), "b\n");
    // The feed, read from the database, has every change once, in order.
    assert_feed_in_order(&c, array);
}

/// The events of `job`, read through the CLI, are there and in order.
fn assert_feed_in_order(c: &Cluster, job: u64) {
    let out = c.corral(&["-o", "json", "events", "--job", &job.to_string()]);
    let ids: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && !ids.is_empty(), "{ids:?}");
}

#[test]
fn the_database_password_never_reaches_a_task() {
    let c = Cluster::start_on_postgres(&[]);
    let out = c.corral(&["pool", "create", "here", "--provider", "local", "--nodes", "1", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job = c.submit(&["--pool", "here"], &["sh", "-c", "echo \"[$PGPASSWORD]\"; env | grep -c ^PG || true"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.logs(job, 0, false), "[]\n0\n");
}

#[test]
fn submits_tokens_and_schedules_hold_across_restarts_on_postgres() {
    let mut c = Cluster::start_on_postgres(&[]);
    c.static_pool("cpu", 1, 4);
    let token = c.token("ci", "submit", &[]);
    let submit = |c: &Cluster| {
        c.corral(&[
            "-o",
            "json",
            "job",
            "submit",
            "--pool",
            "cpu",
            "--idempotency-key",
            "nightly-1",
            "--",
            "echo",
            "once",
        ])
    };
    let first = submit(&c);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let id = serde_json::from_slice::<serde_json::Value>(&first.stdout).unwrap()["job_id"].clone();
    c.every_second("beat", "cpu");
    for _ in 0..2 {
        let before = c.schedule_slots("beat").len();
        wait_until(MINUTE, "a run", || c.schedule_slots("beat").len() > before + 1);
        c.kill_coordinator();
        std::thread::sleep(Duration::from_millis(1500));
        c.restart_coordinator();
    }
    let again = submit(&c);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap()["job_id"], id);
    // The token made before the restarts still works, as the role it was given.
    let out = c.corral_as(Some(&token), &["job", "submit", "--pool", "cpu", "--", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.corral_as(Some(&token), &["pool", "delete", "cpu"]);
    assert!(!out.status.success());
    wait_until(MINUTE, "a run after the last restart", || c.schedule_slots("beat").len() >= 5);
    c.json(&["schedule", "pause", "beat"]);
    corral_tests::assert_each_slot_once(&c.schedule_slots("beat"));
}

#[test]
fn retention_deletes_a_job_with_its_logs_and_events_on_postgres() {
    let mut c = Cluster::start_on_postgres(&["--retain", "3s"]);
    c.static_pool("cpu", 1, 1);
    let job = c.submit(&["--pool", "cpu"], &["sh", "-c", "echo printed"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.logs(job, 0, false), "printed\n");
    wait_until(MINUTE, "retention to delete the job", || {
        c.json(&["job", "list"]).as_array().is_some_and(Vec::is_empty)
    });
    let pg = c.postgres.as_ref().unwrap();
    let (ok, rows) = pg.psql("corral", &format!("SELECT count(*) FROM task_logs WHERE job_id = {job}"));
    assert!(ok && rows == "0", "{rows}");
    let out = c.corral(&["-o", "json", "events", "--job", &job.to_string()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "only the deletion is left");
    c.kill_coordinator();
    c.restart_coordinator();
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn a_database_that_goes_away_fails_writes_like_a_full_disk_and_is_recovered_from() {
    // A lease long enough to look at the coordinator before it stands by.
    let mut c = Cluster::start_on_postgres(&["--lease", "10s"]);
    c.static_pool("cpu", 1, 1);
    let first = c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.wait_job(first, MINUTE)["state"], "completed");
    c.postgres.as_mut().unwrap().stop();
    let out = c.corral(&["job", "submit", "--pool", "cpu", "--", "echo", "lost"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("store cannot write") && err.contains("PostgreSQL"), "{err}");
    // Reads answer meanwhile; health says it cannot serve changes.
    assert_eq!(c.json(&["pool", "list"]).as_array().map(Vec::len), Some(1));
    assert_eq!(c.health(), tonic_health::pb::health_check_response::ServingStatus::NotServing);
    // Its lease cannot be renewed: after one lease it stops serving (a standby
    // that reaches the database could lead by then) and stands by itself.
    let log = || std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap_or_default();
    wait_until(MINUTE, "the coordinator to step down", || log().contains("stepped down; standing by"));
    assert!(log().contains("could not renew the lease"), "{}", log());
    // The database back, it takes the lease again and serves, from what was stored.
    c.postgres.as_mut().unwrap().restart();
    let deadline = std::time::Instant::now() + MINUTE;
    while !(c.corral(&["pool", "list"]).status.success()
        && c.health() == tonic_health::pb::health_check_response::ServingStatus::Serving)
    {
        assert!(std::time::Instant::now() < deadline, "the coordinator never led again: {}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.job(first)["state"], "completed");
    let again = c.submit(&["--pool", "cpu"], &["echo", "again"]);
    assert_eq!(c.wait_job(again, MINUTE)["state"], "completed");
    assert_eq!(c.logs(again, 0, false), "again\n");
}

/// Runs `corral-coordinator` with `args` and the environment `env`, expecting it to
/// refuse to start: returns its one line of error.
fn refused(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin("corral-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .env_remove("PGPASSWORD")
        .env("HOME", dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn bad_store_configuration_is_refused_at_start_with_one_line_naming_the_cause() {
    let pg = Postgres::start();
    let url = pg.create("corral");
    let dir = tempfile::tempdir().unwrap();
    let pw = [("PGPASSWORD", PASSWORD)];
    let err = refused(dir.path(), &["--store", &url], &[("PGPASSWORD", "wrong")]);
    assert!(err.contains("refused the password of user \"corral\""), "{err}");
    let err = refused(dir.path(), &["--store", &url], &[]);
    assert!(err.contains("asks for a password for user \"corral\""), "{err}");
    let err = refused(dir.path(), &["--store", &pg.url("missing")], &pw);
    assert!(err.contains("database \"missing\" does not exist"), "{err}");
    let err = refused(dir.path(), &["--store", "postgres://corral@127.0.0.1:1/corral"], &pw);
    assert!(err.contains("cannot reach PostgreSQL at 127.0.0.1:1: connection refused"), "{err}");
    let with_password = url.replace("corral@", "corral:secret@");
    let err = refused(dir.path(), &["--store", &with_password], &pw);
    assert!(err.contains("the URL holds a password") && !err.contains("secret"), "{err}");
    let err = refused(dir.path(), &["--store", "postgres://corral@db.example.com/corral"], &pw);
    assert!(err.contains("add ?sslmode=require"), "{err}");
    // A SQLite file handed to --store.
    let sqlite = tempfile::tempdir().unwrap();
    let db = sqlite.path().join("corral.db");
    std::fs::write(&db, b"SQLite format 3\0rest of a database").unwrap();
    let err = refused(dir.path(), &["--store", db.to_str().unwrap()], &pw);
    assert!(err.contains("is a SQLite database") && err.contains("--store sqlite"), "{err}");
    // The password from ~/.pgpass, and from a file.
    let pgpass = dir.path().join(".pgpass");
    std::fs::write(&pgpass, format!("localhost:5432:corral:corral:{PASSWORD}\n")).unwrap();
    // A database of a newer schema (made by a newer coordinator) is refused.
    let mut c = Cluster::start_with_env(&["--store", &url], &[("HOME", dir.path().to_str().unwrap())]);
    c.static_pool("cpu", 1, 1);
    c.kill_coordinator();
    let version = pg.psql("corral", "SELECT version FROM schema_version").1;
    assert!(pg.psql("corral", "UPDATE schema_version SET version = 99").0);
    let err = refused(dir.path(), &["--store", &url], &pw);
    assert!(err.contains(&format!("its schema is version 99, newer than the version {version}")), "{err}");
    assert!(pg.psql("corral", &format!("UPDATE schema_version SET version = {version}")).0);
    // The file comes first: ~/.pgpass now has a wrong one.
    std::fs::write(&pgpass, "*:*:*:*:wrong\n").unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    c.restart_with(&["--store-password-file", file.to_str().unwrap()]);
    assert_eq!(c.json(&["pool", "list"]).as_array().map(Vec::len), Some(1));
    // A second coordinator on the same database whose object store is not the
    // first one's (its own data dir) is refused; one that shares it stands by (see
    // the standby tests).
    let err = refused(dir.path(), &["--store", &url], &pw);
    assert!(err.contains("is not the one the other coordinators on this database use"), "{err}");
    assert!(err.contains("--store-url"), "{err}");
}

/// A CA, and a certificate for `localhost` signed by it: (CA, chain, key), PEM.
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), format!("{}{}", cert.pem(), ca_cert.pem()), key.serialize_pem())
}

#[test]
fn sslmode_require_is_tls_to_postgres_and_checks_the_servers_certificate() {
    let (ca, chain, key) = certificates();
    let pg = Postgres::start_tls(&chain, &key);
    pg.create("corral");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let url = format!("{}?sslmode=require&sslrootcert={}", pg.tcp_url("corral"), ca_file.display());
    let mut c = Cluster::start_with_env(&["--store", &url], &[("PGPASSWORD", PASSWORD)]);
    c.static_pool("cpu", 1, 1);
    let job = c.submit(&["--pool", "cpu"], &["echo", "over tls"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.logs(job, 0, false), "over tls\n");
    // Every session of the coordinator is encrypted.
    let (ok, rows) = pg.psql(
        "postgres",
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'corral-coordinator'",
    );
    let counts: Vec<&str> = rows.split('|').collect();
    assert!(ok && counts.len() == 2 && counts[0] == counts[1] && counts[0] != "0", "{rows}");
    // A server whose certificate the given CA did not sign is refused.
    let (other, _, _) = certificates();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other).unwrap();
    let wrong = format!("{}?sslmode=require&sslrootcert={}", pg.tcp_url("corral"), other_file.display());
    let err = refused(dir.path(), &["--store", &wrong], &[("PGPASSWORD", PASSWORD)]);
    assert!(
        err.contains("cannot reach PostgreSQL at localhost") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

/// Two coordinators on one database: the second stands by (it answers every call
/// with UNAVAILABLE naming the leader, and redirects its dashboard there) until
/// the leader is SIGKILLed, then leads within the lease and a second; the agents,
/// given both addresses, keep their tasks and report to it; every task succeeds
/// once in the record and the feed.
#[test]
fn a_standby_takes_over_when_the_leader_is_killed() {
    let mut c = Cluster::start_on_postgres(&["--lease", "1s"]);
    // An agent given only the leader's address, registered before the standby
    // starts: it hears of the standby on its stream.
    c.json(&["pool", "create", "cpu", "--slots-per-node", "2"]);
    let mut agents = vec![c.agent("cpu", 2)];
    c.wait_nodes("cpu", "idle", 1);
    let standby = c.standby(0, &[]);
    wait_until(MINUTE, "the standby to stand by", || {
        c.standby_log(standby).contains("standby: another coordinator holds the lease")
    });
    let (leader, standby_url) = (c.url.clone(), c.standby_url(standby));
    // What a standby answers: UNAVAILABLE naming the leader; NOT_SERVING (with the
    // leader) to health checks; a redirect to the same page of the leader's dashboard.
    let rt = corral_tests::grpc::runtime();
    let (refusal, health) = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(standby_url.clone()).unwrap().connect().await.unwrap();
        let mut client = corral_proto::v1::corral_client::CorralClient::new(channel.clone());
        let refusal = client.list_pools(corral_proto::v1::ListPoolsRequest::default()).await.unwrap_err();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let health = health.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap();
        (refusal, health)
    });
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(refusal.message().contains(&format!("the leader is at {leader}")), "{refusal:?}");
    assert_eq!(corral_proto::leader::named_by(&refusal).as_deref(), Some(leader.as_str()));
    assert_eq!(health.get_ref().status(), tonic_health::pb::health_check_response::ServingStatus::NotServing);
    assert_eq!(health.metadata().get(corral_proto::leader::HEADER).unwrap(), leader.as_str());
    let browser = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = browser.get(format!("{}/jobs/7?tab=tasks", c.standby_http_url(standby))).send().unwrap();
    assert_eq!(page.status().as_u16(), 307);
    assert_eq!(page.headers()["location"], format!("{}/jobs/7?tab=tasks", c.http_url()).as_str());
    // The CLI given the standby alone follows it to the leader.
    c.coordinators = Some(standby_url.clone());
    assert_eq!(c.json(&["pool", "list"]).as_array().map(Vec::len), Some(1));
    // Agents and the CLI know both from now on; one more agent is given only the
    // leader, and learns of the standby when it registers.
    c.coordinators = Some(format!("{leader},{standby_url}"));
    agents.push(c.agent("cpu", 2));
    agents.push(c.agent("cpu", 2));
    c.wait_nodes("cpu", "idle", 3);
    // (The leader reads who is on the database as it renews its lease.)
    wait_until(MINUTE, "the leader to know of the standby", || {
        std::fs::read_to_string(c.dir.path().join("coordinator.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("the coordinators on this database") && l.contains(&standby_url))
    });
    c.coordinators = Some(leader.clone());
    agents.push(c.agent("cpu", 2));
    c.wait_nodes("cpu", "idle", 4);
    c.coordinators = Some(format!("{leader},{standby_url}"));
    // A second standby stops on SIGTERM while it waits.
    let other = c.standby(0, &[]);
    wait_until(MINUTE, "the second standby to stand by", || {
        c.standby_log(other).contains("standby: another coordinator holds the lease")
    });
    assert!(c.stop_standby(other), "a standby did not stop on SIGTERM: {}", c.standby_log(other));
    let key = c.json(&["notify-secret"])["secret"].clone();
    // A dashboard sign-in on the leader.
    let signed_in = browser.post(format!("{}/login", c.http_url())).form(&[("token", c.admin_token())]).send().unwrap();
    assert_eq!(signed_in.status().as_u16(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let array = c.submit(&["--pool", "cpu", "--array", "1-2000"], &["sh", "-c", "echo out {index}"]);
    let graph = c.dir.path().join("graph.yaml");
    let step = "[sh, -c, 'echo $CORRAL_TASK_ID; sleep 0.2']";
    std::fs::write(&graph, format!("tasks:\n  - id: prep\n    command: {step}\n  - id: wide\n    array: 1-20\n    command: {step}\n    depends_on: [prep]\n  - id: end\n    command: {step}\n    depends_on: [wide]\n")).unwrap();
    let graph =
        c.json(&["job", "submit", "--pool", "cpu", "--file", graph.to_str().unwrap()])["job_id"].as_u64().unwrap();
    wait_until(MINUTE, "some tasks to finish", || c.job(array)["counts"]["succeeded"].as_u64() >= Some(200));
    c.kill_coordinator();
    let took = c.take_over(standby);
    // Callbacks are signed with the same key whichever coordinator leads, and the
    // dashboard sign-in holds on the new leader.
    assert_eq!(c.json(&["notify-secret"])["secret"], key);
    let page = browser.get(format!("{}/api/pools", c.http_url())).header("cookie", &cookie).send().unwrap();
    assert_eq!(page.status().as_u16(), 200, "the sign-in did not survive the failover");
    assert!(took < Duration::from_secs(3), "the standby took {took:?} to lead after the leader died");
    for job in [array, graph] {
        let done = c.wait_job(job, MINUTE);
        assert_eq!(done["state"], "completed", "{done}");
        c.assert_each_succeeded_once(job);
        assert_feed_in_order(&c, job);
    }
    assert_eq!(c.logs(array, 1742, false), "out 1742\n");
    // Every event in the record, with no gap; the new leader's after the old one's.
    let epochs = c.event_epochs();
    let ids: Vec<u64> = epochs.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "the record has a gap");
    let stamped: Vec<u64> = epochs.iter().map(|(_, e)| e.unwrap_or(0)).collect();
    assert!(stamped.windows(2).all(|w| w[0] <= w[1]) && stamped.first() == Some(&1), "{stamped:?}");
    assert_eq!(stamped.last(), Some(&2), "the new leader committed nothing");
    // The same agents ran it to the end: none was lost or restarted, the one
    // given only the old leader included.
    assert!(agents.iter().all(|pid| corral_tests::alive(*pid)));
    for n in [0, 3] {
        assert!(c.agent_log(n).contains("learned of another coordinator"), "{}", c.agent_log(n));
    }
    assert_eq!(c.nodes_in("cpu", "lost"), Vec::<String>::new(), "{}", c.agent_log(0));
}

/// The leader is paused past its lease; a standby takes over, and the agent
/// (given both addresses) leaves the paused one, which answers no pings, for it
/// with the tasks it runs: the job completes under the new leader, each task run
/// once. When the old leader resumes it can store nothing, says it no longer leads
/// and stands by; the record stays exactly the new leader's.
#[test]
fn a_leader_paused_past_its_lease_is_fenced_and_steps_down() {
    let mut c = Cluster::start_on_postgres(&["--lease", "1s"]);
    let standby = c.standby(0, &[]);
    c.coordinators = Some(format!("{},{}", c.url, c.standby_url(standby)));
    c.static_pool("cpu", 1, 2);
    let runs = c.dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let record = format!("echo $CORRAL_NODE_ID >> {}/$CORRAL_TASK_INDEX; sleep 0.2", runs.display());
    let array = c.submit(&["--pool", "cpu", "--array", "1-40"], &["sh", "-c", &record]);
    wait_until(MINUTE, "some tasks to finish", || c.job(array)["counts"]["succeeded"].as_u64() >= Some(3));
    let old = c.coordinator_pid();
    c.signal(old, libc::SIGSTOP);
    c.take_over(standby);
    let done = c.wait_job(array, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let record = c.assert_each_succeeded_once(array);
    c.signal(old, libc::SIGCONT);
    wait_until(MINUTE, "the old leader to step down", || {
        std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap_or_default().contains("no longer leads")
    });
    assert_eq!(c.assert_each_succeeded_once(array), record, "the record changed after the old leader resumed");
    for index in 1..=40 {
        let ran = std::fs::read_to_string(runs.join(index.to_string())).unwrap_or_default();
        assert_eq!(ran.lines().count(), 1, "task {index} ran on {ran:?}");
    }
    assert_eq!(c.nodes_in("cpu", "lost"), Vec::<String>::new(), "the agent was lost in the switch");
    let log = std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("another coordinator took the lease"), "{log}");
    assert!(log.contains("stepped down; standing by"), "{log}");
}

/// Submits, keyed dispatches and object puts (each firing a trigger) made while the
/// leader is SIGKILLed, and a 1 s schedule running through it: the CLI (given both
/// coordinators) tries again with the same idempotency key until the standby leads,
/// so each lands exactly once; no schedule slot runs twice or goes missing.
#[test]
fn submits_dispatches_and_schedule_slots_that_race_a_failover_land_exactly_once() {
    let mut c = Cluster::start_on_postgres(&["--lease", "1s"]);
    let standby = c.standby(0, &[]);
    c.coordinators = Some(format!("{},{}", c.url, c.standby_url(standby)));
    c.static_pool("cpu", 1, 4);
    c.json(&["template", "create", "echo", "--pool", "cpu", "--", "true"]);
    c.json(&["trigger", "create", "inbox", "--prefix", "in/", "--template", "echo"]);
    let file = c.dir.path().join("put.txt");
    std::fs::write(&file, "put\n").unwrap();
    let file = file.to_str().unwrap();
    c.every_second("beat", "cpu");
    wait_until(MINUTE, "a few slots", || c.schedule_slots("beat").len() >= 2);
    const N: usize = 12;
    let job_id = |out: &std::process::Output| -> u64 {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["job_id"].as_u64().unwrap()
    };
    let dispatch = |c: &Cluster, i: usize| {
        c.corral(&["-o", "json", "dispatch", "echo", "--idempotency-key", &format!("race-{i}")])
    };
    let (submitted, dispatched, put) = std::thread::scope(|s| {
        let c = &c;
        let submits = s.spawn(move || {
            (0..N)
                .map(|i| {
                    std::thread::sleep(Duration::from_millis(150));
                    c.corral(&["-o", "json", "job", "submit", "--pool", "cpu", "--", "echo", &i.to_string()])
                })
                .collect::<Vec<_>>()
        });
        let dispatches = s.spawn(move || {
            (0..N)
                .map(|i| {
                    std::thread::sleep(Duration::from_millis(150));
                    dispatch(c, i)
                })
                .collect::<Vec<_>>()
        });
        let puts = s.spawn(move || {
            (0..N)
                .map(|i| {
                    std::thread::sleep(Duration::from_millis(150));
                    c.corral(&["-o", "json", "file", "put", file, &format!("in/{i}.txt")])
                })
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(600));
        c.signal(c.coordinator_pid(), libc::SIGKILL);
        (submits.join().unwrap(), dispatches.join().unwrap(), puts.join().unwrap())
    });
    c.take_over(standby);
    let submitted: std::collections::BTreeSet<u64> = submitted.iter().map(job_id).collect();
    assert_eq!(submitted.len(), N, "two submits made one job: {submitted:?}");
    let dispatched: Vec<u64> = dispatched.iter().map(job_id).collect();
    // The same key, asked again of the new leader, names the same job.
    for (i, id) in dispatched.iter().enumerate() {
        assert_eq!(job_id(&dispatch(&c, i)), *id, "dispatch race-{i} made a second job");
    }
    for out in &put {
        assert!(out.status.success(), "a put failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Each put fired its trigger once.
    let fired = c.json(&["trigger", "show", "inbox"]);
    assert_eq!(fired["fired"].as_u64(), Some(N as u64), "{fired}");
    let before = c.schedule_slots("beat").len();
    wait_until(MINUTE, "slots under the new leader", || c.schedule_slots("beat").len() >= before + 2);
    c.json(&["schedule", "pause", "beat"]);
    let slots = c.schedule_slots("beat");
    corral_tests::assert_each_slot_once(&slots);
    // Nothing else was made: each submit, dispatch and put once, each slot once.
    let jobs = c.json(&["job", "list"]).as_array().unwrap().len();
    assert_eq!(jobs, 3 * N + slots.len(), "jobs made: {jobs}");
}

/// The leader is cut off from PostgreSQL (a proxy in front of it breaks every
/// session and refuses new ones): it stops serving within a lease; the standby,
/// which reaches the database, takes over, and the agents finish the job under it,
/// each task once in the record and the feed.
#[test]
fn a_leader_cut_off_from_the_database_stops_serving_and_a_standby_takes_over() {
    let (mut c, proxy) = Cluster::start_on_postgres_through_proxy(&["--lease", "1s"]);
    let standby = c.standby(0, &[]);
    c.coordinators = Some(format!("{},{}", c.url, c.standby_url(standby)));
    c.static_pool("cpu", 2, 2);
    let array = c.submit(&["--pool", "cpu", "--array", "1-60"], &["sh", "-c", "echo out {index}; sleep 0.1"]);
    wait_until(MINUTE, "some tasks to finish", || c.job(array)["counts"]["succeeded"].as_u64() >= Some(5));
    proxy.cut();
    let cut = std::time::Instant::now();
    let log = || std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap_or_default();
    wait_until(MINUTE, "the cut-off leader to stop serving", || log().contains("no longer leads"));
    let stopped = cut.elapsed();
    assert!(stopped < Duration::from_secs(3), "the cut-off leader served {stopped:?} after the cut (lease 1s)");
    assert!(log().contains("could not renew the lease"), "{}", log());
    c.take_over(standby);
    let done = c.wait_job(array, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    c.assert_each_succeeded_once(array);
    assert_eq!(c.logs(array, 7, false), "out 7\n");
    assert_feed_in_order(&c, array);
}

/// The nodes a leader's provider started stay the pool's whichever coordinator
/// leads: after the leader dies, its local agents join the new leader (which starts
/// no second set), which stops one when the pool shrinks, starts one (with the
/// pool's token, now kept by the new leader) when it grows, and stops the rest when
/// the pool is deleted.
#[test]
fn a_new_leader_adopts_the_nodes_its_predecessor_started() {
    let agent = bin("corral-agent");
    let mut c = Cluster::start_on_postgres(&["--lease", "1s", "--agent-bin", agent.to_str().unwrap()]);
    let standby = c.standby(0, &[]);
    c.coordinators = Some(format!("{},{}", c.url, c.standby_url(standby)));
    c.json(&["pool", "create", "loc", "--provider", "local", "--nodes", "2", "--slots-per-node", "1"]);
    c.wait_nodes("loc", "idle", 2);
    let live = |c: &Cluster| -> Vec<(String, u32)> {
        let nodes = c.json(&["node", "list", "--pool", "loc"]);
        let nodes = nodes.as_array().cloned().unwrap_or_default();
        let live = nodes.iter().filter(|n| n["state"] == "idle" || n["state"] == "running");
        live.map(|n| (n["id"].as_str().unwrap_or_default().to_string(), n["pid"].as_u64().unwrap_or(0) as u32))
            .collect()
    };
    let started = live(&c);
    let agent_log = |data: &std::path::Path, node: &str| {
        std::fs::read_to_string(data.join("agents").join(format!("{node}.log"))).unwrap_or_default()
    };
    let first = c.data_dir();
    wait_until(MINUTE, "the local agents to learn of the standby", || {
        started.iter().all(|(node, _)| agent_log(&first, node).contains("learned of another coordinator"))
    });
    let job = c.submit(&["--pool", "loc", "--array", "1-20"], &["sh", "-c", "echo {index}; sleep 0.1"]);
    wait_until(MINUTE, "some tasks to finish", || c.job(job)["counts"]["succeeded"].as_u64() >= Some(3));
    let instance = c.instance();
    c.kill_coordinator();
    c.take_over(standby);
    // One name for the containers of docker pools, whichever coordinator leads: the
    // new leader finds, removes and sweeps those its predecessor started.
    assert_eq!(c.instance(), instance);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    c.assert_each_succeeded_once(job);
    // The same two agents, no third started, none lost.
    wait_until(MINUTE, "both agents to be back", || live(&c).len() == 2);
    let all = c.json(&["node", "list", "--pool", "loc"]);
    assert_eq!(live(&c), started, "{all}\n{}\n{}", agent_log(&first, &started[0].0), c.coordinator_log());
    let all = c.json(&["node", "list", "--pool", "loc"]);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    // The new leader stops the old leader's agents as its own.
    c.json(&["pool", "resize", "loc", "--nodes", "1"]);
    wait_until(MINUTE, "one agent to stop", || {
        started.iter().filter(|(_, pid)| corral_tests::alive(*pid)).count() == 1
    });
    c.json(&["pool", "resize", "loc", "--nodes", "2"]);
    wait_until(MINUTE, "a new agent", || live(&c).len() == 2);
    let again = c.submit(&["--pool", "loc", "--array", "1-4"], &["true"]);
    assert_eq!(c.wait_job(again, MINUTE)["state"], "completed");
    c.json(&["pool", "delete", "loc"]);
    wait_until(MINUTE, "the pool to go", || !c.corral(&["pool", "show", "loc"]).status.success());
    assert!(started.iter().all(|(_, pid)| !corral_tests::alive(*pid)), "an adopted agent outlived its pool");
}
