//! Real servers and faults for the tests, in Rust std, on 127.0.0.1 only.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::raw::c_int;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Http is an HTTP/1.1 responder with keep-alive, a thread per connection:
///   GET  /hello        200 "hello", X-Test: yes
///   POST /echo         200, the body back, X-Echo-Back: the X-Echo header
///   GET  /sleep/<ms>   200 "slept" after <ms>
///   GET  /status/<n>   <n>, empty body (any method)
///   GET  /stall/<ms>   headers and 2 of 10 body bytes, then <ms> of silence
///   anything else      404 "not found"
/// Its threads live as long as the test process.
pub struct Http {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
}

impl Http {
    pub fn start() -> Http {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let c = match c {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let n = n.clone();
                thread::spawn(move || serve(c, &n));
            }
        });
        Http { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

fn serve(c: TcpStream, n: &AtomicUsize) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut len = 0usize;
        let mut echo = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-echo") {
                    echo = v.trim().to_owned();
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        n.fetch_add(1, Ordering::SeqCst);
        let (status, extra, out): (u16, String, Vec<u8>) = if method == "GET" && path == "/hello" {
            (200, "X-Test: yes\r\n".into(), b"hello".to_vec())
        } else if method == "POST" && path == "/echo" {
            (200, format!("X-Echo-Back: {}\r\n", echo), body)
        } else if let Some(ms) = path.strip_prefix("/sleep/") {
            thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            (200, String::new(), b"slept".to_vec())
        } else if let Some(ms) = path.strip_prefix("/stall/") {
            // Headers and 2 of 10 body bytes, then silence for <ms>.
            let _ = w.write_all(b"HTTP/1.1 200 X\r\nContent-Length: 10\r\n\r\nab");
            thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            return;
        } else if let Some(code) = path.strip_prefix("/status/") {
            (code.parse().unwrap_or(500), String::new(), Vec::new())
        } else {
            (404, String::new(), b"not found".to_vec())
        };
        // One write: head and body in two would meet Nagle and delayed ACKs.
        let mut msg = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n{}\r\n",
            status,
            out.len(),
            extra
        )
        .into_bytes();
        msg.extend_from_slice(&out);
        if w.write_all(&msg).is_err() {
            return;
        }
    }
}

/// Silent accepts every connection and never writes a byte (incident 01's
/// load balancer), holding the connections open.
pub struct Silent {
    pub addr: SocketAddr,
    pub accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl Silent {
    pub fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = accepted.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                match c {
                    Ok(c) => held.lock().unwrap().push(c),
                    Err(_) => return,
                }
            }
        });
        Silent { addr, accepted }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// refused is an address nothing listens on (bound, then released).
pub fn refused() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

extern "C" {
    fn listen(fd: c_int, backlog: c_int) -> c_int;
}

/// FullBacklog is a listener that never accepts, with its accept queue
/// full: the kernel drops further SYNs, so a connect hangs until the
/// client's own limit (a connect timeout, where a blackhole would do the same).
pub struct FullBacklog {
    pub addr: SocketAddr,
    _l: TcpListener,
    _held: Vec<TcpStream>,
}

impl FullBacklog {
    pub fn start() -> FullBacklog {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen(2) on our own socket, shrinking its backlog to 0.
        assert_eq!(unsafe { listen(l.as_raw_fd(), 0) }, 0);
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..16 {
            // Generous: a loopback handshake the kernel completes takes
            // microseconds, so only a dropped SYN reaches this bound.
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => held.push(s),
                Err(_) => {
                    return FullBacklog {
                        addr,
                        _l: l,
                        _held: held,
                    }
                }
            }
        }
        panic!("the accept queue of a backlog-0 listener never filled");
    }
}

/// Echo sends every byte back on each connection and counts the
/// connections still open (a connection counts until the client closes it).
pub struct Echo {
    pub addr: SocketAddr,
    pub open: Arc<AtomicUsize>,
}

impl Echo {
    pub fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let n = open.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let mut c = match c {
                    Ok(c) => c,
                    Err(_) => return,
                };
                n.fetch_add(1, Ordering::SeqCst);
                let n = n.clone();
                thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut c);
                    n.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Echo { addr, open }
    }
}

/// echo is the address of a fresh [`Echo`].
pub fn echo() -> SocketAddr {
    Echo::start().addr
}

