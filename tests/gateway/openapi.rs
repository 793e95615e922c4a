//! `validate: { openapi: … }`: requests checked against the operations of
//! OpenAPI 3.1 and 3.0 documents, in front of a real upstream.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// An upstream answering 200 with the path and query it received, and
/// counting its requests.
async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = serve(move |request: http::Request<hyper::body::Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let uri = request.uri().to_string();
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(uri))))
        }
    })
    .await;
    (addr, count)
}

fn config_text(upstream: std::net::SocketAddr) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { svc: { targets: [ "$U" ] } }
routes:
  - name: users
    match: { path: /api/users }
    upstream: svc
    rewrite: { strip_prefix: /api, add_prefix: /v1 }
    plugins:
      validate: { openapi: tests/fixtures/openapi/users.yaml, unknown_operations: reject }
  - name: orders
    match: { path: /orders }
    upstream: svc
    plugins:
      validate: { openapi: tests/fixtures/openapi/orders.json }
"#,
        &[("U", upstream.to_string())],
    )
}

async fn gateway(upstream: std::net::SocketAddr) -> Gateway {
    Gateway::start(&config_text(upstream)).await
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string()))),
        None => builder.body(Full::new(Bytes::new())),
    }
    .unwrap()
}

/// The first violation's pointer of a 400.
async fn pointer(request: http::Request<Full<Bytes>>) -> String {
    let reply = send(request).await;
    let problem = reply.problem(400);
    problem["errors"][0]["pointer"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn requests_are_checked_against_their_operation_and_valid_ones_pass() {
    let (upstream, reached) = upstream().await;
    let gw = gateway(upstream).await;

    // Valid requests of each operation reach the service, at its path.
    let user = json!({ "name": "Ada", "email": "ada@example.com", "age": 36, "nickname": null });
    for (method, path, headers, body) in [
        ("GET", "/api/users?limit=10&tags=staff,admin", vec![], None),
        ("GET", "/api/users/me", vec![], None),
        ("GET", "/api/users/42", vec![], None),
        ("POST", "/api/users", vec![], Some(user.clone())),
        ("PUT", "/api/users/42", vec![("x-tenant", "acme")], Some(user.clone())),
        ("DELETE", "/api/users/42", vec![], None),
    ] {
        let reply = send(request(method, &gw.url(path), &headers, body)).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
        assert!(reply.text().starts_with("/v1/users"), "{}", reply.text());
    }
    assert_eq!(reached.load(Ordering::SeqCst), 6);

    // Each failure class, with its JSON pointer; none reaches the service.
    let cases = [
        (request("GET", &gw.url("/api/users?limit=0"), &[], None), "/query/limit"),
        (
            request("GET", &gw.url("/api/users?limit=ten"), &[], None),
            "/query/limit",
        ),
        (
            request("GET", &gw.url("/api/users?tags=staff,root"), &[], None),
            "/query/tags/1",
        ),
        (request("GET", &gw.url("/api/users/abc"), &[], None), "/path/id"),
        (
            request("PUT", &gw.url("/api/users/1"), &[], Some(user.clone())),
            "/headers/X-Tenant",
        ),
        (
            request(
                "PUT",
                &gw.url("/api/users/1"),
                &[("x-tenant", "ACME")],
                Some(user.clone()),
            ),
            "/headers/X-Tenant",
        ),
        (
            request("POST", &gw.url("/api/users"), &[], Some(json!({ "name": "" }))),
            "/body",
        ),
        (
            request(
                "POST",
                &gw.url("/api/users"),
                &[],
                Some(json!({ "name": "A", "email": "e", "age": -1 })),
            ),
            "/body/age",
        ),
        (request("POST", &gw.url("/api/users"), &[], None), "/body"),
    ];
    for (request, expected) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        assert_eq!(pointer(request).await, expected, "{what}");
    }
    let missing = send(request("POST", &gw.url("/api/users"), &[], Some(json!({ "name": "" })))).await;
    let errors = missing.problem(400)["errors"].clone();
    assert_eq!(
        errors.as_array().unwrap().len(),
        2,
        "every violation is listed: {errors}"
    );
    let no_body = send(request("POST", &gw.url("/api/users"), &[], None)).await;
    assert_eq!(
        no_body.problem(400)["errors"][0]["message"],
        "a request body is required"
    );

    let text = send(
        http::Request::post(gw.url("/api/users"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from("Ada")))
            .unwrap(),
    )
    .await;
    assert!(text.problem(415)["detail"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    let malformed = send(
        http::Request::post(gw.url("/api/users"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from("{\"name\":")))
            .unwrap(),
    )
    .await;
    malformed.problem(400);

    // Operations the document does not have are refused on this route.
    let unknown = send(request("GET", &gw.url("/api/users/1/friends"), &[], None)).await;
    assert!(unknown.problem(404)["detail"]
        .as_str()
        .unwrap()
        .contains("no such path"));
    let patch = send(request("PATCH", &gw.url("/api/users/1"), &[], Some(user))).await;
    patch.problem(405);
    assert_eq!(patch.header("allow"), "GET, PUT, DELETE");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        6,
        "no invalid request reached the service"
    );
}

#[tokio::test]
async fn openapi_3_0_documents_read_as_3_0_means_them() {
    let (upstream, reached) = upstream().await;
    let gw = gateway(upstream).await;
    let ok = send(request(
        "GET",
        &gw.url("/orders/o-17"),
        &[("cookie", "theme=dark; session=abc")],
        None,
    ))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        pointer(request("GET", &gw.url("/orders/o-17"), &[], None)).await,
        "/cookies/session"
    );
    assert_eq!(
        pointer(request("GET", &gw.url("/orders/17"), &[("cookie", "session=a")], None)).await,
        "/path/orderId"
    );
    // `nullable` and draft 4's boolean `exclusiveMinimum`.
    let nullable = send(request(
        "PATCH",
        &gw.url("/orders/o-1"),
        &[],
        Some(json!({ "note": null, "quantity": 2 })),
    ))
    .await;
    assert_eq!(nullable.status, 200, "{}", nullable.text());
    assert_eq!(
        pointer(request(
            "PATCH",
            &gw.url("/orders/o-1"),
            &[],
            Some(json!({ "quantity": 1 }))
        ))
        .await,
        "/body/quantity"
    );
    // Not rejecting unknown operations: they pass unchecked.
    let unknown = send(request("GET", &gw.url("/orders"), &[], None)).await;
    assert_eq!(unknown.status, 200);
    assert_eq!(reached.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn explain_names_the_operation() {
    let (upstream, _) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portico.yaml");
    std::fs::write(&file, config_text(upstream)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "--config", file.to_str().unwrap(), "GET", "/api/users/abc"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("operation getUser: 1 violation(s), first: \"/path/id\""),
        "{text}"
    );
}

#[tokio::test]
async fn broken_documents_are_config_errors_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{ name: x, in: query, schema: { type: 12 } }]\n",
    )
    .unwrap();
    let config = format!(
        "listeners: [{{ name: p, addr: '127.0.0.1:0' }}]\nroutes:\n  - {{ name: a, match: {{ path: /a }}, respond: {{ body: x }}, plugins: {{ validate: {{ openapi: {} }} }} }}\n  - {{ name: b, match: {{ path: /b }}, respond: {{ body: x }}, plugins: {{ validate: {{ openapi: nowhere.yaml }} }} }}\n",
        broken.display()
    );
    let errors = match portico::config::build(&config) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].plugins.validate.openapi: ",
        "routes[1].plugins.validate.openapi: cannot read nowhere.yaml",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("paths./a.get.parameters[0]: a schema is not valid")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn imported_routes_make_a_validated_gateway() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args([
            "import-openapi",
            "tests/fixtures/openapi/users.yaml",
            "--upstream",
            "users",
            "--prefix",
            "/api",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let routes = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        routes.matches("  - name: ").count(),
        6,
        "one route per operation:\n{routes}"
    );

    let (upstream, reached) = upstream().await;
    let gw = Gateway::start(&format!(
        "listeners: [{{ name: public, addr: \"127.0.0.1:0\" }}]\naccess_log: {{ enabled: false }}\nupstreams: {{ users: {{ targets: [ \"{upstream}\" ] }} }}\n{routes}"
    ))
    .await;
    let ok = send(request("GET", &gw.url("/api/v1/users/7"), &[], None)).await;
    assert_eq!((ok.status.as_u16(), ok.text().as_str()), (200, "/v1/users/7"));
    assert_eq!(
        pointer(request("GET", &gw.url("/api/v1/users/x"), &[], None)).await,
        "/path/id"
    );
    assert_eq!(
        pointer(request("POST", &gw.url("/api/v1/users"), &[], Some(json!({})))).await,
        "/body"
    );
    // Each operation is its own route, so the router answers other methods.
    send(request("PATCH", &gw.url("/api/v1/users/7"), &[], None))
        .await
        .problem(405);
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["import-openapi", "nowhere.yaml", "--upstream", "users"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read nowhere.yaml"));
}

#[tokio::test]
async fn the_docs_merge_every_document_at_public_paths_and_the_page_renders_them() {
    let (upstream, _) = upstream().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
upstreams: { svc: { targets: [ "$U" ] } }
routes:
  - name: users
    match: { path: /api/users }
    upstream: svc
    rewrite: { strip_prefix: /api, add_prefix: /v1 }
    plugins: { validate: { openapi: tests/fixtures/openapi/users.yaml } }
  - name: orders
    match: { path: /orders, methods: [GET] }
    upstream: svc
    plugins: { validate: { openapi: tests/fixtures/openapi/orders.json } }
  - name: accounts
    match: { path: "/accounts/{id}" }
    upstream: svc
    rewrite: { path: "/accounts/{id}" }
    plugins: { validate: { openapi: tests/fixtures/openapi/accounts.yaml } }
"#,
        &[("U", upstream.to_string()), ("TOKEN", ADMIN_TOKEN.to_string())],
    ))
    .await;

    assert_eq!(
        get(&gw.admin_url("/docs/openapi.json")).await.status,
        401,
        "the document needs the token"
    );
    let doc = gw.admin("GET", "/docs/openapi.json", "").await.json();
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "delete /api/users/{id}",
            "get /accounts/{accountId}",
            "get /api/users",
            "get /api/users/me",
            "get /api/users/{id}",
            "get /orders/{orderId}",
            "post /api/users",
            "put /api/users/{id}",
        ],
        "public paths; the orders route takes GET only"
    );
    assert_eq!(doc["paths"]["/api/users/{id}"]["get"]["x-portico-route"], "users");
    assert_eq!(doc["paths"]["/api/users/{id}"]["parameters"][0]["name"], "id");
    // Clashing components are renamed, and references follow.
    assert_eq!(
        doc["components"]["schemas"]["User"]["required"],
        json!(["name", "email"])
    );
    assert_eq!(
        doc["paths"]["/accounts/{accountId}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/Accounts_User"
    );
    assert!(doc["components"]["schemas"]["Accounts_User"]["properties"]["login"].is_object());
    // The merged document is a valid 3.1 document.
    let spec = portico::openapi::Spec::from_value(doc.clone()).unwrap();
    assert_eq!(spec.operations().len(), 8);

    // The page is open, self-contained, and renders the document in a browser.
    let page = get(&gw.admin_url("/docs")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.header("content-security-policy").contains("default-src 'none'"));
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "no external assets"
    );
    let admin = gw.admin_url("/docs");
    let dom = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=10000",
                "--dump-dom",
            ])
            .arg(format!("{admin}#token={ADMIN_TOKEN}"))
            .output()
            .expect("chromium runs (scripts/test.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(dom.matches("<details class=\"op\" data-path").count(), 8, "{dom}");
    assert!(
        dom.contains("data-path=\"/api/users/{id}\" data-method=\"put\""),
        "{dom}"
    );
    assert!(dom.contains("8 operations"), "{dom}");
}
