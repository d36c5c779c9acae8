//! Error: the library's error record (status, phase, type, timeout flag,
//! message) as a Rust value.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::raw::c_char;

use crate::ffi;

/// Result is `std::result::Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Status is the library's status code of a failed call (lifeline.h,
/// `enum lifeline_status`, without `LIFELINE_OK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// A bad argument: NUL inside a string, bad URL, method, header, address.
    InvalidArgument,
    /// A configuration key the library does not know.
    UnknownKey,
    /// A configuration value of the wrong type or out of range.
    BadValue,
    /// A handle unknown to the library (never produced by this crate's
    /// types, which free each handle exactly once).
    InvalidHandle,
    /// Not valid now: configuring a client after its first request or dial.
    State,
    /// The operation is still running (never an error of the operation).
    Pending,
    /// A time limit ended the operation; [`Error::phase`] says which.
    Timeout,
    /// The operation was cancelled.
    Canceled,
    /// A network or protocol failure that was not a timeout.
    Network,
    /// The response body exceeded `max_response_bytes`.
    TooLarge,
    /// The client was closed while the operation ran.
    Closed,
    /// Called in a child of `fork()` without `exec()`.
    Forked,
    /// The library recovered a panic and refuses every call from now on.
    Internal,
    /// The C heap is exhausted.
    NoMemory,
    /// A websocket session's send found no connection, or the connection
    /// broke under the write (ABI 2, `LIFELINE_E_DISCONNECTED`).
    Disconnected,
    /// The request was not attempted: its upstream is known down, or the
    /// client shed it under overload (ABI 3, `LIFELINE_E_UNAVAILABLE`);
    /// [`Error::error_type`] says `unavailable` or `shed`.
    Unavailable,
    /// A code this crate does not know (a newer library).
    Other(i32),
}

impl Status {
    /// from_code maps a library status code (not `LIFELINE_OK`) to a Status.
    pub fn from_code(code: i32) -> Status {
        match code {
            1 => Status::InvalidArgument,
            2 => Status::UnknownKey,
            3 => Status::BadValue,
            4 => Status::InvalidHandle,
            5 => Status::State,
            6 => Status::Pending,
            7 => Status::Timeout,
            8 => Status::Canceled,
            9 => Status::Network,
            10 => Status::TooLarge,
            11 => Status::Closed,
            12 => Status::Forked,
            13 => Status::Internal,
            14 => Status::NoMemory,
            15 => Status::Unavailable,
            20 => Status::Disconnected,
            n => Status::Other(n),
        }
    }

    /// code is the library's numeric status code.
    pub fn code(self) -> i32 {
        match self {
            Status::InvalidArgument => 1,
            Status::UnknownKey => 2,
            Status::BadValue => 3,
            Status::InvalidHandle => 4,
            Status::State => 5,
            Status::Pending => 6,
            Status::Timeout => 7,
            Status::Canceled => 8,
            Status::Network => 9,
            Status::TooLarge => 10,
            Status::Closed => 11,
            Status::Forked => 12,
            Status::Internal => 13,
            Status::NoMemory => 14,
            Status::Unavailable => 15,
            Status::Disconnected => 20,
            Status::Other(n) => n,
        }
    }

    /// name is the library's static description ("LIFELINE_E_TIMEOUT: ...").
    pub fn name(self) -> &'static str {
        // SAFETY: lifeline_status_string returns a static NUL-terminated
        // string for every value, never NULL.
        unsafe { CStr::from_ptr(ffi::lifeline_status_string(self.code())) }
            .to_str()
            .unwrap_or("unknown status")
    }
}

/// Error is a failed call: its [`Status`], the phase where it broke
/// ("dns", "connect", "tls", "first_byte", "stall", "deadline", "canceled",
/// ... — lifeline.h lists them; "" when not applicable), a short stable
/// class for branching and dashboards ("connect_refused",
/// "first_byte_timeout", "deadline", ...), whether a time limit caused it,
/// and a message naming the argument, key, phase or peer (never a URL path,
/// query or header value). It owns plain Rust strings: Send, Sync, Clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    phase: String,
    error_type: String,
    timeout: bool,
    message: String,
}

impl Error {
    /// status is the library's status code as a [`Status`].
    pub fn status(&self) -> Status {
        self.status
    }
    /// phase is where the operation broke ("" when not applicable).
    pub fn phase(&self) -> &str {
        &self.phase
    }
    /// error_type is the failure's short stable class ("" when none).
    pub fn error_type(&self) -> &str {
        &self.error_type
    }
    /// is_timeout reports whether a time limit (a phase limit or the total
    /// deadline) caused the failure.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
    /// message is the library's human-readable message ("" when none).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// argument is the error of an argument refused on the Rust side before
    /// it reached the library, shaped as the library's own.
    pub(crate) fn argument(message: String) -> Error {
        Error {
            status: Status::InvalidArgument,
            phase: "argument".into(),
            error_type: "invalid_argument".into(),
            timeout: false,
            message,
        }
    }

