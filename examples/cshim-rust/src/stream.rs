//! Stream: a streamed HTTP request (ABI 2) — its response body read in
//! pieces as it arrives (downloads, server-sent events, long polls) and,
//! for an upload, its request body written in pieces.

use std::io;
use std::os::raw::c_int;
use std::os::unix::io::BorrowedFd;
use std::ptr;
use std::time::Duration;

use crate::error::{call, Error, Record, Result};
use crate::ffi;
use crate::op::{Canceller, Op};
use crate::request::{Deadline, Response};

/// Limit is a per-call time limit of a [`Stream`] over the client's
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    /// The client's configured value. The default.
    #[default]
    Client,
    /// No limit of this kind for this call (a long poll's first byte, a
    /// quiet event stream's stall): the request's [`Deadline`], your read
    /// timeouts and cancel still end it.
    Off,
    /// This long (rounded up to whole milliseconds, at least 1).
    After(Duration),
}

impl Limit {
    fn millis(self) -> i64 {
        match self {
            Limit::Client => 0,
            Limit::Off => -1,
            Limit::After(d) => Deadline::After(d).millis(),
        }
    }
}

/// StreamOptions are the options of one streamed request
/// ([`crate::Client::stream`]). The zero value (`Default`) is a download
/// with the client's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// The request body is written with [`Stream::write`] and ended with
    /// [`Stream::close_write`] (chunked on HTTP/1.1), after the Request's
    /// own body, if any. Such a request is never retried once its body
    /// was started. Default false.
    pub upload: bool,
    /// The wait for the response headers (`transport.first_byte_timeout_ms`
    /// by default); [`Limit::Off`] for a long poll.
    pub first_byte_timeout: Limit,
    /// The body's stall limit, both directions
    /// (`transport.stall_timeout_ms` by default).
    pub stall_timeout: Limit,
    /// Attempts, the first included: 0 the client's `retry.max_attempts`,
    /// 1 no retry.
    pub max_attempts: u32,
}

impl StreamOptions {
    pub(crate) fn raw(&self) -> ffi::lifeline_call_options {
        ffi::lifeline_call_options {
            first_byte_timeout_ms: self.first_byte_timeout.millis(),
            stall_timeout_ms: self.stall_timeout.millis(),
            max_attempts: i64::from(self.max_attempts),
        }
    }
    pub(crate) fn flags(&self) -> u32 {
        if self.upload {
            ffi::STREAM_UPLOAD
        } else {
            0
        }
    }
}

/// wait_ms maps a caller's wait to the ABI: None waits as long as the
/// request may take (-1), zero does not wait, anything else is rounded up.
pub(crate) fn wait_ms(timeout: Option<Duration>) -> i64 {
    match timeout {
        None => -1,
        Some(d) if d.is_zero() => 0,
        Some(d) => Deadline::After(d).millis(),
    }
}

