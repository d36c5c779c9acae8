//! Client: configuration, connection pool, address health and metrics.

use std::net::TcpStream;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::io::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::time::Duration;

use crate::error::{call, cstring, Error, Result};
use crate::ffi;
use crate::op::Op;
use crate::request::{Deadline, Request, Response};
use crate::stream::{Stream, StreamOptions};

/// Client is one lifeline client: finite defaults for every limit, a pool
/// of connections, the health of the addresses it talked to, and metrics.
/// Meant to live long and be shared.
///
/// Configure it ([`Client::configure`], the `set_*` methods) before its
/// first request or dial; it is then frozen (later configuration fails
/// with [`Status::State`](crate::Status::State)).
///
/// Thread safety: `Send + Sync` — the ABI allows every function from any
/// thread, concurrently, on the same handle, so share it by reference or
/// in an `Arc`. Dropping it closes it (once): operations still running end
/// with [`Status::Closed`](crate::Status::Closed), idle connections and "tls" relays close.
/// [`Op`]s do not borrow the client and outlive it safely.
#[derive(Debug)]
pub struct Client {
    handle: ffi::lifeline_client,
}

impl Client {
    /// new creates a client with the library's defaults. Fails when the
    /// loaded library is older than the ABI version this crate was written
    /// for (a newer one keeps every call of the older versions).
    pub fn new() -> Result<Client> {
        let abi = crate::abi_version();
        if abi < ffi::ABI_VERSION {
            return Err(Error::state(format!(
                "lifeline: liblifeline has ABI version {}, this crate needs {} or newer",
                abi,
                ffi::ABI_VERSION
            )));
        }
        let mut handle = 0;
        call(|err| unsafe { ffi::lifeline_client_new(&mut handle, err) })?;
        Ok(Client { handle })
    }

    /// handle is the library's handle of this client.
    pub(crate) fn handle(&self) -> ffi::lifeline_client {
        self.handle
    }

    /// with_config creates a client and applies a JSON configuration (see
    /// [`Client::configure`]); nothing is left open on error.
    pub fn with_config(json: &str) -> Result<Client> {
        let c = Client::new()?;
        c.configure(json)?;
        Ok(c)
    }

    /// configure applies a JSON object of configuration keys, dotted or
    /// nested (`{"dial": {"connect_timeout_ms": 500}, "retry.max_attempts": 1}`;
    /// lifeline.h lists every key). All or nothing.
    pub fn configure(&self, json: &str) -> Result<()> {
        let json = cstring(json, "configuration")?;
        call(|err| unsafe { ffi::lifeline_client_configure(self.handle, json.as_ptr(), err) })
    }

    /// set_int sets an integer key (durations in ms, counts).
    pub fn set_int(&self, key: &str, value: i64) -> Result<()> {
        let key = cstring(key, "key")?;
        call(|err| unsafe { ffi::lifeline_client_set_int(self.handle, key.as_ptr(), value, err) })
    }

    /// set_duration sets a `*_ms` key to `d`, rounded up to whole
    /// milliseconds and at least 1 (for the key's default use `set_int`
    /// with 0; to turn a limit off, a negative value where the key allows).
    pub fn set_duration(&self, key: &str, d: Duration) -> Result<()> {
        self.set_int(key, Deadline::After(d).millis())
    }

    /// set_double sets a floating-point key.
    pub fn set_double(&self, key: &str, value: f64) -> Result<()> {
        let key = cstring(key, "key")?;
        call(|err| unsafe {
            ffi::lifeline_client_set_double(self.handle, key.as_ptr(), value, err)
        })
    }

    /// set_bool sets a boolean key.
    pub fn set_bool(&self, key: &str, value: bool) -> Result<()> {
        let key = cstring(key, "key")?;
        call(|err| unsafe {
            ffi::lifeline_client_set_bool(self.handle, key.as_ptr(), c_int::from(value), err)
        })
    }

