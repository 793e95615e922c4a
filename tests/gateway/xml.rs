//! `format`: XML services offered as JSON APIs and the other way round,
//! against real upstreams that speak XML or JSON.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// What the XML service last received: its Content-Type, Accept and body.
type Seen = Arc<Mutex<Option<(String, String, String)>>>;

/// A legacy service that answers with the XML it was sent; `/broken`
/// answers with malformed XML, `/plain` with text.
async fn xml_service() -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let addr = serve(move |request: http::Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            *record.lock().unwrap() = Some((
                header("content-type"),
                header("accept"),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let (content_type, answer) = match parts.uri.path() {
                "/orders/broken" => ("application/xml", Bytes::from_static(b"<order><id>1</order>")),
                "/orders/plain" => ("text/plain", Bytes::from_static(b"plain text")),
                _ => ("application/xml", body),
            };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("content-type", content_type)
                    .body(Full::new(answer))
                    .unwrap(),
            )
        }
    })
    .await;
    (addr, seen)
}

async fn gateway(upstream: std::net::SocketAddr, plugins: &str) -> Gateway {
    Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { legacy: { targets: [ "$U" ] } }
routes:
  - name: orders
    match: { path: "/orders/{id}" }
    upstream: legacy
    plugins:
$PLUGINS
"#,
        &[("U", upstream.to_string()), ("PLUGINS", plugins.to_string())],
    ))
    .await
}

fn post(url: &str, content_type: &str, body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

#[tokio::test]
async fn json_clients_talk_to_an_xml_service_and_get_back_what_they_sent() {
    let (upstream, seen) = xml_service().await;
    let gw = gateway(
        upstream,
        "      format: { request: json_to_xml, response: xml_to_json }",
    )
    .await;
    // As text: the elements keep its order.
    let order = r##"{"order": {
        "@id": "7",
        "@xmlns:t": "urn:example:tax",
        "item": [{"@sku": "a", "#text": "Tea & <cake>"}, {"@sku": "b", "#text": "Scone"}],
        "t:rate": "0.2",
        "note": null,
        "comment": "line one\r\nline \"two\""
    }}"##;
    let reply = send(post(&gw.url("/orders/7"), "application/json", order)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("content-length"), reply.body.len().to_string());
    // Every part of the mapping survives the round trip through XML.
    assert_eq!(reply.json(), serde_json::from_str::<serde_json::Value>(order).unwrap());

    let (content_type, accept, body) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(content_type, "application/xml");
    assert_eq!(
        accept, "application/xml, text/xml",
        "the service is asked for what Portico reads"
    );
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order id=\"7\" xmlns:t=\"urn:example:tax\">\
         <item sku=\"a\">Tea &amp; &lt;cake&gt;</item><item sku=\"b\">Scone</item><t:rate>0.2</t:rate>\
         <note/><comment>line one&#13;\nline \"two\"</comment></order>"
    );
}

#[tokio::test]
async fn a_soap_service_gets_its_envelope_and_json_transforms_apply_between() {
    let (upstream, seen) = xml_service().await;
    let gw = gateway(
        upstream,
        r#"      format:
        request: json_to_xml
        response: xml_to_json
        xml: { root: "soap:Envelope", arrays: [line], infer_types: true, content_type: "text/xml; charset=utf-8" }
      request_transform:
        json: { rename: { "soap:Body.GetOrder.userId": "soap:Body.GetOrder.customer" } }
      response_transform:
        json: { remove: [ "@xmlns:soap" ] }"#,
    )
    .await;
    let request = r#"{
        "@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
        "soap:Body": {"GetOrder": {"userId": 42, "line": {"qty": 2, "gift": false}, "zip": "007"}}
    }"#;
    let reply = send(post(&gw.url("/orders/1"), "application/json", request)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (content_type, _, body) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(content_type, "text/xml; charset=utf-8");
    assert!(
        body.ends_with(
            "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><GetOrder>\
             <line><qty>2</qty><gift>false</gift></line><zip>007</zip><customer>42</customer></GetOrder></soap:Body></soap:Envelope>"
        ),
        "{body}"
    );
    // Numbers and booleans read back as such ("007" stays a string), the
    // listed element is an array though it occurs once, and the response
    // transform saw the JSON form.
    assert_eq!(
        reply.json(),
        json!({"soap:Body": {"GetOrder": {"line": [{"qty": 2, "gift": false}], "zip": "007", "customer": 42}}})
    );
}