/// StreamHttp serves streamed bodies, a connection per request (each
/// answer ends with the connection):
///   GET  /sse         text/event-stream, no length: "data: event <i>\n\n"
///                     for i in 0..5, 50 ms apart, then the end
///   GET  /stall       Content-Length 100, "partial", then silence until
///                     the client goes
///   GET  /poll/<ms>   nothing for <ms>, then 200 "news" (a long poll)
///   POST /echo        the request body (Content-Length or chunked) back
///   GET  /trickle     40 lines of 200 bytes ("NNN:xxx...\n"), 50 ms apart
///   GET  /forever     such a line every 50 ms until the client goes
pub struct StreamHttp {
    pub addr: SocketAddr,
}

impl StreamHttp {
    pub fn start() -> StreamHttp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming() {
                match c {
                    Ok(c) => {
                        thread::spawn(move || serve_stream(c));
                    }
                    Err(_) => return,
                }
            }
        });
        StreamHttp { addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

fn serve_stream(c: TcpStream) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.trim().eq_ignore_ascii_case("chunked");
            }
        }
    }
    if method == "GET" && path == "/sse" {
        let _ = w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        );
        for i in 0..5 {
            thread::sleep(Duration::from_millis(50));
            if w.write_all(format!("data: event {}\n\n", i).as_bytes())
                .is_err()
            {
                return;
            }
        }
    } else if method == "GET" && (path == "/trickle" || path == "/forever") {
        // /trickle: 40 lines of 200 bytes, 50 ms apart; /forever: a line
        // every 50 ms until the client goes.
        let _ = w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        );
        let mut i = 0usize;
        while path == "/forever" || i < 40 {
            let line = format!("{:03}:{}\n", i % 1000, "x".repeat(195));
            if w.write_all(line.as_bytes()).is_err() {
                return;
            }
            i += 1;
            thread::sleep(Duration::from_millis(50));
        }
    } else if method == "GET" && path == "/cut" {
        // The server goes away mid-body: 7 of 100 bytes, then the socket
        // is closed.
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        let _ = w.shutdown(std::net::Shutdown::Both);
    } else if method == "GET" && path == "/stall" {
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        let mut sink = [0u8; 64];
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
    } else if let Some(ms) = path.strip_prefix("/poll/") {
        thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
        let _ =
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnews");
    } else if method == "POST" && path == "/echo" {
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                if n == 0 {
                    // Trailers, then the empty line.
                    loop {
                        let mut t = String::new();
                        if r.read_line(&mut t).unwrap_or(0) == 0 || t.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + n, 0);
                if r.read_exact(&mut body[start..]).is_err() {
                    return;
                }
                let mut crlf = String::new();
                let _ = r.read_line(&mut crlf);
            }
        } else {
            body.resize(len, 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        }
        let mut msg = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(&body);
        let _ = w.write_all(&msg);
    } else {
        let _ = w
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

/// sha1 is SHA-1 (FIPS 180-4), for the websocket handshake's accept key.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// base64 is standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// ws_accept is the Sec-WebSocket-Accept answer to a key (RFC 6455 §4.2.2).
pub fn ws_accept(key: &str) -> String {
    let mut b = key.as_bytes().to_vec();
    b.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&b))
}

/// ws_read_frame reads one frame: (fin, opcode, unmasked payload).
pub fn ws_read_frame(r: &mut impl Read) -> std::io::Result<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let mut n = u64::from(h[1] & 0x7F);
    if n == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        n = u64::from(u16::from_be_bytes(b));
    } else if n == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        n = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        r.read_exact(&mut mask)?;
    }
    let mut data = vec![0u8; n as usize];
    r.read_exact(&mut data)?;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok((h[0] & 0x80 != 0, h[0] & 0x0F, data))
}

/// ws_frame is one unmasked frame (a server's), FIN set.
pub fn ws_frame(op: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | op];
    let n = data.len();
    if n < 126 {
        f.push(n as u8);
    } else if n < 65536 {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(data);
    f
}

/// ws_client_frame is one masked frame (a client's), FIN set.
pub fn ws_client_frame(op: u8, data: &[u8]) -> Vec<u8> {
    let mut f = ws_frame(op, data);
    let at = f.len() - data.len();
    f[1] |= 0x80;
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let masked: Vec<u8> = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    f.truncate(at);
    f.extend_from_slice(&mask);
    f.extend_from_slice(&masked);
    f
}