    /// set_string sets a string key.
    pub fn set_string(&self, key: &str, value: &str) -> Result<()> {
        let key = cstring(key, "key")?;
        let value = cstring(value, "value")?;
        call(|err| unsafe {
            ffi::lifeline_client_set_string(self.handle, key.as_ptr(), value.as_ptr(), err)
        })
    }

    /// config_json is every key with its effective value, as JSON (PEM and
    /// file keys say whether they are set; a proxy password is masked).
    pub fn config_json(&self) -> Result<String> {
        self.json(ffi::lifeline_client_config_json)
    }

    /// metrics_json is a JSON snapshot: "client" counters, per-address
    /// "health", OpenTelemetry "metrics" (masked failures included) and
    /// "process" figures. Any time, also while operations run.
    pub fn metrics_json(&self) -> Result<String> {
        self.json(ffi::lifeline_client_metrics_json)
    }

    /// live_allocations is the number of library allocations handed to the
    /// host and not yet freed, process-wide (the "process" section of
    /// [`Client::metrics_json`]). This crate frees each at once: the count
    /// returns to its start whenever no Op holds an untaken result.
    pub fn live_allocations(&self) -> Result<i64> {
        let doc = self.metrics_json()?;
        json_int(&doc, "live_allocations").ok_or_else(|| {
            Error::state("lifeline: metrics JSON has no process.live_allocations".into())
        })
    }

    /// goroutines is the library's number of goroutines (the Go runtime's
    /// threads of work, process-wide), from the metrics JSON: a count that
    /// grows with every session or operation left running, so a leak
    /// shows.
    pub fn goroutines(&self) -> Result<i64> {
        let doc = self.metrics_json()?;
        json_int(&doc, "goroutines").ok_or_else(|| {
            Error::state("lifeline: metrics JSON has no process.goroutines".into())
        })
    }

    fn json(
        &self,
        f: unsafe extern "C" fn(
            ffi::lifeline_client,
            *mut *mut c_char,
            *mut usize,
            *mut ffi::lifeline_error,
        ) -> i32,
    ) -> Result<String> {
        let mut out: *mut c_char = ptr::null_mut();
        let mut len = 0usize;
        call(|err| unsafe { f(self.handle, &mut out, &mut len, err) })?;
        // SAFETY: out holds len bytes of UTF-8 JSON, ours to free, once.
        let s = unsafe {
            let s = String::from_utf8_lossy(std::slice::from_raw_parts(out as *const u8, len))
                .into_owned();
            ffi::lifeline_free(out as *mut c_void);
            s
        };
        Ok(s)
    }

    /// request performs an HTTP request and blocks until the whole response
    /// has arrived or the request failed — by its [`Deadline`] at the
    /// latest. Any HTTP status is a Response. Idempotent requests are
    /// retried inside the client's policy and budget; redirects are not
    /// followed. To cancel it from another thread use [`Client::start`].
    pub fn request(&self, req: &Request) -> Result<Response> {
        let prepared = req.prepare()?;
        let raw = prepared.raw();
        let mut out: *mut ffi::lifeline_response = ptr::null_mut();
        call(|err| unsafe { ffi::lifeline_request_do(self.handle, &raw, &mut out, err) })?;
        // SAFETY: on OK the library handed us the response.
        Ok(unsafe { Response::from_raw(out) })
    }

    /// start starts a request and returns at once; the [`Op`] exists
    /// before any I/O, so it can be cancelled immediately.
    pub fn start(&self, req: &Request) -> Result<Op<Response>> {
        let prepared = req.prepare()?;
        let raw = prepared.raw();
        Op::start(|cb, ud, op, err| unsafe {
            ffi::lifeline_request_start(self.handle, &raw, cb, ud, op, err)
        })
    }

