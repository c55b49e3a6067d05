//! The HTTP side's gate: a token and this coordinator's own host name for every
//! route, and each route (reads, dispatch, the dashboard's actions) open to exactly
//! the roles it should be.

use super::*;

#[test]
fn the_http_side_needs_a_token_and_its_own_host_name() {
    let mut c = Cluster::start(&[]);
    let reader = c.token("reader", "read", &[]);
    let agent = c.token("agents", "agent", &[]);
    assert_eq!(c.http_get_as("/healthz", None), (200, "ok\n".to_string()));
    let (status, body) = c.http_get_as("/api/pools", None);
    assert_eq!(status, 401);
    assert!(body.contains("no token"), "{body}");
    assert_eq!(c.http_get_as("/api/pools", Some(&reader)).0, 200);
    assert_eq!(c.http_get_as("/metrics", None).0, 401);
    assert_eq!(c.http_get_as("/metrics", Some(&reader)).0, 200);
    let (status, body) = c.http_get_as("/api/jobs", Some(&agent));
    assert_eq!(status, 403, "{body}");
    assert_eq!(c.http_get_as("/api/jobs", Some("0123456789abcdef.nope")).0, 401);
    // A browser without a token is sent to sign in.
    assert_eq!(c.http_get_as("/", None).0, 303);
    assert_eq!(c.http_get_as("/login", None).0, 200);

    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // DNS rebinding: another site's name for this address is refused.
    let resp = http
        .get(format!("{}/api/pools", c.http_url()))
        .header("host", "evil.example:80")
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 421);
    let resp = http
        .get(format!("{}/api/pools", c.http_url()))
        .header("host", "localhost")
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Signing in: a wrong token gets the page again, a right one a cookie that opens the API.
    let resp = http.post(format!("{}/login", c.http_url())).form(&[("token", "0123456789abcdef.nope")]).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().unwrap().contains("token refused"));
    let resp = http.post(format!("{}/login", c.http_url())).form(&[("token", agent.as_str())]).send().unwrap();
    assert_eq!(resp.status().as_u16(), 403, "an agent token does not open the dashboard");
    let resp = http.post(format!("{}/login", c.http_url())).form(&[("token", reader.as_str())]).send().unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(reader.split_once('.').unwrap().1), "the cookie holds a session id, not the token");
    let pair = cookie.split(';').next().unwrap().to_string();
    let resp = http.get(format!("{}/api/pools", c.http_url())).header("cookie", &pair).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Signing out ends that session (another sign-in keeps its own).
    let resp = http.post(format!("{}/login", c.http_url())).form(&[("token", reader.as_str())]).send().unwrap();
    let other = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let resp = http.post(format!("{}/logout", c.http_url())).header("cookie", &other).send().unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let resp = http.get(format!("{}/api/pools", c.http_url())).header("cookie", &other).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A sign-in is stored: it outlives a SIGKILL of the coordinator; one signed out
    // stays out.
    c.restart_coordinator();
    let with = |c: &Cluster, cookie: &str| {
        http.get(format!("{}/api/pools", c.http_url())).header("cookie", cookie).send().unwrap().status().as_u16()
    };
    assert_eq!((with(&c, &pair), with(&c, &other)), (200, 401));
    // Revoked: the cookie stops working at once, and after a restart too.
    c.json(&["token", "revoke", "reader"]);
    assert_eq!(with(&c, &pair), 401);
    c.restart_coordinator();
    assert_eq!(with(&c, &pair), 401);
}

#[test]
fn metrics_can_be_public() {
    let c = Cluster::start(&["--metrics-public"]);
    assert_eq!(c.http_get_as("/metrics", None).0, 200);
    assert_eq!(c.http_get_as("/api/pools", None).0, 401, "only /metrics opens");
}

