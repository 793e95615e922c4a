//! The testkit: real upstream servers that record what they receive, a
//! gateway started in-process from a YAML string, and a client.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::control::{Control, ReloadReport, RunOptions};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 server on a free loopback port.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    tasks: Tasks,
}

/// The accept loop and connection tasks of a server, so it can be stopped
/// as a killed process would be: listener and connections closed.
pub type Tasks = Arc<Mutex<Vec<tokio::task::AbortHandle>>>;

impl Upstream {
    /// Answers every request with `respond(request)`, after recording it.
    pub async fn start<F>(respond: F) -> Upstream
    where
        F: Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        Upstream::start_with("127.0.0.1:0".parse().unwrap(), Duration::ZERO, respond).await
    }

    /// Records each request, waits `delay` (without blocking other requests),
    /// then answers `respond(request)`. `addr` may name a port to restart on.
    pub async fn start_with<F>(addr: SocketAddr, delay: Duration, respond: F) -> Upstream
    where
        F: Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let respond = Arc::new(respond);
        let handler = move |request: Request<Incoming>| {
            let log = log.clone();
            let respond = respond.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let recorded = Recorded {
                    method: parts.method,
                    uri: parts.uri,
                    version: parts.version,
                    headers: parts.headers,
                    body,
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let response = respond(&recorded);
                log.lock().unwrap().push(recorded);
                Ok::<_, Infallible>(response)
            }
        };
        let (addr, tasks) = serve_at(addr, handler).await;
        Upstream { addr, requests, tasks }
    }

    /// Answers 200 with its name in the body and in `x-upstream`.
    pub async fn named(name: &'static str) -> Upstream {
        Upstream::start(move |_| named_response(name)).await
    }

    /// Answers 200 with its name after `delay`.
    pub async fn slow(name: &'static str, delay: Duration) -> Upstream {
        Upstream::start_with("127.0.0.1:0".parse().unwrap(), delay, move |_| named_response(name)).await
    }

    /// Closes the listener and every connection, as a killed process would.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
}

/// A 200 answer carrying `name` in its body and `x-upstream` header.
pub fn named_response(name: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("x-upstream", name)
        .body(Full::new(Bytes::from(name)))
        .unwrap()
}

/// A bodyless answer with `status`.
pub fn status_response(status: u16) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::default()).unwrap()
}

/// Serves `handler` over HTTP/1.1 on a free loopback port; returns the address.
pub async fn serve<H, Fut, B>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_at("127.0.0.1:0".parse().unwrap(), handler).await.0
}

/// Serves `handler` on `addr`; returns the bound address and the tasks that stop it.
pub async fn serve_at<H, Fut, B>(addr: SocketAddr, handler: H) -> (SocketAddr, Tasks)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tasks: Tasks = Arc::default();
    let registry = tasks.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let connection = tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
            registry.lock().unwrap().push(connection.abort_handle());
        }
    });
    tasks.lock().unwrap().push(accept.abort_handle());
    (addr, tasks)
}

/// Waits (up to 10 s) until something accepts connections at `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// A loopback address where nothing listens: connections are refused.
pub async fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A TCP server that runs `script` on each accepted connection, for upstreams
/// that misbehave below HTTP (hang, close mid-body).
pub async fn tcp_server<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(script(stream));
        }
    });
    addr
}

/// An upstream that misbehaves below HTTP: on each connection it reads the
/// request, writes `answer` (which may be empty, partial or not HTTP at
/// all), keeps the connection open for `hold`, then closes it.
pub async fn scripted_upstream(answer: &'static [u8], hold: Duration) -> SocketAddr {
    tcp_server(move |mut stream| async move {
        let mut buf = [0u8; 4096];
        if stream.read(&mut buf).await.unwrap_or(0) > 0 {
            let _ = stream.write_all(answer).await;
            tokio::time::sleep(hold).await;
        }
    })
    .await
}

/// The admin token test configs use.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A gateway started in-process from a YAML config written to a temporary
/// file, run as `portico run` runs it (without watching the file unless asked).
pub struct Gateway {
    pub control: Arc<Control>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway; the first listener's address is `addr`. Panics with
    /// the config errors if the config does not compile.
    pub async fn start(yaml: &str) -> Gateway {
        Gateway::start_with(yaml, RunOptions { watch: false }).await
    }

    /// Starts a gateway that reloads when its config file changes.
    pub async fn start_watching(yaml: &str) -> Gateway {
        Gateway::start_with(yaml, RunOptions { watch: true }).await
    }

