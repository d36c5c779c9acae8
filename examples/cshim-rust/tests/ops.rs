//! Asynchronous operations: wait with a timeout, poll, cancel from another
//! thread, Drop, client close, and `.await` on a std-only executor.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use common::{Http, Silent};
use lifeline::{Client, Request, Status};

fn hanging_client() -> Client {
    Client::with_config(
        r#"{"transport.first_byte_timeout_ms": 20000, "request_timeout_ms": 30000}"#,
    )
    .unwrap()
}

#[test]
fn cancel_from_another_thread() {
    let silent = Silent::start();
    let c = hanging_client();
    let op = c.start(&Request::get(&silent.url())).unwrap();
    let cancel = op.canceller();
    let cancelled_at = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        cancel.cancel();
        cancel.cancel(); // idempotent
        t
    });
    assert!(op.wait_timeout(Duration::from_secs(5)).unwrap());
    let finished = Instant::now();
    let at = cancelled_at.join().unwrap();
    assert!(
        finished.duration_since(at) < Duration::from_secs(1),
        "{:?}",
        finished.duration_since(at)
    );
    let e = op.wait().unwrap_err();
    assert_eq!(
        (e.status(), e.phase()),
        (Status::Canceled, "canceled"),
        "{e:?}"
    );
}

#[test]
fn shared_op_waited_in_one_thread_cancelled_in_another() {
    let silent = Silent::start();
    let c = hanging_client();
    let op = c.start(&Request::get(&silent.url())).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(100));
            op.cancel();
        });
        assert!(op.wait_timeout(Duration::from_secs(5)).unwrap());
    });
    assert_eq!(op.wait().unwrap_err().status(), Status::Canceled);
}

/// One op, eight threads waiting on it and eight cancelling it at once:
/// the ABI's thread rules make `&Op` shareable.
#[test]
fn one_op_many_waiters_many_cancellers() {
    let silent = Silent::start();
    let c = hanging_client();
    for _ in 0..20 {
        let op = c.start(&Request::get(&silent.url())).unwrap();
        thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| assert!(op.wait_timeout(Duration::from_secs(5)).unwrap()));
                s.spawn(|| {
                    op.cancel();
                    let _ = op.poll().unwrap();
                });
            }
        });
        assert_eq!(op.wait().unwrap_err().status(), Status::Canceled);
    }
}

#[test]
fn wait_timeout_and_poll() {
    let srv = Http::start();
    let c = Client::new().unwrap();
    let op = c.start(&Request::get(&srv.url("/sleep/400"))).unwrap();
    assert!(!op.poll().unwrap());
    let t0 = Instant::now();
    assert!(!op.wait_timeout(Duration::from_millis(100)).unwrap());
    assert!(t0.elapsed() >= Duration::from_millis(90));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !op.poll().unwrap() {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    let r = op.wait().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slept"[..]));
}

#[test]
fn many_ops_at_once() {
    let srv = Http::start();
    let c = Client::new().unwrap();
    let ops: Vec<_> = (0..50)
        .map(|_| c.start(&Request::get(&srv.url("/hello"))).unwrap())
        .collect();
    for op in ops {
        assert_eq!(op.wait().unwrap().body, b"hello");
    }
}

#[test]
fn dropping_a_running_op_cancels_it() {
    let silent = Silent::start();
    let c = hanging_client();
    let op = c.start(&Request::get(&silent.url())).unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(op);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = c.metrics_json().unwrap();
        if m.contains(r#""canceled":1"#) && m.contains(r#""in_flight":0"#) {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn closing_the_client_ends_its_ops() {
    let silent = Silent::start();
    let c = hanging_client();
    let ops: Vec<_> = (0..3)
        .map(|_| c.start(&Request::get(&silent.url())).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    c.close().unwrap();
    for op in ops {
        // The ops outlive their client.
        let e = op.wait().unwrap_err();
        assert_eq!(e.status(), Status::Closed, "{e:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn an_op_waited_in_another_thread_ends_when_the_client_is_dropped() {
    let silent = Silent::start();
    let c = Arc::new(hanging_client());
    let op = c.start(&Request::get(&silent.url())).unwrap();
    let waiter = thread::spawn(move || op.wait());
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    drop(c);
    let e = waiter.join().unwrap().unwrap_err();
    assert_eq!(e.status(), Status::Closed);
    assert!(t0.elapsed() < Duration::from_secs(2));
}

/// block_on is the smallest executor: park the thread until woken. It
/// parks at most 10 s at a time, so a wake-up that never comes shows as a
/// slow test (the tests bound their time) rather than a hung one.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = Box::pin(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park_timeout(Duration::from_secs(10));
    }
}

#[test]
fn await_an_op() {
    let srv = Http::start();
    let c = Client::new().unwrap();
    let t0 = Instant::now();
    let r = block_on(c.start(&Request::get(&srv.url("/sleep/100"))).unwrap()).unwrap();
    assert_eq!(r.body, b"slept");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "woken late: {:?}",
        t0.elapsed()
    );
    let silent = Silent::start();
    let hc =
        Client::with_config(r#"{"transport.first_byte_timeout_ms": 200, "retry.max_attempts": 1}"#)
            .unwrap();
    let e = block_on(hc.start(&Request::get(&silent.url())).unwrap()).unwrap_err();
    assert_eq!(e.phase(), "first_byte");
}

/// Two requests awaited by one task: the waker is called by the library's
/// completion callback, never by a polling loop.
#[test]
fn await_two_ops_joined() {
    struct Join<A: Future, B: Future> {
        a: Pin<Box<A>>,
        b: Pin<Box<B>>,
        ra: Option<A::Output>,
        rb: Option<B::Output>,
        polls: Arc<Mutex<u32>>,
    }
    impl<A: Future, B: Future> Future for Join<A, B>
    where
        A::Output: Unpin,
        B::Output: Unpin,
    {
        type Output = (A::Output, B::Output);
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            *self.polls.lock().unwrap() += 1;
            let this = &mut *self;
            if this.ra.is_none() {
                if let Poll::Ready(v) = this.a.as_mut().poll(cx) {
                    this.ra = Some(v);
                }
            }
            if this.rb.is_none() {
                if let Poll::Ready(v) = this.b.as_mut().poll(cx) {
                    this.rb = Some(v);
                }
            }
            if this.ra.is_some() && this.rb.is_some() {
                Poll::Ready((this.ra.take().unwrap(), this.rb.take().unwrap()))
            } else {
                Poll::Pending
            }
        }
    }
    let srv = Http::start();
    let c = Client::new().unwrap();
    let polls = Arc::new(Mutex::new(0));
    let j = Join {
        a: Box::pin(c.start(&Request::get(&srv.url("/sleep/200"))).unwrap()),
        b: Box::pin(c.start(&Request::get(&srv.url("/sleep/300"))).unwrap()),
        ra: None,
        rb: None,
        polls: polls.clone(),
    };
    let t0 = Instant::now();
    let (a, b) = block_on(j);
    assert_eq!(
        (a.unwrap().body, b.unwrap().body),
        (b"slept".to_vec(), b"slept".to_vec())
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    // One poll to start, one per completion (a spurious unpark may add one).
    assert!(
        *polls.lock().unwrap() <= 4,
        "{} polls",
        polls.lock().unwrap()
    );
}
