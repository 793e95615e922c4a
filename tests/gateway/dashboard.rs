//! The dashboard, end to end: a real gateway with real upstreams and
//! traffic, the page opened in headless Chromium (Debian's package, driven
//! over the DevTools protocol), and what a person would see checked in the
//! page: the routes, a target shown down after it is killed, the request
//! just sent in the tail, charts drawn, an explain answer, a reload.
//! Screenshots go to `target/dashboard-screenshots/`.

use crate::config;
use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A headless Chromium and one page of it, spoken to over the DevTools protocol.
struct Browser {
    child: std::process::Child,
    page: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium runs (scripts/test.sh installs it)");
        // Chromium writes the port it took into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium did not open its DevTools port");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let targets: Value = get(&format!("http://127.0.0.1:{port}/json/list")).await.json();
        let page_url = targets
            .as_array()
            .and_then(|list| list.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (page, _) = tokio_tungstenite::connect_async(page_url).await.unwrap();
        let mut browser = Browser {
            child,
            page,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({})).await;
        browser.call("Page.navigate", json!({ "url": url })).await;
        browser
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page.send(Message::text(message)).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.page.next())
                .await
                .expect("chromium answers")
                .expect("the DevTools connection stays open")
                .unwrap();
            if let Message::Text(text) = frame {
                let answer: Value = serde_json::from_str(&text).unwrap();
                if answer["id"] == id {
                    assert!(answer.get("error").is_none(), "{method}: {answer}");
                    return answer["result"].clone();
                }
            }
        }
    }

    /// Evaluates `script` in the page; its value (awaited if a promise).
    async fn eval(&mut self, script: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": script, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a script) is true in the page.
    async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(&format!("Boolean({condition})")).await != json!(true) {
            assert!(Instant::now() < deadline, "never saw: {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        // `PORTICO_BLESS=1` refreshes the book's picture from the test.
        if name == "target-down" && std::env::var_os("PORTICO_BLESS").is_some() {
            std::fs::write(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/dashboard.png"),
                &png,
            )
            .unwrap();
        }
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_routes_health_traffic_and_answers_explain_and_reload() {
    let users = Upstream::named("users").await;
    let orders = Upstream::named("orders").await;
    let yaml = config(
        r#"
listeners: [ { name: public, addr: "127.0.0.1:0" } ]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
consumers:
  - { name: app, credentials: { api_keys: [ "secret-key-0123456789abcdef" ] } }
upstreams:
  users: { targets: [ "$USERS" ] }
  orders:
    targets: [ "$ORDERS" ]
    health_check: { active: { path: /, interval: 200ms, timeout: 200ms, healthy: 1, unhealthy: 1 } }
routes:
  - { name: users, match: { path: /users }, upstream: users, plugins: { key_auth: {} } }
  - { name: orders, match: { path: /orders }, upstream: orders }
"#,
        &[
            ("TOKEN", ADMIN_TOKEN.to_string()),
            ("USERS", users.addr.to_string()),
            ("ORDERS", orders.addr.to_string()),
        ],
    );
    let gw = Gateway::start(&yaml).await;
    // Traffic: served, refused (no key), unrouted; one request easy to find.
    for _ in 0..20 {
        assert_eq!(
            get_with(&gw.url("/users/7"), &[("x-api-key", "secret-key-0123456789abcdef")])
                .await
                .status,
            200
        );
        assert_eq!(get(&gw.url("/orders/1")).await.status, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/users/7")).await.status, 401);
        assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    }
    let marked = get_with(
        &gw.url("/orders/look-for-me"),
        &[("x-request-id", "dashboard-e2e-0001")],
    )
    .await;
    assert_eq!(marked.status, 200);

    // The JSON the page is drawn from, usable without it.
    let stats = gw.admin("GET", "/stats?seconds=30", "").await.json();
    assert_eq!(stats["routes"]["users"]["requests"], 25);
    assert_eq!(stats["routes"]["users"]["client_errors"], 5);
    let tail = gw.admin("GET", "/requests?limit=5", "").await.json();
    assert_eq!(tail[0]["request_id"], "dashboard-e2e-0001");
    assert_eq!(tail[0]["path"], "/orders/look-for-me");
    // The page itself is open (it holds no data), and self-contained.
    let page = get(&gw.admin_url("/")).await;
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "no external assets"
    );

    // The login form: a wrong token is refused, the right one opens the dashboard.
    let mut browser = Browser::open(&gw.admin_url("/")).await;
    browser
        .wait_for("!document.getElementById('login').hidden", "the login form")
        .await;
    browser
        .eval("document.getElementById('token').value = 'wrong'; document.getElementById('login-form').requestSubmit(); true")
        .await;
    browser
        .wait_for(
            "document.getElementById('login-error').textContent.includes('refused')",
            "the wrong token refused",
        )
        .await;
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{ADMIN_TOKEN}'; document.getElementById('login-form').requestSubmit(); true"
        ))
        .await;
    browser
        .wait_for("document.body.dataset.loaded === 'true'", "the dashboard loaded")
        .await;
    // Routes, with their plugins; secrets never shown.
    browser
        .wait_for(
            "document.querySelector('#routes-body tr[data-route=users]')",
            "the users route",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#routes-body tr').length")
            .await,
        2
    );
    let routes_text = browser.eval("document.getElementById('routes').innerText").await;
    assert!(routes_text.as_str().unwrap().contains("key_auth"), "{routes_text}");
    let whole = browser.eval("document.body.innerText").await;
    assert!(!whole.as_str().unwrap().contains("secret-key-0123456789abcdef"));
    // The request just sent, in the tail.
    browser
        .wait_for(
            "document.querySelector('#tail-body tr[data-request-id=\"dashboard-e2e-0001\"]')",
            "the marked request in the tail",
        )
        .await;
    assert!(browser
        .eval("document.querySelector('#tail-body tr.failed') !== null")
        .await
        .as_bool()
        .unwrap());
    // Filtered: by text, and to failed requests only.
    browser
        .eval("const f = document.getElementById('tail-filter'); f.value = 'look-for-me'; f.dispatchEvent(new Event('input')); true")
        .await;
    browser
        .wait_for(
            "document.querySelectorAll('#tail-body tr').length === 1",
            "the tail filtered to one request",
        )
        .await;
    browser
        .eval("const g = document.getElementById('tail-filter'); g.value = ''; const c = document.getElementById('tail-failed'); c.checked = true; c.dispatchEvent(new Event('change')); true")
        .await;
    browser
        .wait_for(
            "[...document.querySelectorAll('#tail-body tr')].every(r => r.classList.contains('failed')) && document.querySelectorAll('#tail-body tr').length === 10",
            "only the 10 failed requests",
        )
        .await;
    // The charts drew the traffic (the second it came in has to be over).
    browser
        .wait_for(
            "Number(document.getElementById('chart-rps').dataset.points) > 0 && document.getElementById('now-rps').textContent !== '–'",
            "the requests chart drawn",
        )
        .await;
    // Each target's recent latency.
    let users_target = users.addr.to_string();
    let latency = browser
        .eval(&format!(
            "document.querySelector('#upstreams-body tr[data-target=\"{users_target}\"]').lastElementChild.textContent"
        ))
        .await;
    assert!(
        latency.as_str().and_then(|ms| ms.parse::<f64>().ok()).is_some(),
        "{latency}"
    );
    browser.screenshot("overview").await;

    // A target killed: shown down.
    let orders_target = orders.addr.to_string();
    orders.stop();
    browser
        .wait_for(
            &format!("document.querySelector('#upstreams-body tr[data-target=\"{orders_target}\"] td.down')"),
            "the killed target shown down",
        )
        .await;
    browser.screenshot("target-down").await;

    // Explain, from the form.
    browser
        .eval(
            "document.getElementById('explain-url').value = 'http://localhost/orders/9';
             document.getElementById('explain-form').requestSubmit(); true",
        )
        .await;
    browser
        .wait_for(
            "document.getElementById('explain-result').textContent.includes('\"orders\"')",
            "the explain answer naming the route",
        )
        .await;
    browser.screenshot("explain").await;

    // A reload, from the button: the result and the new load time shown.
    browser.eval("document.getElementById('reload').click(); true").await;
    browser
        .wait_for(
            "document.getElementById('reload-result').textContent.startsWith('reloaded')",
            "the reload result",
        )
        .await;
    browser
        .wait_for(
            "document.getElementById('config-body').innerText.includes('succeeded (admin_api)')",
            "the last reload in the config section",
        )
        .await;
    browser.screenshot("reload").await;

    // A reload of a broken file: refused, its error shown, the running config kept.
    gw.write_config("routes: [ { name: broken } ]\n");
    browser.eval("document.getElementById('reload').click(); true").await;
    browser
        .wait_for(
            "document.getElementById('reload-result').textContent.startsWith('refused')",
            "the refused reload",
        )
        .await;
    browser
        .wait_for(
            "document.getElementById('config-body').innerText.includes('failed (admin_api)')",
            "the failed reload and its errors in the config section",
        )
        .await;
    let shown = browser.eval("document.getElementById('config-body').innerText").await;
    assert!(
        shown.as_str().unwrap().contains("routes[0]"),
        "the error names its place: {shown}"
    );
    assert_eq!(
        get(&gw.url("/users/2")).await.status,
        401,
        "the old config still serves"
    );
    browser.screenshot("reload-refused").await;
}

#[tokio::test]
async fn the_dashboard_data_needs_the_token() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&config(
        r#"
listeners: [ { name: public, addr: "127.0.0.1:0" } ]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams: { app: { targets: [ "$U" ] } }
routes: [ { name: app, match: { path: / }, upstream: app } ]
"#,
        &[("TOKEN", ADMIN_TOKEN.to_string()), ("U", upstream.addr.to_string())],
    ))
    .await;
    for path in ["/stats", "/requests"] {
        assert_eq!(get(&gw.admin_url(path)).await.status, 401, "{path}");
    }
    assert_eq!(get(&gw.admin_url("/dashboard")).await.status, 200);
    let stats = gw.admin("GET", "/stats?seconds=10", "").await.json();
    assert_eq!(stats["series"].as_array().map(Vec::len), Some(10));
}
