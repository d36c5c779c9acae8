//! Op: an operation started without blocking — wait (with a timeout),
//! poll, cancel from any thread, take its result, or `.await` it; freed by
//! Drop.

use std::future::Future;
use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};
use std::os::unix::io::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{call, Error, Record, Result};
use crate::ffi;
use crate::request::Response;

mod sealed {
    pub trait Sealed {}
}

/// Outcome is what a finished operation yields: a [`Response`] for a
/// request, an `OwnedFd` for a dial. Sealed: the library decides which
/// results exist.
pub trait Outcome: Sized + sealed::Sealed {
    /// take takes the result of the finished operation `op` (once).
    #[doc(hidden)]
    fn take(op: u64) -> Result<Self>;
}

impl sealed::Sealed for Response {}
impl Outcome for Response {
    fn take(op: u64) -> Result<Response> {
        let mut out: *mut ffi::lifeline_response = ptr::null_mut();
        // SAFETY: out receives a response we then own (and free in from_raw).
        call(|err| unsafe { ffi::lifeline_op_response(op, &mut out, err) })?;
        Ok(unsafe { Response::from_raw(out) })
    }
}

impl sealed::Sealed for OwnedFd {}
impl Outcome for OwnedFd {
    fn take(op: u64) -> Result<OwnedFd> {
        let mut fd: c_int = -1;
        call(|err| unsafe { ffi::lifeline_op_fd(op, &mut fd, err) })?;
        // SAFETY: the library hands the descriptor over; it is ours to close.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Done is shared between an Op and its completion callback: the library
/// calls the callback exactly once per started operation (even after the op
/// was freed), and the callback releases the reference it was given.
#[derive(Default)]
pub(crate) struct Done {
    finished: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// on_done is the completion callback of every operation this crate
/// starts. It runs on a library thread and must neither block nor unwind.
pub(crate) unsafe extern "C" fn on_done(
    _op: ffi::lifeline_op,
    _status: i32,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is the Arc<Done> leaked by start(), released once here.
    let done = Arc::from_raw(user_data as *const Done);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        done.finished.store(true, Ordering::Release);
        let w = done.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = w {
            w.wake();
        }
    }));
}

/// Op is a running or finished operation yielding `T` ([`Response`] or
/// `OwnedFd`). It does not borrow its client: it stays valid after the
/// client is closed (the operation then ends with [`Status::Closed`](crate::Status::Closed)).
///
/// Thread safety: `Send + Sync` — every function of the ABI may be called
/// from any thread, concurrently, on the same handle, so `&Op` can be
/// shared (e.g. one thread waits while another cancels). Dropping an Op
/// cancels the operation if it still runs and frees its handle and any
/// result not taken — exactly once, since only Drop and [`Op::wait`]
/// (which consumes the Op) release it.
pub struct Op<T: Outcome> {
    handle: ffi::lifeline_op,
    done: Arc<Done>,
    taken: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: Outcome> Op<T> {
    /// start runs `f(callback, user_data, &mut op, err)` — one of the
    /// library's start functions — with this crate's completion callback.
    pub(crate) fn start(
        f: impl FnOnce(
            ffi::lifeline_callback,
            *mut c_void,
            *mut ffi::lifeline_op,
            *mut ffi::lifeline_error,
        ) -> i32,
    ) -> Result<Op<T>> {
        let done = Arc::new(Done::default());
        let user_data = Arc::into_raw(done.clone()) as *mut c_void;
        let mut handle: ffi::lifeline_op = 0;
        let mut rec = Record::new();
        let st = f(Some(on_done), user_data, &mut handle, rec.ptr());
        if st != ffi::OK {
            // No operation exists and the callback will never run: take back
            // the reference it would have released.
            // SAFETY: user_data came from Arc::into_raw above, unused.
            drop(unsafe { Arc::from_raw(user_data as *const Done) });
            rec.check(st)?;
        }
        Ok(Op {
            handle,
            done,
            taken: false,
            _t: PhantomData,
        })
    }

    /// handle is the library's handle of this operation (for logs).
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// wait_timeout waits until the operation has finished, at most
    /// `timeout`: true when it has (take the result with [`Op::wait`],
    /// which then returns at once), false when the time passed first.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        // Rounded up: a sub-millisecond wait still waits; zero only polls.
        let ms = if timeout.is_zero() {
            0
        } else {
            crate::request::Deadline::After(timeout).millis()
        };
        self.wait_ms(ms)
    }

