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
