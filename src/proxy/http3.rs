//! HTTP/3 on a TLS listener (`tls: { http3: true }`): a QUIC endpoint
//! (quinn) on the listener's port over UDP, each request served by the
//! same session as HTTP/1.1 and HTTP/2 (h3). Clients learn of it from the
//! `Alt-Svc` header the TCP listener's answers carry.

use super::client_timeouts::ActiveRequests;
use super::connection::Connection;
use super::session::handle;
use crate::body::{Inbound, ResponseBody};
use crate::gateway::Gateway;
use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http::{HeaderValue, Request};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What an HTTP/3 connection is served with.
pub(crate) struct Serving {
    pub(crate) gateway: Arc<ArcSwap<Gateway>>,
    pub(crate) listener: Arc<ArcSwap<super::connection::ListenerState>>,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) admission: Arc<super::admission::Admission>,
}

/// `Alt-Svc` for a listener serving HTTP/3 on `port`: clients may switch for a day.
pub fn alt_svc(port: u16) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
}

/// Binds the QUIC endpoint and accepts until it is closed.
pub(crate) fn start(
    addr: SocketAddr,
    mut config: quinn::ServerConfig,
    serving: Serving,
) -> std::io::Result<quinn::Endpoint> {
    // A connection with nothing to say is closed after the listener's idle
    // timeout, as its TCP connections are.
    let idle = serving.listener.load().settings.idle_timeout;
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    config.transport_config(Arc::new(transport));
    // SO_REUSEPORT, so that a new binary can bind the port while this one
    // drains (TCP listeners are handed over; UDP sockets are bound again).
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("HTTP/3 needs the tokio runtime"))?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket.into(), runtime)?;
    let accepting = endpoint.clone();
    let serving = Arc::new(serving);
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let serving = serving.clone();
            let peer = incoming.remote_address();
            let listener = serving.listener.load().settings.clone();
            let Ok(admitted) = serving.admission.admit(
                peer,
                &listener.name,
                &listener.admission,
                &serving.gateway.load().metrics,
            ) else {
                incoming.refuse();
                continue;
            };
            tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => serve_connection(connection, &serving, admitted).await,
                    Err(error) => tracing::debug!(%error, "QUIC handshake failed"),
                }
            });
        }
    });
    Ok(endpoint)
}

async fn serve_connection(connection: quinn::Connection, serving: &Serving, admitted: super::admission::Admitted) {
    let _open = super::connection::OpenConnection::new(&serving.gateway.load().metrics);
    let peer = connection.remote_address();
    let client_certificate = connection
        .peer_identity()
        .and_then(|identity| {
            identity
                .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().and_then(|der| super::tls::ClientCertificate::of(der)))
        .map(Arc::new);
    let state = serving.listener.load();
    let conn = Arc::new(Connection {
        admitted,
        gateway: serving.gateway.clone(),
        listener: state.settings.clone(),
        peer,
        peer_ip: super::forward::client_ip_header(peer.ip()),
        active: Arc::new(ActiveRequests::default()),
        draining: serving.draining.clone(),
        client_certificate,
        alt_svc: None,
    });
    // The head is bounded before it is decoded: QPACK's field section size
    // is the listener's header limit, told to the client in SETTINGS.
    let max_head = u64::try_from(state.settings.max_header_bytes).unwrap_or(u64::MAX);
    let header_read = state.settings.header_read_timeout;
    let mut builder = h3::server::builder();
    builder.max_field_section_size(max_head);
    let mut h3 = match builder.build::<_, Bytes>(h3_quinn::Connection::new(connection)).await {
        Ok(h3) => h3,
        Err(error) => {
            tracing::debug!(%peer, %error, "HTTP/3 connection setup failed");
            return;
        }
    };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let conn = conn.clone();
                tokio::spawn(async move {
                    // A stream that never finishes its head is dropped (reset) after
                    // the listener's header-read timeout.
                    match tokio::time::timeout(header_read, resolver.resolve_request()).await {
                        Ok(Ok((request, stream))) => serve_request(conn, request, stream).await,
                        Ok(Err(error)) => tracing::debug!(%error, "HTTP/3 request head unreadable"),
                        Err(_) => tracing::debug!("HTTP/3 request head not sent within the header-read timeout"),
                    }
                });
            }
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%peer, %error, "HTTP/3 connection ended");
                return;
            }
        }
    }
}

async fn serve_request(
    conn: Arc<Connection>,
    request: Request<()>,
    stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) {
    let (mut send, recv) = stream.split();
    let body = Inbound::Boxed(http_body_util::combinators::UnsyncBoxBody::new(QuicBody {
        stream: recv,
        data_done: false,
        ended: false,
    }));
    // Boxed for the reason `server::session` gives: this task is moved and
    // its stage overwritten whole.
    let Ok(response) = Box::pin(handle(conn, request.map(|()| body))).await;
    let (parts, mut body) = response.into_parts();
    if let Err(error) = send.send_response(http::Response::from_parts(parts, ())).await {
        tracing::debug!(%error, "HTTP/3 response head not sent");
        return;
    }
    if let Err(error) = send_body(&mut send, &mut body).await {
        tracing::debug!(%error, "HTTP/3 response body cut short");
    }
}

async fn send_body(
    send: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    body: &mut ResponseBody,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}

/// The receiving half of an HTTP/3 request stream as a body.
struct QuicBody {
    stream: RequestStream<h3_quinn::RecvStream, Bytes>,
    data_done: bool,
    /// The client finished the request stream, and all of it was read.
    ended: bool,
}

impl Drop for QuicBody {
    /// A request whose rest is not needed (a route that answers without its
    /// body) stops the client sending with H3_NO_ERROR, as RFC 9114 section
    /// 4.1 asks, rather than quinn's bare code 0, which clients read as an error.
    fn drop(&mut self) {
        if !self.ended {
            self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

impl Body for QuicBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.data_done {
            match self.stream.poll_recv_data(cx) {
                Poll::Ready(Ok(Some(mut data))) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Poll::Ready(Ok(None)) => self.data_done = true,
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.stream.poll_recv_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                self.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Ok(None)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }
}