    async fn start_with(yaml: &str, options: RunOptions) -> Gateway {
        if let Ok(filter) = std::env::var("PORTICO_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("portico.yaml");
        std::fs::write(&path, yaml).expect("config written");
        let control = match Control::start(&path, options).await {
            Ok(control) => control,
            Err(error) => panic!("gateway does not start:\n{error}\n---\n{yaml}"),
        };
        let addr = control.server().addrs()[0].1;
        Gateway { control, addr, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The address of the listener named `name`.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.control
            .server()
            .addrs()
            .into_iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, addr)| addr)
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("portico.yaml")
    }

    /// Replaces the config file (atomically, as deploy tools do).
    pub fn write_config(&self, yaml: &str) {
        let staged = self.dir.path().join("portico.yaml.new");
        std::fs::write(&staged, yaml).expect("config written");
        std::fs::rename(&staged, self.config_path()).expect("config replaced");
    }

    /// Writes `yaml` and reloads it as SIGHUP would.
    pub async fn reload(&self, yaml: &str) -> ReloadReport {
        self.write_config(yaml);
        self.control.reload("signal").await
    }

    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.control.admin_addr().expect("the config has an admin block");
        format!("http://{addr}{path}")
    }

    /// An admin API request with the token.
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(self.admin_url(path))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("valid request");
        send(request).await
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// Asserts the RFC 9457 shape and returns the problem document.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.header("content-type"), "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["status"], status);
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
        assert_eq!(problem["request_id"], self.header("x-request-id"));
        problem
    }
}

pub async fn send(request: Request<Full<Bytes>>) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("the gateway answers within 30s")
        .expect("the request gets a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body is read whole").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::default()).unwrap()).await
}

