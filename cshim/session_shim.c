// The public C functions of lifeline.h's websocket sessions: like those of
// shim.c, each checks for a forked child before anything enters the Go
// runtime, then calls its Go export (exports_session.go).

#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "lifeline.h"
#include "_cgo_export.h"

void lifeline_shim_set_error(lifeline_error *err, int32_t status, int32_t timeout, const char *phase,
                             size_t phase_len, const char *type, size_t type_len, const char *msg,
                             size_t msg_len);

static pid_t session_pid;

__attribute__((constructor)) static void session_shim_init(void) { session_pid = getpid(); }

static int session_forked(lifeline_error *err) {
    if (getpid() == session_pid) return 0;
    if (err) {
        static const char msg[] = "lifeline: called in a forked child: fork without exec is not supported";
        lifeline_shim_set_error(err, LIFELINE_E_FORKED, 0, "", 0, "forked", 6, msg, sizeof msg - 1);
    }
    return 1;
}

#define SGUARD(err) do { if (session_forked(err)) return LIFELINE_E_FORKED; } while (0)

#define HIDDEN __attribute__((visibility("hidden")))

HIDDEN void lifeline_shim_session_call(lifeline_session_callback cb, lifeline_session s, lifeline_event *ev,
                                       uintptr_t user_data) {
    cb(s, ev, (void *)user_data);
}

void lifeline_event_free(lifeline_event *ev) {
    if (!ev) return;
    lifeline_error_clear(&ev->cause);
    lifeline_free(ev);
}

int32_t lifeline_session_new(lifeline_client c, const char *url, const lifeline_header *headers,
                             int64_t header_count, const char *config, lifeline_session *out,
                             lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_new(c, (char *)url, (lifeline_header *)headers, header_count, (char *)config, out, err);
}

int32_t lifeline_session_next_event(lifeline_session s, int64_t timeout_ms, lifeline_event **ev,
                                    lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_next_event(s, timeout_ms, ev, err);
}

int32_t lifeline_session_event_fd(lifeline_session s, int *fd, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_event_fd(s, fd, err);
}

int32_t lifeline_session_send(lifeline_session s, int32_t type, const uint8_t *buf, int64_t len,
                              int64_t timeout_ms, uint32_t flags, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_send(s, type, (uint8_t *)buf, len, timeout_ms, flags, err);
}

int32_t lifeline_session_wait_connected(lifeline_session s, int64_t timeout_ms, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_wait_connected(s, timeout_ms, err);
}

int32_t lifeline_session_set_header(lifeline_session s, const char *name, const char *value,
                                    lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_set_header(s, (char *)name, (char *)value, err);
}

int32_t lifeline_session_ready(lifeline_session s, uint64_t connection, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_ready(s, connection, err);
}

int32_t lifeline_session_state(lifeline_session s, int32_t *state, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_state(s, state, err);
}

int32_t lifeline_session_close(lifeline_session s, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_close(s, err);
}

int32_t lifeline_session_free(lifeline_session s, lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_free(s, err);
}

int32_t lifeline_session_set_callback(lifeline_session s, lifeline_session_callback callback, void *user_data,
                                      lifeline_error *err) {
    SGUARD(err);
    return lifelinego_session_set_callback(s, callback, (uintptr_t)user_data, err);
}
