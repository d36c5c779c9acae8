//! Session: a websocket session (ABI 2) — one logical connection to a
//! ws:// or wss:// URL kept up across failures, its events taken in order.

use std::ffi::CString;
use std::os::raw::c_int;
use std::os::unix::io::BorrowedFd;
use std::ptr;
use std::time::Duration;

use crate::client::Client;
#[allow(unused_imports)] // doc links
use crate::error::Status;
use crate::error::{call, cstring, Error, Record, Result};
use crate::ffi;
use crate::stream::wait_ms;

/// SessionState is a session's state ([`Session::state`], [`Event::State`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// A handshake or the connect step is in progress.
    Connecting,
    /// Sends go out, messages come in.
    Connected,
    /// Waiting out the backoff before the next dial.
    Disconnected,
    /// Final.
    Closed,
}

impl SessionState {
    fn from_code(code: i32) -> SessionState {
        match code {
            0 => SessionState::Connecting,
            1 => SessionState::Connected,
            2 => SessionState::Disconnected,
            _ => SessionState::Closed,
        }
    }
}

/// Message is the payload of a data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (UTF-8, as RFC 6455 requires of it).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// Event is one thing that happened to a session, in the order it
/// happened; owned data (the library's event is copied and freed). Every
/// state change is exactly one event: `Connected`, `Closed`, or `State`
/// (connecting, disconnected). Connections are numbered 1, 2, ... in dial
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// With `"on_connect": true`: this connection is open but not yet
    /// reported connected. Send what it needs first with
    /// [`SendMode::OnConnect`] (authenticate, resubscribe), then call
    /// [`Session::ready`] with it, within `handshake_timeout_ms`.
    Connect {
        /// The connection held in its connect step.
        connection: u64,
    },
    /// The connection is up.
    Connected {
        /// The connection now in use.
        connection: u64,
    },
    /// A data message, in the order the server sent it, across connections
    /// (what the server sent while no connection was up is not seen).
    Message {
        /// The connection it came on.
        connection: u64,
        /// Its bytes.
        message: Message,
    },
    /// The connection was lost (a `State` event, disconnected, came just
    /// before): `cause` says why — status Timeout or Network, phase (e.g.
    /// "websocket"), error_type (e.g. "pong_timeout", "close_1001",
    /// "connection_reset"). A failed dial gives [`Event::DialFailed`]
    /// instead.
    Disconnected {
        /// The connection lost.
        connection: u64,
        /// Why.
        cause: Error,
    },
    /// The state became connecting, or disconnected after a lost
    /// connection (the [`Event::Disconnected`] that follows says why).
    State(SessionState),
    /// The state became disconnected because a dial failed (the session
    /// redials after its backoff): `cause` says why — phase "dns",
    /// "connect", "tls" (the dial), "handshake" (the upgrade's answer:
    /// error_type "handshake_timeout", "http_503", ...) or "connect_step".
    DialFailed {
        /// Why the dial failed.
        cause: Error,
    },
    /// Final, nothing follows: after [`Session::close`], the client's
    /// close, or a refusal of the upgrade for good (a 3xx/4xx other than
    /// 408 and 429; `cause` then holds it, error_type e.g. "http_401").
    Closed {
        /// Why it ended, when not by a close of the host's.
        cause: Option<Error>,
    },
}

