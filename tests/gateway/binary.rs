//! The `portico` command as a user runs it.

use crate::config;
use crate::support::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn portico(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .output()
        .expect("portico runs")
}

fn validate_text(yaml: &str) -> (i32, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let out = portico(&["validate", "--config", file.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Every shipped config (`examples/`, and the package's and the image's in
/// `packaging/`) validates in a clean environment, given only the variables
/// its header names on an `# Export first: NAME...` line: what a user who
/// reads the file's top would set.
#[test]
fn every_example_config_validates_with_only_the_variables_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["examples", "packaging"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let named: Vec<&str> = text
                .lines()
                .take_while(|line| line.starts_with('#'))
                .filter_map(|line| line.strip_prefix("# Export first:"))
                .flat_map(|names| names.split(" (").next().unwrap_or("").split_whitespace())
                .collect();
            let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
            command
                .env_clear()
                .args(["validate", "--config", path.to_str().unwrap()]);
            for name in &named {
                command.env(name, format!("{}-example-value-0123456789", name.to_lowercase()));
            }
            let out = command.output().expect("portico runs");
            assert!(
                out.status.success(),
                "{} (given only {named:?}): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "found only {checked} example configs");
}

/// Every example is listed, with what it shows, in the book's examples chapter.
#[test]
fn every_example_is_listed_in_the_docs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chapter = std::fs::read_to_string(root.join("docs/src/examples.md")).unwrap();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            assert!(
                chapter.contains(&format!("{{{{#include ../../examples/{name}}}}}")),
                "docs/src/examples.md does not show examples/{name}"
            );
        }
    }
}

#[test]
fn validate_reports_every_error_with_its_place_and_fix() {
    let (code, text) = validate_text(
        r#"listeners:
  - { name: public, addr: "127.0.0.1:8080" }
upstreams:
  users: { targets: ["127.0.0.1:9001"] }
  userx: { targets: ["127.0.0.1:9002"] }
routes:
  - name: a
    match: { path: /a }
    upstream: users
  - name: a
    match: { path: /b }
    upstream: users
  - name: c
    match: { path: /c }
    upstream: userz
  - name: d
    match: { path: /d, colour: red }
    upstream: users
"#,
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(": 3 errors"), "{text}");
    assert!(text.contains("routes[1].name: duplicate route name \"a\""), "{text}");
    assert!(
        text.contains(
            "routes[2].upstream: unknown upstream \"userz\" (did you mean \"users\" or \"userx\"?); \
             the upstreams are users, userx (line 15, column 5)"
        ),
        "{text}"
    );
    assert!(text.contains("routes[3].match.colour: unknown key `colour`"), "{text}");
}

#[test]
fn validate_refuses_malformed_yaml_and_unknown_keys() {
    let (code, text) = validate_text("listeners: [\n  { name: a, addr: 127.0.0.1:1 \n");
    assert_eq!(code, 2);
    assert!(text.contains("invalid YAML") && text.contains("line"), "{text}");

    // An item's key outside the item: the fix, and the line with a caret under it.
    let (code, text) = validate_text("listeners:\n  - name: a\n  addr: 127.0.0.1:1\n");
    assert_eq!(code, 2);
    assert!(
        text.contains("inside the list that starts at line 2 but is not one of its items"),
        "{text}"
    );
    assert!(
        text.contains("3 |   addr: 127.0.0.1:1\n") && text.contains("|   ^"),
        "{text}"
    );

    let (code, text) = validate_text("listeners: [{ name: a, addr: '127.0.0.1:1' }]\nlisteners_extra: 1\n");
    assert_eq!(code, 2);
    assert!(text.contains("listeners_extra: unknown key"), "{text}");

    let (code, text) = validate_text("listeners: [{ name: a, addr: 'localhost' }]\n");
    assert_eq!(code, 2);
    assert!(
        text.contains("listeners[0].addr") && text.contains("127.0.0.1:8080"),
        "{text}"
    );

    let missing = validate_text("");
    assert_eq!(missing.0, 2);
    let unreadable = portico(&["validate", "--config", "/nonexistent/portico.yaml"]);
    assert_eq!(unreadable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreadable.stderr).contains("cannot read"));
}

#[test]
fn version_and_help_on_every_command() {
    let out = portico(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("portico "));
    for args in [vec!["--help"], vec!["run", "--help"], vec!["validate", "--help"]] {
        let out = portico(&args);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config") || args == ["--help"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let upstream = Upstream::slow("slow", Duration::from_millis(1500)).await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { slow: { targets: ["$U"] } }
routes: [{ name: slow, match: { path: / }, upstream: slow }]
shutdown: { drain_timeout: 10s }
"#,
        &[("U", upstream.addr.to_string())],
    );
    let mut gateway = Process::start(&yaml);
    let url = format!("http://{}/", gateway.addr);
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    gateway.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(gateway.addr).await.is_err(),
        "no new connections are accepted while draining"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow", "the in-flight request finished");
    let status = gateway
        .wait(Duration::from_secs(10))
        .expect("portico exits after draining");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_serves_its_mock_routes() {
    let _ports = fixed_ports().await;
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.yaml")).unwrap();
    let _gateway = Process::start(&text);
    let health = get("http://127.0.0.1:8080/healthz").await;
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    let user = get("http://127.0.0.1:8080/api/v1/users/7").await;
    assert_eq!(user.status, 200);
    assert_eq!(user.header("x-served-by"), "stand-in");
    assert_eq!(user.json()["name"], "Ada Lovelace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_writes_one_json_access_log_line_without_secrets() {
    let upstream = Upstream::named("users").await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { users: { targets: ["$U"] } }
routes:
  - { name: users, match: { path: /users }, upstream: users }
  - { name: health, match: { path: "= /healthz" }, respond: { json: { status: ok } } }
"#,
        &[("U", upstream.addr.to_string())],
    );
    let gateway = Process::start(&yaml);
    let ok = get_with(
        &format!("http://{}/users/7?api_key=s3cr3t", gateway.addr),
        &[("x-request-id", "log-test-1"), ("authorization", "Bearer t0k3n")],
    )
    .await;
    assert_eq!(ok.status, 200);
    get(&format!("http://{}/nowhere", gateway.addr)).await.problem(404);
    for path in ["/healthz", "/users/8"] {
        let head = send(
            http::Request::head(format!("http://{}{path}", gateway.addr))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(head.status, 200);
    }
    let lines = gateway.stdout_lines(4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    // A line is written when its answer is done, which may be after the
    // client has its bytes and has sent the next request: found by content.
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let by = |method: &'static str, status: u64| {
        entries
            .iter()
            .filter(move |e| e["method"] == method && e["status"] == status)
    };
    assert_eq!(by("HEAD", 200).count(), 2, "{lines:?}");
    for head in by("HEAD", 200) {
        assert!(
            head["error"].is_null(),
            "a HEAD answer is complete, not a disconnect: {head}"
        );
    }
    let (entry, line) = entries
        .iter()
        .zip(&lines)
        .find(|(e, _)| e["method"] == "GET" && e["status"] == 200)
        .expect("the GET's line");
    assert_eq!(entry["request_id"], "log-test-1");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/users/7");
    assert_eq!(entry["route"], "users");
    assert_eq!(entry["upstream"], "users");
    assert_eq!(entry["target"], upstream.addr.to_string());
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_out"], 5);
    for field in ["timestamp", "client", "bytes_in", "duration_ms", "upstream_ms"] {
        assert!(!entry[field].is_null(), "{field} missing: {entry}");
    }
    assert!(
        !line.contains("s3cr3t") && !line.contains("t0k3n"),
        "a secret reached the log: {line}"
    );
    let missed = by("GET", 404).next().expect("the 404's line");
    assert_eq!(missed["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_keeps_the_running_one_when_invalid() {
    let version = |body: &str| {
        format!(
            "listeners: [{{ name: public, addr: \"127.0.0.1:0\" }}]\nroutes: [{{ name: v, match: {{ path: / }}, respond: {{ body: {body} }} }}]\n"
        )
    };
    let mut gateway = Process::start(&version("one"));
    let url = format!("http://{}/", gateway.addr);
    assert_eq!(get(&url).await.text(), "one");

    gateway.rewrite_config(&version("two"));
    gateway.signal("HUP");
    let mut reloaded = String::new();
    for _ in 0..100 {
        reloaded = get(&url).await.text();
        if reloaded == "two" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloaded, "two", "SIGHUP reloaded the config");

    gateway.rewrite_config(
        "listeners: [{ name: public, addr: \"127.0.0.1:0\" }]\nroutes: [{ name: v, upstream: nowhere }]\n",
    );
    gateway.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&url).await.text(),
        "two",
        "an invalid config is refused and the running one kept"
    );
    assert!(gateway.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_to_a_file_with_chosen_fields_reopened_on_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = |format: &str| {
        config(
            r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { file: "$LOG", $FORMAT }
routes: [{ name: hi, match: { path: / }, respond: { body: hi } }]
"#,
            &[("LOG", log.display().to_string()), ("FORMAT", format.to_string())],
        )
    };
    let gateway = Process::start(&yaml("fields: [method, path, status, user_agent, referer]"));
    let url = |path: &str| format!("http://{}{path}", gateway.addr);
    let secrets = [
        ("authorization", "Bearer t0k3n"),
        ("cookie", "session=c00k1e"),
        ("x-api-key", "k3y"),
        ("user-agent", "curl/8"),
        ("referer", "https://app.example/page?token=r3f"),
    ];
    assert_eq!(get_with(&url("/first?api_key=q5ecret"), &secrets).await.status, 200);
    let lines = wait_for_lines(&log, 1).await;
    let entry: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        entry,
        serde_json::json!({
            "method": "GET", "path": "/first", "status": 200,
            "user_agent": "curl/8", "referer": "https://app.example/page"
        }),
        "only the chosen fields, in order"
    );
    for secret in ["t0k3n", "c00k1e", "k3y", "r3f", "q5ecret"] {
        assert!(!lines[0].contains(secret), "{secret} reached the log: {}", lines[0]);
    }

    // Rotation: the tool renames the file, then signals; new lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gateway.signal("USR1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(&url("/second")).await;
    let fresh = wait_for_lines(&log, 1).await;
    assert!(fresh[0].contains("/second"), "{fresh:?}");
    assert_eq!(std::fs::read_to_string(&rotated).unwrap().lines().count(), 1);

    // The combined format, switched on by a reload.
    gateway.rewrite_config(&yaml("format: combined"));
    gateway.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    get_with(&url("/third?x=1"), &secrets).await;
    let lines = wait_for_lines(&log, 2).await;
    let combined = &lines[1];
    let pattern = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET /third HTTP/1\.1" 200 2 "https://app\.example/page" "curl/8"$"#,
    )
    .unwrap();
    assert!(pattern.is_match(combined), "{combined}");
}

/// Waits (up to 5 s: lines are flushed every second) for `count` lines in `path`.
async fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    for _ in 0..50 {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} has fewer than {count} lines", path.display());
}

#[test]
fn explain_prints_the_route_plugins_and_destination() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        r#"
listeners: [{ name: public, addr: "127.0.0.1:8080" }]
upstreams: { users: { targets: ["10.0.0.1:9001"] } }
routes:
  - { name: users, match: { path: /api/v1/users, host: api.example.com }, upstream: users, rewrite: { strip_prefix: /api/v1 } }
  - { name: admin, match: { path: /api/v1/users, headers: { x-admin: "1" } }, respond: { status: 403 } }
"#,
    )
    .unwrap();
    let path = file.path().to_str().unwrap();
    let out = portico(&[
        "explain",
        "-c",
        path,
        "GET",
        "http://api.example.com/api/v1/users/7?x=1",
        "-H",
        "X-Admin: 0",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("route     users"), "{text}");
    assert!(text.contains("admin: header x-admin: \"0\", wants \"1\""), "{text}");
    assert!(text.contains("to      10.0.0.1:9001"), "{text}");
    assert!(text.contains("path    /users/7?x=1"), "{text}");
    assert!(text.contains("answer    proxied"), "{text}");

    let json = portico(&["explain", "-c", path, "--json", "GET", "/nowhere"]);
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer["outcome"], "not_found");

    let bad = portico(&["explain", "-c", path, "GET", "/", "-H", "no-colon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not `Name: value`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_the_sockets_to_a_new_process_without_refusing_a_connection() {
    let admin = refusing_addr().await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "$ADMIN", token: "$TOKEN" }
access_log: { enabled: false }
routes: [{ name: hi, match: { path: / }, respond: { body: hi } }]
"#,
        &[("ADMIN", admin.to_string()), ("TOKEN", ADMIN_TOKEN.to_string())],
    );
    let mut gateway = Process::start(&yaml);
    let status_url = format!("http://{admin}/status");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let pid = |status: serde_json::Value| status["pid"].as_u64().unwrap();
    // The admin API starts just after the listener whose address the log gave.
    wait_for_port(admin).await;
    let old_pid = pid(get_with(&status_url, &[("authorization", &auth)]).await.json());
    assert_eq!(old_pid, u64::from(gateway.child.id()));

    // Clients keep opening new connections through the handover.
    let url = format!("http://{}/", gateway.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
                sent += 1;
                match client.get(url.parse().unwrap()).await {
                    Ok(response) if response.status() == 200 => {}
                    other => failed.push(format!("{other:?}")),
                }
            }
            (sent, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.signal("USR2");
    let mut new_pid = old_pid;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        new_pid = pid(get_with(&status_url, &[("authorization", &auth)]).await.json());
        if new_pid != old_pid {
            break;
        }
    }
    assert_ne!(new_pid, old_pid, "a new process took over the admin socket");
    let _successor = KillOnDrop(new_pid);
    let exited = gateway.wait(Duration::from_secs(10)).expect("the old process exits");
    assert!(exited.success(), "{exited:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.await.unwrap();
    assert!(sent > 50, "{sent} requests");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
}

