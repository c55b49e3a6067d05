//! The dashboard in a real browser (headless Chromium over WebDriver), asserting
//! what a person would see: a submitted job appears and advances, a killed node
//! turns lost, a task's output shows, all without reloading the page.
//!
//! With `CORRAL_SCREENSHOT=FILE` set, the test also saves the dashboard (a base64
//! PNG) to FILE; `docs/screenshot.sh` uses it for the README's picture.

use std::time::Duration;

use corral_tests::webdriver::Browser;
use corral_tests::Cluster;

const WAIT: Duration = Duration::from_secs(30);

/// A JavaScript expression: the integer text of a field in job `job`'s row.
fn job_field(job: u64, field: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector('tr[data-job-id=\"{job}\"] [data-field=\"{field}\"]'); return e ? Number(e.textContent) : -1; }})()"
    )
}

#[test]
fn a_person_sees_the_job_run_live_and_a_killed_node_turn_lost() {
    let mut cluster = Cluster::start(&[]);
    let agents = cluster.static_pool("cpu", 2, 1);
    let browser = Browser::start();
    // Without a token the dashboard sends the browser to its sign-in page.
    browser.open(&format!("{}/", cluster.http_url()));
    browser.wait_for(
        WAIT,
        "the sign-in page",
        "return location.pathname === '/login' && !!document.querySelector('#token')",
    );
    let reader = cluster.token("viewer", "read", &[]);
    browser.eval(&format!(
        "document.querySelector('#token').value = '{reader}'; document.querySelector('#sign-in').click(); return true"
    ));
    browser.wait_for(WAIT, "the dashboard to render", "return document.body.dataset.ready === 'true'");
    browser.wait_for(WAIT, "the live indicator", "return document.querySelector('#live').dataset.connected === 'true'");
    browser.wait_for(WAIT, "the pool card", "return !!document.querySelector('[data-pool=\"cpu\"]')");
    // A live feed names the last event recorded (the pool's), not "no events yet".
    browser.wait_for(
        WAIT,
        "the header to name the last event",
        "return document.querySelector('#last-event').textContent.startsWith('event #')",
    );
    // Anything the page keeps survives only if it is never reloaded.
    browser.eval("window.__corralMarker = 42; return true");

    let job = cluster.submit(
        &["--pool", "cpu", "--array", "0-29", "--name", "render"],
        &["sh", "-c", "echo frame $CORRAL_TASK_INDEX rendered; sleep 0.2"],
    );
    browser.wait_for(
        WAIT,
        "the job to appear",
        &format!("return !!document.querySelector('tr[data-job-id=\"{job}\"]')"),
    );
    assert_eq!(browser.eval(&format!("return {}", job_field(job, "total"))), 30);
    browser.wait_for(WAIT, "progress to show", &format!("return {} > 0", job_field(job, "succeeded")));
    let early = browser.eval(&format!("return {}", job_field(job, "succeeded"))).as_i64().unwrap_or(0);
    browser.wait_for(WAIT, "progress to advance", &format!("return {} > {early}", job_field(job, "succeeded")));
    if let Ok(path) = std::env::var("CORRAL_SCREENSHOT") {
        std::fs::write(path, browser.screenshot_base64()).expect("write the screenshot");
    }

    // A node killed mid-job turns lost on the page.
    let victim = cluster.node_of_pid(agents[0]);
    cluster.signal(agents[0], libc::SIGKILL);
    browser.wait_for(
        WAIT,
        "the killed node to turn lost",
        &format!(
            "const row = document.querySelector('tr[data-node-id=\"{victim}\"]'); return !!row && row.dataset.state === 'lost' && row.querySelector('[data-field=\"state\"]').textContent.trim() === 'lost'"
        ),
    );
    browser.wait_for(
        Duration::from_secs(60),
        "the job to complete on the page",
        &format!(
            "const row = document.querySelector('tr[data-job-id=\"{job}\"]'); return !!row && row.dataset.state === 'completed' && {} === 30 && {} === 30",
            job_field(job, "succeeded"),
            job_field(job, "done")
        ),
    );

    // The job's page lists its tasks, paged; a task's page shows its output.
    browser.eval(&format!("location.hash = '#/jobs/{job}'; return true"));
    browser.wait_for(WAIT, "the task list", "return document.querySelectorAll('tr[data-task-index]').length === 30");
    // "Done" is finished, as in the CLI; every finished task says where and when it ran.
    assert_eq!(browser.eval("return document.querySelector('.job-head').textContent.includes('30 / 30')"), true);
    let blank = browser.eval(
        "return [...document.querySelectorAll('tr[data-task-index]')].filter(r => { const c = r.querySelectorAll('td'); return !c[4].textContent.startsWith('n-') || c[5].textContent.trim() === '—'; }).length",
    );
    assert_eq!(blank, 0, "finished tasks without a node or a start time");
    browser.eval(&format!("location.hash = '#/jobs/{job}/tasks/7'; return true"));
    browser.wait_for(
        WAIT,
        "the task's output",
        "return [...document.querySelectorAll('pre')].some(p => p.textContent.includes('frame 7 rendered'))",
    );
    assert_eq!(browser.eval("return window.__corralMarker"), 42, "the page was reloaded");
}

