//! Blocking requests against a real HTTP/1.1 server and real faults.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{FullBacklog, Http, Silent};
use lifeline::{Client, Deadline, Error, Request, Status};

#[test]
fn get_and_post() {
    let srv = Http::start();
    let c = Client::new().unwrap();
    let r = c.request(&Request::get(&srv.url("/hello"))).unwrap();
    assert_eq!(
        (r.status, r.body.as_slice(), r.header("x-test")),
        (200, &b"hello"[..], Some("yes"))
    );
    assert_eq!(r.version, (1, 1));
    let body: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let r = c
        .request(&Request::post(&srv.url("/echo"), body.clone()).header("X-Echo", "abc"))
        .unwrap();
    assert_eq!((r.status, r.header("X-Echo-Back")), (200, Some("abc")));
    assert_eq!(r.body, body);
    // Any HTTP status is a Response.
    assert_eq!(
        c.request(&Request::get(&srv.url("/missing")))
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        c.request(&Request::get(&srv.url("/status/418")))
            .unwrap()
            .status,
        418
    );
}

#[test]
fn first_byte_timeout_names_its_phase() {
    let silent = Silent::start();
    let c = Client::with_config(
        r#"{"transport": {"first_byte_timeout_ms": 300}, "retry.max_attempts": 1}"#,
    )
    .unwrap();
    let t0 = Instant::now();
    let e = c.request(&Request::get(&silent.url())).unwrap_err();
    let el = t0.elapsed();
    assert_eq!(e.status(), Status::Timeout, "{e:?}");
    assert_eq!(
        (e.phase(), e.error_type()),
        ("first_byte", "first_byte_timeout")
    );
    assert!(e.is_timeout());
    assert!(e.to_string().contains("first_byte"), "{e}");
    assert!(
        el >= Duration::from_millis(250) && el < Duration::from_secs(3),
        "{el:?}"
    );
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    assert!(io.get_ref().unwrap().downcast_ref::<Error>().is_some());
}

