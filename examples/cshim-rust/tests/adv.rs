//! Adversary tests of `lifeline::ready` and `Event::DialFailed`: what a
//! hostile host passes (an empty set, a timeout too large for an Instant,
//! a closed descriptor, signals while polling) and what hostile servers
//! answer (a failure of every kind of dial, its cause in the event). Each
//! test bounds itself: a hang fails it.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::raw::{c_int, c_ulong};
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use lifeline::{Client, Event, Session};

/// bounded runs f on a thread and fails when it has not returned after
/// limit (the thread is left behind: the test has failed anyway).
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("still waiting after {limit:?}: a hang"),
    }
}

/// An empty set has nothing that could become ready: with no timeout the
/// wait would be for ever, so it is refused at once (it used to block in
/// poll(2) for good); with a timeout it waits that long and says none.
#[test]
fn ready_empty_set() {
    let r = bounded(Duration::from_secs(5), || lifeline::ready(&[], None));
    let e = r.expect_err("an empty set with no timeout");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let t0 = Instant::now();
    let r = lifeline::ready(&[], Some(Duration::from_millis(100))).unwrap();
    assert!(r.is_empty());
    assert!(
        t0.elapsed() >= Duration::from_millis(90),
        "{:?}",
        t0.elapsed()
    );
}

/// A timeout too large for an Instant (Duration::MAX: "as long as it
/// takes") is no limit; it used to panic in Instant + Duration.
#[test]
fn ready_huge_timeout() {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(b"x").unwrap();
    let r = bounded(Duration::from_secs(5), move || {
        let r = std::panic::catch_unwind(|| {
            lifeline::ready(&[b.as_fd()], Some(Duration::MAX)).map_err(|e| e.to_string())
        });
        r.map_err(|_| "panicked".to_string())
    });
    assert_eq!(r, Ok(Ok(vec![0])));
}

/// A descriptor closed at the other end, or closed outright (POLLNVAL):
/// reported ready at once, for the next call to say what.
#[test]
fn ready_hangup_and_closed() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    let r = lifeline::ready(&[b.as_fd()], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(r, vec![0]);
    let (c, _c_peer) = UnixStream::pair().unwrap();
    let (d, _d_peer) = UnixStream::pair().unwrap();
    let raw = d.as_raw_fd();
    drop(d);
    // SAFETY: the number is closed: poll(2) reports POLLNVAL, it reads
    // nothing through it (a test of what a careless host passes).
    let closed = unsafe { BorrowedFd::borrow_raw(raw) };
    let r = lifeline::ready(&[c.as_fd(), closed], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(r, vec![1]);
}

extern "C" {
    fn pthread_self() -> c_ulong;
    fn pthread_kill(thread: c_ulong, sig: c_int) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
}

const SIGUSR2: c_int = 12;

extern "C" fn on_signal(_: c_int) {}

/// Signals every 5 ms to the polling thread (EINTR each time): the wait
/// still lasts its whole timeout, and a readiness that comes during the
/// storm is seen.
#[test]
fn ready_through_a_signal_storm() {
    let _client = Client::new().unwrap(); // the Go runtime is in the process, as in use
                                          // SAFETY: a handler that does nothing, for a signal nothing else uses.
    unsafe { signal(SIGUSR2, on_signal as *const () as usize) };
    let (mut a, b) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = thread::spawn(move || {
        // SAFETY: plain calls.
        tx.send(unsafe { pthread_self() }).unwrap();
        let t0 = Instant::now();
        let none = lifeline::ready(&[b.as_fd()], Some(Duration::from_millis(500))).unwrap();
        let waited = t0.elapsed();
        let some = lifeline::ready(&[b.as_fd()], None).unwrap();
        (none, waited, some)
    });
    let tid = rx.recv().unwrap();
    let s2 = stop.clone();
    let storm = thread::spawn(move || {
        let mut sent = 0;
        while !s2.load(Ordering::Relaxed) {
            // SAFETY: tid is alive until stop (joined below).
            unsafe { pthread_kill(tid, SIGUSR2) };
            sent += 1;
            thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    thread::sleep(Duration::from_millis(900));
    a.write_all(b"x").unwrap();
    let (none, waited, some) = poller.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent = storm.join().unwrap();
    assert!(none.is_empty());
    assert!(
        waited >= Duration::from_millis(490),
        "a 500 ms wait ended after {waited:?}"
    );
    assert_eq!(some, vec![0]);
    assert!(sent > 50, "{sent} signals");
}

/// dial_failed_cause waits for the first DialFailed of a session on url
/// and returns its cause (phase, error_type, message).
fn dial_failed_cause(c: &Client, url: &str, config: &str) -> (String, String, String) {
    let s = Session::new(c, url, &[], config).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match s.next_event(Some(Duration::from_millis(200))).unwrap() {
            Some(Event::DialFailed { cause }) => {
                return (
                    cause.phase().into(),
                    cause.error_type().into(),
                    cause.message().into(),
                )
            }
            Some(Event::Closed { cause }) => {
                let cause = cause.expect("a cause");
                return (
                    cause.phase().into(),
                    cause.error_type().into(),
                    cause.message().into(),
                );
            }
            _ => {}
        }
    }
    panic!("no failed dial on {url}");
}

/// A one-shot server: each connection gets reply, then held a while.
fn answer(reply: &'static [u8]) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let mut c = match c {
                Ok(c) => c,
                Err(_) => return,
            };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.read(&mut buf);
                let _ = c.write_all(reply);
                thread::sleep(Duration::from_secs(2));
            });
        }
    });
    addr
}