#[test]
fn a_signed_in_submitter_cancels_its_job_and_retries_failed_tasks_from_the_page() {
    let mut cluster = Cluster::start(&[]);
    cluster.static_pool("cpu", 1, 2);
    let token = cluster.token("alice", "submit", &[]);
    let submit = |args: &[&str]| {
        let out = cluster.corral_as(Some(&token), &[&["-o", "json", "job", "submit", "--pool", "cpu"], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["job_id"].as_u64().unwrap()
    };
    let flag = cluster.dir.path().join("fixed");
    let flaky = submit(&["--", "sh", "-c", &format!("[ -e {} ]", flag.display())]);
    assert_eq!(cluster.wait_job(flaky, WAIT)["state"], "failed");
    let long = submit(&["--array", "0-9", "--", "sleep", "300"]);

    let browser = Browser::start();
    browser.open(&format!("{}/login", cluster.http_url()));
    browser.wait_for(WAIT, "the sign-in page", "return !!document.querySelector('#token')");
    browser.eval(&format!(
        "document.querySelector('#token').value = '{token}'; document.querySelector('#sign-in').click(); return true"
    ));
    browser.wait_for(WAIT, "the dashboard", "return document.body.dataset.ready === 'true'");
    // Every action asks first; here the person says yes.
    browser.eval("window.confirm = (q) => { window.__asked = q; return true; }; return true");
    browser.eval(&format!("location.hash = '#/jobs/{long}'; return true"));
    browser.wait_for(WAIT, "the cancel button", "return !!document.querySelector('button[data-action=\"cancel\"]')");
    browser.eval("document.querySelector('button[data-action=\"cancel\"]').click(); return true");
    browser.wait_for(
        WAIT,
        "the job to show cancelled",
        &format!("const e = document.querySelector('.job-head[data-job-id=\"{long}\"]'); return !!e && e.dataset.state === 'cancelled'"),
    );
    assert!(browser.eval("return window.__asked").as_str().unwrap().starts_with(&format!("Cancel job {long}?")));
    assert_eq!(cluster.job(long)["state"], "cancelled");
    // The feed says who did it.
    let out = cluster.corral(&["-o", "json", "events", "--job", &long.to_string()]);
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cancelled = events.iter().find(|e| e["kind"] == "job" && e["state"] == "cancelled").cloned();
    assert_eq!(cancelled.map(|e| e["actor"].clone()), Some("alice".into()), "{events:?}");

    // Fixed the cause: retry the failed task from its job's page.
    std::fs::write(&flag, "").unwrap();
    browser.eval(&format!("location.hash = '#/jobs/{flaky}'; return true"));
    browser.wait_for(WAIT, "the retry button", "return !!document.querySelector('button[data-action=\"retry\"]')");
    browser.wait_for(
        WAIT,
        "the failed task to say why",
        "return [...document.querySelectorAll('tr[data-state=\"failed\"] td.reason')].some(td => td.textContent.includes('exited with code 1'))",
    );
    browser.eval("document.querySelector('button[data-action=\"retry\"]').click(); return true");
    browser.wait_for(
        WAIT,
        "the job to complete",
        &format!("const e = document.querySelector('.job-head[data-job-id=\"{flaky}\"]'); return !!e && e.dataset.state === 'completed'"),
    );
    // A submitter is offered no node or pool actions.
    browser.eval("location.hash = '#/'; return true");
    browser.wait_for(WAIT, "the node table", "return !!document.querySelector('tr[data-node-id]')");
    assert_eq!(browser.eval("return document.querySelectorAll('button[data-action=\"drain\"]').length"), 0);
}

#[test]
fn schedules_templates_triggers_and_a_pool_each_have_a_page_with_the_actions_their_owner_may_take() {
    let mut cluster = Cluster::start(&[]);
    cluster.static_pool("cpu", 1, 2);
    let alice = cluster.token("alice", "submit", &[]);
    let as_alice = |args: &[&str]| {
        let out = cluster.corral_as(Some(&alice), &[&["-o", "json"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    as_alice(&["schedule", "create", "nightly", "--cron", "0 2 * * *", "--pool", "cpu", "--", "true"]);
    cluster.json(&["schedule", "create", "admins", "--every", "1h", "--pool", "cpu", "--", "true"]);
    as_alice(&["template", "create", "hello", "--pool", "cpu", "--", "echo", "hi"]);
    as_alice(&["trigger", "create", "inbox", "--prefix", "in/", "--template", "hello"]);
    let dispatched = as_alice(&["dispatch", "hello"])["job_id"].as_u64().unwrap();
    cluster.wait_job(dispatched, WAIT);
    let file = cluster.dir.path().join("a.txt");
    std::fs::write(&file, "a").unwrap();
    let put = cluster.corral_as(Some(&alice), &["file", "put", file.to_str().unwrap(), "in/a.txt"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));

    let browser = Browser::start();
    browser.open(&format!("{}/login", cluster.http_url()));
    browser.wait_for(WAIT, "the sign-in page", "return !!document.querySelector('#token')");
    browser.eval(&format!(
        "document.querySelector('#token').value = '{alice}'; document.querySelector('#sign-in').click(); return true"
    ));
    browser.wait_for(WAIT, "the dashboard", "return document.body.dataset.ready === 'true'");
    browser.eval("window.confirm = () => true; return true");

    // The schedules list, and alice's schedule: its next slots and its buttons.
    browser.eval("document.querySelector('nav.sections a[href=\"#/schedules\"]').click(); return true");
    browser.wait_for(WAIT, "the schedule list", "return document.querySelectorAll('tr[data-schedule]').length === 2");
    browser.eval("location.hash = '#/schedules/nightly'; return true");
    browser.wait_for(WAIT, "the next slots", "return document.querySelectorAll('li[data-slot]').length === 5");
    let first = browser.eval("return document.querySelector('li[data-slot]').textContent");
    assert!(first.as_str().unwrap().contains("T02:00:00"), "{first}");
    browser.eval("document.querySelector('button[data-action=\"pause\"]').click(); return true");
    browser.wait_for(
        WAIT,
        "the schedule to pause",
        "return document.querySelector('.job-head').dataset.state === 'paused'",
    );
    assert_eq!(cluster.json(&["schedule", "show", "nightly"])["state"], "paused");
    browser.wait_for(WAIT, "the resume button", "return !!document.querySelector('button[data-action=\"resume\"]')");
    browser.eval("document.querySelector('button[data-action=\"resume\"]').click(); return true");
    browser.wait_for(
        WAIT,
        "the schedule to resume",
        "return document.querySelector('.job-head').dataset.state === 'active'",
    );
    browser.eval("document.querySelector('button[data-action=\"run\"]').click(); return true");
    browser.wait_for(WAIT, "the run to be listed", "return document.querySelectorAll('tr[data-job-id]').length === 1");
    let runs = cluster.json(&["job", "list", "--all", "--schedule", "nightly"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    // The admin's schedule offers alice no buttons.
    browser.eval("location.hash = '#/schedules/admins'; return true");
    browser.wait_for(WAIT, "the admin's schedule", "return document.querySelectorAll('li[data-slot]').length === 5");
    assert_eq!(browser.eval("return document.querySelectorAll('button[data-action]').length"), 0);

    // The template's page lists its dispatches (the CLI's, and the trigger's).
    browser.eval("location.hash = '#/templates/hello'; return true");
    browser.wait_for(
        WAIT,
        "the dispatch history",
        &format!("return !!document.querySelector('tr[data-job-id=\"{dispatched}\"]') && document.querySelectorAll('tr[data-job-id]').length === 2"),
    );
    // The trigger's page: its state, its counts, what it made.
    browser.eval("location.hash = '#/triggers/inbox'; return true");
    browser.wait_for(
        WAIT,
        "the trigger's dispatch",
        "return document.querySelector('.job-head').dataset.state === 'active' && [...document.querySelectorAll('td.mono')].some(td => td.textContent === 'in/a.txt')",
    );
    // The pool's page lists its jobs and its node.
    browser.eval("location.hash = '#/pools/cpu'; return true");
    browser.wait_for(
        WAIT,
        "the pool's jobs",
        &format!("return !!document.querySelector('tr[data-job-id=\"{dispatched}\"]') && !!document.querySelector('tr[data-node-id]')"),
    );
    // On a phone (420 px) nothing runs off the edge: the pager and the top bar wrap.
    browser.resize(420, 900);
    browser.wait_for(WAIT, "the narrow layout", "return innerWidth <= 420");
    let overflow = browser.eval(
        "return [...document.querySelectorAll('.pager > *, .topbar > *, .topbar a')].filter(e => e.getBoundingClientRect().right > innerWidth + 1).length",
    );
    assert_eq!(overflow, 0, "the pager or the top bar is cut off at 420 px");
}
