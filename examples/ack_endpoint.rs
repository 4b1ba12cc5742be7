//! A measuring instrument, not part of shiftload and never used by its
//! tests of correctness: a MongoDB wire endpoint that acknowledges the
//! `insert` and `update` commands sent to one collection without storing
//! anything, and forwards every other message (handshake, `hello`, the
//! checkpoint's commands, reads) to a real server and its replies back.
//!
//! With it, an end-to-end run measures what the client can do when the
//! sink keeps up: the source, the encoder and the send path, with the
//! server's own cost taken out (`scripts/bench-peers.sh`,
//! `scripts/bench-ceiling.sh`). What it acknowledges is lost.
//!
//! ```text
//! cargo run --release --example ack_endpoint -- LISTEN UPSTREAM COLLECTION [DOCS_PER_SECOND]
//! cargo run --release --example ack_endpoint -- 127.0.0.1:27019 127.0.0.1:27018 c
//! ```
//!
//! With `DOCS_PER_SECOND`, it plays a slow server that costs this machine
//! nothing: each acknowledgement waits until the documents before it, over
//! all connections, would have been written at that rate. A client's CPU
//! into it, against the unpaced endpoint, shows what waiting costs the
//! client itself, apart from a real slow server's competition for the cores
//! (`scripts/bench-slow-sink.sh`).
//!
//! On SIGINT or SIGTERM it prints how many documents it acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::RawDocument;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const OP_MSG: i32 = 2013;
const HEADER: usize = 16;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, collection, pace) = match &args[..] {
        [l, u, c] => (l, u, c, None),
        [l, u, c, p] => match p.parse::<f64>() {
            Ok(p) if p > 0.0 => (l, u, c, Some(p)),
            _ => usage(),
        },
        _ => usage(),
    };
    let pace = pace.map(|docs_per_second| {
        Arc::new(Pace {
            docs_per_second,
            free_at: std::sync::Mutex::new(Instant::now()),
        })
    });
    let listener = TcpListener::bind(listen).await?;
    eprintln!("ack_endpoint: {listen} acknowledges writes to collection {collection:?}, forwards the rest to {upstream}");
    let acked = Arc::new(AtomicU64::new(0));
    let collection: Arc<str> = collection.as_str().into();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, _) = accepted?;
                let (upstream, collection, acked) = (upstream.clone(), collection.clone(), acked.clone());
                let pace = pace.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(client, &upstream, &collection, &acked, pace.as_deref()).await {
                        if e.kind() != std::io::ErrorKind::UnexpectedEof {
                            eprintln!("ack_endpoint: connection ended: {e}");
                        }
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    eprintln!(
        "ack_endpoint: acknowledged {} documents",
        acked.load(Ordering::Relaxed)
    );
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: ack_endpoint LISTEN_ADDR UPSTREAM_ADDR COLLECTION [DOCS_PER_SECOND]");
    std::process::exit(2);
}

/// A server's write rate, shared by all connections.
struct Pace {
    docs_per_second: f64,
    /// When the documents acknowledged so far would all have been written.
    free_at: std::sync::Mutex<Instant>,
}

impl Pace {
    /// When `n` more documents would be written, reserving that time.
    fn reserve(&self, n: u64) -> Instant {
        let mut free_at = self.free_at.lock().unwrap();
        let start = (*free_at).max(Instant::now());
        *free_at = start + Duration::from_secs_f64(n as f64 / self.docs_per_second);
        *free_at
    }
}

/// One client connection: its writes to `collection` answered here, the
/// rest relayed to its own connection to `upstream`.
async fn relay(
    client: TcpStream,
    upstream: &str,
    collection: &str,
    acked: &AtomicU64,
    pace: Option<&Pace>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (mut from_client, to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let to_client = Arc::new(Mutex::new(to_client));
    let back = to_client.clone();
    let replies = tokio::spawn(async move {
        let mut buf = Vec::new();
        while read_message(&mut from_server, &mut buf).await? {
            back.lock().await.write_all(&buf).await?;
        }
        std::io::Result::Ok(())
    });
    let mut buf = Vec::with_capacity(1 << 20);
    while read_message(&mut from_client, &mut buf).await? {
        match acknowledge(&buf, collection) {
            Some((reply, n)) => {
                acked.fetch_add(n, Ordering::Relaxed);
                if let Some(pace) = pace {
                    tokio::time::sleep_until(pace.reserve(n).into()).await;
                }
                to_client.lock().await.write_all(&reply).await?;
            }
            None => to_server.write_all(&buf).await?,
        }
    }
    replies.abort();
    Ok(())
}

/// Read one whole message into `buf`; false at a clean end of stream.
async fn read_message(
    from: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buf.resize(HEADER, 0);
    match from.read_exact(&mut buf[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = i32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
    if len < HEADER {
        return Err(std::io::Error::other(format!("a message of {len} bytes")));
    }
    buf.resize(len, 0);
    from.read_exact(&mut buf[4..]).await?;
    Ok(true)
}

fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The reply to `msg` when it is an `insert` or `update` of `collection`,
/// and how many documents (statements) it carried.
fn acknowledge(msg: &[u8], collection: &str) -> Option<(Vec<u8>, u64)> {
    if le_i32(msg, 12) != OP_MSG {
        return None;
    }
    let flags = le_i32(msg, HEADER) as u32;
    let end = msg.len() - if flags & 1 != 0 { 4 } else { 0 };
    let mut at = HEADER + 4;
    let mut body = None;
    let mut sequence = 0u64;
    while at < end {
        let kind = msg[at];
        at += 1;
        let size = le_i32(msg, at) as usize;
        match kind {
            0 => body = RawDocument::from_bytes(&msg[at..at + size]).ok(),
            1 => {
                // size, identifier, then documents to the section's end.
                let mut d = at + 4 + msg[at + 4..].iter().position(|&c| c == 0)? + 1;
                while d < at + size {
                    sequence += 1;
                    d += le_i32(msg, d) as usize;
                }
            }
            _ => return None,
        }
        at += size;
    }
    let body = body?;
    let (command, target) = body.iter().next()?.ok()?;
    let command = command.as_str();
    let array = match command {
        "insert" => "documents",
        "update" => "updates",
        _ => return None,
    };
    if target.as_str()? != collection {
        return None;
    }
    let n = sequence
        + body
            .get_array(array)
            .ok()
            .map_or(0, |a| a.into_iter().count() as u64);
    let n32 = n as i32;
    let reply = match command {
        "insert" => bson::rawdoc! { "n": n32, "ok": 1.0 },
        _ => bson::rawdoc! { "n": n32, "nModified": n32, "ok": 1.0 },
    };
    let request_id = le_i32(msg, 4);
    let mut out = Vec::with_capacity(HEADER + 5 + reply.as_bytes().len());
    let len = (HEADER + 5 + reply.as_bytes().len()) as i32;
    for v in [len, request_id.wrapping_add(1 << 30), request_id, OP_MSG] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(reply.as_bytes());
    Some((out, n))
}