/// `clients` concurrent clients, each sending `each` GETs in turn; every reply.
pub async fn get_many(url: &str, clients: usize, each: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let mut replies = Vec::new();
                for _ in 0..each {
                    replies.push(get(&url).await);
                }
                replies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// Writes raw bytes to `addr` and reads until the server closes (or 10 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The `portico` binary running as its own process, for what only a process
/// shows: memory, signals, exit codes.
pub struct Process {
    pub child: std::process::Child,
    /// The first listener's bound address.
    pub addr: SocketAddr,
    /// Lines the process wrote to stdout (the access log).
    stdout: Arc<Mutex<Vec<String>>>,
    /// Lines it wrote to stderr (its diagnostics).
    stderr: Arc<Mutex<Vec<String>>>,
    _config: tempfile::NamedTempFile,
}

impl Process {
    pub fn start(yaml: &str) -> Process {
        Process::start_with_env(yaml, &[])
    }

    /// Starts it with more environment variables (`RUST_LOG`, secrets).
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Process {
        use std::io::{BufRead, Write};
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(yaml.as_bytes()).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(file.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("portico starts");
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout_lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let diagnostics = stderr_lines.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                diagnostics.lock().unwrap().push(line.clone());
                if !sent {
                    if let Some(addr) = line.split("addr=").nth(1) {
                        let _ = tx.send(addr.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("portico logs its listening address")
            .parse()
            .unwrap();
        Process {
            child,
            addr,
            stdout: stdout_lines,
            stderr: stderr_lines,
            _config: file,
        }
    }

    /// Everything it has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        let out = self.stdout.lock().unwrap().join("\n");
        let err = self.stderr.lock().unwrap().join("\n");
        format!("{out}\n{err}")
    }

    /// Waits up to 5 s for `count` stdout lines and returns them.
    pub fn stdout_lines(&self, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.stdout.lock().unwrap().clone();
            if lines.len() >= count || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config file's text (for a reload).
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(self._config.path(), yaml).unwrap();
    }

    /// Peak resident memory of the process so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DNS server on a loopback UDP port, answering A queries from a table the
/// test changes as it goes; other names get NXDOMAIN. Messages are read and
/// written with hickory-proto.
pub struct DnsServer {
    pub addr: SocketAddr,
    records: Table<Vec<std::net::Ipv4Addr>>,
    /// name → (priority, weight, port, target)
    services: Table<Vec<(u16, u16, u16, String)>>,
}

/// DNS records by name, shared with the server task.
type Table<T> = Arc<Mutex<std::collections::HashMap<String, T>>>;

impl DnsServer {
    pub async fn start() -> DnsServer {
        use hickory_resolver::proto::op::{Message, ResponseCode};
        use hickory_resolver::proto::rr::{rdata::A, rdata::SRV, Name, RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Table<Vec<std::net::Ipv4Addr>> = Arc::default();
        let table = records.clone();
        let services: Table<Vec<(u16, u16, u16, String)>> = Arc::default();
        let srv_table = services.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.metadata.authoritative = true;
                response.metadata.recursion_desired = query.metadata.recursion_desired;
                for question in &query.queries {
                    response.add_query(question.clone());
                    let name = question.name().to_string().trim_end_matches('.').to_ascii_lowercase();
                    if question.query_type() == RecordType::SRV {
                        match srv_table.lock().unwrap().get(&name) {
                            Some(records) => {
                                for (priority, weight, port, target) in records {
                                    let Ok(target) = Name::from_ascii(format!("{target}.")) else {
                                        continue;
                                    };
                                    let srv = SRV::new(*priority, *weight, *port, target);
                                    response.add_answer(Record::from_rdata(
                                        question.name().clone(),
                                        0,
                                        RData::SRV(srv),
                                    ));
                                }
                            }
                            None => response.metadata.response_code = ResponseCode::NXDomain,
                        }
                        continue;
                    }
                    match table.lock().unwrap().get(&name) {
                        Some(ips) if question.query_type() == RecordType::A => {
                            for ip in ips {
                                response.add_answer(Record::from_rdata(question.name().clone(), 0, RData::A(A(*ip))));
                            }
                        }
                        Some(_) => {}
                        None => response.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            records,
            services,
        }
    }

    /// Sets the SRV records of `name`: (priority, weight, port, target).
    pub fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
        let records = records
            .iter()
            .map(|(p, w, port, t)| (*p, *w, *port, t.to_string()))
            .collect();
        self.services.lock().unwrap().insert(name.to_string(), records);
    }

    /// Sets the A records of `name` (an empty list: the name exists, no addresses).
    pub fn set(&self, name: &str, ips: &[std::net::Ipv4Addr]) {
        self.records.lock().unwrap().insert(name.to_string(), ips.to_vec());
    }
}

/// A span as an OTLP collector received it.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: std::collections::HashMap<String, String>,
    pub error: bool,
}

/// An OTLP/HTTP collector on a free loopback port: decodes each protobuf
/// export request and keeps its spans.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let spans: Arc<Mutex<Vec<ExportedSpan>>> = Arc::default();
        let sink = spans.clone();
        let addr = serve(move |request: Request<Incoming>| {
            let sink = sink.clone();
            async move {
                assert_eq!(request.uri().path(), "/v1/traces");
                assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut received = sink.lock().unwrap();
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| any_value(&a.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            received.push(ExportedSpan {
                                service: service.clone(),
                                name: span.name,
                                kind: span.kind,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|a| (a.key.clone(), any_value(&a.value)))
                                    .collect(),
                                error: span.status.is_some_and(|s| s.code == 2),
                            });
                        }
                    }
                }
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }
        })
        .await;
        OtlpReceiver { addr, spans }
    }

    /// Waits (up to 10 s) until at least `count` spans have arrived.
    pub async fn spans(&self, count: usize) -> Vec<ExportedSpan> {
        for _ in 0..100 {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= count {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let spans = self.spans.lock().unwrap().clone();
        panic!("expected {count} spans, got {}: {spans:#?}", spans.len());
    }

    pub fn received(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn any_value(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// A real `redis-server` on a free loopback port, without persistence.
/// Fails loudly when `redis-server` is not installed: the README's test
/// command installs it.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = refusing_addr().await.port();
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on its port, and waits until it answers.
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run the tests (see the README's test command)");
        self.child = Some(child);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills it as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A certificate chain and its key.
pub type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A certificate authority made for a test, its certificate written as PEM.
pub struct TestCa {
    pub path: std::path::PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(dir: &std::path::Path, name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Test {name} CA"));
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, issuer.pem()).unwrap();
        TestCa { path, issuer }
    }

    /// A certificate for `names` (DNS names or IP addresses) with common name `cn`.
    pub fn issue(&self, cn: &str, names: &[&str]) -> Identity {
        let (cert, key) = self.sign(cn, names);
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        (vec![cert.der().clone()], key)
    }

    /// As [`TestCa::issue`], written as `file.pem` and `file.key` in `dir`.
    pub fn write(
        &self,
        dir: &std::path::Path,
        file: &str,
        cn: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = self.sign(cn, names);
        let (cert_path, key_path) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn sign(&self, cn: &str, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert, key)
    }
}

/// Serves `handler` over HTTP/2 in clear (h2c, prior knowledge), as gRPC
/// services listen, on a free loopback port; returns the address.
pub async fn serve_h2<H, Fut, B>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
        }
    });
    addr
}

/// The documented fixed ports (8080, 8081, 9001, 9002, 9901: the quickstart
/// and the README's walkthrough), held by the tests that use them so they
/// take turns. A tokio mutex: the async tests hold it across their awaits.
static FIXED_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn fixed_ports() -> tokio::sync::MutexGuard<'static, ()> {
    FIXED_PORTS.lock().await
}

/// [`fixed_ports`] for a test outside any runtime.
pub fn fixed_ports_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    FIXED_PORTS.blocking_lock()
}
