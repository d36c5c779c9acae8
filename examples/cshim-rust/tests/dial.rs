//! Raw dials: a TcpStream for "tcp", the plaintext end of the library's TLS
//! relay for "tls" (against openssl s_server), and their failures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Echo, FullBacklog};
use lifeline::{Client, Status};

#[test]
fn dial_tcp_echo() {
    let addr = common::echo();
    let c = Client::new().unwrap();
    let mut s = c
        .dial_tcp(&addr.to_string(), Some(Duration::from_secs(2)))
        .unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(s.peer_addr().unwrap(), addr);
}

#[test]
fn start_dial_then_take_the_descriptor() {
    let addr = common::echo();
    let c = Client::new().unwrap();
    let op = c.start_dial("tcp", &addr.to_string(), None).unwrap();
    let mut s = TcpStream::from(op.wait().unwrap());
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
}

#[test]
fn dial_refused_and_full_backlog() {
    let c = Client::with_config(
        r#"{"dial": {"connect_timeout_ms": 300, "max_attempts_per_address": 1}}"#,
    )
    .unwrap();
    let e = c
        .dial_tcp(&common::refused().to_string(), None)
        .unwrap_err();
    assert_eq!(
        (e.status(), e.phase(), e.error_type()),
        (Status::Network, "connect", "connect_refused"),
        "{e:?}"
    );
    let lb = FullBacklog::start();
    let t0 = Instant::now();
    let e = c.dial_tcp(&lb.addr.to_string(), None).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (e.status(), e.phase(), e.error_type()),
        (Status::Timeout, "connect", "connect_timeout"),
        "{e:?}"
    );
    // The dial's own deadline, shorter than the phase limit.
    let c = Client::with_config(r#"{"dial": {"connect_timeout_ms": 20000}}"#).unwrap();
    let t0 = Instant::now();
    let e = c
        .dial_tcp(&lb.addr.to_string(), Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(e.is_timeout(), "{e:?}");
}

#[test]
fn a_dial_cancelled_from_another_thread() {
    let lb = FullBacklog::start();
    let c = Client::with_config(r#"{"dial": {"connect_timeout_ms": 20000, "timeout_ms": 30000}}"#)
        .unwrap();
    let op = c.start_dial("tcp", &lb.addr.to_string(), None).unwrap();
    let cancel = op.canceller();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.cancel();
    });
    let t0 = Instant::now();
    let e = op.wait().unwrap_err();
    assert_eq!(e.status(), Status::Canceled, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

/// Drop frees the op's handle: a descriptor never taken is closed by the
/// library then (the echo server sees the connection end). An Op whose
/// handle leaked would hold the connection open for the process's life.
#[test]
fn a_descriptor_never_taken_is_closed_when_the_op_drops() {
    let echo = Echo::start();
    let c = Client::new().unwrap();
    let op = c.start_dial("tcp", &echo.addr.to_string(), None).unwrap();
    assert!(op.wait_timeout(Duration::from_secs(5)).unwrap());
    wait_for(|| echo.open.load(Ordering::SeqCst) == 1);
    drop(op);
    wait_for(|| echo.open.load(Ordering::SeqCst) == 0);
    // A descriptor taken is the caller's: it lives on after the op.
    let s = TcpStream::from(
        c.start_dial("tcp", &echo.addr.to_string(), None)
            .unwrap()
            .wait()
            .unwrap(),
    );
    wait_for(|| echo.open.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(echo.open.load(Ordering::SeqCst), 1);
    drop(s);
    wait_for(|| echo.open.load(Ordering::SeqCst) == 0);
}

fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct OpenSsl {
    child: Child,
    addr: String,
    ca: PathBuf,
}

impl Drop for OpenSsl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.ca.parent().unwrap());
    }
}

/// openssl_rev runs `openssl s_server -rev` (each line sent back reversed)
/// with a fresh self-signed certificate for 127.0.0.1; None without openssl.
fn openssl_rev() -> Option<OpenSsl> {
    if Command::new("openssl").arg("version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("openssl missing under CI");
        }
        eprintln!("SKIP: openssl not installed");
        return None;
    }
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("lifeline-rust-tls-{}-{}", std::process::id(), n));
    std::fs::create_dir_all(&dir).unwrap();
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
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            "c.pem",
            "-key",
            "k.pem",
            "-rev",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addr = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.trim().strip_prefix("ACCEPT ") {
            addr = a.to_owned();
            break;
        }
    }
    // Keep draining its stdout so it never blocks writing.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let srv = OpenSsl {
        child,
        addr,
        ca: dir.join("c.pem"),
    };
    assert!(
        !srv.addr.is_empty(),
        "openssl s_server printed no ACCEPT line"
    );
    Some(srv)
}

#[test]
fn dial_tls_relays_plaintext() {
    let srv = match openssl_rev() {
        Some(s) => s,
        None => return,
    };
    let c = Client::new().unwrap();
    c.set_string("tls.ca_file", srv.ca.to_str().unwrap())
        .unwrap();
    let mut s = c.dial_tls(&srv.addr, Some(Duration::from_secs(5))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello lifeline\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "enilefil olleh\n");
    s.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn dial_tls_refuses_an_unknown_certificate() {
    let srv = match openssl_rev() {
        Some(s) => s,
        None => return,
    };
    let c = Client::new().unwrap(); // the system's roots: the self-signed cert is unknown
    let e = c
        .dial_tls(&srv.addr, Some(Duration::from_secs(5)))
        .unwrap_err();
    assert_eq!((e.status(), e.phase()), (Status::Network, "tls"), "{e:?}");
    assert_eq!(e.error_type(), "tls_certificate");
}
