// The public C functions of lifeline.h.
//
// Each checks, before anything enters the Go runtime, that it is not
// running in a child of fork() (the child has none of the runtime's
// threads, and a call that needs them would hang: golang/go#14767), then
// calls its Go export (lifelinego_*). The functions that only free memory,
// name status codes or report versions are plain C and work anywhere.
//
// Every allocation handed to the host goes through lifeline_shim_alloc,
// which counts live allocations (reported in the metrics snapshot), so a
// host that forgets a free shows it.

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>
#include "lifeline.h"
#include "_cgo_export.h"

#define LIFELINE_VERSION_STRING "0.1.0"

static pid_t lifeline_pid;
static int64_t lifeline_live;

__attribute__((constructor)) static void lifeline_shim_init(void) { lifeline_pid = getpid(); }

#define HIDDEN __attribute__((visibility("hidden")))

HIDDEN void *lifeline_shim_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p) __atomic_add_fetch(&lifeline_live, 1, __ATOMIC_RELAXED);
    return p;
}

static void lifeline_shim_release(void *p) {
    if (!p) return;
    __atomic_sub_fetch(&lifeline_live, 1, __ATOMIC_RELAXED);
    free(p);
}

HIDDEN int64_t lifeline_shim_live(void) { return __atomic_load_n(&lifeline_live, __ATOMIC_RELAXED); }

static void copy_field(char *dst, size_t cap, const char *src, size_t n) {
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = 0;
}

// lifeline_shim_set_error rewrites a record: the old message is freed, the
// new one (if any) copied. Called by the Go side with Go string bytes that
// are only valid during the call.
HIDDEN void lifeline_shim_set_error(lifeline_error *err, int32_t status, int32_t timeout,
                             const char *phase, size_t phase_len, const char *type, size_t type_len,
                             const char *msg, size_t msg_len) {
    if (!err) return;
    lifeline_shim_release(err->message);
    err->message = NULL;
    err->status = status;
    err->timeout = timeout;
    copy_field(err->phase, sizeof err->phase, phase, phase_len);
    copy_field(err->error_type, sizeof err->error_type, type, type_len);
    if (msg_len) {
        char *m = (char *)lifeline_shim_alloc(msg_len + 1);
        if (m) {
            memcpy(m, msg, msg_len);
            m[msg_len] = 0;
            err->message = m;
        }
    }
}

HIDDEN void lifeline_shim_call(lifeline_callback cb, lifeline_op op, int32_t status, uintptr_t user_data) {
    cb(op, status, (void *)user_data);
}

static int forked(lifeline_error *err) {
    if (getpid() == lifeline_pid) return 0;
    if (err) {
        char msg[160];
        int n = snprintf(msg, sizeof msg,
                         "lifeline: called in a forked child (pid %ld; the library was loaded in pid %ld): "
                         "fork without exec is not supported",
                         (long)getpid(), (long)lifeline_pid);
        if (n < 0) n = 0;
        if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
        lifeline_shim_set_error(err, LIFELINE_E_FORKED, 0, "", 0, "forked", 6, msg, (size_t)n);
    }
    return 1;
}

#define GUARD(err) do { if (forked(err)) return LIFELINE_E_FORKED; } while (0)

const char *lifeline_status_string(int32_t status) {
    switch (status) {
    case LIFELINE_OK: return "LIFELINE_OK: success";
    case LIFELINE_E_INVALID_ARGUMENT: return "LIFELINE_E_INVALID_ARGUMENT: invalid argument";
    case LIFELINE_E_UNKNOWN_KEY: return "LIFELINE_E_UNKNOWN_KEY: unknown configuration key";
    case LIFELINE_E_BAD_VALUE: return "LIFELINE_E_BAD_VALUE: bad configuration value";
    case LIFELINE_E_INVALID_HANDLE: return "LIFELINE_E_INVALID_HANDLE: invalid handle";
    case LIFELINE_E_STATE: return "LIFELINE_E_STATE: not valid in the current state";
    case LIFELINE_E_PENDING: return "LIFELINE_E_PENDING: operation still running";
    case LIFELINE_E_TIMEOUT: return "LIFELINE_E_TIMEOUT: timed out";
    case LIFELINE_E_CANCELED: return "LIFELINE_E_CANCELED: canceled";
    case LIFELINE_E_NETWORK: return "LIFELINE_E_NETWORK: network or protocol failure";
    case LIFELINE_E_TOO_LARGE: return "LIFELINE_E_TOO_LARGE: response too large";
    case LIFELINE_E_CLOSED: return "LIFELINE_E_CLOSED: client closed";
    case LIFELINE_E_FORKED: return "LIFELINE_E_FORKED: called in a forked child";
    case LIFELINE_E_INTERNAL: return "LIFELINE_E_INTERNAL: internal error; library disabled";
    case LIFELINE_E_NO_MEMORY: return "LIFELINE_E_NO_MEMORY: out of memory";
    case LIFELINE_E_UNAVAILABLE: return "LIFELINE_E_UNAVAILABLE: not attempted: upstream known down or load shed";
    case LIFELINE_E_DISCONNECTED: return "LIFELINE_E_DISCONNECTED: websocket session not connected";
    }
    return "unknown status";
}

void lifeline_error_clear(lifeline_error *err) {
    if (!err) return;
    lifeline_shim_release(err->message);
    memset(err, 0, sizeof *err);
}