/// A failed dial of every kind reaches the host as DialFailed (or, for a
/// refusal, Closed) with its phase and a class that is no Go type name;
/// the URL's query reaches no cause (nor its userinfo, refused at once).
#[test]
fn dial_failed_every_kind() {
    let c = Client::with_config(
        r#"{"dial.hosts": {"nowhere.invalid": []}, "retry.initial_interval_ms": 50}"#,
    )
    .unwrap();
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let plain = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let unauthorized = answer(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    let redirect =
        answer(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n");
    let garbage =
        answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x00\xff garbage");
    let silent = answer(b"");
    // Userinfo is refused when the session is made (its text names none).
    let e = Session::new(
        &c,
        "ws://u:PASSWORD-SECRET@127.0.0.1:1/?token=QUERY-SECRET",
        &[],
        "{}",
    )
    .err()
    .expect("userinfo refused");
    assert!(!e.message().contains("SECRET"), "{}", e.message());
    let secret = "";
    let q = "?token=QUERY-SECRET";
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            format!("ws://{secret}nowhere.invalid:80/ws{q}"),
            "",
            "dns",
            "",
        ),
        (
            format!("ws://{secret}{refused}/ws{q}"),
            "",
            "connect",
            "connect_refused",
        ),
        (format!("wss://{secret}{plain}/ws{q}"), "", "tls", ""),
        (
            format!("ws://{secret}{plain}/ws{q}"),
            "",
            "handshake",
            "http_200",
        ),
        (
            format!("ws://{secret}{unauthorized}/ws{q}"),
            "",
            "handshake",
            "http_401",
        ),
        (
            format!("ws://{secret}{redirect}/ws{q}"),
            "",
            "handshake",
            "http_302",
        ),
        (format!("ws://{secret}{garbage}/ws{q}"), "", "handshake", ""),
        (
            format!("ws://{secret}{silent}/ws{q}"),
            r#"{"handshake_timeout_ms": 300}"#,
            "handshake",
            "handshake_timeout",
        ),
    ];
    let mut failures = Vec::new();
    for (url, config, phase, typ) in cases {
        let (p, t, m) = dial_failed_cause(&c, &url, if config.is_empty() { "{}" } else { config });
        let bad = p != phase
            || (!typ.is_empty() && t != typ)
            || t.is_empty()
            || t.starts_with('*')
            || t.contains('.')
            || m.is_empty()
            || [t.as_str(), m.as_str()].iter().any(|s| {
                s.contains("SECRET")
                    || s.contains("*http.")
                    || s.contains("*url.")
                    || s.contains("*net.")
            });
        eprintln!("{phase:>9} {typ:>18}: got phase {p:?} type {t:?} message {m:?}");
        if bad {
            failures.push(format!(
                "{url}: phase {p:?} type {t:?} message {m:?}, want phase {phase:?} type {typ:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
