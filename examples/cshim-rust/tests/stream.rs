//! Streamed bodies against a Rust std server on 127.0.0.1: a trickling
//! event stream read with short timeouts, a body that stalls (phase
//! "stall"), a blocked read ended from another thread, an upload in pieces
//! echoed back, a long poll past the client's first-byte limit, and the
//! std::io traits.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::{Silent, StreamHttp};
use lifeline::{Client, Deadline, Limit, Request, Status, StreamOptions};

fn events() -> Vec<u8> {
    (0..5)
        .map(|i| format!("data: event {}\n\n", i))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn trickling_event_stream() {
    let srv = StreamHttp::start();
    let c = Client::new().unwrap();
    let mut s = c
        .stream(&Request::get(&srv.url("/sse")), StreamOptions::default())
        .unwrap();
    assert_eq!(s.status().unwrap(), 200);
    let ct = s
        .response(None)
        .unwrap()
        .header("content-type")
        .map(String::from);
    assert_eq!(ct.as_deref(), Some("text/event-stream"));
    let (mut got, mut timeouts) = (Vec::new(), 0);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf, Some(Duration::from_millis(10))) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert!(e.is_wait_timeout(), "{e:?}");
                assert_eq!((e.phase(), e.error_type()), ("read", "read_timeout"));
                timeouts += 1;
            }
        }
    }
    assert_eq!(got, events());
    assert!(
        timeouts > 0,
        "every read found bytes: the stream did not trickle"
    );
    // The end is sticky, with or without a wait.
    assert_eq!(s.read(&mut buf, Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(s.read(&mut buf, None).unwrap(), 0);
    assert_eq!(s.available().unwrap(), (0, true));
}

#[test]
fn io_read_to_end() {
    let srv = StreamHttp::start();
    let c = Client::new().unwrap();
    let mut s = c
        .stream(&Request::get(&srv.url("/sse")), StreamOptions::default())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, events());
}

#[test]
fn stalling_body_fails_at_the_stall_limit() {
    let srv = StreamHttp::start();
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}"#)
        .unwrap();
    let s = c
        .stream(&Request::get(&srv.url("/stall")), StreamOptions::default())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(&buf[..n], b"partial");
    let t = Instant::now();
    let e = s.read(&mut buf, None).unwrap_err();
    let took = t.elapsed();
    assert!(!e.is_wait_timeout(), "{e:?}");
    assert_eq!(
        (e.status(), e.phase(), e.error_type(), e.is_timeout()),
        (Status::Timeout, "stall", "stall_timeout", true),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Final: every later read says the same at once.
    let again = s.read(&mut buf, Some(Duration::ZERO)).unwrap_err();
    assert_eq!(again.phase(), "stall");
    // Through io::Read it is TimedOut, with the library's error inside.
    let mut s2 = c
        .stream(
            &Request::get(&srv.url("/stall")),
            StreamOptions {
                stall_timeout: Limit::After(Duration::from_millis(200)),
                ..StreamOptions::default()
            },
        )
        .unwrap();
    let mut all = Vec::new();
    let ioe = s2.read_to_end(&mut all).unwrap_err();
    assert_eq!(all, b"partial");
    assert_eq!(ioe.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn cancel_from_another_thread_ends_a_blocked_read() {
    let srv = StreamHttp::start();
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": -1}"#).unwrap();
    let s = c
        .stream(
            &Request::get(&srv.url("/stall")).with_deadline(Deadline::PhaseLimitsOnly),
            StreamOptions::default(),
        )
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf, Some(Duration::from_secs(5))).unwrap(), 7);
    let cancel = s.canceller();
    let at = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        cancel.cancel();
        t
    });
    let e = s.read(&mut buf, None).unwrap_err(); // nothing else would end it
    let ended = Instant::now();
    let at = at.join().unwrap();
    assert_eq!(e.status(), Status::Canceled, "{e:?}");
    assert!(
        ended.duration_since(at) < Duration::from_secs(1),
        "{:?}",
        ended.duration_since(at)
    );
    assert_eq!(
        s.read(&mut buf, None).unwrap_err().status(),
        Status::Canceled
    );
}

#[test]
fn client_close_ends_a_blocked_read() {
    let srv = StreamHttp::start();
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": -1}"#).unwrap();
    let s = c
        .stream(
            &Request::get(&srv.url("/stall")).with_deadline(Deadline::PhaseLimitsOnly),
            StreamOptions::default(),
        )
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf, Some(Duration::from_secs(5))).unwrap(), 7);
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        c.close().unwrap();
    });
    let e = s.read(&mut buf, Some(Duration::from_secs(10))).unwrap_err();
    assert_eq!(e.status(), Status::Closed, "{e:?}");
    closer.join().unwrap();
}

#[test]
fn upload_in_pieces_is_echoed() {
    let srv = StreamHttp::start();
    let c = Client::new().unwrap();
    let mut s = c
        .stream(
            &Request::post(&srv.url("/echo"), &b"head:"[..]),
            StreamOptions {
                upload: true,
                ..StreamOptions::default()
            },
        )
        .unwrap();
    let pieces: Vec<Vec<u8>> = (0..30)
        .map(|i| vec![b'A' + (i % 26) as u8; 10_000])
        .collect();
    for p in &pieces {
        assert_eq!(s.write(p, Some(Duration::from_secs(5))).unwrap(), p.len());
    }
    s.write_all(b":tail").unwrap(); // io::Write
    s.close_write().unwrap();
    assert_eq!(s.close_write().unwrap_err().status(), Status::State);
    assert_eq!(
        s.response(Some(Duration::from_secs(5))).unwrap().status,
        200
    );
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let mut want = b"head:".to_vec();
    for p in &pieces {
        want.extend_from_slice(p);
    }
    want.extend_from_slice(b":tail");
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}

