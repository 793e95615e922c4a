//! `waf: { engine: crs }`: the OWASP Core Rule Set itself, run by
//! libmodsecurity, in a build with the `crs` feature (the test command
//! builds one). Without the feature, the config says how to get it.

#[cfg(feature = "crs")]
use crate::support::*;
#[cfg(feature = "crs")]
use crate::waf::gateway_config;

#[cfg(feature = "crs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_rule_set_blocks_attacks_and_serves_the_rest() {
    use bytes::Bytes;
    use http_body_util::Full;

    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&gateway_config(&upstream, "{ engine: crs }")).await;
    let browser = [(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    )];
    for attack in [
        "/search?q=1%27%20OR%20%271%27%3D%271",
        "/search?q=-1%20UNION%20ALL%20SELECT%20username,password%20FROM%20users--",
        "/comment?text=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E",
        "/download?file=..%2F..%2F..%2Fetc%2Fpasswd",
        "/ping?host=8.8.8.8%3Bcat%20%2Fetc%2Fpasswd",
    ] {
        let reply = get_with(&gw.url(attack), &browser).await;
        let problem = reply.problem(403);
        assert!(problem["incident"].is_string(), "{attack}: {problem}");
        assert!(
            !reply.text().contains("passwd") && !reply.text().contains("script"),
            "{attack}"
        );
    }
    // A body: CRS reads form fields.
    let form = send(
        http::Request::post(gw.url("/comment"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", browser[0].1)
            .body(Full::new(Bytes::from_static(
                b"text=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            )))
            .unwrap(),
    )
    .await;
    form.problem(403);
    assert_eq!(upstream.count(), 0, "no attack reached the upstream");

    for benign in ["/search?q=select%20a%20plan", "/products/42?sort=price", "/"] {
        let reply = get_with(&gw.url(benign), &browser).await;
        assert_eq!((benign, reply.status.as_u16()), (benign, 200), "{}", reply.text());
    }
    let posted = send(
        http::Request::post(gw.url("/orders"))
            .header("content-type", "application/json")
            .header("user-agent", browser[0].1)
            .body(Full::new(Bytes::from_static(br#"{"sku": "sku-0042", "qty": 2}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_waf_matches_total{action="block",route="app",rule="942100"}"#),
        "{metrics}"
    );
}

#[cfg(feature = "crs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crs_detect_mode_and_rule_exclusions() {
    let upstream = Upstream::named("app").await;
    let scanner = [("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")];
    let gw = Gateway::start(&gateway_config(&upstream, "{ engine: crs }")).await;
    get_with(&gw.url("/"), &scanner).await.problem(403);

    let gw = Gateway::start(&gateway_config(
        &upstream,
        "{ engine: crs, exclude: [ { rules: [913100] } ] }",
    ))
    .await;
    assert_eq!(get_with(&gw.url("/"), &scanner).await.status, 200, "913100 excluded");

    let gw = Gateway::start(&gateway_config(&upstream, "{ engine: crs, mode: detect }")).await;
    assert_eq!(get_with(&gw.url("/"), &scanner).await.status, 200, "detect only");
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_waf_matches_total{action="detect",route="app",rule="913100"}"#),
        "{metrics}"
    );
}

#[cfg(feature = "crs")]
#[test]
fn crs_config_errors_name_the_fix() {
    let errors = |waf: &str| {
        match portico::config::build(&format!(
        "listeners: [{{ name: p, addr: '127.0.0.1:0' }}]\nroutes:\n  - {{ name: r, match: {{ path: / }}, respond: {{ body: x }}, plugins: {{ waf: {waf} }} }}\n"
    )) {
        Ok(_) => panic!("accepted: {waf}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
    }
    };
    let missing = errors("{ engine: crs, crs: { rules: /nowhere/rules } }");
    assert!(
        missing.contains("routes[0].plugins.waf.crs.rules: \"/nowhere/rules\" does not exist"),
        "{missing}"
    );
    let located = errors("{ engine: crs, exclude: [ { locations: ['query:q'] } ] }");
    assert!(located.contains("exclude whole rules by id"), "{located}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.conf"),
        "SecRule ARGS \"@rx x\" \"id:1,phase:2,nosuchaction\"\n",
    )
    .unwrap();
    let bad = errors(&format!(
        "{{ engine: crs, crs: {{ rules: {:?} }} }}",
        dir.path().display().to_string()
    ));
    assert!(
        bad.contains("routes[0].plugins.waf.crs:") && bad.contains("bad.conf"),
        "{bad}"
    );
}

#[cfg(not(feature = "crs"))]
#[test]
fn without_the_crs_feature_the_config_says_how_to_get_it() {
    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: r, match: { path: / }, respond: { body: x }, plugins: { waf: { engine: crs } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
    };
    assert!(
        errors.contains("routes[0].plugins.waf.engine: this build has no Core Rule Set engine: build Portico with `cargo build --release --features crs`"),
        "{errors}"
    );
}