    /// state is an error of a call made at the wrong time (or against the
    /// wrong library), shaped as the library's own.
    pub(crate) fn state(message: String) -> Error {
        Error {
            status: Status::State,
            phase: String::new(),
            error_type: String::new(),
            timeout: false,
            message,
        }
    }

    /// wait_timeout is the error of a wait of the caller's that passed
    /// (phase "read" or "write"), shaped as the library's own: not a
    /// failure of the stream, which stays usable.
    pub(crate) fn wait_timeout(phase: &str, message: String) -> Error {
        Error {
            status: Status::Timeout,
            phase: phase.into(),
            error_type: format!("{}_timeout", phase),
            timeout: true,
            message,
        }
    }

    /// is_wait_timeout reports whether this is the end of a wait the
    /// caller chose — a [`Stream`](crate::Stream) read or write timeout
    /// (phase "read" or "write") — after which the stream stays usable:
    /// read or write again. Every other error of a stream is final.
    pub fn is_wait_timeout(&self) -> bool {
        self.status == Status::Timeout && (self.phase == "read" || self.phase == "write")
    }

    /// from_record copies a filled record (the caller clears it).
    pub(crate) fn from_record(status: i32, rec: &ffi::lifeline_error) -> Error {
        let message = if rec.message.is_null() {
            String::new()
        } else {
            // SAFETY: the library's message is NUL-terminated UTF-8 and
            // lives until the record is cleared, after this copy.
            unsafe { CStr::from_ptr(rec.message) }
                .to_string_lossy()
                .into_owned()
        };
        Error {
            status: Status::from_code(status),
            phase: fixed(&rec.phase),
            error_type: fixed(&rec.error_type),
            timeout: rec.timeout != 0,
            message,
        }
    }
}

fn fixed(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.message.is_empty() {
            f.write_str(&self.message)
        } else if !self.phase.is_empty() {
            write!(f, "{} (phase {})", self.status.name(), self.phase)
        } else {
            f.write_str(self.status.name())
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// A timeout becomes `TimedOut`, a refused connect `ConnectionRefused`,
    /// a bad argument or configuration `InvalidInput`, anything else
    /// `Other`; the [`Error`] stays inside (`get_ref`/`into_inner`).
    fn from(e: Error) -> io::Error {
        let kind = match e.status {
            Status::Timeout => io::ErrorKind::TimedOut,
            Status::InvalidArgument | Status::UnknownKey | Status::BadValue => {
                io::ErrorKind::InvalidInput
            }
            _ if e.error_type == "connect_refused" => io::ErrorKind::ConnectionRefused,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Record is one caller-owned `lifeline_error`, cleared (its message freed)
/// when dropped, so no path leaks a message — E_PENDING fills it too.
pub(crate) struct Record(ffi::lifeline_error);

impl Record {
    pub(crate) fn new() -> Record {
        Record(ffi::lifeline_error {
            status: 0,
            timeout: 0,
            phase: [0; 16],
            error_type: [0; 32],
            message: std::ptr::null_mut(),
        })
    }

    pub(crate) fn ptr(&mut self) -> *mut ffi::lifeline_error {
        &mut self.0
    }

    /// check turns a status returned with this record into a Result.
    pub(crate) fn check(&self, status: i32) -> Result<()> {
        if status == ffi::OK {
            Ok(())
        } else {
            Err(Error::from_record(status, &self.0))
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // SAFETY: the record is ours and was zeroed or filled by the library.
        unsafe { ffi::lifeline_error_clear(&mut self.0) }
    }
}

/// call runs one library function with a fresh record and checks its status.
pub(crate) fn call(f: impl FnOnce(*mut ffi::lifeline_error) -> i32) -> Result<()> {
    let mut rec = Record::new();
    let st = f(rec.ptr());
    rec.check(st)
}

/// cstring copies s for a `const char *` argument. C would read it only up
/// to a NUL, so a string holding one (a different URL, header or key than
/// the caller wrote) is refused.
pub(crate) fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|e| {
        Error::argument(format!(
            "lifeline: {} contains a NUL byte at index {}",
            what,
            e.nul_position()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for code in 1..=21 {
            assert_eq!(Status::from_code(code).code(), code);
        }
        assert_eq!(Status::from_code(15), Status::Unavailable);
        assert_eq!(Status::from_code(16), Status::Other(16));
        assert!(
            Status::Timeout.name().contains("TIMEOUT"),
            "{}",
            Status::Timeout.name()
        );
    }

    #[test]
    fn nul_is_refused() {
        let e = cstring("a\0b", "url").unwrap_err();
        assert_eq!(
            (e.status(), e.phase(), e.error_type()),
            (Status::InvalidArgument, "argument", "invalid_argument")
        );
        assert!(
            e.to_string().contains("url contains a NUL byte at index 1"),
            "{}",
            e
        );
    }
}