uint32_t lifeline_abi_version(void) { return LIFELINE_ABI_VERSION; }

const char *lifeline_version(void) { return LIFELINE_VERSION_STRING; }

void lifeline_free(void *p) { lifeline_shim_release(p); }

void lifeline_response_free(lifeline_response *resp) { lifeline_shim_release(resp); }

int32_t lifeline_client_new(lifeline_client *out, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_new(out, err);
}

int32_t lifeline_client_set_int(lifeline_client c, const char *key, int64_t value, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_set_int(c, (char *)key, value, err);
}

int32_t lifeline_client_set_double(lifeline_client c, const char *key, double value, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_set_double(c, (char *)key, value, err);
}

int32_t lifeline_client_set_bool(lifeline_client c, const char *key, int value, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_set_bool(c, (char *)key, value, err);
}

int32_t lifeline_client_set_string(lifeline_client c, const char *key, const char *value, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_set_string(c, (char *)key, (char *)value, err);
}

int32_t lifeline_client_configure(lifeline_client c, const char *json, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_configure(c, (char *)json, err);
}

int32_t lifeline_client_config_json(lifeline_client c, char **out, size_t *len, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_config_json(c, out, len, err);
}

int32_t lifeline_client_metrics_json(lifeline_client c, char **out, size_t *len, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_metrics_json(c, out, len, err);
}

int32_t lifeline_client_close(lifeline_client c, lifeline_error *err) {
    GUARD(err);
    return lifelinego_client_close(c, err);
}

int32_t lifeline_request_do(lifeline_client c, const lifeline_request *req, lifeline_response **out,
                            lifeline_error *err) {
    GUARD(err);
    return lifelinego_request_do(c, (lifeline_request *)req, out, err);
}

int32_t lifeline_request_start(lifeline_client c, const lifeline_request *req, lifeline_callback callback,
                               void *user_data, lifeline_op *op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_request_start(c, (lifeline_request *)req, callback, (uintptr_t)user_data, op, err);
}

int32_t lifeline_dial(lifeline_client c, const char *network, const char *address, int64_t deadline_ms, int *fd,
                      lifeline_error *err) {
    GUARD(err);
    return lifelinego_dial(c, (char *)network, (char *)address, deadline_ms, fd, err);
}

int32_t lifeline_dial_start(lifeline_client c, const char *network, const char *address, int64_t deadline_ms,
                            lifeline_callback callback, void *user_data, lifeline_op *op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_dial_start(c, (char *)network, (char *)address, deadline_ms, callback,
                                 (uintptr_t)user_data, op, err);
}

int32_t lifeline_op_wait(lifeline_op op, int64_t timeout_ms, lifeline_error *err) {
    GUARD(err);
    return lifelinego_op_wait(op, timeout_ms, err);
}

int32_t lifeline_op_poll(lifeline_op op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_op_wait(op, 0, err);
}

int32_t lifeline_op_cancel(lifeline_op op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_op_cancel(op, err);
}

int32_t lifeline_op_response(lifeline_op op, lifeline_response **out, lifeline_error *err) {
    GUARD(err);
    return lifelinego_op_response(op, out, err);
}

int32_t lifeline_op_fd(lifeline_op op, int *fd, lifeline_error *err) {
    GUARD(err);
    return lifelinego_op_fd(op, fd, err);
}

int32_t lifeline_op_free(lifeline_op op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_op_free(op, err);
}

/* Streamed bodies (stream.go, exports_stream.go). */

int32_t lifeline_request_start_stream(lifeline_client c, const lifeline_request *req, uint32_t flags,
                                      const lifeline_call_options *opts, lifeline_callback callback,
                                      void *user_data, lifeline_op *op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_request_start_stream(c, (lifeline_request *)req, flags, (lifeline_call_options *)opts,
                                           callback, (uintptr_t)user_data, op, err);
}

int32_t lifeline_body_read(lifeline_op op, uint8_t *buf, size_t cap, int64_t timeout_ms, size_t *n,
                           lifeline_error *err) {
    GUARD(err);
    return lifelinego_body_read(op, buf, cap, timeout_ms, n, err);
}

int32_t lifeline_body_available(lifeline_op op, size_t *n, int *ended, lifeline_error *err) {
    GUARD(err);
    return lifelinego_body_available(op, n, ended, err);
}

int32_t lifeline_body_write(lifeline_op op, const uint8_t *data, size_t len, int64_t timeout_ms, size_t *n,
                            lifeline_error *err) {
    GUARD(err);
    return lifelinego_body_write(op, (uint8_t *)data, len, timeout_ms, n, err);
}

int32_t lifeline_body_close_write(lifeline_op op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_body_close_write(op, err);
}

int32_t lifeline_body_fd(lifeline_op op, int *fd, lifeline_error *err) {
    GUARD(err);
    return lifelinego_body_fd(op, fd, err);
}

/* When the upstream is down or drowning (exports_upstream.go). */

int32_t lifeline_request_start_opts(lifeline_client c, const lifeline_request *req, uint32_t flags,
                                    const lifeline_call_options *opts, lifeline_callback callback,
                                    void *user_data, lifeline_op *op, lifeline_error *err) {
    GUARD(err);
    return lifelinego_request_start_opts(c, (lifeline_request *)req, flags, (lifeline_call_options *)opts,
                                         callback, (uintptr_t)user_data, op, err);
}
