/*
 * lifeline.h — the C ABI of lifeline, a network client core that never hangs.
 *
 * lifeline is written in Go. This header is the whole public interface of
 * liblifeline.so (go build -buildmode=c-shared) and liblifeline.a
 * (-buildmode=c-archive). It compiles as C99 and as C++.
 *
 * WHAT YOU GET
 *   - HTTP requests (HTTP/1.1 and HTTP/2, TLS) in which every phase has a
 *     finite limit: DNS, TCP connect, TLS handshake, the first byte of the
 *     response, every read of the body, and a total deadline per request.
 *     Addresses are raced (Happy Eyeballs), a lone address races itself,
 *     idempotent requests are retried inside a budget.
 *   - Raw TCP and TLS dials with the same limits, handing you a file
 *     descriptor.
 *   - Streamed bodies (ABI 2): a response read in pieces (downloads,
 *     server-sent events, long polls) and an upload written in pieces,
 *     each wait bounded, the stall limit still applying.
 *   - Websocket sessions (ABI 2): one logical connection kept up across
 *     failures, events delivered in order through a queue or an fd.
 *   - Fail fast and load shedding (on by default; the status
 *     LIFELINE_E_UNAVAILABLE, and lifeline_request_start_opts with
 *     LIFELINE_CALL_WAIT_FOR_READY in ABI 3): a request to an upstream known
 *     down fails in microseconds instead of each caller waiting out its
 *     connect timeouts, and a drowning upstream gets room to recover.
 *   - Blocking calls, and asynchronous operations you can wait on (with a
 *     timeout), poll, or be called back for; cancel from any thread.
 *   - A JSON snapshot of a client's metrics and of the health of the
 *     addresses it talked to.
 *
 * CONVENTIONS
 *   Status. Every function that can fail returns an int32_t status:
 *     LIFELINE_OK (0) or one of the LIFELINE_E_* codes below. Nothing is
 *     ever reported through errno, and no function aborts or exits the
 *     process on bad input.
 *
 *   Error record. Functions that can fail take a `lifeline_error *err` last.
 *     It may be NULL (you then get the status code only). The record is
 *     owned by the caller (usually on the stack); initialize it once with
 *     LIFELINE_ERROR_INIT (all zeros). Every call that takes it rewrites it:
 *     on success it is cleared, on failure it holds the status, the phase,
 *     whether a time limit caused the failure, a class and a message. A
 *     message left by an earlier call is freed by the library before it is
 *     overwritten, so one record can be reused for any number of calls;
 *     call lifeline_error_clear() when you are done with it. Never copy a
 *     record that holds a message and clear both copies.
 *
 *   Handles. Clients and operations are opaque 64-bit integers taken from
 *     the library's own table, never pointers. 0 is never a valid handle.
 *     Handles are below 2^53 (they survive a trip through a double), carry
 *     random bits and are never reused: a handle that is unknown, already freed, forged, or
 *     of the wrong kind (an operation passed as a client) gets
 *     LIFELINE_E_INVALID_HANDLE, never a crash.
 *
 *   Strings. Every `const char *` argument is NUL-terminated UTF-8; invalid
 *     UTF-8 gets LIFELINE_E_INVALID_ARGUMENT naming the argument. The
 *     library copies everything it needs before returning: your buffers may
 *     be freed as soon as a call returns, even for asynchronous operations.
 *
 *   Memory. Every pointer the library returns to you is yours and has
 *     exactly one matching free function: lifeline_response_free() for a
 *     response, lifeline_free() for strings (JSON documents),
 *     lifeline_error_clear() for the message inside an error record, and
 *     lifeline_event_free() for a session's event.
 *     Pointers documented as static are never freed. File descriptors the
 *     library hands you (lifeline_dial, lifeline_op_fd) are yours to
 *     close(); the readiness descriptors of lifeline_session_event_fd and
 *     lifeline_body_fd stay the library's (poll them, never close them).
 *     The library never keeps a
 *     pointer you passed it after the call returns (except user_data, which
 *     it only hands back to your callback and never dereferences).
 *
 *   Threads. Every function may be called from any thread, concurrently,
 *     with the same or different handles. Nothing needs a global init.
 *     Completion callbacks run on threads owned by the library (see
 *     lifeline_callback).
 *
 *   Durations are milliseconds (int64_t). In configuration, 0 means the
 *   documented default and a negative value turns a limit off where the key
 *   says so.
 *
 * RUNNING GO INSIDE YOUR PROCESS
 *   - One Go runtime per process: load one Go c-shared library (this one or
 *     another) at most once. The library is never unloaded; dlclose() does
 *     not unload it. The runtime starts when the library loads.
 *   - fork() without exec(): the child must not use the library. Every
 *     function called in a forked child returns LIFELINE_E_FORKED at once,
 *     without entering the Go runtime (the child has none of its threads);
 *     only lifeline_free, lifeline_response_free, lifeline_error_clear,
 *     lifeline_status_string, lifeline_version and lifeline_abi_version
 *     work there. Handles from the parent are useless in the child.
 *   - Signals: the Go runtime installs handlers for SIGSEGV, SIGBUS, SIGFPE,
 *     SIGPIPE and SIGURG (goroutine preemption) and runs its threads on
 *     alternate signal stacks. Handlers you install after loading the
 *     library must use SA_ONSTACK. The library never calls signal.Notify
 *     and never installs a handler for SIGINT, SIGTERM or SIGCHLD. Blocking
 *     system calls in your threads may see EINTR (SIGURG).
 *   - GODEBUG, GOMAXPROCS and GOMEMLIMIT are read from the environment at
 *     load time. Memory the library mallocs for you is outside the Go heap
 *     and outside GOMEMLIMIT: free it.
 *   - A panic inside the library is recovered at the boundary: the call
 *     returns LIFELINE_E_INTERNAL and every later call does too (the library
 *     "poisons" itself rather than taking your process down or running on in
 *     an unknown state). In-flight operations still complete and still call
 *     their callbacks.
 */
