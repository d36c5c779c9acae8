//! Websocket sessions against a small RFC 6455 server in Rust std on
//! 127.0.0.1 (tests/common): echo, a server restart with reconnect and
//! in-order delivery, a stalled handshake bounded then retried to success,
//! close from another thread while next_event blocks, the connect step,
//! the event descriptor.

mod common;

use std::os::unix::io::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::{Silent, Ws};
use lifeline::{Client, Event, Message, MessageKind, SendMode, Session, SessionState, Status};

const SECS5: Option<Duration> = Some(Duration::from_secs(5));

/// fast_client redials quickly (the pace of reconnecting is retry.*).
fn fast_client() -> Client {
    Client::with_config(r#"{"retry.initial_interval_ms": 50, "retry.max_interval_ms": 200}"#)
        .unwrap()
}

/// next_message skips events until a message, at most 5 s.
fn next_message(s: &Session) -> (u64, Message) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Some(Event::Message {
            connection,
            message,
        }) = s.next_event(Some(Duration::from_millis(100))).unwrap()
        {
            return (connection, message);
        }
    }
    panic!("no message within 5 s");
}

#[test]
fn accept_key_of_rfc_6455() {
    assert_eq!(
        common::ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn echo_text_and_binary() {
    let srv = Ws::start();
    let c = Client::new().unwrap();
    let s = Session::new(&c, &srv.url("/echo"), &[("X-Room", "7")], "").unwrap();
    s.wait_connected(SECS5).unwrap();
    assert_eq!(s.state().unwrap(), SessionState::Connected);
    s.send_text("hello").unwrap();
    s.send_binary(&[0, 1, 2, 255]).unwrap();
    let big = vec![7u8; 200_000];
    s.send(MessageKind::Binary, &big, SECS5, SendMode::Now)
        .unwrap();
    assert_eq!(next_message(&s), (1, Message::Text("hello".into())));
    assert_eq!(next_message(&s), (1, Message::Binary(vec![0, 1, 2, 255])));
    assert_eq!(next_message(&s), (1, Message::Binary(big)));
    // Text must be UTF-8.
    let e = s
        .send(MessageKind::Text, &[0xff, 0xfe], None, SendMode::Now)
        .unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e:?}");
}

#[test]
fn send_while_disconnected_fails_at_once() {
    let silent = Silent::start();
    let c = Client::new().unwrap();
    let s = Session::new(&c, &format!("ws://{}/", silent.addr), &[], "").unwrap();
    let t = Instant::now();
    let e = s.send_text("x").unwrap_err();
    assert_eq!(e.status(), Status::Disconnected, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // Waiting for a connection is bounded by the send's own timeout.
    let e = s
        .send(
            MessageKind::Text,
            b"x",
            Some(Duration::from_millis(200)),
            SendMode::WhenConnected,
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e:?}");
    let e = s
        .wait_connected(Some(Duration::from_millis(100)))
        .unwrap_err();
    assert_eq!((e.status(), e.phase()), (Status::Timeout, "wait"), "{e:?}");
}

#[test]
fn server_restart_reconnects_in_order() {
    let srv = Ws::start();
    let c = fast_client();
    let s = Session::new(&c, &srv.url("/seq"), &[], "").unwrap();
    let mut log: Vec<Event> = Vec::new();
    let mut got = Vec::new();
    let take = |log: &mut Vec<Event>, got: &mut Vec<String>, want: usize| {
        let end = Instant::now() + Duration::from_secs(10);
        while got.len() < want {
            assert!(Instant::now() < end, "only {:?}", got);
            if let Some(ev) = s.next_event(Some(Duration::from_millis(100))).unwrap() {
                if let Event::Message {
                    message: Message::Text(t),
                    ..
                } = &ev
                {
                    got.push(t.clone());
                }
                log.push(ev);
            }
        }
    };
    take(&mut log, &mut got, 10);
    for round in 0..2 {
        srv.stop();
        thread::sleep(Duration::from_millis(300)); // redials are refused meanwhile
        srv.restart();
        take(&mut log, &mut got, 10 * (round + 2));
    }
    let want: Vec<String> = (1..=3)
        .flat_map(|n| (0..10).map(move |i| format!("{}:{}", n, i)))
        .collect();
    assert_eq!(got, want);
    // Each connection's messages come after its Connected and before its
    // Disconnected; connections are 1, 2, 3 in order.
    let mut current = 0;
    let mut lost = Vec::new();
    for ev in &log {
        match ev {
            Event::Connected { connection } => {
                assert_eq!(*connection, current + 1, "{log:?}");
                current = *connection;
            }
            Event::Message { connection, .. } => assert_eq!(*connection, current, "{log:?}"),
            Event::Disconnected { connection, cause } => {
                assert_eq!(*connection, current);
                assert!(
                    matches!(cause.status(), Status::Network | Status::Timeout),
                    "{cause:?}"
                );
                lost.push(*connection);
            }
            _ => {}
        }
    }
    assert_eq!((current, lost), (3, vec![1, 2]), "{log:?}");
}

#[test]
fn handshake_stall_is_bounded_then_retried() {
    // The first connection is accepted and its upgrade never answered.
    let srv = Ws::with_stall(1);
    let c = fast_client();
    let t = Instant::now();
    let s = Session::new(
        &c,
        &srv.url("/echo"),
        &[],
        r#"{"handshake_timeout_ms": 300}"#,
    )
    .unwrap();
    s.wait_connected(Some(Duration::from_secs(10))).unwrap();
    let took = t.elapsed();
    // Bounded by the handshake limit, where the default (10 s) would wait on.
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        srv.accepted() >= 2 && srv.upgraded() == 1,
        "{} {}",
        srv.accepted(),
        srv.upgraded()
    );
    s.send_text("after the stall").unwrap();
    assert_eq!(next_message(&s).1, Message::Text("after the stall".into()));
}

#[test]
fn close_from_another_thread_ends_a_blocked_next_event() {
    for target in ["silent", "echo"] {
        let silent = Silent::start();
        let srv = Ws::start();
        let url = if target == "silent" {
            format!("ws://{}/", silent.addr)
        } else {
            srv.url("/echo")
        };
        let c = Client::new().unwrap();
        let s = Session::new(&c, &url, &[], "").unwrap();
        if target == "echo" {
            s.wait_connected(SECS5).unwrap();
        }
        let (closed_at, ended_at, last, after, waited) = thread::scope(|sc| {
            let waiter = sc.spawn(|| s.wait_connected(None));
            let reader = sc.spawn(|| {
                let mut last = None;
                loop {
                    match s.next_event(None) {
                        Ok(Some(ev)) => last = Some(ev),
                        Ok(None) => {}
                        Err(e) => return (Instant::now(), last, e),
                    }
                }
            });
            thread::sleep(Duration::from_millis(300));
            let closed_at = Instant::now();
            s.close().unwrap();
            s.close().unwrap(); // idempotent
            let (ended_at, last, after) = reader.join().unwrap();
            (closed_at, ended_at, last, after, waiter.join().unwrap())
        });
        assert!(
            ended_at.duration_since(closed_at) < Duration::from_secs(1),
            "{target}: {:?}",
            ended_at.duration_since(closed_at)
        );
        assert_eq!(last, Some(Event::Closed { cause: None }), "{target}");
        assert_eq!(after.status(), Status::Closed, "{target}");
        let waited = waited.map_err(|e| e.status());
        if target == "silent" {
            assert_eq!(waited, Err(Status::Closed));
        }
        assert_eq!(s.state().unwrap(), SessionState::Closed);
        assert_eq!(s.send_text("x").unwrap_err().status(), Status::Closed);
    }
}

#[test]
fn connect_step_sends_first() {
    let srv = Ws::start();
    let c = Client::new().unwrap();
    let s = Session::new(&c, &srv.url("/echo"), &[], r#"{"on_connect": true}"#).unwrap();
    let conn = loop {
        match s.next_event(SECS5).unwrap() {
            Some(Event::Connect { connection }) => break connection,
            Some(Event::State(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    // Not connected yet: a plain send fails, the connect step's goes out.
    assert_eq!(s.send_text("x").unwrap_err().status(), Status::Disconnected);
    s.send(MessageKind::Text, b"auth", None, SendMode::OnConnect)
        .unwrap();
    // Only the step in progress can be ended.
    assert_eq!(s.ready(conn + 1).unwrap_err().status(), Status::State);
    s.ready(conn).unwrap();
    assert_eq!(
        s.next_event(SECS5).unwrap(),
        Some(Event::Connected { connection: conn })
    );
    s.send_text("later").unwrap();
    assert_eq!(next_message(&s).1, Message::Text("auth".into()));
    assert_eq!(next_message(&s).1, Message::Text("later".into()));
}

#[test]
fn event_fd_is_readable_while_events_wait() {
    let srv = Ws::start();
    let c = Client::new().unwrap();
    let s = Session::new(&c, &srv.url("/seq"), &[], "").unwrap();
    let fd = s.event_fd().unwrap().as_raw_fd();
    let mut texts = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while texts.len() < 10 {
        assert!(Instant::now() < end, "{texts:?}");
        if !poll_in(fd, 1000) {
            continue;
        }
        // Readable: drain without waiting until Ok(None).
        while let Some(ev) = s.next_event(Some(Duration::ZERO)).unwrap() {
            if let Event::Message {
                message: Message::Text(t),
                ..
            } = ev
            {
                texts.push(t);
            }
        }
        // Readable again: an event came since the drain (the server
        // sends on); then one waits. (The pipe and the queue change under
        // one lock: readable means an event waits.)
        if poll_in(fd, 0) {
            match s.next_event(Some(Duration::ZERO)).unwrap() {
                Some(Event::Message {
                    message: Message::Text(t),
                    ..
                }) => texts.push(t),
                Some(_) => {}
                None => panic!("readable with an empty queue"),
            }
        }
    }
    assert_eq!(texts[0], "1:0");
}

#[test]
fn bad_arguments_are_refused() {
    let c = Client::new().unwrap();
    let e = Session::new(&c, "ws://127.0.0.1:1/", &[("Upgrade", "x")], "").unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e:?}");
    let e = Session::new(&c, "http://127.0.0.1:1/", &[], "").unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e:?}");
    let e = Session::new(&c, "ws://127.0.0.1:1/", &[], r#"{"no_such_key": 1}"#).unwrap_err();
    assert_eq!(e.status(), Status::UnknownKey, "{e:?}");
    let e = Session::new(&c, "ws://127.0.0.1:1/\0", &[], "").unwrap_err();
    assert_eq!(e.phase(), "argument");
}

#[test]
fn session_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Session>();
    check::<Event>();
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

fn poll_in(fd: i32, ms: i32) -> bool {
    let mut p = PollFd {
        fd,
        events: 1,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { poll(&mut p, 1, ms) };
    r == 1 && p.revents & 1 != 0
}
