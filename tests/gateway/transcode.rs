//! gRPC-JSON transcoding: JSON clients call a real tonic-codec gRPC service
//! through the `google.api.http` rules of `tests/fixtures/grpc/users.proto`,
//! compiled into a descriptor set by protox (no protoc needed).

use crate::config;
use crate::support::*;
use std::net::SocketAddr;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct GetUserRequest {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListUsersRequest {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(int32, tag = "2")]
    limit: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateUserRequest {
    #[prost(message, optional, tag = "1")]
    user: Option<User>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UpdateUserRequest {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(string, tag = "2")]
    display_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct User {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(string, tag = "2")]
    display_name: String,
    #[prost(string, repeated, tag = "3")]
    tags: Vec<String>,
    #[prost(bool, tag = "4")]
    active: bool,
}

/// A unary method from a plain function.
struct Unary<F>(F);

impl<Q, A, F> UnaryService<Q> for Unary<F>
where
    F: FnMut(Q) -> Result<A, Status>,
{
    type Response = A;
    type Future = std::future::Ready<Result<Response<A>, Status>>;
    fn call(&mut self, request: Request<Q>) -> Self::Future {
        std::future::ready((self.0)(request.into_inner()).map(Response::new))
    }
}

/// `ListUsers`: `limit` users, each with the asked tags.
struct ListUsers;

impl ServerStreamingService<ListUsersRequest> for ListUsers {
    type Response = User;
    type ResponseStream = futures_util::stream::Iter<std::vec::IntoIter<Result<User, Status>>>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;
    fn call(&mut self, request: Request<ListUsersRequest>) -> Self::Future {
        let asked = request.into_inner();
        let users: Vec<Result<User, Status>> = (1..=i64::from(asked.limit))
            .map(|id| {
                Ok(User {
                    id,
                    display_name: format!("user {id}"),
                    tags: asked.tags.clone(),
                    active: true,
                })
            })
            .collect();
        std::future::ready(Ok(Response::new(futures_util::stream::iter(users))))
    }
}

fn ada(id: i64, verbose: bool) -> Result<User, Status> {
    match id {
        404 => Err(Status::not_found("no user 404")),
        _ => Ok(User {
            id,
            display_name: "Ada Lovelace".into(),
            tags: vec!["math".into()],
            active: verbose,
        }),
    }
}

/// The users service on h2c.
async fn users_service() -> SocketAddr {
    serve_h2(|request: http::Request<hyper::body::Incoming>| async move {
        let response = match request.uri().path() {
            "/users.v1.Users/GetUser" | "/users.v1.Users/GetName" => {
                tonic::server::Grpc::new(ProstCodec::<User, GetUserRequest>::default())
                    .unary(Unary(|q: GetUserRequest| ada(q.id, q.verbose)), request)
                    .await
            }
            "/users.v1.Users/ListUsers" => {
                tonic::server::Grpc::new(ProstCodec::<User, ListUsersRequest>::default())
                    .server_streaming(ListUsers, request)
                    .await
            }
            "/users.v1.Users/CreateUser" => {
                let create = |q: CreateUserRequest| {
                    let user = q.user.ok_or_else(|| Status::invalid_argument("no user"))?;
                    Ok(User { id: 100, ..user })
                };
                tonic::server::Grpc::new(ProstCodec::<User, CreateUserRequest>::default())
                    .unary(Unary(create), request)
                    .await
            }
            "/users.v1.Users/UpdateUser" => {
                let update = |q: UpdateUserRequest| {
                    Ok(User {
                        id: q.id,
                        display_name: q.display_name,
                        ..User::default()
                    })
                };
                tonic::server::Grpc::new(ProstCodec::<User, UpdateUserRequest>::default())
                    .unary(Unary(update), request)
                    .await
            }
            _ => Status::unimplemented("not here").into_http(),
        };
        Ok::<_, std::convert::Infallible>(response)
    })
    .await
}

/// `users.proto` compiled with its imports, as `protoc --include_imports` would.
fn descriptor_set(dir: &std::path::Path) -> std::path::PathBuf {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc");
    let bytes = protox::Compiler::new([&fixtures])
        .unwrap()
        .include_imports(true)
        .open_files(["users.proto"])
        .unwrap()
        .encode_file_descriptor_set();
    let path = dir.join("users.pb");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gateway_config(service: SocketAddr, descriptors: &std::path::Path) -> String {
    config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
upstreams:
  users: { targets: ["$S"], protocol: h2c }
routes:
  - name: users-json
    match: { path: /v1/users }
    upstream: users
    grpc_transcode: { descriptors: "$D" }
  - name: users-rpc
    match: { path: /users.v1.Users }
    upstream: users
    grpc_transcode: { descriptors: "$D", services: [ users.v1.Users ] }
"#,
        &[("S", service.to_string()), ("D", descriptors.display().to_string())],
    )
}

async fn call(gw: &Gateway, method: &str, path: &str, body: &str) -> Reply {
    send(
        http::Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_call_grpc_methods_through_their_http_rules() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&gateway_config(users_service().await, &descriptor_set(dir.path()))).await;

    // Path variable and query parameter; proto3 JSON (int64 as a string, camelCase).
    let reply = get(&gw.url("/v1/users/7?verbose=true")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(
        reply.json(),
        serde_json::json!({ "id": "7", "displayName": "Ada Lovelace", "tags": ["math"], "active": true })
    );

    // A server stream: every message, as an array. Repeated query parameters.
    let reply = get(&gw.url("/v1/users?tags=a&tags=b&limit=2")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let users = reply.json();
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert_eq!(
        users[1],
        serde_json::json!({ "id": "2", "displayName": "user 2", "tags": ["a", "b"], "active": true })
    );

    // `body: "user"`: the JSON body is that field.
    let reply = call(
        &gw,
        "POST",
        "/v1/users",
        r#"{"displayName":"Grace Hopper","tags":["navy"]}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["id"], "100");
    assert_eq!(reply.json()["displayName"], "Grace Hopper");

    // `body: "*"` with a path variable, and its additional binding; proto names too.
    for method in ["PATCH", "PUT"] {
        let reply = call(&gw, method, "/v1/users/9", r#"{"display_name":"Bo"}"#).await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
        assert_eq!(reply.json(), serde_json::json!({ "id": "9", "displayName": "Bo" }));
    }

    // `response_body`: the answer is that field.
    let reply = get(&gw.url("/v1/users/7/name")).await;
    assert_eq!(reply.json(), serde_json::json!("Ada Lovelace"));

    // Every method also answers POST /package.Service/Method with its input.
    let reply = call(&gw, "POST", "/users.v1.Users/GetUser", r#"{"id":"12"}"#).await;
    assert_eq!(reply.json()["id"], "12");

    // The service's error status becomes its HTTP status, with its message.
    let reply = get(&gw.url("/v1/users/404")).await;
    let problem = reply.problem(404);
    assert_eq!(problem["detail"], "no user 404");
    assert_eq!(problem["grpc_status"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_make_no_message_are_refused_before_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let gone = refusing_addr().await;
    let gw = Gateway::start(&gateway_config(users_service().await, &descriptor_set(dir.path()))).await;

    let not_a_number = get(&gw.url("/v1/users/abc")).await.problem(400);
    assert!(
        not_a_number["detail"]
            .as_str()
            .unwrap()
            .contains("users.v1.GetUserRequest"),
        "{not_a_number}"
    );
    let not_json = call(&gw, "POST", "/v1/users", "not json").await.problem(400);
    assert!(not_json["detail"].as_str().unwrap().contains("not JSON"), "{not_json}");
    let unknown = call(&gw, "PATCH", "/v1/users/9", r#"{"shoe_size":44}"#)
        .await
        .problem(400);
    assert!(unknown["detail"].as_str().unwrap().contains("shoe_size"), "{unknown}");
    let bad_bool = get(&gw.url("/v1/users/7?verbose=yes")).await.problem(400);
    assert!(bad_bool["detail"].as_str().unwrap().contains("verbose"), "{bad_bool}");

    let wrong_method = call(&gw, "DELETE", "/v1/users/7", "").await;
    wrong_method.problem(405);
    assert_eq!(wrong_method.header("allow"), "GET, PATCH, PUT");
    get(&gw.url("/v1/users/7/name/extra")).await.problem(404);

    // An unreachable service is the usual 502.
    let down = Gateway::start(&gateway_config(gone, &descriptor_set(dir.path()))).await;
    get(&down.url("/v1/users/7")).await.problem(502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoding_config_errors_name_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let descriptors = descriptor_set(dir.path());
    let garbage = dir.path().join("garbage.pb");
    std::fs::write(&garbage, b"\xff\xff not a descriptor set").unwrap();
    let cases = [
        (
            "upstreams: { users: { targets: [\"127.0.0.1:1\"] } }\nroutes: [ { name: r, match: { path: /v1 }, upstream: users, grpc_transcode: { descriptors: \"$D\" } } ]",
            "routes[0].grpc_transcode: gRPC needs HTTP/2",
        ),
        (
            "upstreams: { users: { targets: [\"127.0.0.1:1\"], protocol: h2c } }\nroutes: [ { name: r, match: { path: /v1 }, upstream: users, rewrite: { strip_prefix: /v1 }, grpc_transcode: { descriptors: \"$D\" } } ]",
            "routes[0].grpc_transcode: the gRPC method sets the upstream path",
        ),
        (
            "upstreams: { users: { targets: [\"127.0.0.1:1\"], protocol: h2c } }\nroutes: [ { name: r, match: { path: /v1 }, upstream: users, grpc_transcode: { descriptors: \"$D\", services: [users.v2.Users] } } ]",
            "routes[0].grpc_transcode.services[0]: \"users.v2.Users\" is not in",
        ),
        (
            "upstreams: { users: { targets: [\"127.0.0.1:1\"], protocol: h2c } }\nroutes: [ { name: r, match: { path: /v1 }, upstream: users, grpc_transcode: { descriptors: \"$G\" } } ]",
            "routes[0].grpc_transcode.descriptors: ",
        ),
    ];
    for (body, expected) in cases {
        let yaml = config(
            &format!("listeners: [ {{ name: main, addr: \"127.0.0.1:0\" }} ]\n{body}\n"),
            &[
                ("D", descriptors.display().to_string()),
                ("G", garbage.display().to_string()),
            ],
        );
        let errors = match portico::config::build(&yaml) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
        };
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
}

/// `examples/protos/users.pb` is `tests/fixtures/grpc/users.proto` compiled;
/// `PORTICO_BLESS=1` writes it again after the proto changes.
#[test]
fn the_example_descriptor_set_is_the_fixture_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = std::fs::read(descriptor_set(dir.path())).unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/protos/users.pb");
    if std::env::var_os("PORTICO_BLESS").is_some() {
        std::fs::create_dir_all(example.parent().unwrap()).unwrap();
        std::fs::write(&example, &fresh).unwrap();
    }
    assert!(
        std::fs::read(&example).unwrap() == fresh,
        "run with PORTICO_BLESS=1 to update {}",
        example.display()
    );
}
