//! The client's TCP socket under its TLS connection. rustls hands its
//! records to the socket through `write_vectored`, one piece or many; one
//! piece goes by `send` here instead, which costs the kernel some 180 ns less
//! a call than `writev` does (bench/RESULTS.md): one a response on HTTPS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct TlsSocket(pub TcpStream);

impl AsyncRead for TlsSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let socket = Pin::new(&mut self.get_mut().0);
        match bufs {
            [one] => socket.poll_write(cx, one),
            _ => socket.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn one_piece_and_many_reach_the_peer_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connecting);
        let mut socket = TlsSocket(accepted.unwrap().0);
        let mut peer = connected.unwrap();
        let one = [io::IoSlice::new(b"one|")];
        let many = [io::IoSlice::new(b"two|"), io::IoSlice::new(b"three")];
        // Thirteen bytes into an empty socket buffer: written whole.
        assert_eq!(socket.write_vectored(&one).await.unwrap(), 4);
        assert_eq!(socket.write_vectored(&many).await.unwrap(), 9);
        socket.shutdown().await.unwrap();
        let mut received = String::new();
        peer.read_to_string(&mut received).await.unwrap();
        assert_eq!(received, "one|two|three");
    }
}