/// Ws is a small RFC 6455 server on 127.0.0.1, a thread per connection:
///   /echo   every data message back (text as text, binary as binary)
///   /seq    on its Nth upgraded connection "N:0".."N:9", then as /echo
///   /flood  500 numbered binary messages of 1000 bytes, then as /echo
/// Pings are answered, a close is returned. The first `stall` accepted
/// connections are held open and never answered (a handshake stall).
/// `stop` closes the listener and every connection (a server going
/// away); `restart` listens on the same address again.
pub struct Ws {
    pub addr: SocketAddr,
    inner: Arc<WsInner>,
}

struct WsInner {
    stop: std::sync::atomic::AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    upgraded: AtomicUsize,
    stall: AtomicUsize,
    accepter: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Ws {
    pub fn start() -> Ws {
        Ws::with_stall(0)
    }

    /// with_stall starts a server whose first `n` connections stall.
    pub fn with_stall(n: usize) -> Ws {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ws = Ws {
            addr: l.local_addr().unwrap(),
            inner: Arc::new(WsInner {
                stop: Default::default(),
                conns: Mutex::new(Vec::new()),
                accepted: AtomicUsize::new(0),
                upgraded: AtomicUsize::new(0),
                stall: AtomicUsize::new(n),
                accepter: Mutex::new(None),
            }),
        };
        ws.serve(l);
        ws
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// accepted counts TCP connections accepted, upgraded the handshakes answered.
    pub fn accepted(&self) -> usize {
        self.inner.accepted.load(Ordering::SeqCst)
    }
    pub fn upgraded(&self) -> usize {
        self.inner.upgraded.load(Ordering::SeqCst)
    }

    fn serve(&self, l: TcpListener) {
        l.set_nonblocking(true).unwrap();
        self.inner.stop.store(false, Ordering::SeqCst);
        let inner = self.inner.clone();
        let h = thread::spawn(move || loop {
            if inner.stop.load(Ordering::SeqCst) {
                return; // drops the listener
            }
            match l.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    let _ = c.set_nodelay(true);
                    inner.conns.lock().unwrap().push(c.try_clone().unwrap());
                    let i = inner.accepted.fetch_add(1, Ordering::SeqCst);
                    if i < inner.stall.load(Ordering::SeqCst) {
                        continue; // held open by conns, never answered
                    }
                    let inner = inner.clone();
                    thread::spawn(move || ws_serve(c, &inner));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        });
        *self.inner.accepter.lock().unwrap() = Some(h);
    }

    /// stop closes the listener and every connection.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.inner.accepter.lock().unwrap().take() {
            h.join().unwrap();
        }
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// restart listens on the same address again.
    pub fn restart(&self) {
        let l = TcpListener::bind(self.addr).unwrap();
        self.serve(l);
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ws_serve(c: TcpStream, inner: &WsInner) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut key = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("sec-websocket-key") {
                key = v.trim().to_owned();
            }
        }
    }
    let n = inner.upgraded.fetch_add(1, Ordering::SeqCst) + 1;
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws_accept(&key)
    );
    if w.write_all(head.as_bytes()).is_err() {
        return;
    }
    if path == "/flood" {
        // 500 numbered binary messages of 1000 bytes, then as /echo.
        for i in 0..500 {
            let mut m = format!("{:04}", i).into_bytes();
            m.resize(1000, b'x');
            if w.write_all(&ws_frame(2, &m)).is_err() {
                return;
            }
        }
    }
    if path == "/seq" {
        for i in 0..10 {
            if w.write_all(&ws_frame(1, format!("{}:{}", n, i).as_bytes()))
                .is_err()
            {
                return;
            }
        }
    }
    // Echo (with fragments joined), pings answered, close returned.
    let mut msg: Vec<u8> = Vec::new();
    let mut msg_op = 0u8;
    loop {
        let (fin, op, data) = match ws_read_frame(&mut r) {
            Ok(f) => f,
            Err(_) => return,
        };
        match op {
            0..=2 => {
                if op != 0 {
                    msg_op = op;
                    msg.clear();
                }
                msg.extend_from_slice(&data);
                if fin && w.write_all(&ws_frame(msg_op, &msg)).is_err() {
                    return;
                }
            }
            8 => {
                let _ = w.write_all(&ws_frame(8, &data));
                return;
            }
            9 if w.write_all(&ws_frame(10, &data)).is_err() => return,
            _ => {}
        }
    }
}
