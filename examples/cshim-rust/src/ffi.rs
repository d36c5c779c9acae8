//! Raw declarations of cshim/lifeline.h (ABI version 1). Everything here is
//! unsafe to use directly; the rest of the crate wraps it.
#![allow(non_camel_case_types)]
#![allow(dead_code)] // the whole header is declared, used or not

use std::os::raw::{c_char, c_int, c_void};

pub const ABI_VERSION: u32 = 1;

pub const OK: i32 = 0;
pub const E_PENDING: i32 = 6;

pub type lifeline_client = u64;
pub type lifeline_op = u64;

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
}
