//! Websocket sessions free everything: 10,000 messages echoed (sent from
//! one thread while another takes the events), pending waits, sessions
//! dropped with events untaken, closed from another thread, and left to
//! their client's close — and the library's count of allocations handed to
//! the host returns to its start. Alone in its test binary.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Silent, Ws};
use lifeline::{Client, Event, Message, MessageKind, SendMode, Session};

#[test]
fn ten_thousand_messages_leak_nothing() {
    let srv = Ws::start();
    let silent = Silent::start();
    let probe = Client::new().unwrap();
    let before = probe.live_allocations().unwrap();
    let goroutines = probe.goroutines().unwrap();
    {
        let c = Client::new().unwrap();
        let s = Session::new(&c, &srv.url("/echo"), &[("X-Token", "t")], "").unwrap();
        s.wait_connected(Some(Duration::from_secs(5))).unwrap();
        const N: usize = 10_000;
        let got = thread::scope(|sc| {
            let reader = sc.spawn(|| {
                let mut got = 0usize;
                let end = Instant::now() + Duration::from_secs(60);
                while got < N {
                    assert!(Instant::now() < end, "{got} of {N}");
                    match s.next_event(Some(Duration::from_millis(100))).unwrap() {
                        Some(Event::Message { message, .. }) => {
                            let want = format!("m{}", got);
                            match message {
                                Message::Text(t) => assert_eq!(t, want),
                                Message::Binary(b) => assert_eq!(b, want.into_bytes()),
                            }
                            got += 1;
                        }
                        Some(Event::Disconnected { cause, .. }) => panic!("{cause:?}"),
                        _ => {}
                    }
                }
                got
            });
            for i in 0..N {
                let kind = if i % 2 == 0 {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                s.send(kind, format!("m{}", i).as_bytes(), None, SendMode::Now)
                    .unwrap();
            }
            reader.join().unwrap()
        });
        assert_eq!(got, N);
        // Pending waits fill the error record each time.
        for _ in 0..200 {
            assert!(s.next_event(Some(Duration::ZERO)).unwrap().is_none());
        }
        s.close().unwrap();
        while s.next_event(Some(Duration::from_secs(5))).is_ok() {}

        // Dropped with events untaken (a connected one, a connecting one).
        let untaken = Session::new(&c, &srv.url("/seq"), &[], "").unwrap();
        untaken
            .wait_connected(Some(Duration::from_secs(5)))
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        drop(untaken);
        drop(Session::new(&c, &format!("ws://{}/", silent.addr), &[], "").unwrap());
        // Sends that fail (with their messages) and a session left to the
        // client's close.
        let orphan = Session::new(&c, &format!("ws://{}/", silent.addr), &[], "").unwrap();
        for _ in 0..100 {
            assert!(orphan.send_text("x").is_err());
        }
        drop(c);
        let mut last = None;
        while let Ok(Some(ev)) = orphan.next_event(Some(Duration::from_secs(5))) {
            last = Some(ev);
        }
        assert!(matches!(last, Some(Event::Closed { .. })), "{last:?}");
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
        thread::sleep(Duration::from_millis(20));
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
        thread::sleep(Duration::from_millis(20));
    }
}
