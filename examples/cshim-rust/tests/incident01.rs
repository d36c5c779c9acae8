//! Incident 01 replayed from Rust (examples/incident01.rs): through a load
//! balancer silent on every 12th connection, the plain std client hangs
//! (the harness gives up on it), lifeline's Session connects every time,
//! each failed handshake bounded by its limit and seen in the metrics.

#[path = "../examples/incident01.rs"]
#[allow(dead_code)]
mod incident01;

use std::time::Duration;

#[test]
fn plain_client_hangs_lifeline_connects_every_time() {
    let handshake = Duration::from_secs(1);
    let r = incident01::replay(200, 25, Duration::from_secs(1), handshake);
    println!("{}", r.table());
    // The fault is real: the plain client hangs on every silent connection.
    assert_eq!(r.plain_silent, 200 / 12);
    assert_eq!(r.plain_hangs(), r.plain_silent, "{}", r.table());
    // lifeline connects every time...
    for res in &r.lifeline {
        if let Err(e) = res {
            panic!("lifeline failed to connect: {:?}\n{}", e, r.table());
        }
    }
    // ...meets silent connections too, and each cost one bounded handshake,
    // counted in its metrics although every connect succeeded.
    assert!(r.lifeline_silent > 0, "{}", r.table());
    assert_eq!(
        r.failed_handshakes as usize,
        r.lifeline_silent,
        "{}",
        r.table()
    );
    let mean = r.failed_handshake_mean();
    assert!(
        mean >= handshake - Duration::from_millis(50)
            && mean < handshake + Duration::from_millis(500),
        "{mean:?}\n{}",
        r.table()
    );
    // No connect waits on a silent peer past its bound: the slowest met at
    // most a few silent connections in a row (each about 1 s, where the
    // plain client would wait forever).
    let max = *r.lifeline_times().last().unwrap();
    assert!(max < Duration::from_secs(8), "{max:?}\n{}", r.table());
}
