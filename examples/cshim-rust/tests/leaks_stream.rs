//! Streamed bodies free everything: the library's count of allocations
//! handed to the host returns to its start after streams read to the end,
//! stalled, cancelled, dropped while running, uploads, and the error
//! records of thousands of read timeouts. Alone in its test binary.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::StreamHttp;
use lifeline::{Client, Request, StreamOptions};

#[test]
fn streams_leak_nothing() {
    let srv = StreamHttp::start();
    let probe = Client::new().unwrap();
    let before = probe.live_allocations().unwrap();
    let goroutines = probe.goroutines().unwrap();
    {
        let c = Client::with_config(r#"{"transport.stall_timeout_ms": 300}"#).unwrap();
        let mut buf = [0u8; 16];
        for i in 0..60 {
            match i % 4 {
                0 => {
                    // Read to the end in small pieces, headers taken.
                    let mut s = c
                        .stream(&Request::get(&srv.url("/sse")), StreamOptions::default())
                        .unwrap();
                    assert_eq!(s.status().unwrap(), 200);
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).unwrap();
                }
                1 => {
                    // A stall: its final error filled the record each read.
                    let s = c
                        .stream(&Request::get(&srv.url("/stall")), StreamOptions::default())
                        .unwrap();
                    while s.read(&mut buf, Some(Duration::from_secs(5))).is_ok() {}
                    assert!(s.read(&mut buf, None).is_err());
                }
                2 => {
                    // Dropped with the headers untaken and the body running.
                    let s = c
                        .stream(&Request::get(&srv.url("/stall")), StreamOptions::default())
                        .unwrap();
                    assert_eq!(s.read(&mut buf, Some(Duration::from_secs(5))).unwrap(), 7);
                    for _ in 0..50 {
                        assert!(s
                            .read(&mut buf, Some(Duration::ZERO))
                            .unwrap_err()
                            .is_wait_timeout());
                    }
                    s.cancel();
                }
                _ => {
                    let mut s = c
                        .stream(
                            &Request::post(&srv.url("/echo"), &b"x"[..]),
                            StreamOptions {
                                upload: true,
                                ..StreamOptions::default()
                            },
                        )
                        .unwrap();
                    s.write(&[1u8; 3000], None).unwrap();
                    s.close_write().unwrap();
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).unwrap();
                    assert_eq!(all.len(), 3001);
                }
            }
        }
        // A stream left to its client's close.
        let orphan = c
            .stream(&Request::get(&srv.url("/stall")), StreamOptions::default())
            .unwrap();
        drop(c);
        assert!(
            orphan.read(&mut buf, Some(Duration::from_secs(5))).is_err()
                || orphan.read(&mut buf, None).is_err()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = probe.live_allocations().unwrap();
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "live allocations {} -> {}",
            before,
            now
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Everything the sessions started has ended: no goroutine growth
    // (a little slack for the runtime's own).
    loop {
        let now = probe.goroutines().unwrap();
        if now <= goroutines + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "goroutines {} -> {}",
            goroutines,
            now
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