/// Stops a process the test did not start itself (an upgrade's successor).
struct KillOnDrop(u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_carries_the_trace_id_of_traced_requests() {
    let receiver = OtlpReceiver::start().await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
tracing: { otlp: { endpoint: "http://$R", export_interval: 100ms } }
access_log: { fields: [path, status, trace_id] }
routes: [{ name: hi, match: { path: / }, respond: { body: hi } }]
"#,
        &[("R", receiver.addr.to_string())],
    );
    let gateway = Process::start(&yaml);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    get_with(
        &format!("http://{}/traced", gateway.addr),
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;
    let lines = gateway.stdout_lines(1);
    let entry: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(entry["trace_id"], trace, "{entry}");
    let spans = receiver.spans(1).await;
    assert_eq!(spans[0].trace_id, trace);
    assert_eq!(spans[0].name, "GET hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_errors_or_the_admin_api() {
    use base64::Engine;
    let upstream = Upstream::named("ok").await;
    let key = "sup3r-s3cret-api-key-0123456789";
    let password = "pa55w0rd-never-logged";
    let jwt_secret = "jwt-s3cret-of-at-least-32-bytes-long!!";
    let client_secret = "introspection-cl1ent-s3cret";
    let hash = portico::password::hash(password, true).unwrap();
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
consumers:
  - name: app
    credentials: { api_keys: [ "${env:APP_KEY}" ], basic: { username: app, password: "$HASH" } }
upstreams: { api: { targets: [ "$U" ] } }
routes:
  - name: api
    match: { path: / }
    upstream: api
    plugins:
      key_auth: {}
      basic_auth: {}
      jwt: { secret: "${env:JWT_SECRET}" }
      oauth2_introspection: { url: "http://127.0.0.1:9/introspect", client_id: portico, client_secret: "${env:CLIENT_SECRET}", timeout: 200ms }
"#,
        &[
            ("TOKEN", ADMIN_TOKEN.to_string()),
            ("HASH", hash.clone()),
            ("U", upstream.addr.to_string()),
        ],
    );
    let gateway = Process::start_with_env(
        &yaml,
        &[
            ("RUST_LOG", "debug"),
            ("APP_KEY", key),
            ("JWT_SECRET", jwt_secret),
            ("CLIENT_SECRET", client_secret),
        ],
    );
    let url = format!("http://{}/", gateway.addr);
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": "app", "exp": 4102444800u64 }),
        &jsonwebtoken::EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    .unwrap();
    let mut bodies = String::new();
    for headers in [
        vec![("x-api-key", key.to_string())],
        vec![("x-api-key", format!("{key}-wrong"))],
        vec![("authorization", basic("app", password))],
        vec![("authorization", basic("app", &format!("{password}-wrong")))],
        vec![("authorization", format!("Bearer {token}"))],
        vec![("authorization", format!("Bearer {token}x"))],
        vec![("authorization", "Bearer opaque-t0ken-value".to_string())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = get_with(&url, &headers).await;
        bodies.push_str(&reply.text());
    }
    let mut admin_addr = None;
    for _ in 0..100 {
        admin_addr = gateway
            .output()
            .lines()
            .find(|l| l.contains("admin API listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .map(|a| a.trim().to_string());
        if admin_addr.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin_addr = admin_addr.expect("the admin address is logged");
    for path in ["/config", "/routes", "/status"] {
        let reply = get_with(
            &format!("http://{admin_addr}{path}"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        )
        .await;
        assert_eq!(reply.status, 200);
        bodies.push_str(&reply.text());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let everything = format!("{}\n{bodies}", gateway.output());
    assert!(everything.contains("request refused"), "debug logs were captured");
    for secret in [
        key,
        password,
        jwt_secret,
        client_secret,
        &token,
        "opaque-t0ken-value",
        ADMIN_TOKEN,
        &hash,
    ] {
        assert!(!everything.contains(secret), "{secret} leaked:\n{everything}");
    }
}