    /// poll reports whether the operation has finished, without waiting.
    pub fn poll(&self) -> Result<bool> {
        self.wait_ms(0)
    }

    fn wait_ms(&self, ms: i64) -> Result<bool> {
        let mut rec = Record::new(); // cleared on drop: E_PENDING fills it too
                                     // SAFETY: plain call on our handle with our record.
        let st = unsafe { ffi::lifeline_op_wait(self.handle, ms, rec.ptr()) };
        match st {
            ffi::OK => Ok(true),
            ffi::E_PENDING => Ok(false),
            _ => rec.check(st).map(|_| false),
        }
    }

    /// cancel asks the operation to stop; it ends with [`Status::Canceled`](crate::Status::Canceled)
    /// within 100 ms. Never blocks; any number of times, from any thread;
    /// does nothing once the operation has finished.
    pub fn cancel(&self) {
        self.canceller().cancel()
    }

    /// canceller is a copyable token that cancels this operation from
    /// anywhere, even after the Op was dropped (then it does nothing: the
    /// library never reuses a handle).
    pub fn canceller(&self) -> Canceller {
        Canceller {
            handle: self.handle,
        }
    }

    /// take_result waits until the operation has finished (bounded by its
    /// own limits) and takes its result, leaving the handle to Drop (a
    /// streamed request's handle outlives its headers: its body is read
    /// through it).
    pub(crate) fn take_result(&mut self) -> Result<T> {
        call(|err| unsafe { ffi::lifeline_op_wait(self.handle, -1, err) })?;
        self.taken = true;
        T::take(self.handle)
    }

    /// wait blocks until the operation has finished (every operation does,
    /// by its deadline or phase limits) and returns its result.
    pub fn wait(mut self) -> Result<T> {
        call(|err| unsafe { ffi::lifeline_op_wait(self.handle, -1, err) })?;
        self.taken = true;
        T::take(self.handle)
    }
}

/// Awaiting an Op waits for it without blocking a thread: the library's
/// completion callback wakes the task. Any executor works; none is needed
/// beyond std. Dropping the future cancels the operation.
impl<T: Outcome> Future for Op<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if this.taken {
            return Poll::Ready(Err(Error::state(
                "lifeline: operation polled after completion".into(),
            )));
        }
        if !this.done.finished.load(Ordering::Acquire) {
            *this.done.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // The callback may have run between the check and the store.
            if !this.done.finished.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        // The callback runs when the result is available; waiting here is
        // only for the callback's own return (at once).
        if let Err(e) = call(|err| unsafe { ffi::lifeline_op_wait(this.handle, -1, err) }) {
            return Poll::Ready(Err(e));
        }
        this.taken = true;
        Poll::Ready(T::take(this.handle))
    }
}

impl<T: Outcome> Drop for Op<T> {
    fn drop(&mut self) {
        // Cancels a running operation, frees an untaken result. The only
        // possible error is a poisoned or forked library: nothing to do then.
        let _ = call(|err| unsafe { ffi::lifeline_op_free(self.handle, err) });
    }
}

impl<T: Outcome> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("handle", &self.handle).finish()
    }
}

/// Canceller cancels one operation from any thread. `Copy`, `Send`,
/// `Sync`, and harmless after the operation was freed (handles are never
/// reused: the call then finds no operation and does nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceller {
    handle: ffi::lifeline_op,
}

impl Canceller {
    /// cancel asks the operation to stop (see [`Op::cancel`]).
    pub fn cancel(&self) {
        // Fails only for a handle no longer there (the op was freed) or a
        // poisoned or forked library: nothing to cancel then.
        let _ = call(|err| unsafe { ffi::lifeline_op_cancel(self.handle, err) });
    }
}
