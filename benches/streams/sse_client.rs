//! A light HTTP/2 SSE client for the fan-out benchmark: one task per connection reads the socket
//! in large chunks, walks the frames, and parses each stream's SSE events. The clients share the
//! machine's two cores with the server, so a general-purpose client (a lock, a wake-up and a
//! buffer per frame and stream) would be a large part of what is measured.
//!
//! It speaks just what the benchmark needs: prior-knowledge HTTP/2 without TLS, GET requests
//! with HPACK literals, windows large enough that no WINDOW_UPDATE is ever needed, SETTINGS and
//! PING acknowledged. A response must start with `:status: 200`, which HPACK encodes as the
//! one byte 0x88 (static table entry 8); nothing else of the response headers is read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest window HTTP/2 allows: the server never waits for this client.
const MAX_WINDOW: u32 = (1 << 31) - 1;
const DEFAULT_WINDOW: u32 = 65_535;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// What the client measures: the `ts` of every `canonical_event` that is one of the measured
/// messages (`message.received` of a Proposal), by seq.
pub type Measured = fn(&str) -> Option<DateTime<Utc>>;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&length.to_be_bytes()[1..]);
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK string literal (no Huffman) after a name from the static table.
fn literal(block: &mut Vec<u8>, name_index: u8, value: &str) {
    // "Literal header field without indexing", indexed name: 0000 + 4-bit index.
    block.push(name_index);
    integer(block, 7, 0, value.len());
    block.extend_from_slice(value.as_bytes());
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's high bits from `flags`.
fn integer(block: &mut Vec<u8>, prefix: u8, flags: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        block.push(flags | value as u8);
        return;
    }
    block.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        block.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    block.push(value as u8);
}

fn get_request(stream: u32, authority: &str, path: &str) -> Vec<u8> {
    // :method GET (static 2), :scheme http (static 6), :path (name 4), :authority (name 1).
    let mut block = vec![0x82, 0x86];
    literal(&mut block, 4, path);
    literal(&mut block, 1, authority);
    frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
}

/// One SSE stream's unparsed bytes and its deliveries.
struct Stream {
    /// Which of the connection's runs (distinct paths) it follows.
    run: usize,
    pending: Vec<u8>,
    latencies: Vec<Delivery>,
}

/// A measured event's seq and its latency (delivered − ts) in ms.
pub type Delivery = (i64, f64);

/// The connection's bytes and streams.
struct Connection {
    socket: TcpStream,
    buffer: Vec<u8>,
    /// How much of `buffer` has been parsed.
    parsed: usize,
    streams: Vec<Stream>,
    /// Response headers seen, per stream (index = (id - 1) / 2).
    opened: Vec<bool>,
    /// The `ts` of each measured event, by run and seq, parsed once for all the connection's
    /// streams of that run.
    measured_ts: HashMap<(usize, i64), Option<DateTime<Utc>>>,
    measured: Measured,
}

impl Connection {
    async fn read(&mut self) {
        if self.parsed > 0 {
            self.buffer.drain(..self.parsed);
            self.parsed = 0;
        }
        if self.buffer.capacity() - self.buffer.len() < 64 * 1024 {
            self.buffer.reserve(256 * 1024);
        }
        let read = self.socket.read_buf(&mut self.buffer).await.expect("read");
        assert!(read > 0, "the server closed the connection");
    }

    /// Handles every complete frame in the buffer; `delivered` is when its bytes were read.
    async fn frames(&mut self, delivered: DateTime<Utc>) {
        while self.buffer.len() - self.parsed >= 9 {
            let header = &self.buffer[self.parsed..self.parsed + 9];
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & !(1 << 31);
            if self.buffer.len() - self.parsed < 9 + length {
                return;
            }
            let start = self.parsed + 9;
            self.parsed = start + length;
            let payload = start..start + length;
            match kind {
                DATA => self.data(stream, flags, payload, delivered),
                HEADERS => {
                    let mut at = payload.start;
                    if flags & PADDED != 0 {
                        at += 1;
                    }
                    if flags & PRIORITY != 0 {
                        at += 5;
                    }
                    assert_eq!(self.buffer[at], 0x88, "subscribe refused (status not 200)");
                    self.opened[(stream as usize - 1) / 2] = true;
                }
                SETTINGS if flags & ACK == 0 => {
                    let ack = frame(SETTINGS, ACK, 0, &[]);
                    self.socket.write_all(&ack).await.expect("write");
                }
                PING if flags & ACK == 0 => {
                    let pong = frame(PING, ACK, 0, &self.buffer[payload]);
                    self.socket.write_all(&pong).await.expect("write");
                }
                RST_STREAM => panic!("the server reset stream {stream}"),
                GOAWAY => panic!("the server sent GOAWAY"),
                _ => {}
            }
        }
    }

