//! Faults through the crate: a vanished peer (a network namespace of the
//! test's own, nftables dropping the servers' traffic: no FIN, no RST) and
//! hosts that read slowly (a session's bounded queue; a trickling body).
//!
//! The vanished peer runs in a child: this test binary again, under
//! `unshare --net`, where it brings up its loopback, starts its servers,
//! and drops their traffic with `nft`. Without root, `unshare`, `ip` or
//! `nft` it says why and passes (CI has them).

mod common;

use std::env;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{StreamHttp, Ws};
use lifeline::{Client, Event, Message, Request, Session, SessionState, Status, StreamOptions};

const INSIDE: &str = "LIFELINE_TEST_NETNS_INSIDE";

fn netns_missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (a namespace and nftables need CAP_SYS_ADMIN, CAP_NET_ADMIN)".into());
    }
    for tool in ["unshare", "ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {}", tool)])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{} not found", tool));
        }
    }
    None
}

#[test]
fn vanished_peer() {
    if let Some(why) = netns_missing() {
        eprintln!("vanished_peer: SKIP: needs a network namespace: {}", why);
        return;
    }
    let exe = env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--"])
        .arg(&exe)
        .args(["--exact", "vanished_peer_inside", "--ignored", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{so}\n{se}");
    assert!(so.contains("ok session_vanish") && so.contains("ok stream_vanish"), "{so}\n{se}");
    for l in so.lines().filter(|l| l.starts_with("ok ")) {
        eprintln!("{}", l);
    }
}

fn run(cmd: &str, args: &[&str], stdin: &str) {
    let mut c = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let st = c.wait().unwrap();
    assert!(st.success(), "{} {:?}: {}", cmd, args, st);
}

fn vanish(ports: &[u16]) {
    let mut rules = String::from(
        "table inet lifeline {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n",
    );
    for p in ports {
        rules += &format!(
            "add rule inet lifeline input tcp dport {} drop\nadd rule inet lifeline input tcp sport {} drop\n",
            p, p
        );
    }
    run("nft", &["-f", "-"], &rules);
}

fn flow() {
    run("nft", &["-f", "-"], "table inet lifeline {}\ndelete table inet lifeline\n");
}

fn event_within(s: &Session, d: Duration) -> Event {
    s.next_event(Some(d))
        .unwrap()
        .unwrap_or_else(|| panic!("no event within {:?}", d))
}

#[test]
#[ignore = "run by vanished_peer, inside a network namespace"]
fn vanished_peer_inside() {
    if env::var_os(INSIDE).is_none() {
        return; // only in the namespace vanished_peer made
    }
    run("ip", &["link", "set", "lo", "up"], "");
    let ws = Ws::start();
    let http = StreamHttp::start();

    // The session: DISCONNECTED (pong_timeout) within ping + pong, failed
    // redials that say why, a reconnect once the traffic flows.
    let c = Client::with_config(
        r#"{"dial.connect_timeout_ms": 300, "dial.timeout_ms": 600,
            "retry.initial_interval_ms": 20, "retry.max_interval_ms": 200}"#,
    )
    .unwrap();
    let s = Session::new(
        &c,
        &ws.url("/echo"),
        &[],
        r#"{"ping_interval_ms": 200, "pong_timeout_ms": 400, "handshake_timeout_ms": 600}"#,
    )
    .unwrap();
    s.wait_connected(Some(Duration::from_secs(10))).unwrap();
    s.send_text("before").unwrap();
    loop {
        if let Event::Message { message, .. } = event_within(&s, Duration::from_secs(5)) {
            assert_eq!(message, Message::Text("before".into()));
            break;
        }
    }
    vanish(&[ws.addr.port()]);
    let t = Instant::now();
    let took = loop {
        match event_within(&s, Duration::from_secs(10)) {
            Event::Disconnected { connection, cause } => {
                assert_eq!(connection, 1);
                assert_eq!(
                    (cause.status(), cause.phase(), cause.error_type(), cause.is_timeout()),
                    (Status::Timeout, "websocket", "pong_timeout", true),
                    "{cause:?}"
                );
                break t.elapsed();
            }
            Event::Closed { cause } => panic!("closed: {cause:?}"),
            _ => {}
        }
    };
    assert!(took < Duration::from_millis(200 + 400 + 2000), "reported after {took:?}");
    let redial = loop {
        match event_within(&s, Duration::from_secs(10)) {
            Event::DialFailed { cause } => {
                assert!(cause.is_timeout() && !cause.error_type().contains('*'), "{cause:?}");
                break format!("{}/{}", cause.phase(), cause.error_type());
            }
            Event::Connected { .. } => panic!("connected while the traffic is dropped"),
            Event::State(SessionState::Disconnected) => panic!("a failed dial's state event without its cause"),
            _ => {}
        }
    };
    flow();
    loop {
        if let Event::Connected { connection } = event_within(&s, Duration::from_secs(10)) {
            assert_eq!(connection, 2);
            break;
        }
    }
    s.send_text("after").unwrap();
    loop {
        if let Event::Message { message, .. } = event_within(&s, Duration::from_secs(5)) {
            assert_eq!(message, Message::Text("after".into()));
            break;
        }
    }
    drop(s);
    println!("ok session_vanish detected_ms={} redial={}", took.as_millis(), redial);

    // The streamed body: the stall limit ends the read.
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": 500, "retry.max_attempts": 1}"#).unwrap();
    let st = c
        .stream(&Request::get(&http.url("/forever")), StreamOptions::default())
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < 30 {
        got += st.read(&mut buf, Some(Duration::from_secs(5))).unwrap();
    }
    vanish(&[http.addr.port()]);
    let t = Instant::now();
    let e = loop {
        match st.read(&mut buf, None) {
            Ok(0) => panic!("the body ended after its peer vanished"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let took = t.elapsed();
    assert_eq!(
        (e.status(), e.phase(), e.error_type()),
        (Status::Timeout, "stall", "stall_timeout"),
        "{e:?}"
    );
    assert!(took < Duration::from_millis(500 + 3000), "stall after {took:?}");
    println!("ok stream_vanish stall_ms={}", took.as_millis());
}

/// A host that takes no event for many ping intervals: the session stops
/// reading at its queue's bound (nothing dropped), still answers pings,
/// so the connection survives; every message then arrives in order on
/// connection 1.
#[test]
fn session_slow_reader_keeps_connection() {
    let ws = Ws::start();
    let c = Client::new().unwrap();
    let s = Session::new(
        &c,
        &ws.url("/flood"),
        &[],
        r#"{"queue_max_events": 16, "ping_interval_ms": 100, "pong_timeout_ms": 200}"#,
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1500));
    let mut n = 0;
    while n < 500 {
        match event_within(&s, Duration::from_secs(5)) {
            Event::Message { connection, message } => {
                let b = match message {
                    Message::Binary(b) => b,
                    Message::Text(t) => t.into_bytes(),
                };
                assert_eq!((connection, &b[..4]), (1, format!("{:04}", n).as_bytes()));
                n += 1;
            }
            Event::Disconnected { cause, .. } => panic!("the slow host cost the connection: {cause:?}"),
            Event::Closed { cause } => panic!("closed: {cause:?}"),
            _ => {}
        }
    }
}

/// A body that trickles (a line every 50 ms, under the 300 ms stall
/// limit) read by a host that sleeps a second between reads is not cut.
#[test]
fn stream_slow_reader_while_bytes_arrive() {
    let http = StreamHttp::start();
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}"#).unwrap();
    let st = c
        .stream(&Request::get(&http.url("/trickle")), StreamOptions::default())
        .unwrap();
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    for i in 0.. {
        if i < 3 {
            thread::sleep(Duration::from_secs(1));
        }
        let n = st
            .read(&mut buf, Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("after {} bytes: {e:?}: a slow host taken for a stall", body.len()));
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body.len(), 40 * 200);
}

/// One thread drives two sessions and a stream with `lifeline::ready`:
/// only what has something to give is reported, and the time limit holds.
#[test]
fn ready_waits_on_several() {
    let ws = Ws::start();
    let http = StreamHttp::start();
    let c = Client::new().unwrap();
    let a = Session::new(&c, &ws.url("/echo"), &[], "").unwrap();
    let b = Session::new(&c, &ws.url("/echo"), &[], "").unwrap();
    a.wait_connected(Some(Duration::from_secs(5))).unwrap();
    b.wait_connected(Some(Duration::from_secs(5))).unwrap();
    let drain = |s: &Session| while s.next_event(Some(Duration::ZERO)).unwrap().is_some() {};
    drain(&a);
    drain(&b);
    let st = c
        .stream(&Request::get(&http.url("/stall")), StreamOptions::default())
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(st.read(&mut buf, Some(Duration::from_secs(5))).unwrap(), 7);
    let fds = [a.event_fd().unwrap(), b.event_fd().unwrap(), st.fd().unwrap()];
    // Nothing waits anywhere: the limit ends the wait.
    let t = Instant::now();
    assert!(lifeline::ready(&fds, Some(Duration::from_millis(100))).unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(90), "{:?}", t.elapsed());
    b.send_text("to b").unwrap();
    let r = lifeline::ready(&fds, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(r, vec![1]);
    match b.next_event(Some(Duration::ZERO)).unwrap() {
        Some(Event::Message { message, .. }) => assert_eq!(message, Message::Text("to b".into())),
        other => panic!("{other:?}"),
    }
    // The stream's failure (a cancel) makes its descriptor readable.
    st.cancel();
    assert_eq!(lifeline::ready(&fds, Some(Duration::from_secs(5))).unwrap(), vec![2]);
    assert!(st.read(&mut buf, Some(Duration::ZERO)).is_err());
}
