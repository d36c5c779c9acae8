//! Every handle and every library allocation is freed exactly once: the
//! library's process-wide count of allocations handed to the host
//! (metrics "process.live_allocations") returns to where it started.
//! Alone in its test binary, so no other test's allocations are counted.

mod common;

use std::os::unix::io::OwnedFd;
use std::time::{Duration, Instant};

use common::{Http, Silent};
use lifeline::{Client, Op, Request, Response};

#[test]
fn live_allocations_return_to_their_start() {
    let srv = Http::start();
    let silent = Silent::start();
    let echo = common::echo();
    let probe = Client::new().unwrap();
    let before = probe.live_allocations().unwrap();

    for _ in 0..3 {
        let c = Client::with_config(
            r#"{"transport.first_byte_timeout_ms": 200, "retry.max_attempts": 1}"#,
        )
        .unwrap();
        // Responses (headers, body) copied and freed.
        for _ in 0..50 {
            c.request(&Request::post(&srv.url("/echo"), vec![7u8; 1000]).header("X-Echo", "v"))
                .unwrap();
        }
        // Errors with messages: timeout, refused, bad URL, bad key.
        assert!(c.request(&Request::get(&silent.url())).is_err());
        assert!(c
            .request(&Request::get(&format!("http://{}/", common::refused())))
            .is_err());
        assert!(c.request(&Request::get("ftp://x/")).is_err());
        assert!(c.set_int("no.such.key", 1).is_err());
        // Pending polls and short waits fill the error record each time.
        let hang = Client::with_config(r#"{"transport.first_byte_timeout_ms": 20000}"#).unwrap();
        let op = hang.start(&Request::get(&silent.url())).unwrap();
        for _ in 0..500 {
            assert!(!op.poll().unwrap());
        }
        for _ in 0..20 {
            assert!(!op.wait_timeout(Duration::from_millis(1)).unwrap());
        }
        op.cancel();
        assert!(op.wait().is_err());
        // A finished op dropped with its response untaken, a running op
        // dropped, an op left to its client's close.
        let done: Op<Response> = c.start(&Request::get(&srv.url("/hello"))).unwrap();
        assert!(done.wait_timeout(Duration::from_secs(5)).unwrap());
        drop(done);
        drop(hang.start(&Request::get(&silent.url())).unwrap());
        let orphan = hang.start(&Request::get(&silent.url())).unwrap();
        drop(hang);
        assert!(orphan.wait().is_err());
        // Dials: a descriptor taken, one never taken.
        drop(c.dial_tcp(&echo.to_string(), None).unwrap());
        let fd_op: Op<OwnedFd> = c.start_dial("tcp", &echo.to_string(), None).unwrap();
        assert!(fd_op.wait_timeout(Duration::from_secs(5)).unwrap());
        drop(fd_op);
        // From 8 threads at once: requests, cancels, drops of running ops.
        std::thread::scope(|s| {
            for t in 0..8 {
                let (c, srv, silent) = (&c, &srv, &silent);
                s.spawn(move || {
                    for i in 0..20 {
                        match (t + i) % 3 {
                            0 => assert_eq!(
                                c.request(&Request::get(&srv.url("/hello"))).unwrap().status,
                                200
                            ),
                            1 => {
                                let op = c.start(&Request::get(&silent.url())).unwrap();
                                op.cancel();
                                assert!(op.wait().is_err());
                            }
                            _ => drop(c.start(&Request::get(&srv.url("/sleep/5"))).unwrap()),
                        }
                    }
                });
            }
        });
        // JSON documents.
        c.config_json().unwrap();
        c.metrics_json().unwrap();
    }

    // Operations finish on library threads: allow them to settle.
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
}