impl Event {
    /// from_raw copies a library event and frees it (also on panic).
    ///
    /// # Safety
    /// p is an event the library handed over, not yet freed.
    unsafe fn from_raw(p: *mut ffi::lifeline_event) -> Event {
        struct Free(*mut ffi::lifeline_event);
        impl Drop for Free {
            fn drop(&mut self) {
                // SAFETY: ours, freed exactly once, everything in it too.
                unsafe { ffi::lifeline_event_free(self.0) }
            }
        }
        let guard = Free(p);
        let ev = &*guard.0;
        let cause = || {
            if ev.cause.status == 0 {
                None
            } else {
                Some(Error::from_record(ev.cause.status, &ev.cause))
            }
        };
        let connection = ev.connection;
        match ev.kind {
            ffi::EVENT_CONNECT => Event::Connect { connection },
            ffi::EVENT_CONNECTED => Event::Connected { connection },
            ffi::EVENT_MESSAGE => {
                let bytes = if ev.len > 0 {
                    std::slice::from_raw_parts(ev.data, ev.len as usize).to_vec()
                } else {
                    Vec::new()
                };
                let message = if ev.message_type == ffi::MESSAGE_TEXT {
                    match String::from_utf8(bytes) {
                        Ok(s) => Message::Text(s),
                        Err(e) => Message::Binary(e.into_bytes()),
                    }
                } else {
                    Message::Binary(bytes)
                };
                Event::Message {
                    connection,
                    message,
                }
            }
            ffi::EVENT_DISCONNECTED => Event::Disconnected {
                connection,
                cause: cause().unwrap_or_else(|| {
                    Error::state("lifeline: connection lost without a cause".into())
                }),
            },
            ffi::EVENT_CLOSED => Event::Closed { cause: cause() },
            // A STATE event with a cause: a failed dial (ABI 2 library of
            // issue 22 on; before, its STATE carried none).
            ffi::EVENT_STATE if ev.cause.status != 0 => match cause() {
                Some(cause) => Event::DialFailed { cause },
                None => Event::State(SessionState::from_code(ev.state)),
            },
            // STATE, and kinds of a newer library: the state they report.
            _ => Event::State(SessionState::from_code(ev.state)),
        }
    }
}

/// MessageKind is the type of a message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Text: the bytes must be UTF-8 (else [`Status::InvalidArgument`]).
    Text,
    /// Binary.
    Binary,
}

/// SendMode says what a send does while the session has no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMode {
    /// Fail at once with [`Status::Disconnected`] (nothing is queued, so
    /// nothing is replayed to a server that moved on). The default.
    #[default]
    Now,
    /// Wait (within the send's timeout) until connected — after the
    /// connect step — then write.
    WhenConnected,
    /// Write on the connection of the connect step in progress (between
    /// [`Event::Connect`] and [`Session::ready`]); [`Status::State`] when
    /// none is.
    OnConnect,
}

/// Session is a websocket session of a [`Client`]: it connects at once, in
/// the background, and keeps one logical connection up — every handshake
/// bounded (DNS, connect, TLS raced across addresses, the upgrade's
/// answer: `handshake_timeout_ms`), pings to see a dead peer, redials with
/// jittered backoff (the client's `retry.*` pace) — and reports everything
/// as [`Event`]s, in order, through [`Session::next_event`] or, for an
/// event loop, the readiness descriptor [`Session::event_fd`].
///
/// Thread safety: `Send + Sync`. The ABI allows every session call from
/// any thread, concurrently, on the same handle: sends are serialised by
/// the library, several threads taking events each get distinct ones in
/// order of taking, and [`Session::close`] from any thread wakes them all.
/// Only the free is exclusive, and Rust's borrows give it that: `Drop`
/// runs when no thread holds a `&Session` any more. Dropping closes the
/// session (if not closed), drops the events not taken, closes the event
/// descriptor and frees the handle, exactly once. A Session does not
/// borrow its client: closing the client closes the session (its last
/// event is then `Closed`).
pub struct Session {
    handle: ffi::lifeline_session,
}

