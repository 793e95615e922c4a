//! Load balancing across a pool's targets, as seen by the targets themselves.

use crate::config;
use crate::support::*;
use std::time::Duration;

async fn gateway(targets: &str, balance: &str, values: Vec<(&str, String)>) -> Gateway {
    let mut values = values;
    values.push(("TARGETS", targets.to_string()));
    values.push(("BALANCE", balance.to_string()));
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc:
    targets: $TARGETS
    $BALANCE
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &values,
    );
    Gateway::start(&yaml).await
}

#[tokio::test]
async fn round_robin_follows_weights_smoothly() {
    let (a, b, c) = (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    );
    let targets = format!(
        r#"["{}", {{ addr: "{}", weight: 2 }}, {{ addr: "{}", backup: true }}]"#,
        a.addr, b.addr, c.addr
    );
    let gw = gateway(&targets, "balance: round_robin", vec![]).await;
    let mut order = String::new();
    for _ in 0..30 {
        order.push_str(&get(&gw.url("/")).await.text());
    }
    assert_eq!((a.count(), b.count()), (10, 20));
    assert!(!order.contains("aa"), "smooth: a never twice in a row: {order}");
    assert_eq!(c.count(), 0, "a backup takes no traffic while primaries serve");
}

#[tokio::test]
async fn least_request_sends_less_to_a_slow_target() {
    let slow = Upstream::slow("slow", Duration::from_millis(200)).await;
    let fast = Upstream::named("fast").await;
    let targets = format!(r#"["{}", "{}"]"#, slow.addr, fast.addr);
    let gw = gateway(&targets, "balance: least_request", vec![]).await;
    get_many(&gw.url("/"), 8, 10).await;
    assert_eq!(slow.count() + fast.count(), 80);
    assert!(
        slow.count() * 3 < fast.count(),
        "slow {} fast {}",
        slow.count(),
        fast.count()
    );
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_target_and_spreads_keys() {
    let ups = [
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    ];
    let targets = format!(r#"["{}", "{}", "{}"]"#, ups[0].addr, ups[1].addr, ups[2].addr);
    let gw = gateway(
        &targets,
        "balance: consistent_hash\n    hash_on: header:x-user-id",
        vec![],
    )
    .await;
    let mut owners = std::collections::HashMap::new();
    for user in 0..30 {
        let id = format!("user-{user}");
        let first = get_with(&gw.url("/"), &[("x-user-id", &id)]).await.text();
        for _ in 0..3 {
            assert_eq!(
                get_with(&gw.url("/"), &[("x-user-id", &id)]).await.text(),
                first,
                "{id} moved"
            );
        }
        owners.insert(id, first);
    }
    for up in &ups {
        assert!(up.count() > 0, "every target owns some keys");
    }
}

#[tokio::test]
async fn consistent_hash_on_a_cookie_and_random_both_reach_every_target() {
    let ups = [Upstream::named("a").await, Upstream::named("b").await];
    let targets = format!(r#"["{}", "{}"]"#, ups[0].addr, ups[1].addr);
    let gw = gateway(
        &targets,
        "balance: consistent_hash\n    hash_on: cookie:session",
        vec![],
    )
    .await;
    let first = get_with(&gw.url("/"), &[("cookie", "theme=dark; session=s-1")])
        .await
        .text();
    for _ in 0..5 {
        assert_eq!(get_with(&gw.url("/"), &[("cookie", "session=s-1")]).await.text(), first);
    }
    let gw = gateway(&targets, "balance: random", vec![]).await;
    let before = (ups[0].count(), ups[1].count());
    for _ in 0..40 {
        get(&gw.url("/")).await;
    }
    assert!(ups[0].count() > before.0 && ups[1].count() > before.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_sends_a_slow_target_clearly_less_than_two_fast_ones() {
    let slow = Upstream::slow("slow", Duration::from_millis(100)).await;
    let fast1 = Upstream::slow("fast1", Duration::from_millis(2)).await;
    let fast2 = Upstream::slow("fast2", Duration::from_millis(2)).await;
    let targets = format!(r#"["{}", "{}", "{}"]"#, slow.addr, fast1.addr, fast2.addr);
    let gw = gateway(&targets, "balance: ewma", vec![]).await;
    get_many(&gw.url("/"), 4, 40).await;
    let (s, f) = (slow.count(), fast1.count() + fast2.count());
    assert_eq!(s + f, 160);
    // An even spread would give the slow target a third (53).
    assert!(s * 8 < f, "slow {s}, fast {f}");
}