#[test]
fn deadline_bounds_the_request() {
    let silent = Silent::start();
    let c = Client::with_config(r#"{"transport.first_byte_timeout_ms": 20000}"#).unwrap();
    let t0 = Instant::now();
    let e = c
        .request(&Request::get(&silent.url()).deadline(Duration::from_millis(300)))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(
        (e.status(), e.error_type()),
        (Status::Timeout, "deadline"),
        "{e:?}"
    );
    assert!(
        e.phase() == "first_byte" || e.phase() == "deadline",
        "{e:?}"
    );
    assert!(e.is_timeout());
}

#[test]
fn client_request_timeout_is_the_default_deadline() {
    let silent = Silent::start();
    let c = Client::new().unwrap();
    c.set_int("request_timeout_ms", 300).unwrap();
    c.set_duration("transport.first_byte_timeout_ms", Duration::from_secs(20))
        .unwrap();
    let t0 = Instant::now();
    let e = c
        .request(&Request::get(&silent.url()).with_deadline(Deadline::ClientDefault))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(e.error_type(), "deadline", "{e:?}");
}

#[test]
fn a_stalled_body_times_out_in_stall() {
    let srv = Http::start();
    let c = Client::with_config(r#"{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}"#)
        .unwrap();
    let t0 = Instant::now();
    let e = c
        .request(&Request::get(&srv.url("/stall/10000")))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(
        (e.status(), e.phase(), e.error_type()),
        (Status::Timeout, "stall", "stall_timeout"),
        "{e:?}"
    );
}

#[test]
fn a_body_over_the_cap_is_too_large() {
    let srv = Http::start();
    let c = Client::with_config(r#"{"max_response_bytes": 100}"#).unwrap();
    let e = c
        .request(&Request::post(&srv.url("/echo"), vec![b'x'; 1000]))
        .unwrap_err();
    assert_eq!(e.status(), Status::TooLarge, "{e:?}");
    assert_eq!(
        c.request(&Request::post(&srv.url("/echo"), vec![b'x'; 100]))
            .unwrap()
            .body
            .len(),
        100
    );
}

#[test]
fn a_503_is_retried_for_a_get_never_for_a_post() {
    let srv = Http::start();
    let c = Client::with_config(r#"{"retry": {"max_attempts": 3, "initial_interval_ms": 10}}"#)
        .unwrap();
    let r = c.request(&Request::get(&srv.url("/status/503"))).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 3);
    let r = c
        .request(&Request::post(&srv.url("/status/503"), "x"))
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 4);
}

#[test]
fn refused() {
    let addr = common::refused();
    let c = Client::with_config(r#"{"retry.max_attempts": 1}"#).unwrap();
    let e = c
        .request(&Request::get(&format!("http://{}/", addr)))
        .unwrap_err();
    assert_eq!(
        (e.status(), e.phase(), e.error_type()),
        (Status::Network, "connect", "connect_refused"),
        "{e:?}"
    );
    assert!(!e.is_timeout());
    assert_eq!(
        std::io::Error::from(e).kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn connect_to_a_full_backlog_times_out_in_connect() {
    let lb = FullBacklog::start();
    let c = Client::with_config(
        r#"{"dial": {"connect_timeout_ms": 300, "max_attempts_per_address": 1}, "retry.max_attempts": 1}"#,
    )
    .unwrap();
    let t0 = Instant::now();
    let e = c
        .request(&Request::get(&format!("http://{}/", lb.addr)))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(
        (e.status(), e.phase(), e.error_type()),
        (Status::Timeout, "connect", "connect_timeout"),
        "{e:?}"
    );
    assert!(e.is_timeout());
}

#[test]
fn configuration_errors_name_the_key() {
    let e = Client::with_config(r#"{"dial": {"conect_timeout_ms": 5}}"#).unwrap_err();
    assert_eq!(e.status(), Status::UnknownKey);
    assert!(e.message().contains("dial.conect_timeout_ms"), "{e}");
    let e = Client::new()
        .unwrap()
        .set_int("retry.max_attempts", -2)
        .unwrap_err();
    assert_eq!(e.status(), Status::BadValue);
    assert!(e.message().contains("retry.max_attempts"), "{e}");
    let e = Client::new()
        .unwrap()
        .set_bool("retry.max_attempts", true)
        .unwrap_err();
    assert_eq!(e.status(), Status::BadValue, "{e:?}");
    let e = Client::with_config("[1]").unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
}

#[test]
fn typed_setters_and_config_json() {
    let srv = Http::start();
    let c = Client::new().unwrap();
    c.set_int("dial.connect_timeout_ms", 1234).unwrap();
    c.set_double("retry.jitter", 0.25).unwrap();
    c.set_bool("dial.keepalive.enable", false).unwrap();
    c.set_string("name", "rooms-sdk").unwrap();
    let cfg = c.config_json().unwrap();
    for want in [
        r#""dial.connect_timeout_ms":1234"#,
        r#""retry.jitter":0.25"#,
        r#""dial.keepalive.enable":false"#,
        r#""name":"rooms-sdk""#,
    ] {
        assert!(cfg.contains(want), "{want} not in {cfg}");
    }
    c.request(&Request::get(&srv.url("/hello"))).unwrap();
    // Frozen after the first request.
    assert_eq!(
        c.set_int("dial.connect_timeout_ms", 10)
            .unwrap_err()
            .status(),
        Status::State
    );
    let m = c.metrics_json().unwrap();
    assert!(m.contains(r#""requests_ok":1"#), "{m}");
    assert!(c.live_allocations().unwrap() >= 0);
}

#[test]
fn nul_inside_a_string_is_refused_before_the_library() {
    let srv = Http::start();
    let c = Client::new().unwrap();
    let url = srv.url("/hello");
    let bad = [
        Request::new("GET\0POST", &url),
        Request::get(&format!("{}\0/../admin", url)),
        Request::get(&url).header("X-A\0B", "b"),
        Request::get(&url).header("X-A", "b\0c"),
    ];
    for r in &bad {
        let e = c.request(r).unwrap_err();
        assert_eq!(
            (e.status(), e.phase()),
            (Status::InvalidArgument, "argument")
        );
        assert!(e.message().contains("NUL"), "{e}");
        assert!(c.start(r).is_err());
    }
    assert!(c.dial("tcp\0", "127.0.0.1:1", None).is_err());
    assert!(c.set_int("dial.connect_timeout_ms\0x", 1).is_err());
    assert_eq!(srv.requests.load(Ordering::SeqCst), 0);
    assert!(c
        .metrics_json()
        .unwrap()
        .contains(r#""requests_started":0"#));
}

#[test]
fn bad_url_is_an_invalid_argument() {
    let c = Client::new().unwrap();
    let e = c.request(&Request::get("ftp://127.0.0.1/")).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("url"), "{e}");
}

#[test]
fn many_concurrent_requests_from_threads() {
    let srv = Http::start();
    let c = Arc::new(Client::new().unwrap());
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let c = c.clone();
            let url = srv.url("/echo");
            thread::spawn(move || {
                for j in 0..25 {
                    let body = format!("{}-{}", i, j);
                    let r = c
                        .request(
                            &Request::post(&url, body.clone()).deadline(Duration::from_secs(10)),
                        )
                        .unwrap();
                    assert_eq!(r.body, body.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(srv.requests.load(Ordering::SeqCst), 400);
    assert!(c.metrics_json().unwrap().contains(r#""requests_ok":400"#));
}

#[test]
fn types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<Client>();
    both::<lifeline::Op<lifeline::Response>>();
    both::<lifeline::Op<std::os::unix::io::OwnedFd>>();
    both::<lifeline::Canceller>();
    both::<Error>();
    both::<Request>();
}

#[test]
fn version() {
    assert!(lifeline::abi_version() >= lifeline::ABI_VERSION); // a newer library keeps the older calls
    assert!(!lifeline::version().is_empty());
}

/// A request to an upstream known down is not attempted: after five
/// refused connects in a row the client's Transport fails the next
/// requests at once with `Status::Unavailable` (ABI 3), error type
/// `unavailable`, phase `upstream`, and the message keeps the last real
/// failure. `transport.disable_fail_fast` brings back one connect per
/// request.
#[test]
fn upstream_known_down_fails_fast() {
    // A loopback port with nothing listening: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let c = Client::with_config(r#"{"retry.max_attempts": 1}"#).unwrap();
    let mut first = None;
    for i in 0..20 {
        let t0 = Instant::now();
        let e = c.request(&Request::get(&url)).unwrap_err();
        if e.status() == Status::Unavailable {
            first = Some((i, t0.elapsed(), e));
            break;
        }
        assert_eq!(e.status(), Status::Network, "{e:?}");
    }
    let (i, el, e) = first.expect("never failed fast after 20 refused requests");
    assert!(i >= 5, "failed fast after only {i} refusals");
    assert!(el < Duration::from_millis(100), "a fail fast took {el:?}");
    assert_eq!((e.phase(), e.error_type()), ("upstream", "unavailable"));
    assert!(e.to_string().contains("refused"), "{e}");

    let off = Client::with_config(
        r#"{"retry.max_attempts": 1, "transport.disable_fail_fast": true}"#,
    )
    .unwrap();
    for _ in 0..8 {
        let e = off.request(&Request::get(&url)).unwrap_err();
        assert_eq!(e.status(), Status::Network, "{e:?}");
    }
}