#[tokio::test]
async fn xml_clients_reach_a_json_service_and_validation_sees_the_json_form() {
    // The JSON service answers with what it was sent, as JSON.
    let upstream = serve(|request: http::Request<hyper::body::Incoming>| async move {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let received: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!("not json"));
        let answer = json!({"content_type": parts.headers["content-type"].to_str().unwrap(), "received": received});
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .unwrap(),
        )
    })
    .await;
    let gw = gateway(
        upstream,
        r#"      format: { request: xml_to_json, response: json_to_xml, xml: { root: result } }
      validate:
        body: { type: object, required: [qty], properties: { qty: { pattern: "^[0-9]+$" } } }"#,
    )
    .await;
    let reply = send(post(
        &gw.url("/orders/1"),
        "application/xml",
        "<order sku=\"a&amp;b\"><qty>3</qty></order>",
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/xml");
    assert_eq!(
        reply.text(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><result><content_type>application/json</content_type>\
         <received sku=\"a&amp;b\"><qty>3</qty></received></result>"
    );

    // The schema applies to the JSON the XML became.
    let invalid = send(post(&gw.url("/orders/1"), "text/xml", "<order><qty>many</qty></order>")).await;
    let problem = invalid.problem(400);
    assert_eq!(problem["errors"][0]["pointer"], "/body/qty");
    // A JSON body where XML is read is a 415; malformed XML a 400.
    let wrong_type = send(post(&gw.url("/orders/1"), "application/json", "{\"qty\": \"1\"}")).await;
    assert!(wrong_type.problem(415)["detail"]
        .as_str()
        .unwrap()
        .contains("must be XML"));
    let malformed = send(post(&gw.url("/orders/1"), "application/xml", "<order><qty>1</order>")).await;
    assert!(malformed.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("not well-formed XML"));
    let entity = send(post(
        &gw.url("/orders/1"),
        "application/xml",
        "<!DOCTYPE order [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><order><qty>&x;</qty></order>",
    ))
    .await;
    assert!(entity.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("unknown entity &x;"));
}

#[tokio::test]
async fn what_cannot_be_converted_is_refused_and_other_answers_pass_untouched() {
    let (upstream, seen) = xml_service().await;
    let gw = gateway(
        upstream,
        "      format: { request: json_to_xml, response: xml_to_json, max_body: 1KiB }",
    )
    .await;
    let no_root = send(post(&gw.url("/orders/1"), "application/json", r#"{"a": 1, "b": 2}"#)).await;
    assert!(no_root.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("has no XML form"));
    let bad_name = send(post(
        &gw.url("/orders/1"),
        "application/json",
        r#"{"a": {"first name": 1}}"#,
    ))
    .await;
    assert!(bad_name.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("not an XML name"));
    let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(2000));
    send(post(&gw.url("/orders/1"), "application/json", big))
        .await
        .problem(413);
    assert!(seen.lock().unwrap().is_none(), "nothing refused reached the service");

    let broken = send(post(&gw.url("/orders/broken"), "application/json", r#"{"a": 1}"#)).await;
    assert!(broken.problem(502)["detail"]
        .as_str()
        .unwrap()
        .contains("not well-formed XML"));
    let plain = send(post(&gw.url("/orders/plain"), "application/json", r#"{"a": 1}"#)).await;
    assert_eq!((plain.status.as_u16(), plain.text().as_str()), (200, "plain text"));
    assert_eq!(plain.header("content-type"), "text/plain");
    // Requests without a body pass as they are.
    let get = send(
        http::Request::get(gw.url("/orders/1"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(get.status, 200, "{}", get.text());
}

#[tokio::test]
async fn format_config_errors_name_the_fix() {
    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: a, match: { path: /a }, respond: { body: x }, plugins: { format: { xml: { root: \"1st\" } } } }\n  - { name: b, match: { path: /b }, respond: { body: x }, plugins: { format: { request: json_to_yaml } } }\n  - { name: c, match: { path: /c }, respond: { body: x }, plugins: { format: { response: xml_to_json, xml: { content_type: \"bad\\nvalue\" } } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].plugins.format: say what to convert",
        "routes[0].plugins.format.xml.root: the root: \"1st\" is not an XML name",
        "routes[1].plugins.format.request: unknown value `json_to_yaml` (did you mean \"json_to_xml\"?)",
        "routes[2].plugins.format.xml.content_type: not a valid header value",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}