/// Stream is a streamed HTTP request from [`crate::Client::stream`]. It
/// exists before any I/O: its status and headers come with
/// [`Stream::response`], its body with [`Stream::read`] (or
/// [`std::io::Read`]), and for an upload its request body goes with
/// [`Stream::write`] and [`Stream::close_write`].
///
/// Every wait is bounded: by the timeout you pass to each call (a
/// [`Error::is_wait_timeout`] error, after which the stream stays usable),
/// by the client's (or [`StreamOptions`]') stall limit — a body of which
/// no byte came for that long fails with phase "stall" — by the request's
/// [`Deadline`], and by [`Stream::cancel`] or a [`Canceller`] from any
/// thread. The library reads ahead into a 64 KiB buffer; a slow reader is
/// not a stall.
///
/// Thread safety: `Send + Sync` (the ABI allows every call from any
/// thread, concurrently): one thread may read while another writes or
/// cancels. Dropping it ends the request if it still runs, releases its
/// connection and frees the handle, exactly once; it does not borrow its
/// client and outlives it (then failing with [`crate::Status::Closed`]).
pub struct Stream {
    op: Op<Response>,
    head: Option<Response>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Stream {
    pub(crate) fn new(op: Op<Response>) -> Stream {
        Stream {
            op,
            head: None,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// handle is the library's handle of the request (for logs).
    pub fn handle(&self) -> u64 {
        self.op.handle()
    }

    /// response waits for the status and headers, at most `timeout` (None:
    /// as long as the request may take, bounded by its first-byte limit
    /// and deadline), and returns them as a [`Response`] with an empty
    /// body. The request's failure when it got no headers; a wait timeout
    /// (phase "read") when `timeout` passed first.
    pub fn response(&mut self, timeout: Option<Duration>) -> Result<&Response> {
        if self.head.is_none() {
            if let Some(t) = timeout {
                if !self.op.wait_timeout(t)? {
                    return Err(Error::wait_timeout(
                        "read",
                        format!("lifeline: no response headers within {:?}", t),
                    ));
                }
            }
            self.head = Some(self.op.take_result()?);
        }
        Ok(self.head.as_ref().unwrap())
    }

    /// status is the response's status code (see [`Stream::response`]).
    pub fn status(&mut self) -> Result<u16> {
        self.response(None).map(|r| r.status)
    }

    /// headers are the response's headers (see [`Stream::response`]).
    pub fn headers(&mut self) -> Result<&[(String, Vec<u8>)]> {
        self.response(None).map(|r| &r.headers[..])
    }

    /// read reads the next bytes of the body into `buf`, waiting at most
    /// `timeout` (None: until a byte, the end or a failure; zero: no wait)
    /// — for the headers first if they have not come. `Ok(n)` with n >= 1
    /// bytes read; `Ok(0)` at the end of the body (and every time after,
    /// as `read(2)`; also for an empty `buf`). A wait timeout
    /// ([`Error::is_wait_timeout`], phase "read") when `timeout` passed
    /// without a byte: not a failure, read again. Every other error is
    /// final and returned again by every later read: phase "stall"
    /// (stall limit or deadline), a network failure,
    /// [`crate::Status::Canceled`], [`crate::Status::Closed`], or the
    /// request's own failure.
    pub fn read(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0usize;
        call(|err| unsafe {
            ffi::lifeline_body_read(
                self.op.handle(),
                buf.as_mut_ptr(),
                buf.len(),
                wait_ms(timeout),
                &mut n,
                err,
            )
        })?;
        Ok(n)
    }

    /// set_read_timeout sets the timeout of reads through
    /// [`std::io::Read`] (None, the default: no limit of the caller's; the
    /// stall limit and the deadline still bound each read). A read that
    /// times out is an `io::ErrorKind::TimedOut` whose inner [`Error`]
    /// has [`Error::is_wait_timeout`]: read again.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// set_write_timeout sets the timeout of writes through
    /// [`std::io::Write`] (None, the default: no limit of the caller's).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// available is (bytes buffered, ended): what a read with a zero
    /// timeout would find; `ended` when nothing follows them (the end, a
    /// failure or a cancel). Both zero before the headers. Never waits.
    pub fn available(&self) -> Result<(usize, bool)> {
        let (mut n, mut ended): (usize, c_int) = (0, 0);
        call(|err| unsafe {
            ffi::lifeline_body_available(self.op.handle(), &mut n, &mut ended, err)
        })?;
        Ok((n, ended != 0))
    }

    /// fd is a descriptor readable exactly while a read with a zero
    /// timeout returns at once (bytes, the end or a failure wait),
    /// level-triggered: for poll, epoll or an async reactor. The library's:
    /// never read or close it; it lives as long as the Stream (the borrow
    /// says so), so remove it from your poll set before dropping the
    /// Stream.
    pub fn fd(&self) -> Result<BorrowedFd<'_>> {
        let mut fd: c_int = -1;
        call(|err| unsafe { ffi::lifeline_body_fd(self.op.handle(), &mut fd, err) })?;
        // SAFETY: the descriptor stays open until lifeline_op_free, which
        // only this Stream's Drop calls, after every borrow of it ended.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// write writes `data` to the request body of an upload
    /// ([`StreamOptions::upload`]): the library copies it into a 64 KiB
    /// buffer it sends from, waiting while that is full, at most `timeout`
    /// (None: as long as the request lives; zero: take what fits). Returns
    /// the number of bytes taken: `data.len()`, or fewer when `timeout`
    /// passed first (write the rest again). May be called before the
    /// connection exists. Errors: the request's failure (phase
    /// "upload_stall": the peer took no byte for the stall limit,
    /// [`crate::Status::Canceled`], ...), [`crate::Status::State`] after
    /// [`Stream::close_write`], once the response came, or without
    /// `upload`.
    pub fn write(&self, data: &[u8], timeout: Option<Duration>) -> Result<usize> {
        let mut n = 0usize;
        let mut rec = Record::new();
        // SAFETY: data is valid for len bytes during the call, which copies it.
        let st = unsafe {
            ffi::lifeline_body_write(
                self.op.handle(),
                if data.is_empty() {
                    ptr::null()
                } else {
                    data.as_ptr()
                },
                data.len(),
                wait_ms(timeout),
                &mut n,
                rec.ptr(),
            )
        };
        match rec.check(st) {
            Ok(()) => Ok(n),
            Err(e) if e.is_wait_timeout() => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// close_write ends the request body of an upload: the peer sees its
    /// end after the bytes written (most servers answer only then).
    /// [`crate::Status::State`] on a second call or without `upload`.
    pub fn close_write(&self) -> Result<()> {
        call(|err| unsafe { ffi::lifeline_body_close_write(self.op.handle(), err) })
    }

    /// cancel ends the request in every state, also while its body is
    /// read: a read or write blocked in another thread returns
    /// [`crate::Status::Canceled`] within 100 ms, and so does every later
    /// one (a body that had already arrived whole stays readable).
    pub fn cancel(&self) {
        self.op.cancel()
    }

    /// canceller is a `Copy + Send + Sync` token that cancels this stream
    /// from anywhere, harmless after the Stream was dropped.
    pub fn canceller(&self) -> Canceller {
        self.op.canceller()
    }
}

impl io::Read for Stream {
    /// Reads with the timeout of [`Stream::set_read_timeout`]; `Ok(0)` at
    /// the end; errors through `From<Error> for io::Error` (a timeout is
    /// `TimedOut`).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf, self.read_timeout).map_err(io::Error::from)
    }
}

impl io::Write for Stream {
    /// Writes with the timeout of [`Stream::set_write_timeout`]; when it
    /// passes before any byte was taken, an `io::ErrorKind::TimedOut`.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        match Stream::write(self, data, self.write_timeout) {
            Ok(0) => Err(io::Error::from(Error::wait_timeout(
                "write",
                "lifeline: no byte of the body taken in time".into(),
            ))),
            Ok(n) => Ok(n),
            Err(e) => Err(e.into()),
        }
    }

    /// Nothing to do: the library sends what it took as fast as the peer
    /// reads it ([`Stream::close_write`] ends the body).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("handle", &self.op.handle())
            .field("status", &self.head.as_ref().map(|r| r.status))
            .finish()
    }
}