#[test]
fn upload_to_a_peer_that_reads_nothing() {
    let silent = Silent::start();
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}"#)
        .unwrap();
    let s = c
        .stream(
            &Request::new("PUT", &silent.url()),
            StreamOptions {
                upload: true,
                ..StreamOptions::default()
            },
        )
        .unwrap();
    let piece = vec![b'x'; 1 << 20];
    let t = Instant::now();
    // A write with a timeout returns short: the stream stays usable.
    while s.write(&piece, Some(Duration::from_millis(50))).unwrap() == piece.len() {
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    let e = loop {
        match s.write(&piece, None) {
            Ok(_) => assert!(t.elapsed() < Duration::from_secs(10)),
            Err(e) => break e,
        }
    };
    assert_eq!(
        (e.status(), e.phase()),
        (Status::Timeout, "upload_stall"),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn long_poll_outlives_the_first_byte_limit() {
    let srv = StreamHttp::start();
    let c =
        Client::with_config(r#"{"transport.first_byte_timeout_ms": 200, "retry.max_attempts": 1}"#)
            .unwrap();
    // The client's limit cuts the poll...
    let mut s = c
        .stream(
            &Request::get(&srv.url("/poll/800")),
            StreamOptions::default(),
        )
        .unwrap();
    let e = s.status().unwrap_err();
    assert_eq!(
        (e.status(), e.phase()),
        (Status::Timeout, "first_byte"),
        "{e:?}"
    );
    // ...and this call turns it off.
    let mut s = c
        .stream(
            &Request::get(&srv.url("/poll/800")),
            StreamOptions {
                first_byte_timeout: Limit::Off,
                ..StreamOptions::default()
            },
        )
        .unwrap();
    // A wait of the caller's for the headers is not a failure.
    let e = s.response(Some(Duration::from_millis(50))).unwrap_err();
    assert!(e.is_wait_timeout(), "{e:?}");
    assert_eq!(s.status().unwrap(), 200);
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert_eq!(body, "news");
}

#[test]
fn readiness_fd_follows_the_body() {
    let srv = StreamHttp::start();
    let c = Client::new().unwrap();
    let s = c
        .stream(&Request::get(&srv.url("/sse")), StreamOptions::default())
        .unwrap();
    let fd = s.fd().unwrap();
    let (mut got, mut wakeups) = (Vec::new(), 0);
    let mut buf = [0u8; 4096];
    loop {
        assert!(poll_in(&fd, 5000), "the descriptor never became readable");
        wakeups += 1;
        // Readable: a read without a wait returns at once.
        let n = s.read(&mut buf, Some(Duration::ZERO)).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, events());
    assert!((2..=20).contains(&wakeups), "{wakeups}");
}

#[test]
fn bad_options_are_refused() {
    let c = Client::new().unwrap();
    let e = c
        .stream(&Request::get("ftp://127.0.0.1/"), StreamOptions::default())
        .unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = c
        .stream(
            &Request::get("http://127.0.0.1:1/\0"),
            StreamOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e.phase(), "argument");
    // A buffered request's op is not a stream: nothing of this crate makes
    // that mistake, so only the types say it.
}

#[test]
fn stream_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<lifeline::Stream>();
}

extern "C" {
    fn poll(fds: *mut PollFd, n: u64, timeout: i32) -> i32;
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn poll_in(fd: &std::os::unix::io::BorrowedFd<'_>, ms: i32) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut p = PollFd {
        fd: fd.as_raw_fd(),
        events: 1, // POLLIN
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { poll(&mut p, 1, ms) };
    r == 1 && p.revents & 1 != 0
}

/// The server goes away mid-body: the read after the bytes that came is an
/// error (a network failure, not a clean end of the body: 7 of the 100
/// bytes announced), final for that stream, and the next stream on the
/// same client works.
#[test]
fn server_gone_mid_body_then_next_stream_works() {
    let srv = StreamHttp::start();
    let c = Client::with_config(r#"{"retry.max_attempts": 1}"#).unwrap();
    let s = c
        .stream(&Request::get(&srv.url("/cut")), StreamOptions::default())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let e = loop {
        match s.read(&mut buf, Some(Duration::from_secs(5))) {
            Ok(0) => panic!("a body cut at 7 of 100 bytes ended cleanly"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"partial");
    assert!(!e.is_wait_timeout(), "{e:?}");
    assert_eq!(e.status(), Status::Network, "{e:?}");
    let again = s.read(&mut buf, Some(Duration::ZERO)).unwrap_err();
    assert_eq!(again.status(), Status::Network, "{again:?}");
    drop(s);
    let mut s2 = c
        .stream(&Request::get(&srv.url("/sse")), StreamOptions::default())
        .unwrap();
    let mut all = Vec::new();
    s2.read_to_end(&mut all).unwrap();
    assert_eq!(all, events());
}