impl Session {
    /// new creates a session of `client` to `url` (ws:// or wss://) with
    /// handshake `headers` sent on every dial, and `config`, "" or a JSON
    /// object of session keys (lifeline.h, `lifeline_session_new`):
    /// handshake_timeout_ms (10000), ping_interval_ms (15000),
    /// pong_timeout_ms (10000), write_timeout_ms (10000), stable_after_ms,
    /// max_message_bytes, queue_max_events (1024), queue_max_bytes,
    /// on_connect (false). It freezes the client's configuration; the
    /// client's dial.*, tls.*, transport.proxy and retry.* keys apply to
    /// every dial. Upgrade, Connection and Sec-WebSocket-* headers are the
    /// handshake's own and refused.
    pub fn new(
        client: &Client,
        url: &str,
        headers: &[(&str, &str)],
        config: &str,
    ) -> Result<Session> {
        let url = cstring(url, "url")?;
        let config = cstring(config, "config")?;
        let mut strings: Vec<(CString, CString)> = Vec::with_capacity(headers.len());
        for (n, v) in headers {
            strings.push((
                cstring(n, "header name")?,
                cstring(v, &format!("value of header {:?}", n))?,
            ));
        }
        let raw: Vec<ffi::lifeline_header> = strings
            .iter()
            .map(|(n, v)| ffi::lifeline_header {
                name: n.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        let mut handle = 0;
        call(|err| unsafe {
            ffi::lifeline_session_new(
                client.handle(),
                url.as_ptr(),
                if raw.is_empty() {
                    ptr::null()
                } else {
                    raw.as_ptr()
                },
                raw.len() as i64,
                config.as_ptr(),
                &mut handle,
                err,
            )
        })?;
        Ok(Session { handle })
    }

    /// handle is the library's handle of this session (for logs).
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// next_event takes the oldest event, waiting at most `timeout` (None:
    /// until one comes; zero: no wait). `Ok(None)` when none came in time;
    /// [`Status::Closed`] once the [`Event::Closed`] was taken (nothing
    /// more will come). With several threads taking, each event goes to
    /// one of them.
    pub fn next_event(&self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let mut ev: *mut ffi::lifeline_event = ptr::null_mut();
        let mut rec = Record::new();
        // SAFETY: plain call on our handle; ev receives an event we own.
        let st = unsafe {
            ffi::lifeline_session_next_event(self.handle, wait_ms(timeout), &mut ev, rec.ptr())
        };
        match st {
            ffi::OK => Ok(Some(unsafe { Event::from_raw(ev) })),
            ffi::E_PENDING => Ok(None),
            _ => rec.check(st).map(|_| None),
        }
    }

    /// events iterates over the events until [`Event::Closed`] (included),
    /// blocking for each.
    pub fn events(&self) -> Events<'_> {
        Events {
            session: self,
            done: false,
        }
    }

    /// send sends one message of `kind` — `data` is copied before it
    /// returns — bounded by the session's write_timeout_ms and by
    /// `timeout` (None: write_timeout_ms alone; with
    /// [`SendMode::WhenConnected`] also the wait for a connection).
    /// Sends from many threads are serialised; a message is written at
    /// most once. Errors: [`Status::Disconnected`] (no connection, or it
    /// broke under the write — `is_timeout` when the write timed out; the
    /// connection is then replaced), [`Status::Timeout`] (waited `timeout`
    /// for a connection or other senders; nothing written),
    /// [`Status::State`] (OnConnect without a connect step),
    /// [`Status::Closed`], [`Status::InvalidArgument`] (text not UTF-8).
    pub fn send(
        &self,
        kind: MessageKind,
        data: &[u8],
        timeout: Option<Duration>,
        mode: SendMode,
    ) -> Result<()> {
        let kind = match kind {
            MessageKind::Text => ffi::MESSAGE_TEXT,
            MessageKind::Binary => ffi::MESSAGE_BINARY,
        };
        let flags = match mode {
            SendMode::Now => 0,
            SendMode::WhenConnected => ffi::SEND_WHEN_CONNECTED,
            SendMode::OnConnect => ffi::SEND_ON_CONNECT,
        };
        let ms = match timeout {
            None => 0,
            Some(d) => crate::request::Deadline::After(d).millis(),
        };
        call(|err| unsafe {
            ffi::lifeline_session_send(
                self.handle,
                kind,
                if data.is_empty() {
                    ptr::null()
                } else {
                    data.as_ptr()
                },
                data.len() as i64,
                ms,
                flags,
                err,
            )
        })
    }

    /// send_text sends a text message now ([`SendMode::Now`], the write
    /// timeout).
    pub fn send_text(&self, text: &str) -> Result<()> {
        self.send(MessageKind::Text, text.as_bytes(), None, SendMode::Now)
    }

    /// send_binary sends a binary message now ([`SendMode::Now`], the
    /// write timeout).
    pub fn send_binary(&self, data: &[u8]) -> Result<()> {
        self.send(MessageKind::Binary, data, None, SendMode::Now)
    }

    /// wait_connected waits until the session is connected (after the
    /// connect step), at most `timeout` (None: no limit; zero: no wait).
    /// It may be lost again by the time you act. [`Status::Timeout`]
    /// (phase "wait") when the time passed; [`Status::Closed`] when the
    /// session closed before or meanwhile (at once).
    pub fn wait_connected(&self, timeout: Option<Duration>) -> Result<()> {
        call(|err| unsafe {
            ffi::lifeline_session_wait_connected(self.handle, wait_ms(timeout), err)
        })
    }

    /// ready ends the connect step of `connection` (from its
    /// [`Event::Connect`]): the session reports it connected.
    /// [`Status::State`] when that step is not in progress (on_connect is
    /// off, it timed out, or the connection was lost: a later Connect
    /// event brings the next step).
    pub fn ready(&self, connection: u64) -> Result<()> {
        call(|err| unsafe { ffi::lifeline_session_ready(self.handle, connection, err) })
    }

    /// set_header sets a handshake header for every dial from the next
    /// one on (a fresh token: set it when you refresh it), replacing the
    /// values given at creation for that name; None removes the name.
    pub fn set_header(&self, name: &str, value: Option<&str>) -> Result<()> {
        let name = cstring(name, "header name")?;
        let value = match value {
            Some(v) => Some(cstring(v, "header value")?),
            None => None,
        };
        call(|err| unsafe {
            ffi::lifeline_session_set_header(
                self.handle,
                name.as_ptr(),
                value.as_ref().map_or(ptr::null(), |v| v.as_ptr()),
                err,
            )
        })
    }

    /// state is the session's current state.
    pub fn state(&self) -> Result<SessionState> {
        let mut st = 0i32;
        call(|err| unsafe { ffi::lifeline_session_state(self.handle, &mut st, err) })?;
        Ok(SessionState::from_code(st))
    }

    /// close ends the session within 100 ms in every state, from any
    /// thread, any number of times: the connection gets a close frame (if
    /// it can be written within 50 ms), dials and waits are cancelled, and
    /// every thread in a send or [`Session::wait_connected`] returns
    /// [`Status::Closed`]. [`Event::Closed`] is queued last; the Session
    /// stays usable for taking the events.
    pub fn close(&self) -> Result<()> {
        call(|err| unsafe { ffi::lifeline_session_close(self.handle, err) })
    }

    /// event_fd is a descriptor readable while an event waits
    /// (level-triggered; after the Closed event was taken it stays
    /// readable), for poll, epoll or an async reactor: when it is readable
    /// take events with `next_event(Some(Duration::ZERO))` until `Ok(None)`.
    /// The library's: never read or close it; it lives as long as the
    /// Session (the borrow says so), so stop polling it before the drop.
    pub fn event_fd(&self) -> Result<BorrowedFd<'_>> {
        let mut fd: c_int = -1;
        call(|err| unsafe { ffi::lifeline_session_event_fd(self.handle, &mut fd, err) })?;
        // SAFETY: open until lifeline_session_free, which only Drop calls,
        // after every borrow of self ended.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The only possible errors are a poisoned or forked library.
        let _ = call(|err| unsafe { ffi::lifeline_session_free(self.handle, err) });
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handle", &self.handle)
            .finish()
    }
}

/// Events iterates over a session's events until [`Event::Closed`]
/// (included), each taken with [`Session::next_event`] without a timeout.
/// A failure to take one ends it (after the Closed event, or an error of
/// the library) and is dropped: use `next_event` to see it.
#[derive(Debug)]
pub struct Events<'a> {
    session: &'a Session,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            match self.session.next_event(None) {
                Ok(Some(ev)) => {
                    if let Event::Closed { .. } = ev {
                        self.done = true;
                    }
                    return Some(ev);
                }
                Ok(None) => continue,
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}
