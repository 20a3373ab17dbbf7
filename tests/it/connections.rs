//! What a client may hold of the server (`api::server::Limits`), over real sockets: slow headers,
//! the connection cap, idle connections, HTTP/2 streams and keepalive, and live subscribers per
//! run. Each on both stacks.

use std::time::{Duration, Instant};

use macp_control_plane::api::server::Limits;
use macp_control_plane::stack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, Backend, TestApp};

async fn start(stack: Stack, limits: Limits) -> Option<TestApp> {
    support::start_with(
        Backend::Sqlite,
        support::Options {
            stack,
            limits,
            ..Default::default()
        },
    )
    .await
}

/// Reads until the peer closes the connection (EOF or reset), returning what it sent.
async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// One HTTP/1.1 keep-alive request on an open connection; the status line's code.
async fn request(socket: &mut TcpStream, address: &str) -> Option<u16> {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    // The health answer is small: headers and body arrive together.
    while !received.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&received);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A client that sends its request headers one byte a second is disconnected once the header
/// timeout passes, long before it would have finished.
async fn slow_headers_are_cut_off(stack: Stack) {
    let timeout = Duration::from_secs(2);
    let Some(app) = start(
        stack,
        Limits {
            header_read_timeout: timeout,
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.app.address.to_string();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
    // From before the connection exists: the server's clock starts when it accepts, which a
    // loaded client may see only later.
    let started = Instant::now();
    let mut socket = TcpStream::connect(&address).await.expect("connects");
    let mut cut_off = false;
    for byte in request.as_bytes() {
        if socket.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        // Closed by the server: a read returns at once (EOF or reset).
        if let Ok(read) =
            tokio::time::timeout(Duration::from_secs(1), socket.read(&mut [0u8; 64])).await
        {
            assert!(
                !matches!(read, Ok(n) if n > 0),
                "the server answered a request it never fully got"
            );
            cut_off = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(cut_off, "the slow client was never disconnected");
    // Disconnected after the timeout, and well before the ~{len} s the headers would take.
    assert!(
        elapsed >= timeout && elapsed < timeout * 4,
        "disconnected after {elapsed:?} (timeout {timeout:?}, {} header bytes)",
        request.len()
    );
    app.stop().await;
}

/// Over the cap, a new connection is closed at once, while the first ones keep working; once
/// one of them goes, a new one is served.
async fn connections_over_the_cap_are_refused(stack: Stack) {
    let cap = 4;
    let Some(app) = start(
        stack,
        Limits {
            max_connections: cap,
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.app.address.to_string();
    let mut open = Vec::new();
    for _ in 0..cap {
        let mut socket = TcpStream::connect(&address).await.expect("connects");
        assert_eq!(request(&mut socket, &address).await, Some(200));
        open.push(socket);
    }
    let mut extra = TcpStream::connect(&address).await.expect("TCP accepts");
    assert_eq!(
        request(&mut extra, &address).await,
        None,
        "connection {} is refused",
        cap + 1
    );
    for socket in &mut open {
        assert_eq!(request(socket, &address).await, Some(200), "still served");
    }
    drop(open.pop());
    // The server frees the slot when it sees the close: retried until it has.
    let mut served = None;
    for _ in 0..100 {
        let mut socket = TcpStream::connect(&address).await.expect("connects");
        served = request(&mut socket, &address).await;
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, Some(200), "a freed slot takes a new connection");
    app.stop().await;
}

/// An HTTP/1.1 connection with no request for the idle timeout is closed (the header timeout,
/// which also closes idle keep-alive connections, is far longer here).
async fn idle_connections_are_closed(stack: Stack) {
    let idle = Duration::from_millis(500);
    let Some(app) = start(
        stack,
        Limits {
            idle_timeout: idle,
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.app.address.to_string();
    let mut socket = TcpStream::connect(&address).await.expect("connects");
    // The server's last byte comes after this, so it may close no sooner than `idle` after it.
    let sent = Instant::now();
    assert_eq!(request(&mut socket, &address).await, Some(200));
    let rest = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut socket))
        .await
        .expect("closed by the server");
    assert!(rest.is_empty());
    assert!(
        sent.elapsed() >= idle,
        "closed before it was idle long enough"
    );
    app.stop().await;
}

/// One live subscriber over the per-run cap gets 429 TOO_MANY_SUBSCRIBERS; once one leaves, a
/// new one is let in.
async fn subscribers_per_run_are_capped(stack: Stack) {
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            stack,
            max_subscribers_per_run: 2,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let run_id = app.start_run(&crate::requests::seed_example()).await;
    let url = format!("{}/runs/{run_id}/stream", app.base);
    let first = app.http.get(&url).send().await.expect("first");
    let second = app.http.get(&url).send().await.expect("second");
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = app.http.get(&url).send().await.expect("third");
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.expect("error body");
    assert_eq!(body["errorCode"], "TOO_MANY_SUBSCRIBERS");
    drop(first);
    // The server learns of the closed stream when it next writes to it or reads EOF.
    let mut status = 429;
    for _ in 0..200 {
        let response = app.http.get(&url).send().await.expect("retry");
        status = response.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "a freed place takes a new subscriber");
    drop(second);
    app.stop().await;
}

/// A raw HTTP/2 connection: the client preface and empty SETTINGS sent, nothing answered.
async fn h2_connect(address: &str) -> TcpStream {
    let mut socket = TcpStream::connect(address).await.expect("connects");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame: length 0, type 0x4, no flags, stream 0.
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    socket.write_all(&hello).await.expect("preface");
    socket
}

/// The next HTTP/2 frame: (type, flags, payload); `None` once the connection is closed.
async fn h2_frame(socket: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.ok()?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    socket.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

/// `GET path` on stream 1 (HPACK literals without Huffman: `:method GET`, `:scheme http`,
/// `:path`, `:authority`).
async fn h2_get(socket: &mut TcpStream, authority: &str, path: &str) {
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4u8, path), (1, authority)] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut frame = (block.len() as u32).to_be_bytes()[1..].to_vec();
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    frame.extend_from_slice(&[0x1, 0x5, 0, 0, 0, 1]);
    frame.extend_from_slice(&block);
    socket.write_all(&frame).await.expect("request");
}

/// Reads frames until the server closes, answering its PINGs; (PINGs seen, GOAWAY seen).
async fn h2_until_closed(socket: &mut TcpStream) -> (usize, bool) {
    let (mut pings, mut goaway) = (0, false);
    while let Some((kind, flags, payload)) = h2_frame(socket).await {
        match kind {
            0x6 if flags & 0x1 == 0 => {
                pings += 1;
                let mut ack = vec![0, 0, 8, 0x6, 0x1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                if socket.write_all(&ack).await.is_err() {
                    break;
                }
            }
            0x7 => goaway = true,
            _ => {}
        }
    }
    (pings, goaway)
}

/// An HTTP/2 connection whose peer answers every keepalive PING, but sends no request for the
/// idle timeout, is told GOAWAY and closed: PINGs are not activity.
async fn idle_http2_connections_are_closed(stack: Stack) {
    let idle = Duration::from_millis(800);
    let Some(app) = start(
        stack,
        Limits {
            idle_timeout: idle,
            http2_keepalive: Duration::from_millis(100),
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.app.address.to_string();
    // From before the connection exists (the server may count idleness from its accept).
    let sent = Instant::now();
    let mut socket = h2_connect(&address).await;
    h2_get(&mut socket, &address, "/healthz").await;
    let (pings, goaway) =
        tokio::time::timeout(Duration::from_secs(20), h2_until_closed(&mut socket))
            .await
            .expect("closed by the server");
    assert!(goaway, "closed gracefully");
    assert!(pings >= 2, "the peer answered {pings} PINGs meanwhile");
    assert!(
        sent.elapsed() >= idle,
        "closed before it was idle long enough"
    );
    app.stop().await;
}

/// A client that opens a connection and never completes a request (here: half the HTTP/2
/// preface) is dropped once the header timeout passes.
async fn silent_clients_are_dropped(stack: Stack) {
    let Some(app) = start(
        stack,
        Limits {
            header_read_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let mut socket = TcpStream::connect(app.app.address).await.expect("connects");
    socket
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("half a preface");
    let rest = tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut socket))
        .await
        .expect("dropped by the server");
    assert!(rest.is_empty());
    app.stop().await;
}

/// The server announces its concurrent-stream limit in its first SETTINGS frame.
async fn http2_streams_per_connection_are_announced(stack: Stack) {
    let Some(app) = start(
        stack,
        Limits {
            http2_max_concurrent_streams: 7,
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let mut socket = h2_connect(&app.app.address.to_string()).await;
    let (kind, flags, payload) = h2_frame(&mut socket).await.expect("server SETTINGS");
    assert_eq!(
        (kind, flags & 0x1),
        (0x4, 0),
        "the server's own SETTINGS first"
    );
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|entry| {
            (
                u16::from_be_bytes([entry[0], entry[1]]),
                u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS is 0x3.
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");
    app.stop().await;
}

/// An HTTP/2 peer is pinged once the keepalive interval passes, and dropped when it does not
/// answer within as long.
async fn silent_http2_peers_are_dropped(stack: Stack) {
    let keepalive = Duration::from_millis(300);
    let Some(app) = start(
        stack,
        Limits {
            http2_keepalive: keepalive,
            ..Limits::default()
        },
    )
    .await
    else {
        return;
    };
    let started = Instant::now();
    let mut socket = h2_connect(&app.app.address.to_string()).await;
    // Frames until the server closes: its SETTINGS, the ACK of ours, then a PING (0x6) that
    // this peer leaves unanswered.
    let pinged = tokio::time::timeout(Duration::from_secs(20), async {
        let mut pinged = false;
        while let Some((kind, flags, _)) = h2_frame(&mut socket).await {
            pinged |= kind == 0x6 && flags & 0x1 == 0;
        }
        pinged
    })
    .await
    .expect("dropped by the server");
    assert!(pinged, "no PING came");
    assert!(
        started.elapsed() >= keepalive,
        "closed before a keepalive interval passed"
    );
    app.stop().await;
}

/// A client that sends a body over the limit gets its 413, and may finish sending: the server
/// stops reading the request, answers, and drains what still comes instead of resetting the
/// connection (which can destroy the answer before the client reads it).
async fn refused_uploads_are_drained_not_reset(stack: Stack) {
    let Some(app) = start(stack, Limits::default()).await else {
        return;
    };
    let address = app.app.address.to_string();
    let total = 2 * 1024 * 1024;
    let mut socket = TcpStream::connect(&address).await.expect("connects");
    let head = format!(
        "POST /runs HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 64 * 1024];
    socket.write_all(&chunk).await.expect("first chunk");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = socket.read(&mut buffer).await.expect("answer");
        assert!(read > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // The rest of the body: the server has stopped reading the request, yet takes it all.
    for _ in 1..total / chunk.len() {
        socket
            .write_all(&chunk)
            .await
            .expect("the server drains, it does not reset");
    }
    let rest = tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut socket))
        .await
        .expect("closed by the server");
    assert!(rest.len() < 4096, "only the rest of the answer came");
    app.stop().await;
}

crate::on_both_stacks!(
    slow_headers_are_cut_off,
    connections_over_the_cap_are_refused,
    idle_connections_are_closed,
    subscribers_per_run_are_capped,
    http2_streams_per_connection_are_announced,
    silent_http2_peers_are_dropped,
    idle_http2_connections_are_closed,
    silent_clients_are_dropped,
    refused_uploads_are_drained_not_reset,
);
