//! Waiting on several sessions and streams from one thread, with the
//! standard library only: their readiness descriptors through poll(2).

use std::io;
use std::os::raw::{c_int, c_short, c_ulong};
use std::os::unix::io::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

extern "C" {
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int; // nfds_t: unsigned long
}

const POLLIN: c_short = 1;

/// ready waits until at least one of `fds` is readable, at most `timeout`
/// (`None`: no limit), and returns the indexes (into `fds`) of the
/// readable ones, in order; an empty Vec when the time ran out first.
///
/// Pass the descriptors of [`Session::event_fd`](crate::Session::event_fd)
/// and [`Stream::fd`](crate::Stream::fd): each is readable exactly while a
/// call with a zero timeout returns at once (an event waits; bytes, the
/// end or a failure of a body), level-triggered, so one thread can drive
/// any number of sessions and streams:
///
/// ```no_run
/// # use std::time::Duration;
/// # fn f(a: &lifeline::Session, b: &lifeline::Session) -> Result<(), Box<dyn std::error::Error>> {
/// let fds = [a.event_fd()?, b.event_fd()?];
/// for i in lifeline::ready(&fds, Some(Duration::from_secs(1)))? {
///     let s = [a, b][i];
///     while let Some(ev) = s.next_event(Some(Duration::ZERO))? {
///         println!("{ev:?}");
///     }
/// }
/// # Ok(()) }
/// ```
///
/// An async runtime does the same with its own reactor: the descriptors
/// are ordinary pipes, e.g. tokio's `AsyncFd::new(fd.as_raw_fd())`
/// (readable interest; after each wake take until `Ok(None)`, then
/// `clear_ready`), with no dependency of this crate on it. Interrupted
/// waits (EINTR, which the Go runtime's signals cause) resume with the
/// time left.
///
/// An empty `fds` with no timeout is an error of kind `InvalidInput` (it
/// would wait for ever); with one, it waits that long and returns none. A
/// timeout too large for an [`Instant`] (e.g. `Duration::MAX`) is no
/// limit. A descriptor closed at the other end, or closed outright
/// (`POLLNVAL`), counts as readable.
pub fn ready(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let mut p: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd {
            fd: fd.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() && timeout.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "lifeline::ready: no descriptors and no timeout: it would wait for ever",
        ));
    }
    // None: no limit (also a timeout beyond what an Instant can hold).
    let end = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let ms: c_int = match end {
            None => -1,
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                // Round up: a wait of 0.4 ms must not become a busy 0.
                let ms = (left.as_micros() + 999) / 1000;
                ms.min(c_int::MAX as u128) as c_int
            }
        };
        // SAFETY: p is a valid array of p.len() pollfds, alive for the call.
        let n = unsafe { poll(p.as_mut_ptr(), p.len() as c_ulong, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 && end.map_or(false, |end| Instant::now() < end) {
            // A wait longer than poll(2) takes in one call (~24 days).
            continue;
        }
        // POLLHUP/POLLERR count as ready too: the next call says what.
        return Ok(p
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents != 0)
            .map(|(i, _)| i)
            .collect());
    }
}
