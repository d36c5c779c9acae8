//! incident01 replays incident 01 from Rust: a load balancer that accepts
//! every 12th connection and then stays silent, in front of a websocket
//! server, and N connects through it — by a plain std client (a TcpStream
//! with no connect or read timeout doing the ws:// upgrade by hand, what
//! the SDK in the incident did; the harness caps each so the run ends) and
//! by lifeline's Session with a handshake limit as an SDK would set it.
//!
//!     cargo run --offline --example incident01 [connects]
//!
//! Everything runs on 127.0.0.1. tests/incident01.rs runs the same replay
//! and asserts that lifeline never hangs past its bound and connects
//! every time.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lifeline::{Client, Session};

/// Lb forwards every connection to `backend`, except every `every`th,
/// which it accepts and then never answers nor forwards (incident 01's
/// load balancer; faultnet makes the same).
pub struct Lb {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Lb {
    pub fn start(backend: SocketAddr, every: usize) -> Lb {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (n, h) = (accepted.clone(), held.clone());
        thread::spawn(move || {
            for c in l.incoming() {
                let c = match c {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                if i % every == 0 {
                    h.lock().unwrap().push(c); // silent, held open
                    continue;
                }
                thread::spawn(move || forward(c, backend));
            }
        });
        Lb {
            addr,
            accepted,
            held,
        }
    }

    /// silent is the number of connections held silent so far.
    pub fn silent(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        for c in self.held.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn forward(c: TcpStream, backend: SocketAddr) {
    let b = match TcpStream::connect(backend) {
        Ok(b) => b,
        Err(_) => return,
    };
    let (mut c2, mut b2) = (c.try_clone().unwrap(), b.try_clone().unwrap());
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut b3, mut c3) = (b, c);
    let _ = std::io::copy(&mut b3, &mut c3);
    let _ = c3.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// plain_connect is the incident's client: connect with no timeout, write
/// the upgrade, read the answer with no timeout. The harness gives up
/// after `cap` (shutting the socket down under the blocked read): None is
/// a hang.
pub fn plain_connect(lb: SocketAddr, cap: Duration) -> Option<Duration> {
    let t = Instant::now();
    let s = TcpStream::connect(lb).ok()?;
    let guard = s.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _ = tx.send(plain_upgrade(s, lb));
    });
    let ok = matches!(rx.recv_timeout(cap), Ok(true));
    let took = t.elapsed();
    let _ = guard.shutdown(Shutdown::Both);
    let _ = h.join();
    if ok {
        Some(took)
    } else {
        None
    }
}

fn plain_upgrade(mut s: TcpStream, lb: SocketAddr) -> bool {
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        lb
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
    }
    head.starts_with(b"HTTP/1.1 101")
}

/// Replay is the outcome of one replay.
pub struct Replay {
    pub connects: usize,
    pub cap: Duration,
    pub handshake: Duration,
    /// The plain client's connect times; None: hung (given up at `cap`).
    pub plain: Vec<Option<Duration>>,
    pub plain_silent: usize,
    /// lifeline's connect times; Err: no connection within 30 s.
    pub lifeline: Vec<Result<Duration, lifeline::Error>>,
    pub lifeline_silent: usize,
    /// lifeline.masked_failures from the client's metrics JSON (failures a
    /// retry or race hid from the caller).
    pub masked: f64,
    /// Handshakes that failed (lifeline.websocket.handshake.duration,
    /// outcome other than ok): what the session's redials hid from the
    /// caller, each with its duration's sum.
    pub failed_handshakes: f64,
    pub failed_handshake_seconds: f64,
}

/// replay runs `connects` connects of each client, `batch` at a time,
/// through a fresh LB each (the same every-12th pattern for both).
pub fn replay(connects: usize, batch: usize, cap: Duration, handshake: Duration) -> Replay {
    let srv = common::Ws::start();

    let lb = Lb::start(srv.addr, 12);
    let mut plain = Vec::with_capacity(connects);
    while plain.len() < connects {
        let k = batch.min(connects - plain.len());
        let got: Vec<Option<Duration>> = thread::scope(|s| {
            let hs: Vec<_> = (0..k)
                .map(|_| s.spawn(|| plain_connect(lb.addr, cap)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        plain.extend(got);
    }
    let plain_silent = lb.silent();
    drop(lb);

    let lb = Lb::start(srv.addr, 12);
    let client = Client::new().unwrap();
    let url = format!("ws://{}/echo", lb.addr);
    let config = format!(r#"{{"handshake_timeout_ms": {}}}"#, handshake.as_millis());
    let mut lifeline = Vec::with_capacity(connects);
    while lifeline.len() < connects {
        let k = batch.min(connects - lifeline.len());
        let got: Vec<Result<Duration, lifeline::Error>> = thread::scope(|s| {
            let hs: Vec<_> = (0..k)
                .map(|_| {
                    s.spawn(|| {
                        let t = Instant::now();
                        let session = Session::new(&client, &url, &[], &config)?;
                        session.wait_connected(Some(Duration::from_secs(30)))?;
                        let took = t.elapsed();
                        session.close()?;
                        Ok(took)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        lifeline.extend(got);
    }
    let lifeline_silent = lb.silent();
    let doc = client.metrics_json().unwrap();
    let masked = points(&doc, "lifeline.masked_failures")
        .iter()
        .map(|p| p.value)
        .sum();
    let failed: Vec<Point> = points(&doc, "lifeline.websocket.handshake.duration")
        .into_iter()
        .filter(|p| !p.attributes.contains(r#""lifeline.outcome":"ok""#))
        .collect();
    Replay {
        connects,
        cap,
        handshake,
        plain,
        plain_silent,
        lifeline,
        lifeline_silent,
        masked,
        failed_handshakes: failed.iter().map(|p| p.count).sum(),
        failed_handshake_seconds: failed.iter().map(|p| p.sum).sum(),
    }
}

/// Point is one point of a metric in the metrics JSON: its attributes
/// (as the raw JSON object text), and its value, or count and sum.
#[derive(Debug, Default)]
pub struct Point {
    pub attributes: String,
    pub value: f64,
    pub count: f64,
    pub sum: f64,
}

/// points are the points of metric `name` in a metrics JSON document (std
/// has no JSON parser; the document is Go's compact encoding, one object
/// per metric, attributes string to string).
pub fn points(doc: &str, name: &str) -> Vec<Point> {
    let key = format!(r#""name":"{}""#, name);
    let at = match doc.find(&key) {
        Some(i) => i + key.len(),
        None => return Vec::new(),
    };
    let rest = &doc[at..];
    let end = rest.find(r#"{"name":"#).unwrap_or(rest.len());
    let num = |seg: &str, k: &str| -> f64 {
        let k = format!(r#""{}":"#, k);
        seg.find(&k)
            .map(|i| {
                let v = &seg[i + k.len()..];
                let n = v
                    .find(|c: char| !(c.is_ascii_digit() || ".-+eE".contains(c)))
                    .unwrap_or(v.len());
                v[..n].parse().unwrap_or(0.0)
            })
            .unwrap_or(0.0)
    };
    rest[..end]
        .split(r#"{"attributes":"#)
        .skip(1)
        .map(|seg| {
            let close = seg.find('}').map_or(seg.len(), |i| i + 1);
            Point {
                attributes: seg[..close].to_owned(),
                value: num(&seg[close..], "value"),
                count: num(&seg[close..], "count"),
                sum: num(&seg[close..], "sum"),
            }
        })
        .collect()
}

pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

impl Replay {
    pub fn plain_hangs(&self) -> usize {
        self.plain.iter().filter(|d| d.is_none()).count()
    }

    /// lifeline_times are the connect times of lifeline's successes, sorted.
    pub fn lifeline_times(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .lifeline
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        v.sort();
        v
    }

    /// failed_handshake_mean is the mean duration of the failed handshakes.
    pub fn failed_handshake_mean(&self) -> Duration {
        if self.failed_handshakes == 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.failed_handshake_seconds / self.failed_handshakes)
    }

    pub fn table(&self) -> String {
        let mut plain: Vec<Duration> = self.plain.iter().filter_map(|d| *d).collect();
        plain.sort();
        let ll = self.lifeline_times();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        let mut s = String::new();
        s += &format!(
            "incident 01 replay: {} connects through an LB silent on every 12th connection\n\n",
            self.connects
        );
        s += "| client | connected | hung | silent LB conns | p50 | p99 | max | failures seen in metrics |\n";
        s += "|---|---|---|---|---|---|---|---|\n";
        s += &format!(
            "| plain std (no timeouts; capped at {:?}) | {} | {} | {} | {} | {} | {} | none |\n",
            self.cap,
            plain.len(),
            self.plain_hangs(),
            self.plain_silent,
            ms(percentile(&plain, 50)),
            ms(percentile(&plain, 99)),
            ms(*plain.last().unwrap_or(&Duration::ZERO)),
        );
        s += &format!(
            "| lifeline Session (handshake_timeout_ms {}) | {} | {} | {} | {} | {} | {} | {} failed handshakes (mean {}), {} masked_failures |\n",
            self.handshake.as_millis(),
            ll.len(),
            self.lifeline.len() - ll.len(),
            self.lifeline_silent,
            ms(percentile(&ll, 50)),
            ms(percentile(&ll, 99)),
            ms(*ll.last().unwrap_or(&Duration::ZERO)),
            self.failed_handshakes as u64,
            ms(self.failed_handshake_mean()),
            self.masked as u64,
        );
        s
    }
}

/// Nginx is an nginx terminating TLS (a fresh self-signed certificate for
/// 127.0.0.1) in front of a websocket server, for the wss:// replay; it
/// ends with the value.
pub struct Nginx {
    pub addr: SocketAddr,
    pub ca_file: std::path::PathBuf,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Nginx {
    /// start runs one; None (after saying why) without nginx or openssl.
    pub fn start(backend: SocketAddr) -> Option<Nginx> {
        use std::process::{Command, Stdio};
        for tool in ["nginx", "openssl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {}", tool)])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !found {
                eprintln!("SKIP wss replay: {} not installed", tool);
                return None;
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "lifeline-incident01-{}-{}",
            std::process::id(),
            backend.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args([
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "openssl req failed");
        // A port of our own: bound and released (the window is tiny on
        // loopback); nginx listens on it next.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{p} ssl; ssl_certificate {c}; ssl_certificate_key {k};\n\
                 location / {{ proxy_pass http://{b}; proxy_http_version 1.1;\n\
                   proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade;\n\
                   proxy_read_timeout 3600s; }} }} }}\n",
            d = dir.display(),
            p = port,
            c = cert.display(),
            k = key.display(),
            b = backend
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", port).parse().unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < end,
                "nginx did not listen: {}",
                dir.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx {
            addr,
            ca_file: cert,
            dir,
            child,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// WssReplay is lifeline's side of the wss:// replay (a plain std client
/// has no TLS).
pub struct WssReplay {
    pub connects: usize,
    pub handshake: Duration,
    pub times: Vec<Result<Duration, lifeline::Error>>,
    pub silent: usize,
    pub masked: f64,
    pub dial_repeats: f64,
}

/// replay_wss connects `connects` times over wss:// through the LB in
/// front of nginx (TLS) in front of the websocket server: a connection the
/// LB holds silent stalls the TLS handshake, and the dial's race overtakes
/// it with a second connection after about dial.attempt_delay_ms (250).
/// None without nginx or openssl.
pub fn replay_wss(connects: usize, batch: usize, handshake: Duration) -> Option<WssReplay> {
    let srv = common::Ws::start();
    let nginx = Nginx::start(srv.addr)?;
    let lb = Lb::start(nginx.addr, 12);
    let client = Client::new().unwrap();
    client
        .set_string("tls.ca_file", nginx.ca_file.to_str().unwrap())
        .unwrap();
    let url = format!("wss://{}/echo", lb.addr);
    let config = format!(r#"{{"handshake_timeout_ms": {}}}"#, handshake.as_millis());
    let mut times = Vec::with_capacity(connects);
    while times.len() < connects {
        let k = batch.min(connects - times.len());
        let got: Vec<Result<Duration, lifeline::Error>> = thread::scope(|s| {
            let hs: Vec<_> = (0..k)
                .map(|_| {
                    s.spawn(|| {
                        let t = Instant::now();
                        let session = Session::new(&client, &url, &[], &config)?;
                        session.wait_connected(Some(Duration::from_secs(30)))?;
                        let took = t.elapsed();
                        session.close()?;
                        Ok(took)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        times.extend(got);
    }
    let doc = client.metrics_json().unwrap();
    Some(WssReplay {
        connects,
        handshake,
        silent: lb.silent(),
        times,
        masked: points(&doc, "lifeline.masked_failures")
            .iter()
            .map(|p| p.value)
            .sum(),
        dial_repeats: points(&doc, "lifeline.dial.attempts")
            .iter()
            .filter(|p| p.attributes.contains(r#""lifeline.dial.repeat":"true""#))
            .map(|p| p.value)
            .sum(),
    })
}

impl WssReplay {
    pub fn sorted(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .times
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        v.sort();
        v
    }

    pub fn row(&self) -> String {
        let v = self.sorted();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        format!(
            "| lifeline Session, wss:// (handshake_timeout_ms {}) | {} | {} | {} | {} | {} | {} | {} masked_failures, {} repeated dial attempts |\n",
            self.handshake.as_millis(),
            v.len(),
            self.connects - v.len(),
            self.silent,
            ms(percentile(&v, 50)),
            ms(percentile(&v, 99)),
            ms(*v.last().unwrap_or(&Duration::ZERO)),
            self.masked as u64,
            self.dial_repeats as u64,
        )
    }
}

#[allow(dead_code)]
fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let r = replay(n, 25, Duration::from_secs(2), Duration::from_secs(1));
    print!("{}", r.table());
    if let Some(w) = replay_wss(n, 25, Duration::from_secs(1)) {
        print!("{}", w.row());
        for e in w.times.iter().filter_map(|r| r.as_ref().err()) {
            println!(
                "lifeline wss failure: {} ({} {})",
                e,
                e.phase(),
                e.error_type()
            );
        }
    }
    for e in r.lifeline.iter().filter_map(|r| r.as_ref().err()) {
        println!("lifeline failure: {} ({} {})", e, e.phase(), e.error_type());
    }
}
