//! Raw declarations of cshim/lifeline.h (ABI version 2). Everything here is
//! unsafe to use directly; the rest of the crate wraps it.
#![allow(non_camel_case_types)]
#![allow(dead_code)] // the whole header is declared, used or not

use std::os::raw::{c_char, c_int, c_void};

pub const ABI_VERSION: u32 = 2;

pub const OK: i32 = 0;
pub const E_PENDING: i32 = 6;
pub const E_TIMEOUT: i32 = 7;
pub const E_CLOSED: i32 = 11;

pub type lifeline_client = u64;
pub type lifeline_op = u64;
pub type lifeline_session = u64;

#[repr(C)]
pub struct lifeline_error {
    pub status: i32,
    pub timeout: i32,
    pub phase: [c_char; 16],
    pub error_type: [c_char; 32],
    pub message: *mut c_char,
}

#[repr(C)]
pub struct lifeline_header {
    pub name: *const c_char,
    pub value: *const c_char,
}

#[repr(C)]
pub struct lifeline_request {
    pub method: *const c_char,
    pub url: *const c_char,
    pub headers: *const lifeline_header,
    pub header_count: i64,
    pub body: *const u8,
    pub body_len: i64,
    pub deadline_ms: i64,
}

#[repr(C)]
pub struct lifeline_response {
    pub status: i32,
    pub proto_major: i32,
    pub proto_minor: i32,
    pub reserved: i32,
    pub headers: *mut lifeline_header,
    pub header_count: i64,
    pub body: *mut u8,
    pub body_len: i64,
}

pub const STREAM_UPLOAD: u32 = 1;

#[repr(C)]
pub struct lifeline_call_options {
    pub first_byte_timeout_ms: i64,
    pub stall_timeout_ms: i64,
    pub max_attempts: i64,
}

pub const EVENT_CONNECT: i32 = 1;
pub const EVENT_CONNECTED: i32 = 2;
pub const EVENT_MESSAGE: i32 = 3;
pub const EVENT_DISCONNECTED: i32 = 4;
pub const EVENT_STATE: i32 = 5;
pub const EVENT_CLOSED: i32 = 6;
pub const MESSAGE_TEXT: i32 = 1;
pub const MESSAGE_BINARY: i32 = 2;
pub const SEND_WHEN_CONNECTED: u32 = 1;
pub const SEND_ON_CONNECT: u32 = 2;

#[repr(C)]
pub struct lifeline_event {
    pub kind: i32,
    pub state: i32,
    pub message_type: i32,
    pub reserved: i32,
    pub connection: u64,
    pub data: *const u8,
    pub len: i64,
    pub cause: lifeline_error,
}

pub type lifeline_callback =
    Option<unsafe extern "C" fn(op: lifeline_op, status: i32, user_data: *mut c_void)>;

extern "C" {
    pub fn lifeline_status_string(status: i32) -> *const c_char;
    pub fn lifeline_error_clear(err: *mut lifeline_error);
    pub fn lifeline_abi_version() -> u32;
    pub fn lifeline_version() -> *const c_char;
    pub fn lifeline_free(p: *mut c_void);

    pub fn lifeline_client_new(out: *mut lifeline_client, err: *mut lifeline_error) -> i32;
    pub fn lifeline_client_set_int(
        c: lifeline_client,
        key: *const c_char,
        value: i64,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_set_double(
        c: lifeline_client,
        key: *const c_char,
        value: f64,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_set_bool(
        c: lifeline_client,
        key: *const c_char,
        value: c_int,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_set_string(
        c: lifeline_client,
        key: *const c_char,
        value: *const c_char,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_configure(
        c: lifeline_client,
        json: *const c_char,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_config_json(
        c: lifeline_client,
        out: *mut *mut c_char,
        len: *mut usize,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_metrics_json(
        c: lifeline_client,
        out: *mut *mut c_char,
        len: *mut usize,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_client_close(c: lifeline_client, err: *mut lifeline_error) -> i32;

    pub fn lifeline_response_free(resp: *mut lifeline_response);
    pub fn lifeline_request_do(
        c: lifeline_client,
        req: *const lifeline_request,
        out: *mut *mut lifeline_response,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_request_start(
        c: lifeline_client,
        req: *const lifeline_request,
        callback: lifeline_callback,
        user_data: *mut c_void,
        op: *mut lifeline_op,
        err: *mut lifeline_error,
    ) -> i32;

    pub fn lifeline_dial(
        c: lifeline_client,
        network: *const c_char,
        address: *const c_char,
        deadline_ms: i64,
        fd: *mut c_int,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_dial_start(
        c: lifeline_client,
        network: *const c_char,
        address: *const c_char,
        deadline_ms: i64,
        callback: lifeline_callback,
        user_data: *mut c_void,
        op: *mut lifeline_op,
        err: *mut lifeline_error,
    ) -> i32;

    pub fn lifeline_op_wait(op: lifeline_op, timeout_ms: i64, err: *mut lifeline_error) -> i32;
    pub fn lifeline_op_poll(op: lifeline_op, err: *mut lifeline_error) -> i32;
    pub fn lifeline_op_cancel(op: lifeline_op, err: *mut lifeline_error) -> i32;
    pub fn lifeline_op_response(
        op: lifeline_op,
        out: *mut *mut lifeline_response,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_op_fd(op: lifeline_op, fd: *mut c_int, err: *mut lifeline_error) -> i32;
    pub fn lifeline_op_free(op: lifeline_op, err: *mut lifeline_error) -> i32;

    // Streamed bodies (ABI 2).
    pub fn lifeline_request_start_stream(
        c: lifeline_client,
        req: *const lifeline_request,
        flags: u32,
        opts: *const lifeline_call_options,
        callback: lifeline_callback,
        user_data: *mut c_void,
        op: *mut lifeline_op,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_body_read(
        op: lifeline_op,
        buf: *mut u8,
        cap: usize,
        timeout_ms: i64,
        n: *mut usize,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_body_available(
        op: lifeline_op,
        n: *mut usize,
        ended: *mut c_int,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_body_fd(op: lifeline_op, fd: *mut c_int, err: *mut lifeline_error) -> i32;
    pub fn lifeline_body_write(
        op: lifeline_op,
        data: *const u8,
        len: usize,
        timeout_ms: i64,
        n: *mut usize,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_body_close_write(op: lifeline_op, err: *mut lifeline_error) -> i32;

    // Websocket sessions (ABI 2).
    pub fn lifeline_event_free(ev: *mut lifeline_event);
    pub fn lifeline_session_new(
        c: lifeline_client,
        url: *const c_char,
        headers: *const lifeline_header,
        header_count: i64,
        config: *const c_char,
        out: *mut lifeline_session,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_next_event(
        s: lifeline_session,
        timeout_ms: i64,
        ev: *mut *mut lifeline_event,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_event_fd(
        s: lifeline_session,
        fd: *mut c_int,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_send(
        s: lifeline_session,
        kind: i32,
        buf: *const u8,
        len: i64,
        timeout_ms: i64,
        flags: u32,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_wait_connected(
        s: lifeline_session,
        timeout_ms: i64,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_set_header(
        s: lifeline_session,
        name: *const c_char,
        value: *const c_char,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_ready(
        s: lifeline_session,
        connection: u64,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_state(
        s: lifeline_session,
        state: *mut i32,
        err: *mut lifeline_error,
    ) -> i32;
    pub fn lifeline_session_close(s: lifeline_session, err: *mut lifeline_error) -> i32;
    pub fn lifeline_session_free(s: lifeline_session, err: *mut lifeline_error) -> i32;
}