    fn data(
        &mut self,
        stream: u32,
        flags: u8,
        payload: std::ops::Range<usize>,
        delivered: DateTime<Utc>,
    ) {
        let mut payload = payload;
        if flags & PADDED != 0 && !payload.is_empty() {
            let padding = self.buffer[payload.start] as usize;
            payload = payload.start + 1..payload.end - padding;
        }
        let index = (stream as usize - 1) / 2;
        let state = &mut self.streams[index];
        let run = state.run;
        let bytes = &self.buffer[payload];
        // Usually a DATA frame holds whole events: parse it in place.
        let owned;
        let text: &[u8] = if state.pending.is_empty() {
            bytes
        } else {
            state.pending.extend_from_slice(bytes);
            owned = std::mem::take(&mut state.pending);
            &owned
        };
        let mut at = 0;
        while let Some(end) = memchr::memmem::find(&text[at..], b"\n\n") {
            let event = &text[at..at + end];
            at += end + 2;
            let Some(seq) = event_id(event) else { continue };
            let ts = *self.measured_ts.entry((run, seq)).or_insert_with(|| {
                std::str::from_utf8(event)
                    .ok()
                    .and_then(|event| (self.measured)(event))
            });
            if let Some(ts) = ts {
                let latency = (delivered - ts).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                self.streams[index].latencies.push((seq, latency));
            }
        }
        self.streams[index].pending.extend_from_slice(&text[at..]);
    }
}

/// The seq of a `canonical_event` frame (its `id:` line).
fn event_id(event: &[u8]) -> Option<i64> {
    let rest = event.strip_prefix(b"event: canonical_event\nid: ")?;
    let end = memchr::memchr(b'\n', rest)?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// SSE subscriptions on one connection, one per path, opened one after the other (as clients
/// arriving over time would), ready to be read with [`read`].
pub struct Subscribers(Connection);

pub async fn subscribe(address: &str, paths: &[String], measured: Measured) -> Subscribers {
    let mut runs: HashMap<&str, usize> = HashMap::new();
    let streams: Vec<Stream> = paths
        .iter()
        .map(|path| {
            let next = runs.len();
            Stream {
                run: *runs.entry(path.as_str()).or_insert(next),
                pending: Vec::new(),
                latencies: Vec::new(),
            }
        })
        .collect();
    let mut socket = TcpStream::connect(address).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let mut settings = Vec::new();
    for (id, value) in [
        (SETTINGS_ENABLE_PUSH, 0),
        (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
    ] {
        settings.extend_from_slice(&id.to_be_bytes());
        settings.extend_from_slice(&value.to_be_bytes());
    }
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &settings));
    hello.extend(frame(
        0x8,
        0,
        0,
        &(MAX_WINDOW - DEFAULT_WINDOW).to_be_bytes(),
    ));
    socket.write_all(&hello).await.expect("handshake");
    let mut connection = Connection {
        socket,
        buffer: Vec::new(),
        parsed: 0,
        opened: vec![false; streams.len()],
        streams,
        measured_ts: HashMap::new(),
        measured,
    };
    for (index, path) in paths.iter().enumerate() {
        let request = get_request(index as u32 * 2 + 1, address, path);
        connection
            .socket
            .write_all(&request)
            .await
            .expect("subscribe");
        while !connection.opened[index] {
            connection.read().await;
            connection.frames(Utc::now()).await;
        }
    }
    Subscribers(connection)
}

/// Reads until every stream has `count` deliveries; returns them all.
pub async fn read(subscribers: Subscribers, count: usize) -> Vec<Delivery> {
    let mut connection = subscribers.0;
    while connection
        .streams
        .iter()
        .any(|stream| stream.latencies.len() < count)
    {
        connection.read().await;
        connection.frames(Utc::now()).await;
    }
    connection
        .streams
        .into_iter()
        .flat_map(|stream| stream.latencies)
        .collect()
}
