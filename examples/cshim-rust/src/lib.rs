//! Safe Rust over lifeline's C ABI (`cshim/lifeline.h`): a network client
//! core in which every phase of every request and dial has a finite limit.
//!
//! ```no_run
//! use std::time::Duration;
//! use lifeline::{Client, Request};
//!
//! let client = Client::with_config(r#"{"transport": {"first_byte_timeout_ms": 2000}}"#)?;
//! let resp = client.request(&Request::get("http://127.0.0.1:8080/items").deadline(Duration::from_secs(5)))?;
//! println!("{} {}", resp.status, String::from_utf8_lossy(&resp.body));
//! # Ok::<(), lifeline::Error>(())
//! ```
//!
//! Modules (private, re-exported here): `client` (configuration, blocking
//! calls, dials), `request` (Request, Response, Deadline), `op` (operations:
//! wait, poll, cancel, Future), `stream` (streamed bodies: Stream,
//! StreamOptions, Limit), `session` (websocket sessions: Session,
//! Event), `ready` (waiting on several sessions' and streams' descriptors
//! from one thread), `error` (Error, Status), `ffi` (the raw
//! declarations of lifeline.h). Every
//! handle the library gives is owned by exactly one value and freed by its
//! Drop; every string or response it hands over is copied and freed at
//! once.

#![warn(missing_docs)]

mod client;
mod error;
mod ffi;
mod op;
mod ready;
mod request;
mod session;
mod stream;

use std::ffi::CStr;

pub use client::Client;
pub use error::{Error, Result, Status};
pub use op::{Canceller, Op, Outcome};
pub use ready::ready;
pub use request::{Deadline, Request, Response};
pub use session::{Event, Events, Message, MessageKind, SendMode, Session, SessionState};
pub use stream::{Limit, Stream, StreamOptions};

/// The README's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// ABI_VERSION is the `LIFELINE_ABI_VERSION` this crate was written for;
/// [`Client::new`] refuses a library of another version.
pub const ABI_VERSION: u32 = ffi::ABI_VERSION;

/// abi_version is the ABI version of the loaded library.
pub fn abi_version() -> u32 {
    // SAFETY: no arguments, no state.
    unsafe { ffi::lifeline_abi_version() }
}

/// version is the loaded library's version, e.g. "0.1.0".
pub fn version() -> &'static str {
    // SAFETY: a static NUL-terminated string, never NULL, never freed.
    unsafe { CStr::from_ptr(ffi::lifeline_version()) }
        .to_str()
        .unwrap_or("")
}