#[test]
fn every_http_route_admits_exactly_the_roles_it_should() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let job = c.submit(&["--pool", "cpu"], &["echo", "hi"]);
    c.wait_job(job, MINUTE);
    let (_heartbeats, callers) = callers(&c);
    // The admin's: a template, a trigger dispatching it, and a schedule.
    c.json(&["template", "create", "hello", "--pool", "cpu", "--", "cat", "payload"]);
    c.json(&["trigger", "create", "inbox", "--prefix", "in/", "--template", "hello"]);
    c.json(&["schedule", "create", "nightly", "--every", "1h", "--pool", "cpu", "--", "true"]);
    // (path, open to all, a page a browser asks for)
    let routes: &[(&str, bool, bool)] = &[
        ("/healthz", true, false),
        ("/login", true, false),
        ("/style.css", true, false),
        ("/", false, true),
        ("/app.js", false, true),
        ("/views.js", false, true),
        ("/pages.js", false, true),
        ("/metrics", false, false),
        ("/api/pools", false, false),
        ("/api/nodes", false, false),
        ("/api/jobs", false, false),
        ("/api/jobs/1", false, false),
        ("/api/jobs/1/tasks", false, false),
        ("/api/jobs/1/tasks/0", false, false),
        ("/api/jobs/1/tasks/0/log?stream=stdout", false, false),
        ("/api/events", false, false),
        ("/api/stream", false, false),
        ("/api/whoami", false, false),
        ("/api/pools/cpu", false, false),
        ("/api/schedules", false, false),
        ("/api/templates", false, false),
        ("/api/triggers", false, false),
        ("/api/schedules/nightly", false, false),
        ("/api/templates/hello", false, false),
        ("/api/triggers/inbox", false, false),
    ];
    let http = c.http_client();
    for (caller, token) in &callers {
        for (path, open, page) in routes {
            let mut req = http.get(format!("{}{path}", c.http_url()));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let status = req.send().unwrap().status().as_u16();
            let reads = matches!(caller, Caller::Read | Caller::Submit | Caller::Admin);
            let known = !matches!(caller, Caller::Nobody | Caller::Garbage | Caller::Revoked | Caller::Expired);
            let expected = if *open || reads {
                200
            } else if known {
                403
            } else if *page {
                303
            } else {
                401
            };
            assert_eq!(status, expected, "{caller:?} GET {path}");
        }
    }
    // Dispatching over HTTP needs a submit token, as a bearer.
    let dispatch = format!("{}/api/templates/hello/dispatch", c.http_url());
    let mut made = 0;
    for (caller, token) in &callers {
        let mut req = http.post(&dispatch).body("hi");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().unwrap();
        let expected = match caller {
            Caller::Submit | Caller::Admin => 200,
            Caller::Read | Caller::Agent | Caller::Node => 403,
            Caller::Nobody | Caller::Garbage | Caller::Revoked | Caller::Expired => 401,
        };
        assert_eq!(status, expected, "{caller:?} POST dispatch: {body}");
        made += usize::from(status == 200);
    }
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 1 + made);
    // The dashboard's actions: a submit token changes only its own jobs (this one is
    // the admin's), node and pool changes need an admin.
    let node = c.json(&["node", "list"])[0]["id"].as_str().unwrap().to_string();
    let actions: [(String, &str, u16); 7] = [
        (format!("/api/jobs/{job}/cancel"), "{}", 200),
        (format!("/api/jobs/{job}/retry"), "{}", 409),
        ("/api/pools/cpu/resize".to_string(), "{\"nodes\": 2}", 409),
        (format!("/api/nodes/{node}/drain"), "{}", 200),
        ("/api/schedules/nightly/pause".to_string(), "{}", 200),
        ("/api/schedules/nightly/resume".to_string(), "{}", 200),
        ("/api/schedules/nightly/run".to_string(), "{}", 200),
    ];
    for (path, body, admin_gets) in &actions {
        // A submit token changes only its own jobs and schedules (these are the admin's).
        let needs_admin = !path.starts_with("/api/jobs/") && !path.starts_with("/api/schedules/");
        for (caller, token) in &callers {
            let mut req =
                http.post(format!("{}{path}", c.http_url())).header("content-type", "application/json").body(*body);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().unwrap();
            let status = resp.status().as_u16();
            let expected = match caller {
                Caller::Admin => *admin_gets,
                Caller::Submit if !needs_admin => 403, // not its job
                Caller::Read | Caller::Submit | Caller::Agent | Caller::Node => 403,
                Caller::Nobody | Caller::Garbage | Caller::Revoked | Caller::Expired => 401,
            };
            assert_eq!(status, expected, "{caller:?} POST {path}: {}", resp.text().unwrap());
        }
    }
    // Not with the dashboard's cookie, even an admin's: no other site's page can
    // make a signed-in browser dispatch.
    let admin = c.admin_token();
    let resp = http.post(format!("{}/login", c.http_url())).form(&[("token", admin.as_str())]).send().unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let resp = http.post(&dispatch).header("cookie", &cookie).body("hi").send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().unwrap().contains("Authorization: Bearer"));
    let ran = c.json(&["job", "list", "--schedule", "nightly"]).as_array().unwrap().len();
    assert_eq!(ran, 1, "the admin's run");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 1 + made + ran);
    // A browser's action needs the dashboard's header besides the cookie.
    let retry = format!("{}/api/jobs/{job}/retry", c.http_url());
    let resp = http.post(&retry).header("cookie", &cookie).send().unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().unwrap().contains("x-corral-action"));
    let resp = http.post(&retry).header("cookie", &cookie).header("x-corral-action", "1").send().unwrap();
    assert_eq!(resp.status().as_u16(), 409, "let through, and refused only for having nothing to retry");
    // Signing out needs nothing and clears the cookie.
    let resp = http.post(format!("{}/logout", c.http_url())).send().unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert!(resp.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    // A sign-in form posted from another site is refused.
    let reader = callers[2].1.clone().unwrap();
    let resp = http
        .post(format!("{}/login", c.http_url()))
        .header("origin", "https://evil.example")
        .form(&[("token", reader.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}