    /// stream starts a streamed request and returns its [`Stream`] at once
    /// (before any I/O, so it can be cancelled immediately): the response
    /// body is read in pieces as it arrives, and with
    /// [`StreamOptions::upload`] the request body is written in pieces.
    /// The Request's [`Deadline`] bounds the whole stream, body included
    /// (`ClientDefault` is `request_timeout_ms`: use
    /// [`Deadline::PhaseLimitsOnly`] for a stream meant to outlive it; the
    /// stall limit still ends a body that stops). `max_response_bytes`
    /// does not apply.
    pub fn stream(&self, req: &Request, opts: StreamOptions) -> Result<Stream> {
        let prepared = req.prepare()?;
        let raw = prepared.raw();
        let copts = opts.raw();
        let op = Op::start(|cb, ud, op, err| unsafe {
            ffi::lifeline_request_start_stream(
                self.handle,
                &raw,
                opts.flags(),
                &copts,
                cb,
                ud,
                op,
                err,
            )
        })?;
        Ok(Stream::new(op))
    }

    /// dial connects to `address` ("host:port", IPv6 in brackets) over
    /// `network` ("tcp", "tcp4", "tcp6" or "tls") within the dial.* limits
    /// and `deadline` (None: those limits only), and hands over the
    /// descriptor (blocking, close-on-exec). For "tls" it is one end of a
    /// Unix socketpair carrying plaintext that the library relays to and
    /// from the TLS connection.
    pub fn dial(
        &self,
        network: &str,
        address: &str,
        deadline: Option<Duration>,
    ) -> Result<OwnedFd> {
        let network = cstring(network, "network")?;
        let address = cstring(address, "address")?;
        let mut fd: c_int = -1;
        call(|err| unsafe {
            ffi::lifeline_dial(
                self.handle,
                network.as_ptr(),
                address.as_ptr(),
                dial_ms(deadline),
                &mut fd,
                err,
            )
        })?;
        // SAFETY: the library hands the descriptor over; it is ours.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// dial_tcp dials "tcp" and returns the connected socket.
    pub fn dial_tcp(&self, address: &str, deadline: Option<Duration>) -> Result<TcpStream> {
        self.dial("tcp", address, deadline).map(TcpStream::from)
    }

    /// dial_tls dials "tls" (verified with the client's tls.* keys) and
    /// returns the plaintext end of the library's relay. Shut down its
    /// write half to send close_notify; the peer's close reads as EOF.
    pub fn dial_tls(&self, address: &str, deadline: Option<Duration>) -> Result<UnixStream> {
        self.dial("tls", address, deadline).map(UnixStream::from)
    }

    /// start_dial is the asynchronous [`Client::dial`].
    pub fn start_dial(
        &self,
        network: &str,
        address: &str,
        deadline: Option<Duration>,
    ) -> Result<Op<OwnedFd>> {
        let network = cstring(network, "network")?;
        let address = cstring(address, "address")?;
        Op::start(|cb, ud, op, err| unsafe {
            ffi::lifeline_dial_start(
                self.handle,
                network.as_ptr(),
                address.as_ptr(),
                dial_ms(deadline),
                cb,
                ud,
                op,
                err,
            )
        })
    }

    /// close closes the client now and reports a failure (Drop does the
    /// same silently).
    pub fn close(self) -> Result<()> {
        let h = self.handle;
        std::mem::forget(self);
        call(|err| unsafe { ffi::lifeline_client_close(h, err) })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = call(|err| unsafe { ffi::lifeline_client_close(self.handle, err) });
    }
}

fn dial_ms(deadline: Option<Duration>) -> i64 {
    deadline.map_or(0, |d| Deadline::After(d).millis())
}

/// json_int finds `"key":<integer>` in a JSON document (std has no JSON
/// parser; the key is unique in the metrics snapshot).
fn json_int(doc: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{}\"", key);
    let rest = doc[doc.find(&pat)? + pat.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !(c == '-' || c.is_ascii_digit()))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::json_int;

    #[test]
    fn json_int_finds_the_key() {
        let doc =
            r#"{"client":{"in_flight":0},"process":{"goroutines":12,"live_allocations": -3}}"#;
        assert_eq!(json_int(doc, "live_allocations"), Some(-3));
        assert_eq!(json_int(doc, "goroutines"), Some(12));
        assert_eq!(json_int(doc, "client"), None);
        assert_eq!(json_int(doc, "absent"), None);
    }
}
