//! The listener's limits against real sockets: idle and slow connections
//! are closed after the header timeout, slow bodies get a 408 and oversized
//! declared bodies a 413 at once, connections beyond the per-client cap are
//! closed unanswered, and a stop ends the server.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api::listen::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HEADER_READ: Duration = Duration::from_millis(500);

async fn start() -> (
    SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let app = common::app(dir.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let limits = Limits {
        header_read: HEADER_READ,
        body_read: Duration::from_millis(500),
        max_body: 1024,
        max_connections: 16,
        max_per_client: 3,
    };
    tokio::spawn(serve(listener, api::router(app, None), limits, stopped));
    (addr, stop, dir)
}

/// Reads until the server closes the connection (or 5 s pass); what came.
async fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got));
    let _ = read.await.expect("the server kept the connection open");
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() {
    let (addr, _stop, _dir) = start().await;
    // Silent from the start.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Half a request, then nothing (slowloris).
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A kept-alive connection, idle after its answer.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for stream in [&mut idle, &mut slow, &mut kept] {
        let (_, after) = until_closed(stream).await;
        assert!(after < HEADER_READ * 4, "closed only after {after:?}");
    }
}

#[tokio::test]
async fn bodies_are_bounded_in_size_and_time() {
    let (addr, _stop, _dir) = start().await;
    // A declared length over the limit: refused before any of it arrives.
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(
        b"POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 30000000\r\n\r\n{}",
    )
    .await
    .unwrap();
    let (answer, _) = until_closed(&mut big).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("HTTPRequestEntityTooLarge"), "{answer}");
    // A short body that never finishes: 408 after the body timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{}",
    )
    .await
    .unwrap();
    let (answer, _) = until_closed(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("NeutronError"), "{answer}");
}

#[tokio::test]
async fn a_client_over_its_cap_is_closed_unanswered_and_a_stop_ends_the_server() {
    let (addr, stop, _dir) = start().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (answer, after) = until_closed(&mut fourth).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(after < HEADER_READ, "closed only after {after:?}");
    // Once the held ones go, the client may connect again.
    drop(held);
    let mut again = None;
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = until_closed(&mut s).await;
        if answer.starts_with("HTTP/1.1 200") {
            again = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the client was never admitted again");
    stop.send_replace(true);
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    refused.await.expect("still accepting after the stop");
}
