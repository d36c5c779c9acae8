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
    // Each failed handshake was recovered by a redial: a masked failure
    // (masked_by=retry), so monitoring sees what every success hid.
    assert_eq!(r.masked as usize, r.lifeline_silent, "{}", r.table());
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

#[test]
fn wss_race_overtakes_silent_tls_handshakes() {
    let handshake = Duration::from_secs(1);
    let w = match incident01::replay_wss(200, 25, handshake) {
        Some(w) => w,
        None => return, // said why: no nginx or openssl
    };
    println!("{}", w.row());
    for res in &w.times {
        if let Err(e) = res {
            panic!("lifeline failed to connect over wss: {:?}\n{}", e, w.row());
        }
    }
    assert!(w.silent > 0, "{}", w.row());
    // A connection silent in the TLS handshake is overtaken by the dial's
    // race (after about dial.attempt_delay_ms, 250), not waited out to the
    // handshake limit — unless the overtaking connection is silent too (1
    // in 12): then the limit ends the dial and the redial connects. So most
    // silent connections cost no full limit (over ws:// each one does),
    // the race's wins are counted as masked failures, and no connect waits
    // past two limits.
    let v = w.sorted();
    let slow = v.iter().filter(|d| **d >= handshake / 2).count();
    assert!(slow * 3 <= w.silent, "{slow} slow\n{}", w.row());
    assert!(w.masked > 0.0 && w.dial_repeats > 0.0, "{}", w.row());
    let max = *v.last().unwrap();
    assert!(
        max < handshake * 2 + Duration::from_secs(1),
        "{max:?}\n{}",
        w.row()
    );
}
