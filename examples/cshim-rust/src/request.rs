//! Request and Response: owned Rust values, copied to and from the C
//! structs around each call (the library copies what it needs before the
//! start function returns, and each response is freed as soon as it is
//! copied).

use std::ffi::{CStr, CString};
use std::ptr;
use std::time::Duration;

use crate::error::{cstring, Error, Result};
use crate::ffi;

/// Deadline is the total time limit of an operation: every attempt, every
/// wait between them, and reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deadline {
    /// The client's `request_timeout_ms` (30 s unless configured). The default.
    #[default]
    ClientDefault,
    /// This long from the start (rounded up to whole milliseconds, at least 1).
    After(Duration),
    /// No total deadline: only the phase limits (connect, TLS, first byte,
    /// stall) bound the operation.
    PhaseLimitsOnly,
}

impl Deadline {
    pub(crate) fn millis(self) -> i64 {
        match self {
            Deadline::ClientDefault => 0,
            Deadline::PhaseLimitsOnly => -1,
            Deadline::After(d) => {
                let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
                ms.clamp(1, i64::MAX as u128) as i64
            }
        }
    }
}

/// Request is an HTTP request: method, URL (http:// or https://), headers
/// (a name may repeat; "Host" sets the Host), body and total [`Deadline`].
/// Built by value; [`crate::Client::request`] and [`crate::Client::start`]
/// borrow it, so one Request can be sent many times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    deadline: Deadline,
}

impl Request {
    /// new is a request with this method ("" means GET) and URL, no
    /// headers, an empty body and the client's default deadline.
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            ..Request::default()
        }
    }
    /// get is `Request::new("GET", url)`.
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }
    /// post is `Request::new("POST", url).body(body)`. A POST that was
    /// written is never sent twice (add an Idempotency-Key header to let
    /// the library retry it).
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", url).body(body)
    }
    /// header adds a header (names may repeat).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    /// body sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
    /// deadline sets the total deadline to `d` from the start.
    pub fn deadline(mut self, d: Duration) -> Request {
        self.deadline = Deadline::After(d);
        self
    }
    /// with_deadline sets the total deadline.
    pub fn with_deadline(mut self, d: Deadline) -> Request {
        self.deadline = d;
        self
    }

    /// prepare copies the request into C strings; refuses a NUL inside any
    /// of them (C would read a different method, URL or header).
    pub(crate) fn prepare(&self) -> Result<Prepared<'_>> {
        let method = if self.method.is_empty() {
            None
        } else {
            Some(cstring(&self.method, "method")?)
        };
        let url = cstring(&self.url, "url")?;
        let mut strings = Vec::with_capacity(self.headers.len());
        for (n, v) in &self.headers {
            let name = cstring(n, "header name")?;
            let value = cstring(v, &format!("value of header {:?}", n))?;
            strings.push((name, value));
        }
        if self.body.len() as u64 > i64::MAX as u64 {
            return Err(Error::argument("lifeline: body too long".into()));
        }
        let headers = strings
            .iter()
            .map(|(n, v)| ffi::lifeline_header {
                name: n.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        Ok(Prepared {
            method,
            url,
            _strings: strings,
            headers,
            body: &self.body,
            deadline_ms: self.deadline.millis(),
        })
    }
}

/// Prepared owns the C strings a `lifeline_request` points into.
pub(crate) struct Prepared<'a> {
    method: Option<CString>,
    url: CString,
    _strings: Vec<(CString, CString)>,
    headers: Vec<ffi::lifeline_header>,
    body: &'a [u8],
    deadline_ms: i64,
}

impl Prepared<'_> {
    /// raw is valid while self is.
    pub(crate) fn raw(&self) -> ffi::lifeline_request {
        ffi::lifeline_request {
            method: self.method.as_ref().map_or(ptr::null(), |m| m.as_ptr()),
            url: self.url.as_ptr(),
            headers: if self.headers.is_empty() {
                ptr::null()
            } else {
                self.headers.as_ptr()
            },
            header_count: self.headers.len() as i64,
            body: if self.body.is_empty() {
                ptr::null()
            } else {
                self.body.as_ptr()
            },
            body_len: self.body.len() as i64,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// Response is a complete HTTP response (any status: a 404 or 500 is a
/// Response, not an Error). Owned Rust data; the library's copy was freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code, e.g. 200.
    pub status: u16,
    /// The protocol version: (1, 1) or (2, 0).
    pub version: (u8, u8),
    /// Headers in order, names canonical ("Content-Type"), one entry per
    /// value; values are the bytes received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, decompressed when the library asked for compression.
    pub body: Vec<u8>,
}

impl Response {
    /// header is the first value of the named header (ASCII
    /// case-insensitive), or None when absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// from_raw copies a library response and frees it (also on panic).
    ///
    /// # Safety
    /// p is a response the library handed over, not yet freed.
    pub(crate) unsafe fn from_raw(p: *mut ffi::lifeline_response) -> Response {
        struct Free(*mut ffi::lifeline_response);
        impl Drop for Free {
            fn drop(&mut self) {
                // SAFETY: ours, freed exactly once.
                unsafe { ffi::lifeline_response_free(self.0) }
            }
        }
        let guard = Free(p);
        let r = &*guard.0;
        let mut headers = Vec::with_capacity(r.header_count.max(0) as usize);
        for i in 0..r.header_count.max(0) as usize {
            let h = &*r.headers.add(i);
            let name = CStr::from_ptr(h.name).to_string_lossy().into_owned();
            headers.push((name, CStr::from_ptr(h.value).to_bytes().to_vec()));
        }
        let body = if r.body_len > 0 {
            std::slice::from_raw_parts(r.body, r.body_len as usize).to_vec()
        } else {
            Vec::new()
        };
        Response {
            status: r.status as u16,
            version: (r.proto_major as u8, r.proto_minor as u8),
            headers,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_millis() {
        assert_eq!(Deadline::ClientDefault.millis(), 0);
        assert_eq!(Deadline::PhaseLimitsOnly.millis(), -1);
        assert_eq!(Deadline::After(Duration::ZERO).millis(), 1);
        assert_eq!(Deadline::After(Duration::from_micros(1)).millis(), 1);
        assert_eq!(Deadline::After(Duration::from_micros(1500)).millis(), 2);
        assert_eq!(Deadline::After(Duration::from_secs(3)).millis(), 3000);
        assert_eq!(Deadline::After(Duration::MAX).millis(), i64::MAX);
    }
}