#ifndef LIFELINE_H
#define LIFELINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version: raised whenever this header grows or changes. It only
 * grows, and a library keeps every call, struct and meaning of the lower
 * versions (2 added websocket sessions and streamed bodies; 3 added
 * lifeline_request_start_opts and LIFELINE_CALL_WAIT_FOR_READY; every call
 * of 1 and 2 works as before). A host written for version N works with any
 * library whose lifeline_abi_version() is >= N: compare it with
 * LIFELINE_ABI_VERSION, the version you compiled against. A status code a
 * host does not know (a newer library's) is a failure like
 * LIFELINE_E_NETWORK: the error record says more. */
#define LIFELINE_ABI_VERSION 3

/* ------------------------------------------------------------------ */
/* Status codes                                                        */
/* ------------------------------------------------------------------ */

enum lifeline_status {
    /* Success. For lifeline_op_wait/poll: the operation has finished. */
    LIFELINE_OK = 0,
    /* A NULL pointer where one is required, a negative length or count,
     * invalid UTF-8, malformed JSON, a bad URL, method, header, network or
     * address. The message names the argument. */
    LIFELINE_E_INVALID_ARGUMENT = 1,
    /* A configuration key the library does not know. The message names it. */
    LIFELINE_E_UNKNOWN_KEY = 2,
    /* A configuration value of the wrong type or out of range. The message
     * names the key and says what is accepted. */
    LIFELINE_E_BAD_VALUE = 3,
    /* The handle is 0, unknown, freed, forged, or of the other kind. */
    LIFELINE_E_INVALID_HANDLE = 4,
    /* The call is not valid in the object's current state: configuring a
     * client after its first request or dial, taking a result twice, taking
     * the result of an operation that has not finished, taking a response
     * from a dial or a descriptor from a request. */
    LIFELINE_E_STATE = 5,
    /* lifeline_op_wait timed out, or lifeline_op_poll found the operation
     * still running. Not a failure of the operation. */
    LIFELINE_E_PENDING = 6,
    /* A time limit ended the operation: a phase limit (err->phase says
     * which) or the operation's total deadline (error_type "deadline";
     * err->phase names the phase it ended, or is "deadline"). */
    LIFELINE_E_TIMEOUT = 7,
    /* The operation was cancelled with lifeline_op_cancel (or freed while
     * running). */
    LIFELINE_E_CANCELED = 8,
    /* A network or protocol failure that was not a timeout: refused,
     * reset, no such host, certificate rejected, malformed response, ...
     * err->phase and err->error_type say more. */
    LIFELINE_E_NETWORK = 9,
    /* The response body exceeded the client's max_response_bytes. */
    LIFELINE_E_TOO_LARGE = 10,
    /* The client was closed while the operation ran (or as it started). */
    LIFELINE_E_CLOSED = 11,
    /* Called in a child of fork() without exec(); see above. */
    LIFELINE_E_FORKED = 12,
    /* A panic was recovered inside the library; the library now refuses
     * every call with this code. */
    LIFELINE_E_INTERNAL = 13,
    /* The library could not allocate memory for a result (the C heap is
     * exhausted); the operation's result is lost. */
    LIFELINE_E_NO_MEMORY = 14,
    /* The request was not attempted (nothing was sent, no connection
     * tried): its upstream (scheme, host and port) is known down —
     * connects failed 5 times in a row, or hang far beyond the host's usual
     * time — (error_type "unavailable"; the message carries the last real
     * failure, its phase and peer), or the client shed it because a growing
     * share of the upstream's answers are overload signals (error_type
     * "shed"). err->phase is "upstream", err->timeout 0. It comes in
     * microseconds while probes test the upstream at about one a second;
     * the first success re-opens it for every request. A request with
     * LIFELINE_CALL_WAIT_FOR_READY waits for the upstream instead (within
     * its deadline). A pause the server asked for (429, Retry-After) that
     * outlasts a request's deadline is not this status: the request gets
     * the server's answer (e.g. 429 with Retry-After), as a response.
     * Off with transport.disable_fail_fast and
     * transport.disable_load_shedding. */
    LIFELINE_E_UNAVAILABLE = 15
};

/* lifeline_status_string returns a static, NUL-terminated English name of a
 * status code ("LIFELINE_E_TIMEOUT: ..."), or "unknown status" for a value
 * not listed above. Never NULL, never to be freed. */
const char *lifeline_status_string(int32_t status);

/* ------------------------------------------------------------------ */
/* Error record                                                        */
/* ------------------------------------------------------------------ */

/* lifeline_error describes the last failure of a call. The caller owns the
 * struct; the library owns nothing in it except `message`, which the
 * library allocates and lifeline_error_clear() (or the next call that gets
 * this record) frees. */
typedef struct lifeline_error {
    /* The status the call returned (LIFELINE_OK after a success). */
    int32_t status;
    /* 1 when a time limit caused the failure (any phase, or the total
     * deadline), else 0. */
    int32_t timeout;
    /* Where it broke, NUL-terminated; "" when not applicable:
     *   "dns"        resolving the host
     *   "connect"    the TCP connect
     *   "tls"        the TLS handshake
     *   "first_byte" waiting for the response (headers) after the request
     *                was written
     *   "stall"      a read of the response body got no byte in time
     *                (error_type "deadline": the total deadline expired
     *                while the body was read)
     *   "upload_stall" the peer took no byte of the request (headers or
     *                body) for transport.stall_timeout_ms
     *   "conn"       waiting for a connection at
     *                transport.max_conns_per_host outlasted
     *                dial.timeout_ms
     *   "attempt"    retry.attempt_timeout_ms cut an attempt
     *   "deadline"   the operation's total deadline expired outside any
     *                phase (e.g. while waiting to retry); when it ended a
     *                phase, that phase is named here and error_type is
     *                "deadline"
     *   "response"   the connection failed after the request was sent
     *                (reset, closed, malformed response)
     *   "canceled"   lifeline_op_cancel, lifeline_op_free or
     *                lifeline_client_close ended the operation
     *   "config"     a configuration call failed
     *   "argument"   an argument was rejected
     *   "internal"   a recovered panic
     *   "upstream"   the request was not attempted: its upstream is known
     *                down or the client shed it (LIFELINE_E_UNAVAILABLE) */
    char phase[16];
    /* A short, stable class for dashboards and branching, NUL-terminated;
     * "" when none: e.g. "connect_refused", "connect_timeout",
     * "tls_certificate", "tls_timeout", "first_byte_timeout",
     * "stall_timeout", "upload_stall_timeout", "conn_timeout", "dns_not_found", "dns_no_addresses", "deadline" (the
     * operation's total deadline, in the phase that err->phase names),
     * "canceled", "too_large", "invalid_argument", "unknown_key",
     * "bad_value", "invalid_handle", "closed", "forked", "internal",
     * "unavailable" and "shed" (LIFELINE_E_UNAVAILABLE). */
    char error_type[32];
    /* A human-readable message (NUL-terminated UTF-8, allocated by the
     * library), or NULL. It names the failing argument, key, phase,
     * address and peer where known; it never contains URL paths, queries or
     * header values. */
    char *message;
} lifeline_error;

/* Initializer for a fresh record: `lifeline_error err = LIFELINE_ERROR_INIT;` */
#ifdef __cplusplus
#define LIFELINE_ERROR_INIT lifeline_error()
#else
#define LIFELINE_ERROR_INIT {0, 0, {0}, {0}, NULL}
#endif

/* lifeline_error_clear frees err->message and zeroes the record. NULL is
 * allowed. Works in a forked child. */
void lifeline_error_clear(lifeline_error *err);

/* ------------------------------------------------------------------ */
/* Version, memory                                                     */
/* ------------------------------------------------------------------ */

/* lifeline_abi_version returns the LIFELINE_ABI_VERSION the library was
 * built with. */
uint32_t lifeline_abi_version(void);

/* lifeline_version returns the library's version, e.g. "0.1.0", as a
 * static NUL-terminated string: never NULL, never to be freed. */
const char *lifeline_version(void);

/* lifeline_free frees a string or buffer the library returned through a
 * `char **` out-parameter (JSON documents). NULL is allowed. Do not use it
 * for responses (lifeline_response_free) or error records
 * (lifeline_error_clear). */
void lifeline_free(void *p);

/* ------------------------------------------------------------------ */
/* Handles                                                             */
/* ------------------------------------------------------------------ */

/* A client: configuration, connection pool, address health, metrics. */
typedef uint64_t lifeline_client;
/* An operation: one request or dial, from start to lifeline_op_free. */
typedef uint64_t lifeline_op;

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

/* lifeline_client_new creates a client with finite defaults for every
 * limit and stores its handle in *out. Configure it (below) before its
 * first request or dial; it is then frozen and its configuration can no
 * longer change (LIFELINE_E_STATE). A client is meant to live long: it
 * keeps a pool of connections and the health of the addresses it saw.
 * Errors: LIFELINE_E_INVALID_ARGUMENT (out is NULL). */
int32_t lifeline_client_new(lifeline_client *out, lifeline_error *err);

/* Configuration by key. Keys (durations in milliseconds; "0" = default;
 * where a key says "<0 off", a negative value removes that limit):
 *
 * client
 *   request_timeout_ms        int   total deadline of a request whose
 *                                   deadline_ms is 0: 30000; <0 none
 *   max_response_bytes        int   response body cap: 67108864 (64 MiB);
 *                                   <0 none
 *   user_agent                str   User-Agent when the request has none:
 *                                   "lifeline-cshim/<version>"
 *   name                      str   the client's name on every metric
 *                                   (lifeline.client.name), to tell SDKs
 *                                   in one process apart: "" none; at most
 *                                   64 bytes, no control characters
 * transport (HTTP)
 *   transport.first_byte_timeout_ms       response headers after the
 *                                         request was written: 15000; <0 off
 *   transport.stall_timeout_ms            no body byte this long: 30000; <0 off
 *   transport.hedge_delay_ms              second try of an idempotent request
 *                                         after this long: 0 (off)
 *   transport.hedge_quantile     double   adaptive hedge at this quantile of
 *                                         recent latency, in [0,1): 0 (off)
 *   transport.idle_conn_timeout_ms        30000; <0 none
 *   transport.max_conn_lifetime_ms        600000; <0 none
 *   transport.max_conns_per_host     int  64; <0 none
 *   transport.max_idle_conns_per_host int 16; <0 keep none
 *   transport.max_response_header_bytes int  1048576: cap on a response's
 *                                         headers; <0 none beyond net/http's
 *   transport.disable_fail_fast  bool     false: a request to an upstream
 *                                         known down fails at once with
 *                                         LIFELINE_E_UNAVAILABLE (see
 *                                         there); true: every request dials
 *                                         and waits its own limits
 *   transport.disable_load_shedding bool  false: while a growing share of
 *                                         an upstream's answers are
 *                                         overload signals (503, 429,
 *                                         first-byte timeouts, resets) a
 *                                         matching share of new requests
 *                                         is shed locally (at most about
 *                                         2x the upstream's successes go),
 *                                         retries and hedges first; true:
 *                                         never
 *   transport.proxy              str      "" or "env": from HTTP(S)_PROXY /
 *                                         NO_PROXY; "none": direct; or a
 *                                         proxy URL (http, https, socks5)
 * dial (every connection, requests and lifeline_dial alike)
 *   dial.resolve_timeout_ms               5000; <0 none of its own
 *   dial.connect_timeout_ms               each TCP connect: 5000; <0 none
 *   dial.attempt_delay_ms                 Happy Eyeballs stagger: 250;
 *                                         <0 serial
 *   dial.tls_handshake_timeout_ms         5000; <0 none
 *   dial.first_byte_timeout_ms            first reply byte on a new conn:
 *                                         30000 (never less than
 *                                         transport.first_byte_timeout_ms
 *                                         for requests); <0 off. For a
 *                                         lifeline_dial descriptor it
 *                                         counts from the host's last
 *                                         write; while the host has
 *                                         written nothing (a server-first
 *                                         greeting), the greeting bound
 *                                         below counts from establishment
 *   dial.greeting_timeout_ms              a lifeline_dial descriptor's
 *                                         bound while the host has
 *                                         written nothing: 0 follows
 *                                         dial.first_byte_timeout_ms;
 *                                         <0 none until a write
 *   dial.max_attempts_per_address    int  2; 1 or <0: one
 *   dial.timeout_ms                       the whole dial: 15000; <0 none
 *   dial.keepalive.enable       bool      true
 *   dial.keepalive.idle_ms                15000
 *   dial.keepalive.interval_ms            5000
 *   dial.keepalive.count        int       3
 *   dial.user_timeout_ms                  TCP_USER_TIMEOUT: 30000; <0 OS
 *   dial.hosts                  object    static addresses, e.g.
 *                                         {"api.example": ["127.0.0.1"]};
 *                                         other names use the system
 *                                         resolver (with set_string: the
 *                                         object as JSON text)
 * health (per-address scoreboard, in the metrics snapshot)
 *   health.half_life_ms                   60000
 *   health.max_peers            int       1024
 * retry
 *   retry.max_attempts          int       3 (the first included); 1: none
 *   retry.initial_interval_ms             100
 *   retry.max_interval_ms                 5000
 *   retry.multiplier            double    2 (0 or >= 1)
 *   retry.jitter                double    0.5, in [0,1]; <0 none
 *   retry.attempt_timeout_ms              0 (none)
 *   retry.max_retry_after_ms              30000; <0 no cap
 *   retry.budget.ratio          double    0.1 (retries per request)
 *   retry.budget.min_per_second double    10
 * tls (requests to https URLs and "tls" dials)
 *   tls.ca_file / tls.ca_pem    str       trust these roots instead of the
 *                                         system's
 *   tls.cert_file + tls.key_file,
 *   tls.cert_pem + tls.key_pem  str       client certificate
 *   tls.server_name             str       SNI and name to verify: the host
 *   tls.insecure_skip_verify    bool      false
 *   tls.min_version             str       "1.2" (or "1.3")
 *   tls.alpn                    str       ALPN for "tls" dials, comma
 *                                         separated: none
 *
 * lifeline_client_set_int/double/bool/string set one key; the value type
 * must match the key's (durations and counts are ints; a double key also
 * accepts an int via set_double only). lifeline_client_configure applies a
 * JSON object whose members are keys, either dotted or nested
 * ({"dial": {"connect_timeout_ms": 500}, "retry.max_attempts": 1}); it is
 * all or nothing: on any error nothing is applied.
 * Errors: LIFELINE_E_INVALID_HANDLE, LIFELINE_E_INVALID_ARGUMENT (NULL or
 * non-UTF-8 key or string, malformed JSON or not an object),
 * LIFELINE_E_UNKNOWN_KEY, LIFELINE_E_BAD_VALUE, LIFELINE_E_STATE (the
 * client already made a request or dial). */
int32_t lifeline_client_set_int(lifeline_client c, const char *key, int64_t value,
                                lifeline_error *err);
int32_t lifeline_client_set_double(lifeline_client c, const char *key, double value,
                                   lifeline_error *err);
int32_t lifeline_client_set_bool(lifeline_client c, const char *key, int value,
                                 lifeline_error *err);
int32_t lifeline_client_set_string(lifeline_client c, const char *key, const char *value,
                                   lifeline_error *err);
int32_t lifeline_client_configure(lifeline_client c, const char *json, lifeline_error *err);

/* lifeline_client_config_json stores in *out a JSON object of every key
 * with its effective value (defaults resolved; PEM and file keys show
 * whether they are set, not their contents; a proxy URL's password shows
 * as "xxxxx"), and its length in *len (may
 * be NULL). Free *out with lifeline_free. */
int32_t lifeline_client_config_json(lifeline_client c, char **out, size_t *len,
                                    lifeline_error *err);

/* lifeline_client_metrics_json stores in *out a JSON snapshot (free with
 * lifeline_free; length in *len, which may be NULL):
 *   "client":  requests and dials started, succeeded, failed (by phase and
 *              by error_type), canceled, in flight; response bytes
 *   "health":  one entry per address the client dialed: successes,
 *              refusals, resets, timeouts and stalls by phase, latency,
 *              penalty score, demoted
 *   "metrics": lifeline's OpenTelemetry metrics for this client (dial
 *              durations by phase, attempts, retries, budget refusals,
 *              failures masked by a retry, race or hedge), each with its
 *              attributes and value (histograms: count and sum)
 *   "process": goroutines, Go heap bytes, and the number of library
 *              allocations handed to you and not yet freed (process-wide)
 * It may be called at any time, also while operations run and after the
 * client is frozen. */
int32_t lifeline_client_metrics_json(lifeline_client c, char **out, size_t *len,
                                     lifeline_error *err);

/* lifeline_client_close cancels every operation of the client that is
 * still running (they finish with LIFELINE_E_CLOSED and their callbacks
 * run), closes its idle connections and the TLS relays of its "tls" dials
 * (your descriptors then read end-of-file), and frees the handle. It does
 * not wait for the operations' callbacks, so it may be called from a
 * callback. Operation handles stay valid until lifeline_op_free.
 * Errors: LIFELINE_E_INVALID_HANDLE (also on a second close). */
int32_t lifeline_client_close(lifeline_client c, lifeline_error *err);

/* ------------------------------------------------------------------ */
/* HTTP requests                                                       */
/* ------------------------------------------------------------------ */

/* A header: NUL-terminated name (an HTTP token) and value (no CR, LF or
 * NUL). A name may repeat. "Host" sets the request's Host. */
typedef struct lifeline_header {
    const char *name;
    const char *value;
} lifeline_header;

/* A request. Everything is copied before the start function returns. */
typedef struct lifeline_request {
    const char *method;              /* NULL or "": "GET"; else an HTTP token */
    const char *url;                 /* http:// or https://, required */
    const lifeline_header *headers;  /* may be NULL when header_count is 0 */
    int64_t header_count;            /* >= 0 */
    const uint8_t *body;             /* may be NULL when body_len is 0 */
    int64_t body_len;                /* >= 0 */
    /* Total deadline of the whole operation (every attempt, every wait
     * between them, and reading the body), in ms. 0: the client's
     * request_timeout_ms; <0: none beyond the phase limits. */
    int64_t deadline_ms;
} lifeline_request;

/* A response. One allocation owned by you: free it, with everything it
 * points to, by one lifeline_response_free(). */
typedef struct lifeline_response {
    int32_t status;                  /* HTTP status code, e.g. 200 */
    int32_t proto_major;             /* 1 or 2 */
    int32_t proto_minor;
    int32_t reserved;
    lifeline_header *headers;        /* header_count entries; names in
                                        canonical form ("Content-Type"), one
                                        entry per value */
    int64_t header_count;
    uint8_t *body;                   /* body_len bytes followed by a NUL
                                        (not counted); never NULL */
    int64_t body_len;
} lifeline_response;

/* lifeline_response_free frees a response and everything in it. NULL is
 * allowed. Works in a forked child. */
void lifeline_response_free(lifeline_response *resp);

/* lifeline_request_do performs a request and blocks until it has a
 * response (body read completely) or fails, at most deadline_ms. Another
 * thread cannot cancel it: use lifeline_request_start for that. A response
 * with any HTTP status (404, 500, ...) is LIFELINE_OK; check
 * (*out)->status. Redirects are not followed: a 3xx is returned as it is.
 * Responses with status 429, 502, 503, 504 to idempotent requests
 * (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or with an Idempotency-Key
 * header) are retried first, within the retry policy and budget; a POST
 * that was written is never sent twice. Compressed responses
 * (Accept-Encoding added by the library) are decompressed.
 * Errors: LIFELINE_E_INVALID_HANDLE, LIFELINE_E_INVALID_ARGUMENT,
 * LIFELINE_E_TIMEOUT, LIFELINE_E_NETWORK, LIFELINE_E_TOO_LARGE,
 * LIFELINE_E_CLOSED; *out is NULL on failure. */
int32_t lifeline_request_do(lifeline_client c, const lifeline_request *req,
                            lifeline_response **out, lifeline_error *err);

/* lifeline_callback is called once per operation started with a non-NULL
 * callback, when it finishes (success, failure, timeout, cancel or client
 * close), on a thread owned by the library — never on the thread that
 * started the operation, and possibly before the start function has
 * returned. status is the operation's final status, op its handle,
 * user_data what you passed. When it runs the result is already
 * available: the callback may call lifeline_op_response / lifeline_op_fd /
 * lifeline_op_free on its own op and any other function of the library.
 * It must return promptly (a slow callback delays no other operation, but
 * keeps a library thread); hosts with an interpreter lock take it there,
 * event loops should post to their own loop. If the op was freed before
 * the operation finished, the callback still runs, with a handle that is
 * no longer valid. */
typedef void (*lifeline_callback)(lifeline_op op, int32_t status, void *user_data);

/* lifeline_request_start starts a request and returns at once with its
 * handle in *op (created before any I/O, so it can be cancelled
 * immediately). callback may be NULL. On failure no operation exists and
 * the callback is never called. */
int32_t lifeline_request_start(lifeline_client c, const lifeline_request *req,
                               lifeline_callback callback, void *user_data,
                               lifeline_op *op, lifeline_error *err);

/* ------------------------------------------------------------------ */
/* Raw TCP and TLS dials                                               */
/* ------------------------------------------------------------------ */

/* network:
 *   "tcp", "tcp4", "tcp6": a TCP connection; the descriptor is the socket
 *     itself.
 *   "tls": TCP plus a TLS handshake (verified with the client's tls.*
 *     keys; SNI from tls.server_name or the host). TLS stays inside the
 *     library: the descriptor is one end of a Unix stream socketpair whose
 *     other end the library relays to and from the TLS connection, so you
 *     read and write plaintext. shutdown(fd, SHUT_WR) sends TLS
 *     close_notify; a closed peer reads as end-of-file. The relay ends when
 *     you close the descriptor (within 100 ms, also while it is blocked
 *     writing to a peer that stopped reading: the TLS connection is then
 *     closed; what you wrote before the close is still sent for up to
 *     50 ms — to know it all arrived, shutdown(fd, SHUT_WR) and read to
 *     end-of-file before closing), when the peer closes, or at
 *     lifeline_client_close. The dial's first-byte watch applies.
 * address: "host:port" (IPv6 literals in brackets). Names are resolved
 * under dial.resolve_timeout_ms and every address raced.
 * deadline_ms bounds the dial: 0: the dial.* limits only; <0 likewise.
 * The descriptor is blocking and close-on-exec; it is yours to close. */
int32_t lifeline_dial(lifeline_client c, const char *network, const char *address,
                      int64_t deadline_ms, int *fd, lifeline_error *err);

/* lifeline_dial_start is the asynchronous lifeline_dial: take the
 * descriptor with lifeline_op_fd. */
int32_t lifeline_dial_start(lifeline_client c, const char *network, const char *address,
                            int64_t deadline_ms, lifeline_callback callback, void *user_data,
                            lifeline_op *op, lifeline_error *err);

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

/* lifeline_op_wait waits until the operation has finished and its callback
 * (if any) has returned, for at most timeout_ms (<0: until it finishes,
 * which every operation does within its deadline; 0: do not wait).
 * Returns LIFELINE_OK when finished (then take the result with
 * lifeline_op_response or lifeline_op_fd), LIFELINE_E_PENDING when
 * timeout_ms passed first. Any number of threads may wait on one op.
 * Called from the op's own callback it does not wait for that callback
 * (on Linux; elsewhere give it a timeout there).
 * Interpreters: wait in short slices (e.g. 50 ms) so that the host's
 * signals (Ctrl-C) are handled between them. */
int32_t lifeline_op_wait(lifeline_op op, int64_t timeout_ms, lifeline_error *err);

/* lifeline_op_poll is lifeline_op_wait with timeout 0. */
int32_t lifeline_op_poll(lifeline_op op, lifeline_error *err);

/* lifeline_op_cancel asks the operation to stop. Safe from any thread, any
 * number of times, also after it finished (then it does nothing) and from
 * callbacks; it does not block. A running operation finishes with
 * LIFELINE_E_CANCELED within 100 ms, and its callback runs (once). */
int32_t lifeline_op_cancel(lifeline_op op, lifeline_error *err);

/* lifeline_op_response takes the result of a finished request: on success
 * it stores the response in *out (yours: lifeline_response_free) and
 * returns LIFELINE_OK; on failure it returns the operation's status and
 * fills err. The response can be taken once (then LIFELINE_E_STATE); the
 * status and error can be read any number of times. LIFELINE_E_PENDING when
 * the operation is still running. */
int32_t lifeline_op_response(lifeline_op op, lifeline_response **out, lifeline_error *err);

/* lifeline_op_fd takes the descriptor of a finished dial, like
 * lifeline_op_response. A descriptor not taken is closed by
 * lifeline_op_free. */
int32_t lifeline_op_fd(lifeline_op op, int *fd, lifeline_error *err);

/* lifeline_op_free releases the handle. A running operation is cancelled
 * first (its callback still runs once, with the stale handle); a response
 * or descriptor not taken is freed or closed. Errors:
 * LIFELINE_E_INVALID_HANDLE (also on a second free). */
int32_t lifeline_op_free(lifeline_op op, lifeline_error *err);

/* ------------------------------------------------------------------ */
/* Websocket sessions (ABI 2)                                          */
/* ------------------------------------------------------------------ */

/* A session keeps one logical websocket connection to a ws:// or wss://
 * URL up across failures: every handshake is bounded (DNS, connect, TLS
 * raced across addresses, the upgrade's answer), pings detect a dead
 * peer, a lost connection is redialed with jittered backoff, and
 * everything that happens reaches you as events, in order, through a
 * queue you drain — from your own loop (lifeline_session_event_fd) or a
 * thread of yours blocked in lifeline_session_next_event. */
typedef uint64_t lifeline_session;

/* Further status of the session calls: lifeline_session_send found no
 * connection (nothing was written), or the connection broke under the
 * write (the peer may or may not have the message). Try again after
 * LIFELINE_EVENT_CONNECTED, or send with LIFELINE_SEND_WHEN_CONNECTED.
 * lifeline_status_string names it. */
#define LIFELINE_E_DISCONNECTED 20

/* Session states (lifeline_event.state, lifeline_session_state). */
#define LIFELINE_SESSION_CONNECTING 0   /* a handshake or the connect step */
#define LIFELINE_SESSION_CONNECTED 1    /* sends go out, messages come in */
#define LIFELINE_SESSION_DISCONNECTED 2 /* waiting out the backoff */
#define LIFELINE_SESSION_CLOSED 3       /* final */

/* Event kinds. Every state change is exactly one event: CONNECTED for
 * connected, CLOSED for closed, STATE for connecting and disconnected.
 *   CONNECT       with "on_connect": connection `connection` is open but
 *                 not yet reported connected. Send what it needs first
 *                 (authenticate, resubscribe) with LIFELINE_SEND_ON_CONNECT,
 *                 then call lifeline_session_ready(s, connection). Until
 *                 then no message is read from it (a reply you wait for
 *                 arrives as a MESSAGE after CONNECTED), plain sends fail
 *                 with LIFELINE_E_DISCONNECTED and WHEN_CONNECTED sends
 *                 wait. No ready within handshake_timeout_ms (or a failed
 *                 ON_CONNECT send) closes the connection: a failed dial,
 *                 redialed after the backoff, with a new CONNECT.
 *   CONNECTED     connection `connection` is up.
 *   MESSAGE       a data message: message_type 1 text (UTF-8) or 2 binary,
 *                 `data`/`len` its bytes (followed by a NUL, not counted;
 *                 never NULL). Messages arrive in the order sent, across
 *                 connections; what the server sent while no connection
 *                 was up is not seen (resume in the connect step).
 *   DISCONNECTED  connection `connection` was lost; `cause` says why:
 *                 status LIFELINE_E_TIMEOUT or LIFELINE_E_NETWORK, phase
 *                 (e.g. "websocket"), error_type (e.g. "pong_timeout",
 *                 "close_1001", "connection_reset", "message_too_large"
 *                 for a message above max_message_bytes, "websocket_error"
 *                 for a protocol violation or another unclassified
 *                 failure), message. A STATE
 *                 event (disconnected, no cause) comes just before it. A
 *                 failed dial gives STATE events only (see STATE).
 *   STATE         the state became `state` (connecting or disconnected).
 *                 A STATE (disconnected) after a failed dial carries the
 *                 dial's `cause`, as DISCONNECTED does for a lost
 *                 connection: phase "dns", "connect" or "tls" (the dial
 *                 under the upgrade; error_type e.g. "connect_timeout",
 *                 "connect_refused"), "handshake" (the upgrade's answer:
 *                 "handshake_timeout" when handshake_timeout_ms cut it,
 *                 "http_503", "http_200", "http_101" for an answer that is
 *                 not an upgrade, "handshake_error"), or "connect_step"
 *                 ("connect_step_timeout": no lifeline_session_ready in
 *                 time; "connect_step_failed": an ON_CONNECT send
 *                 failed). A session that redials after it counts the
 *                 failed dials, once one succeeds, on
 *                 lifeline.masked_failures (masked_by "retry") in
 *                 lifeline_client_metrics_json.
 *   CLOSED        final: after lifeline_session_close, the client's close,
 *                 or the server refusing the upgrade for good (a 3xx/4xx
 *                 other than 408 and 429: `cause` then holds it,
 *                 error_type e.g. "http_401"; a refused token ends the
 *                 session, so set the next one with
 *                 lifeline_session_set_header before the old expires, or
 *                 make a new session). Nothing follows it.
 * Causes: every error_type is one of the classes named here or in
 * lifeline_error (a short lower-case word, never a Go type name); the
 * message is redacted like every other (no URL query, userinfo or header
 * value). */
#define LIFELINE_EVENT_CONNECT 1
#define LIFELINE_EVENT_CONNECTED 2
#define LIFELINE_EVENT_MESSAGE 3
#define LIFELINE_EVENT_DISCONNECTED 4
#define LIFELINE_EVENT_STATE 5
#define LIFELINE_EVENT_CLOSED 6

/* Message types of lifeline_session_send and LIFELINE_EVENT_MESSAGE. */
#define LIFELINE_MESSAGE_TEXT 1
#define LIFELINE_MESSAGE_BINARY 2

/* An event: one allocation owned by you, freed with everything in it by
 * one lifeline_event_free(). */
typedef struct lifeline_event {
    int32_t kind;          /* LIFELINE_EVENT_* */
    int32_t state;         /* the session's state once this event happened */
    int32_t message_type;  /* MESSAGE: 1 text, 2 binary; else 0 */
    int32_t reserved;
    uint64_t connection;   /* the connection it concerns: 1, 2, ... in dial
                              order (0 before the first) */
    const uint8_t *data;   /* MESSAGE: len bytes and a NUL; else "" */
    int64_t len;
    lifeline_error cause;  /* DISCONNECTED, CLOSED, and STATE
                              (disconnected) after a failed dial: why
                              (status 0 and message NULL when there is
                              no cause) */
} lifeline_event;

/* lifeline_event_free frees an event and everything in it. NULL is
 * allowed. Works in a forked child. */
void lifeline_event_free(lifeline_event *ev);

/* lifeline_session_new creates a session of client c and starts
 * connecting at once, in the background; its handle is in *out. The
 * client's keys apply to every dial: dial.* (connect, TLS handshake,
 * races), tls.* (roots, client certificate), transport.proxy (http and
 * https proxies, CONNECT), name, and retry.* for the pace of reconnecting
 * (waits from retry.initial_interval_ms growing by retry.multiplier to
 * retry.max_interval_ms, with retry.jitter; a session never stops
 * redialing on its own: retry.max_attempts bounds the handshake tries of
 * one dial only). It freezes the client, like a request.
 * url: ws:// or wss://. headers/header_count: handshake headers sent with
 * every dial (header_count 0: headers may be NULL); Upgrade, Connection
 * and Sec-WebSocket-Key/-Version/-Extensions are the handshake's own and
 * refused (LIFELINE_E_INVALID_ARGUMENT), here and in set_header.
 * Session handles follow the rules of client and operation handles
 * (random bits, never reused; a wrong kind or a freed one gets
 * LIFELINE_E_INVALID_HANDLE).
 * config: NULL, "" or a JSON object of session keys:
 *   handshake_timeout_ms  each dial, DNS to the 101 answer, and the connect
 *                         step: 10000; <0 none of its own
 *   ping_interval_ms      15000; <0 no pings (no liveness check)
 *   pong_timeout_ms       a peer silent this long after a ping is dead and
 *                         its connection replaced: 10000; <0 pings are
 *                         sent, no answer awaited
 *   write_timeout_ms      each send (also the wait for other senders):
 *                         10000
 *   stable_after_ms       a connection that lasted this long resets the
 *                         backoff: 1000
 *   max_message_bytes     a bigger incoming message closes the connection
 *                         (1009): 16777216; <0 none
 *   queue_max_events      events waiting in the queue: 1024
 *   queue_max_bytes       message bytes waiting in the queue: 67108864 (a
 *                         bigger message still enters an empty queue)
 *   on_connect            bool: hold each connection in a connect step
 *                         (LIFELINE_EVENT_CONNECT) until
 *                         lifeline_session_ready: false
 * Backpressure: when the queue is full the session waits for you — it
 * stops reading (the peer feels TCP flow control; pings are still
 * answered) and stops reconnecting — until you take an event. Nothing is
 * dropped, nothing grows without bound.
 * Each session holds two descriptors (the event pipe) until it is freed.
 * Errors: LIFELINE_E_INVALID_HANDLE, LIFELINE_E_INVALID_ARGUMENT (url,
 * headers, config not an object), LIFELINE_E_UNKNOWN_KEY,
 * LIFELINE_E_BAD_VALUE, LIFELINE_E_CLOSED (the client is closed). */
int32_t lifeline_session_new(lifeline_client c, const char *url, const lifeline_header *headers,
                             int64_t header_count, const char *config, lifeline_session *out,
                             lifeline_error *err);

/* lifeline_session_next_event takes the oldest event into *ev (yours:
 * lifeline_event_free), waiting at most timeout_ms for one (0: do not
 * wait; <0: until one comes or the session is freed).
 * Returns LIFELINE_OK with *ev set; LIFELINE_E_PENDING when no event came
 * in time (*ev NULL); LIFELINE_E_CLOSED once the CLOSED event was taken
 * (nothing more will come) or when the session is freed while waiting.
 * Any thread may call it; with several, each event goes to one of them
 * (in order of taking). */
int32_t lifeline_session_next_event(lifeline_session s, int64_t timeout_ms, lifeline_event **ev,
                                    lifeline_error *err);

/* lifeline_session_callback receives one event (yours: free it with
 * lifeline_event_free, in the callback or later) in callback mode. */
typedef void (*lifeline_session_callback)(lifeline_session s, lifeline_event *ev, void *user_data);

/* lifeline_session_set_callback switches the session to callback mode:
 * from now on a library thread takes each event, in order, and calls
 * callback with it, one call at a time — the events queued before
 * included — until the CLOSED event (the last call) or
 * lifeline_session_free. Do not also call lifeline_session_next_event. A
 * callback that takes its time holds the next event back, and the queue's
 * bound then pauses the session (backpressure): hosts with an interpreter
 * lock take it in the callback, event loops post the event to their loop.
 * The callback may call any function, lifeline_session_free of its own
 * session included (free from elsewhere waits for a running callback to
 * return). If the library cannot allocate an event (C heap exhausted) that
 * event is lost. Errors: LIFELINE_E_INVALID_HANDLE,
 * LIFELINE_E_INVALID_ARGUMENT (callback NULL), LIFELINE_E_STATE (already
 * in callback mode). */
int32_t lifeline_session_set_callback(lifeline_session s, lifeline_session_callback callback,
                                      void *user_data, lifeline_error *err);

/* lifeline_session_event_fd stores in *fd a descriptor that is readable
 * while an event waits, for epoll, poll, select, asyncio's add_reader or
 * libuv's uv_poll. Level-triggered: it stays readable until the queue is
 * empty, whatever you read from it (do not read it; take events with
 * lifeline_session_next_event(s, 0, ...) until LIFELINE_E_PENDING). After
 * the CLOSED event was taken it stays readable (next_event then returns
 * LIFELINE_E_CLOSED at once), so a loop notices the end. With edge-
 * triggered epoll (EPOLLET) drain to LIFELINE_E_PENDING at each wake.
 * The descriptor is the library's: never close it, and stop polling it
 * before lifeline_session_free, which closes it. The same descriptor is
 * returned every time. */
int32_t lifeline_session_event_fd(lifeline_session s, int *fd, lifeline_error *err);

/* Flags of lifeline_session_send. */
/* Wait (up to timeout_ms; 0: write_timeout_ms; <0: no limit to the wait)
 * until the session is connected — after the connect step — then write.
 * A message sent while a connection is being (re)made thus reaches it after
 * the connect step's own sends. */
#define LIFELINE_SEND_WHEN_CONNECTED 1u
/* Write on the connection of the connect step in progress (between
 * LIFELINE_EVENT_CONNECT and lifeline_session_ready); LIFELINE_E_STATE
 * when none is. */
#define LIFELINE_SEND_ON_CONNECT 2u

/* lifeline_session_send sends one message: type LIFELINE_MESSAGE_TEXT
 * (buf must be UTF-8) or LIFELINE_MESSAGE_BINARY, len bytes at buf (copied
 * before the call returns; buf may be NULL when len is 0). Sends from any
 * number of threads are serialised; each is bounded by write_timeout_ms
 * and by timeout_ms (0: write_timeout_ms alone). flags 0: while the
 * session has no connection it fails at once with LIFELINE_E_DISCONNECTED
 * (nothing is queued, so nothing is replayed to a server that moved on).
 * A message is written at most once: a write that failed is not repeated.
 * Errors: LIFELINE_E_INVALID_HANDLE, LIFELINE_E_INVALID_ARGUMENT (type,
 * flags, len, text not UTF-8), LIFELINE_E_DISCONNECTED (err->timeout 1
 * when the write timed out: the connection is then replaced),
 * LIFELINE_E_TIMEOUT (waited timeout_ms for a connection or for other
 * senders; nothing written), LIFELINE_E_STATE (ON_CONNECT without a step),
 * LIFELINE_E_CLOSED (the session is closed, or closes meanwhile: a
 * waiting send returns at once). */
int32_t lifeline_session_send(lifeline_session s, int32_t type, const uint8_t *buf, int64_t len,
                              int64_t timeout_ms, uint32_t flags, lifeline_error *err);

/* lifeline_session_wait_connected waits until the session is connected
 * (after the connect step), at most timeout_ms (0: do not wait; <0: no
 * limit). It may be lost again by the time you act. Returns LIFELINE_OK,
 * LIFELINE_E_TIMEOUT (phase "wait"), or LIFELINE_E_CLOSED (closed before
 * or meanwhile: returns at once). */
int32_t lifeline_session_wait_connected(lifeline_session s, int64_t timeout_ms, lifeline_error *err);

/* lifeline_session_set_header sets a handshake header for every dial from
 * the next one on (a fresh token for the redials: set it when you refresh
 * it), replacing the values the session was created with for that name.
 * value NULL removes the name from the next dials. */
int32_t lifeline_session_set_header(lifeline_session s, const char *name, const char *value,
                                    lifeline_error *err);

/* lifeline_session_ready ends the connect step of connection `connection`
 * (from its LIFELINE_EVENT_CONNECT): the session reports it connected.
 * LIFELINE_E_STATE when that step is not in progress (on_connect is off,
 * the step timed out, or the connection was lost: a later CONNECT event
 * brings the next step). */
int32_t lifeline_session_ready(lifeline_session s, uint64_t connection, lifeline_error *err);

/* lifeline_session_state stores the current state in *state. */
int32_t lifeline_session_state(lifeline_session s, int32_t *state, lifeline_error *err);

/* lifeline_session_close ends the session: the current connection gets a
 * close frame (if it can be written within 50 ms), dials, backoff waits
 * and the connect step are cancelled, and every thread waiting in a send
 * or lifeline_session_wait_connected returns LIFELINE_E_CLOSED. Returns
 * within 100 ms in every state; idempotent; from any thread. The handle
 * stays valid: the CLOSED event is queued last, after the events before it
 * (events that the close cut short are dropped). lifeline_client_close
 * closes the client's sessions the same way. */
int32_t lifeline_session_close(lifeline_session s, lifeline_error *err);

/* lifeline_session_free closes the session (if it is not closed), drops
 * the events not taken, closes the event descriptor and releases the
 * handle; a thread blocked in lifeline_session_next_event returns
 * LIFELINE_E_CLOSED. Errors: LIFELINE_E_INVALID_HANDLE (also on a second
 * free). */
int32_t lifeline_session_free(lifeline_session s, lifeline_error *err);

/* ------------------------------------------------------------------ */
/* Streamed bodies (ABI version 2)                                     */
/* ------------------------------------------------------------------ */

/* A streamed request is an operation that finishes when the response's
 * status and headers arrive; its body is then read in pieces with
 * lifeline_body_read, for as long as it lasts: a download, server-sent
 * events, a long poll. With LIFELINE_STREAM_UPLOAD its request body is
 * written in pieces with lifeline_body_write. The buffered calls above are
 * unchanged.
 *
 * Limits. Every wait of a streamed body is bounded:
 *   - transport.stall_timeout_ms still fails a body of which no byte came
 *     for that long while the library was reading it (LIFELINE_E_TIMEOUT,
 *     phase "stall", error_type "stall_timeout"). The library reads ahead
 *     of you into a buffer of 64 KiB and stops reading from the peer while
 *     it is full: a host that reads slowly is not a stall. A server-sent
 *     events stream whose server is quiet for longer than the stall limit
 *     needs a client with a longer transport.stall_timeout_ms (or <0).
 *   - the request's deadline_ms (0: the client's request_timeout_ms)
 *     bounds the whole operation, body included, as for a buffered
 *     request: pass deadline_ms < 0 for a stream meant to outlive it
 *     (then only the stall limit, your read timeouts and cancel end it).
 *     A deadline that expires while the body is read fails it with phase
 *     "stall", error_type "deadline" (bytes read before are still
 *     delivered first).
 *   - max_response_bytes does not apply to a streamed body: you see each
 *     piece and decide.
 *   - an upload (LIFELINE_STREAM_UPLOAD) whose peer takes no byte for
 *     transport.stall_timeout_ms fails (phase "upload_stall"); time the
 *     library spends waiting for your next lifeline_body_write is yours,
 *     not a stall.
 *
 * Ending it. lifeline_op_cancel ends a streamed request in every state,
 * also after its headers arrived: a lifeline_body_read or
 * lifeline_body_write blocked in another thread returns
 * LIFELINE_E_CANCELED within 100 ms, bytes not yet read are dropped, and
 * every later read or write returns LIFELINE_E_CANCELED (a body that had
 * already arrived whole stays readable to its end). lifeline_op_free does
 * the same and releases the handle; lifeline_client_close ends it with
 * LIFELINE_E_CLOSED. The connection is released when the body was read to
 * its end, failed, or was ended so: free every streamed op.
 *
 * Threads. Any thread may read, write, cancel or free, concurrently; two
 * threads reading one body concurrently each get distinct bytes in
 * arrival order, but which thread gets which piece is not defined. */

/* Flags of lifeline_request_start_stream. */
/* The request body is written with lifeline_body_write and ended with
 * lifeline_body_close_write (sent chunked on HTTP/1.1). req->body, when
 * given, is sent first. Such a request is never retried once its body was
 * started. */
#define LIFELINE_STREAM_UPLOAD 1u
/* (ABI 3) The request waits, within its deadline, for an upstream known
 * down to come back instead of failing with LIFELINE_E_UNAVAILABLE: a
 * startup path, a long job. It becomes the next probe when one is due. It
 * is also a flag of lifeline_request_start_opts. A library of ABI 2
 * refuses it (LIFELINE_E_INVALID_ARGUMENT: unknown bits). */
#define LIFELINE_CALL_WAIT_FOR_READY 2u

/* Per-call limits of a streamed request, over the client's configuration
 * for this one call (one client, one pool, many kinds of call). Zero
 * fields keep the client's value. */
typedef struct lifeline_call_options {
    /* The wait for the response headers: <0 off for this call (a long
     * poll, answered when there is news; deadline_ms still bounds it),
     * >0 this many ms; 0 transport.first_byte_timeout_ms. */
    int64_t first_byte_timeout_ms;
    /* The body's stall limit (both directions): <0 off (your read
     * timeouts, deadline_ms and cancel then bound the waits), >0 this
     * many ms; 0 transport.stall_timeout_ms. */
    int64_t stall_timeout_ms;
    /* Attempts, the first included: 1 no retry, >1 up to that many (paid
     * from the client's retry budget); 0 retry.max_attempts. */
    int64_t max_attempts;
} lifeline_call_options;

/* lifeline_request_start_stream starts a streamed request and returns at
 * once with its handle in *op, like lifeline_request_start. The operation
 * finishes (lifeline_op_wait returns LIFELINE_OK, the callback runs) when
 * the status and headers arrived or the request failed; retries of
 * lifeline_request_do's rules happen before that. lifeline_op_response
 * then gives the status and headers with an empty body (body_len 0); the
 * body is read with lifeline_body_read. opts may be NULL (the client's
 * limits); it is copied before the call returns.
 * Errors: those of lifeline_request_start; LIFELINE_E_INVALID_ARGUMENT
 * also for a flag not defined above or an option out of range. */
int32_t lifeline_request_start_stream(lifeline_client c, const lifeline_request *req, uint32_t flags,
                                      const lifeline_call_options *opts, lifeline_callback callback,
                                      void *user_data, lifeline_op *op, lifeline_error *err);

/* lifeline_body_read reads the next bytes of a streamed response body into
 * buf (cap >= 1 bytes) and stores their number in *n. It waits at most
 * timeout_ms (<0: until a byte, the end of the body or a failure; 0: do
 * not wait) — for the headers first, when they have not arrived — and
 * returns as soon as at least one byte is there, with everything buffered
 * that fits in cap.
 * Returns:
 *   LIFELINE_OK, *n >= 1   bytes were read.
 *   LIFELINE_OK, *n == 0   the end of the body (as read(2)); every later
 *                          read returns the same.
 *   LIFELINE_E_TIMEOUT with err->phase "read" (error_type
 *                          "read_timeout"): timeout_ms passed with no
 *                          byte. Not a failure: the body stays readable,
 *                          read again. Every other failure is final and
 *                          returned by every later read:
 *   LIFELINE_E_TIMEOUT (phase "stall": the stall limit or the deadline),
 *   LIFELINE_E_NETWORK (the connection failed), LIFELINE_E_CANCELED,
 *   LIFELINE_E_CLOSED, and the request's own failure when it got no
 *   headers (any status of lifeline_op_response).
 *   LIFELINE_E_STATE: op is not a streamed request.
 *   LIFELINE_E_INVALID_ARGUMENT: buf or n is NULL, or cap is 0.
 *   LIFELINE_E_INVALID_HANDLE.
 * Hosts with an interpreter read in short slices (e.g. 50 ms) so that
 * their signals are handled between them. */
int32_t lifeline_body_read(lifeline_op op, uint8_t *buf, size_t cap, int64_t timeout_ms, size_t *n,
                           lifeline_error *err);

/* lifeline_body_available stores in *n how many body bytes the library has
 * buffered (a lifeline_body_read with timeout 0 returns at least one of
 * them), and in *ended (may be NULL) 1 when nothing will follow them (the
 * end of the body, a failure or a cancel: a read after them returns at
 * once), else 0. Both are 0 while the headers have not arrived. It never
 * waits. Errors: LIFELINE_E_INVALID_HANDLE, LIFELINE_E_STATE (not a
 * streamed request), LIFELINE_E_INVALID_ARGUMENT (n is NULL). */
int32_t lifeline_body_available(lifeline_op op, size_t *n, int *ended, lifeline_error *err);

/* lifeline_body_fd stores in *fd a descriptor for event loops (poll,
 * epoll, kqueue-less select, asyncio's add_reader, libuv's uv_poll): it is
 * readable exactly while lifeline_body_read would return at once — the
 * headers arrived and bytes, the end of the body or a failure wait — and
 * not readable otherwise (level-triggered). It is the library's: never
 * read, write or close it; it stays valid until lifeline_op_free, which
 * closes it (remove it from your poll set first). Made at the first call;
 * later calls return the same one. Errors: LIFELINE_E_INVALID_HANDLE,
 * LIFELINE_E_STATE (not a streamed request), LIFELINE_E_INVALID_ARGUMENT
 * (fd is NULL). */
int32_t lifeline_body_fd(lifeline_op op, int *fd, lifeline_error *err);

/* lifeline_body_write writes len bytes of the request body of an op
 * started with LIFELINE_STREAM_UPLOAD. The library copies them into a
 * buffer of 64 KiB that it sends from; the call returns when all of them
 * were taken, or after timeout_ms (<0: no limit but the request's own;
 * 0: take what fits, do not wait). *n (may be NULL) is the number of
 * bytes taken, also on failure: write the rest again. It may be called
 * before the connection exists (the bytes wait in the buffer).
 * Returns LIFELINE_OK (all taken); LIFELINE_E_TIMEOUT with phase "write"
 * (error_type "write_timeout"): timeout_ms passed first, not a failure of
 * the request; the request's failure once it failed (e.g. phase
 * "upload_stall", LIFELINE_E_CANCELED); LIFELINE_E_STATE after
 * lifeline_body_close_write, when the request's body is no longer read
 * (its response arrived first), or when the op was not started with
 * LIFELINE_STREAM_UPLOAD; LIFELINE_E_INVALID_ARGUMENT (data NULL with len
 * > 0, len above 2^30); LIFELINE_E_INVALID_HANDLE. */
int32_t lifeline_body_write(lifeline_op op, const uint8_t *data, size_t len, int64_t timeout_ms, size_t *n,
                            lifeline_error *err);

/* lifeline_body_close_write ends the request body of an op started with
 * LIFELINE_STREAM_UPLOAD: the peer gets its end after the bytes written.
 * Until it is called the request's body is not complete (most servers
 * answer only then). Errors: LIFELINE_E_STATE (a second close, or not an
 * upload), the request's failure once it failed,
 * LIFELINE_E_INVALID_HANDLE. */
int32_t lifeline_body_close_write(lifeline_op op, lifeline_error *err);

/* ------------------------------------------------------------------ */
/* When the upstream is down or drowning (ABI 3)                       */
/* ------------------------------------------------------------------ */

/* A client keeps, per upstream (scheme, host and port), whether it is
 * reachable and whether it is drowning:
 *   - after 5 connects in a row fail (or 3 hang far beyond the host's
 *     usual connect time) the upstream is down: requests to it fail at once
 *     with LIFELINE_E_UNAVAILABLE (error_type "unavailable", phase
 *     "upstream"), never attempted, while one request at a time goes as a
 *     probe about once a second (slower after 30 s, up to 30 s apart); the
 *     first success re-opens it for every request;
 *   - while a growing share of its answers are overload signals (503, 429,
 *     first-byte timeouts, resets), a matching share of new requests fails
 *     at once with LIFELINE_E_UNAVAILABLE (error_type "shed"), retries and
 *     hedges first, so that the upstream gets about twice its successes;
 *   - a 429 or a Retry-After paces the requests that follow: a request
 *     whose deadline ends before the advised time gets that answer (status
 *     429 or 503 with Retry-After, an empty body) as LIFELINE_OK, without
 *     being sent; the others wait for the advised time.
 * The metrics snapshot counts them (lifeline.throttled by lifeline.reason,
 * lifeline.upstream.down, lifeline.upstream.probes). Configuration keys:
 * transport.disable_fail_fast, transport.disable_load_shedding. */

/* lifeline_request_start_opts is lifeline_request_start (the response read
 * whole, within max_response_bytes) with the call's own limits (opts,
 * lifeline_call_options: NULL or zero fields keep the client's) and flags:
 * 0 or LIFELINE_CALL_WAIT_FOR_READY (the request waits, within its
 * deadline, for an upstream known down instead of failing with
 * LIFELINE_E_UNAVAILABLE). opts is copied before the call returns.
 * Errors: those of lifeline_request_start; LIFELINE_E_INVALID_ARGUMENT also
 * for a flag not defined for it (LIFELINE_STREAM_UPLOAD included) or an
 * option out of range. */
int32_t lifeline_request_start_opts(lifeline_client c, const lifeline_request *req, uint32_t flags,
                                    const lifeline_call_options *opts, lifeline_callback callback,
                                    void *user_data, lifeline_op *op, lifeline_error *err);

#ifdef __cplusplus
}
#endif

#endif /* LIFELINE_H */
