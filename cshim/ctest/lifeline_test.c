/*
 * C tests of liblifeline, built with -Wall -Wextra -Werror against the
 * shared library, the static archive and (with -fsanitize=address) the
 * shared library again. cshim_test.go builds this program, starts the
 * loopback servers it talks to, passes their addresses in LL_* environment
 * variables and checks its output: one "ok NAME ..." line per test, or
 * "FAIL NAME: ..." lines, and exit status 0 only when nothing failed.
 *
 * Usage: lifeline_test [all|panic_op|panic_export]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lifeline.h"

#ifdef LL_TESTHOOKS
/* Exported by the library only when built with -tags lifeline_testhooks. */
extern int32_t lifelinego_test_arm_panic(char *where);
#endif

static const char *current = "?";
static int failures;

static void failf(int line, const char *cond, const lifeline_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>
static void failf(int line, const char *cond, const lifeline_error *err, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("FAIL %s: line %d: %s: %s", current, line, cond, buf);
    if (err && err->status)
        printf(" [err status=%d phase=%s type=%s timeout=%d msg=%s]", err->status, err->phase, err->error_type,
               err->timeout, err->message ? err->message : "(null)");
    printf("\n");
    fflush(stdout);
    failures++;
}

/* CHECK fails the current test (and returns from it) when cond is false. */
#define CHECK(cond, err, ...)                                                                                     \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            failf(__LINE__, #cond, (err), __VA_ARGS__);                                                           \
            return;                                                                                               \
        }                                                                                                         \
    } while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static const char *env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        printf("FAIL setup: environment variable %s is not set\n", name);
        exit(2);
    }
    return v;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
    static char bufs[8][1024];
    static int i;
    char *b = bufs[i++ % 8];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, 1024, f, ap);
    va_end(ap);
    return b;
}

/* new_client makes a client configured by json (may be NULL). */
static lifeline_client new_client(const char *json) {
    lifeline_client c = 0;
    lifeline_error err = LIFELINE_ERROR_INIT;
    if (lifeline_client_new(&c, &err) != LIFELINE_OK) {
        failf(__LINE__, "lifeline_client_new", &err, "cannot make a client");
        lifeline_error_clear(&err);
        return 0;
    }
    if (json && lifeline_client_configure(c, json, &err) != LIFELINE_OK) {
        failf(__LINE__, "lifeline_client_configure", &err, "%s", json);
        lifeline_error_clear(&err);
        lifeline_client_close(c, NULL);
        return 0;
    }
    return c;
}

static lifeline_request get(const char *url) {
    lifeline_request r;
    memset(&r, 0, sizeof r);
    r.url = url;
    return r;
}

static const char *header(const lifeline_response *resp, const char *name) {
    for (int64_t i = 0; i < resp->header_count; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0) return resp->headers[i].value;
    return NULL;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = -1;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* json_int finds "key":<int> in a JSON document (flat enough for tests). */
static long long json_int(const char *doc, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(doc, pat);
    if (!p) return -999999;
    return strtoll(p + strlen(pat), NULL, 10);
}

static long long metric(lifeline_client c, const char *key) {
    char *doc = NULL;
    if (lifeline_client_metrics_json(c, &doc, NULL, NULL) != LIFELINE_OK) return -999999;
    long long v = json_int(doc, key);
    lifeline_free(doc);
    return v;
}

/* ------------------------------------------------------------------ */

static void t_version(void) {
    CHECK(lifeline_abi_version() == LIFELINE_ABI_VERSION, NULL, "abi %u", lifeline_abi_version());
    const char *v = lifeline_version();
    CHECK(v && *v, NULL, "empty version");
    CHECK(strcmp(lifeline_status_string(LIFELINE_E_TIMEOUT), "LIFELINE_E_TIMEOUT: timed out") == 0, NULL, "%s",
          lifeline_status_string(LIFELINE_E_TIMEOUT));
    CHECK(strcmp(lifeline_status_string(12345), "unknown status") == 0, NULL, "unknown");
    printf("ok version version=%s abi=%u\n", v, lifeline_abi_version());
}

static void t_get(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_response *resp = NULL;
    int32_t st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK && resp, &err, "status %d", st);
    CHECK(err.status == 0 && err.message == NULL && err.phase[0] == 0, &err, "err not cleared on success");
    CHECK(resp->status == 200, NULL, "http status %d", resp->status);
    CHECK(resp->body_len == 5 && memcmp(resp->body, "hello", 5) == 0 && resp->body[5] == 0, NULL, "body");
    const char *x = header(resp, "X-Test");
    CHECK(x && strcmp(x, "yes") == 0, NULL, "X-Test header");
    const char *ua = header(resp, "X-Seen-User-Agent");
    CHECK(ua && strncmp(ua, "lifeline-cshim/", 15) == 0, NULL, "user agent %s", ua ? ua : "(none)");
    CHECK(resp->proto_major == 1, NULL, "proto %d", resp->proto_major);
    lifeline_response_free(resp);

    /* A 404 is a response, not an error. */
    r = get(fmt("%s/missing", env("LL_HTTP")));
    st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK && resp && resp->status == 404, &err, "404: %d", st);
    lifeline_response_free(resp);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok get\n");
}

static void t_post(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    static const uint8_t body[] = {'a', 0, 'b', 0xff, 'c', '\n', 0, 'z'};
    lifeline_header hs[] = {{"X-Echo", "abc"}, {"Content-Type", "application/octet-stream"}};
    lifeline_request r = get(fmt("%s/echo", env("LL_HTTP")));
    r.method = "POST";
    r.headers = hs;
    r.header_count = 2;
    r.body = body;
    r.body_len = sizeof body;
    r.deadline_ms = 5000;
    lifeline_response *resp = NULL;
    int32_t st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK, &err, "status %d", st);
    CHECK(resp->status == 200, NULL, "http %d", resp->status);
    CHECK(resp->body_len == (int64_t)sizeof body && memcmp(resp->body, body, sizeof body) == 0, NULL,
          "echoed body differs (len %lld)", (long long)resp->body_len);
    const char *m = header(resp, "X-Method");
    CHECK(m && strcmp(m, "POST") == 0, NULL, "method seen %s", m ? m : "(none)");
    const char *x = header(resp, "X-Echo-Back");
    CHECK(x && strcmp(x, "abc") == 0, NULL, "header not echoed");
    lifeline_response_free(resp);
    lifeline_client_close(c, NULL);
    printf("ok post\n");
}

static void t_https(void) {
    lifeline_client c = new_client(fmt("{\"tls\": {\"ca_file\": \"%s\"}}", env("LL_CA_FILE")));
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTPS")));
    lifeline_response *resp = NULL;
    int32_t st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK, &err, "status %d", st);
    CHECK(resp->status == 200 && resp->proto_major == 2, NULL, "http %d proto %d", resp->status, resp->proto_major);
    lifeline_response_free(resp);
    lifeline_client_close(c, NULL);

    /* Without the CA: the certificate is rejected, not retried, not a timeout. */
    c = new_client(NULL);
    st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_E_NETWORK && resp == NULL, &err, "status %d", st);
    CHECK(strcmp(err.phase, "tls") == 0 && strcmp(err.error_type, "tls_certificate") == 0 && !err.timeout, &err,
          "classification");
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok https\n");
}

/* one_of reports whether s is one of the '|'-separated words of list. */
static int one_of(const char *s, const char *list) {
    size_t n = strlen(s);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

/* expect_timeout runs one request that must fail with status want in the
 * given phase, within [lo, hi] ms. */
static void expect_failure(const char *json, const char *url, int64_t deadline, int32_t want, const char *phase,
                           const char *type, int timeout, double lo, double hi) {
    lifeline_client c = new_client(json);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(url);
    r.deadline_ms = deadline;
    lifeline_response *resp = (lifeline_response *)1;
    double t0 = now_ms();
    int32_t st = lifeline_request_do(c, &r, &resp, &err);
    double el = now_ms() - t0;
    CHECK(st == want && err.status == want, &err, "status %d, want %d", st, want);
    CHECK(resp == NULL, NULL, "*out not NULL on failure");
    CHECK(one_of(err.phase, phase), &err, "phase %s, want %s", err.phase, phase);
    CHECK(!type || strcmp(err.error_type, type) == 0, &err, "type %s, want %s", err.error_type, type);
    CHECK(err.timeout == timeout, &err, "timeout flag %d", err.timeout);
    CHECK(err.message && strlen(err.message) > 10, &err, "message");
    CHECK(el >= lo && el <= hi, &err, "took %.0f ms, want [%.0f, %.0f]", el, lo, hi);
    printf("ok %s elapsed_ms=%.0f\n", current, el);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
}

static void t_first_byte(void) {
    current = "first_byte_timeout";
    /* Accepts, reads the request, never answers: incident 01. */
    expect_failure("{\"transport.first_byte_timeout_ms\": 300, \"retry.max_attempts\": 1}",
                   fmt("http://%s/", env("LL_HANG")), 0, LIFELINE_E_TIMEOUT, "first_byte", "first_byte_timeout", 1,
                   250, 2000);
    current = "first_byte_timeout_retried";
    /* Default retries: three attempts, each bounded, still the right phase. */
    expect_failure("{\"transport.first_byte_timeout_ms\": 300}", fmt("http://%s/", env("LL_HANG")), 0,
                   LIFELINE_E_TIMEOUT, "first_byte", "first_byte_timeout", 1, 850, 3500);
}

static void t_tls_stall(void) {
    current = "tls_handshake_stall";
    expect_failure(fmt("{\"dial.tls_handshake_timeout_ms\": 300, \"retry.max_attempts\": 1, \"tls.ca_file\": \"%s\"}",
                       env("LL_CA_FILE")),
                   fmt("https://%s/", env("LL_TLS_STALL")), 0, LIFELINE_E_TIMEOUT, "tls", "tls_timeout", 1, 250,
                   2000);
}

static void t_connect_hang(void) {
    current = "connect_timeout";
    expect_failure("{\"dial.connect_timeout_ms\": 300, \"retry.max_attempts\": 1}",
                   fmt("http://%s/", env("LL_BLACKHOLE")), 0, LIFELINE_E_TIMEOUT, "connect", "connect_timeout", 1,
                   250, 2000);
}

static void t_refused(void) {
    current = "connect_refused";
    expect_failure("{\"retry.max_attempts\": 1}", fmt("http://%s/", env("LL_REFUSED")), 0, LIFELINE_E_NETWORK,
                   "connect", "connect_refused", 0, 0, 2000);
}

static void t_deadline(void) {
    current = "total_deadline";
    /* The deadline ends the wait for the first byte: the phase says so once
     * the Transport's error names it ("deadline" while it does not). */
    expect_failure("{\"transport.first_byte_timeout_ms\": 10000}", fmt("http://%s/", env("LL_HANG")), 300,
                   LIFELINE_E_TIMEOUT, "first_byte|deadline", "deadline", 1, 250, 2000);
    current = "default_request_timeout";
    expect_failure("{\"transport.first_byte_timeout_ms\": 10000, \"request_timeout_ms\": 300}",
                   fmt("http://%s/", env("LL_HANG")), 0, LIFELINE_E_TIMEOUT, "first_byte|deadline", "deadline", 1,
                   250, 2000);
}

/* Issue 20, break 10: the total deadline ending a TLS handshake says "tls"
 * (type "deadline"), through a dial and through a request alike. The
 * request half needs the Transport to keep the dial's error in its chain
 * (errors.As(err, *dial.Error)). */
static void t_deadline_phase(void) {
    lifeline_client c = new_client(fmt("{\"dial.tls_handshake_timeout_ms\": 20000, \"retry.max_attempts\": 1, "
                                       "\"tls.ca_file\": \"%s\"}",
                                       env("LL_CA_FILE")));
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    int fd = -1;
    double t0 = now_ms();
    int32_t st = lifeline_dial(c, "tls", env("LL_TLS_STALL"), 300, &fd, &err);
    double el = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && err.timeout && strcmp(err.phase, "tls") == 0 &&
              strcmp(err.error_type, "deadline") == 0 && fd == -1 && el < 2000,
          &err, "dial: %d in %.0f ms", st, el);
    lifeline_request r = get(fmt("https://%s/", env("LL_TLS_STALL")));
    r.deadline_ms = 300;
    lifeline_response *resp = NULL;
    t0 = now_ms();
    st = lifeline_request_do(c, &r, &resp, &err);
    el = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && err.timeout && strcmp(err.phase, "tls") == 0 &&
              strcmp(err.error_type, "deadline") == 0 && resp == NULL && el < 2000,
          &err, "request: %d in %.0f ms", st, el);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok deadline_phase\n");
}

static void t_dns(void) {
    current = "dns_no_addresses";
    expect_failure("{\"dial\": {\"hosts\": {\"nowhere.test\": []}}, \"retry.max_attempts\": 1}",
                   "http://nowhere.test:1/", 0, LIFELINE_E_NETWORK, "dns", "dns_no_addresses", 0, 0, 2000);
}

static void t_stall(void) {
    current = "body_stall";
    expect_failure("{\"transport.stall_timeout_ms\": 300, \"retry.max_attempts\": 1}",
                   fmt("%s/stall", env("LL_HTTP")), 0, LIFELINE_E_TIMEOUT, "stall", "stall_timeout", 1, 250, 2000);
}

static void t_large(void) {
    lifeline_client c = new_client("{\"max_response_bytes\": 1000}");
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/big", env("LL_HTTP")));
    lifeline_response *resp = NULL;
    int32_t st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_E_TOO_LARGE && strcmp(err.error_type, "too_large") == 0, &err, "status %d", st);
    lifeline_client_close(c, NULL);
    c = new_client(NULL);
    st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK && resp->body_len == 1 << 20, &err, "status %d", st);
    for (int i = 0; i < 1 << 20; i++) CHECK(resp->body[i] == (uint8_t)(i % 251), NULL, "byte %d", i);
    lifeline_response_free(resp);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok large_body\n");

    /* Without a cap, a Content-Length is still a claim, not bytes: a
     * terabyte announced and three bytes sent fail the request; the
     * library neither allocates the terabyte (a fatal out-of-memory in
     * this process) nor poisons itself. */
    c = new_client("{\"max_response_bytes\": -1, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    r = get(fmt("%s/huge", env("LL_HTTP")));
    resp = NULL;
    st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_E_NETWORK && resp == NULL, &err, "huge: status %d", st);
    r = get(fmt("%s/hello", env("LL_HTTP")));
    st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK && resp->status == 200, &err, "after huge: status %d", st);
    lifeline_response_free(resp);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok huge_length\n");
}

/* ------------------------------------------------------------------ */

static void t_config(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    char *doc = NULL;
    size_t n = 0;
    CHECK(lifeline_client_config_json(c, &doc, &n, &err) == LIFELINE_OK && doc && n == strlen(doc), &err, "dump");
    /* Finite defaults for every wait. */
    static const struct {
        const char *key;
        long long want;
    } defaults[] = {
        {"request_timeout_ms", 30000},          {"transport.first_byte_timeout_ms", 15000},
        {"transport.stall_timeout_ms", 30000},  {"dial.resolve_timeout_ms", 5000},
        {"dial.connect_timeout_ms", 5000},      {"dial.tls_handshake_timeout_ms", 5000},
        {"dial.first_byte_timeout_ms", 30000},  {"dial.timeout_ms", 15000},
        {"retry.max_attempts", 3},              {"max_response_bytes", 67108864},
        {"transport.idle_conn_timeout_ms", 30000},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        CHECK(json_int(doc, defaults[i].key) == defaults[i].want, NULL, "default of %s is %lld", defaults[i].key,
              json_int(doc, defaults[i].key));
    CHECK(strstr(doc, ":-1") == NULL, NULL, "a limit is off by default: %s", doc);
    lifeline_free(doc);

    /* Typed setters. */
    CHECK(lifeline_client_set_int(c, "dial.connect_timeout_ms", 1234, &err) == LIFELINE_OK, &err, "set_int");
    CHECK(lifeline_client_set_double(c, "transport.hedge_quantile", 0.95, &err) == LIFELINE_OK, &err, "set_double");
    CHECK(lifeline_client_set_double(c, "retry.multiplier", 3, &err) == LIFELINE_OK, &err, "set_double");
    CHECK(lifeline_client_set_bool(c, "dial.keepalive.enable", 1, &err) == LIFELINE_OK, &err, "set_bool");
    CHECK(lifeline_client_set_string(c, "transport.proxy", "none", &err) == LIFELINE_OK, &err, "set_string");
    CHECK(lifeline_client_set_string(c, "dial.hosts", "{\"svc.test\": [\"127.0.0.1\"]}", &err) == LIFELINE_OK,
          &err, "hosts");

    /* Rejections name the key. */
    int32_t st = lifeline_client_set_int(c, "dial.conect_timeout_ms", 1, &err);
    CHECK(st == LIFELINE_E_UNKNOWN_KEY && strstr(err.message, "dial.conect_timeout_ms") &&
              strcmp(err.error_type, "unknown_key") == 0,
          &err, "unknown key: %d", st);
    st = lifeline_client_set_int(c, "retry.max_attempts", -1, &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "retry.max_attempts"), &err, "negative attempts %d", st);
    st = lifeline_client_set_string(c, "dial.timeout_ms", "5s", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "dial.timeout_ms"), &err, "string for int %d", st);
    st = lifeline_client_set_double(c, "transport.hedge_quantile", NAN, &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "transport.hedge_quantile"), &err, "NaN %d", st);
    st = lifeline_client_set_double(c, "transport.hedge_quantile", 1.5, &err);
    CHECK(st == LIFELINE_E_BAD_VALUE, &err, "quantile 1.5 %d", st);
    st = lifeline_client_set_double(c, "retry.max_attempts", 2.0, &err);
    CHECK(st == LIFELINE_E_BAD_VALUE, &err, "double for int %d", st);
    st = lifeline_client_set_bool(c, "tls.insecure_skip_verify", 7, &err);
    CHECK(st == LIFELINE_E_INVALID_ARGUMENT, &err, "bool 7 %d", st);
    st = lifeline_client_set_string(c, "tls.ca_file", "/nonexistent/ca.pem", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "tls.ca_file"), &err, "ca file %d", st);
    st = lifeline_client_set_string(c, "tls.ca_pem", "not a pem", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "tls.ca_pem"), &err, "ca pem %d", st);
    st = lifeline_client_set_string(c, "transport.proxy", "ftp://x", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "transport.proxy"), &err, "proxy %d", st);
    st = lifeline_client_set_string(c, "dial.hosts", "{\"a\": [\"not-an-ip\"]}", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "dial.hosts"), &err, "hosts %d", st);
    st = lifeline_client_set_int(c, "dial.timeout_ms", INT64_MAX, &err);
    CHECK(st == LIFELINE_E_BAD_VALUE, &err, "overflowing duration %d", st);
    st = lifeline_client_set_int(c, NULL, 1, &err);
    CHECK(st == LIFELINE_E_INVALID_ARGUMENT && strstr(err.message, "key"), &err, "NULL key %d", st);
    st = lifeline_client_set_int(c, "dial.\xff", 1, &err);
    CHECK(st == LIFELINE_E_INVALID_ARGUMENT && strstr(err.message, "UTF-8"), &err, "bad utf8 key %d", st);
    st = lifeline_client_set_string(c, "user_agent", NULL, &err);
    CHECK(st == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL value %d", st);

    /* JSON: nested and dotted, all or nothing. */
    st = lifeline_client_configure(c, "{\"retry\": {\"max_attempts\": 2, \"budget\": {\"ratio\": 0.2}}, "
                                      "\"dial.attempt_delay_ms\": 100}", &err);
    CHECK(st == LIFELINE_OK, &err, "nested json %d", st);
    st = lifeline_client_configure(c, "{\"retry.max_attempts\": 5, \"dial\": {\"bogus_ms\": 1}}", &err);
    CHECK(st == LIFELINE_E_UNKNOWN_KEY && strstr(err.message, "dial.bogus_ms"), &err, "nested unknown %d", st);
    st = lifeline_client_configure(c, "{\"retry.max_attempts\": 1.5}", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "retry.max_attempts"), &err, "fraction %d", st);
    st = lifeline_client_configure(c, "{\"retry.max_attempts\": 4, \"retry\": {\"max_attempts\": 4}}", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE, &err, "twice %d", st);
    st = lifeline_client_configure(c, "{\"retry.max_attempts\": null}", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE, &err, "null %d", st);
    const char *badjson[] = {"{", "[]", "42", "", "{\"a\":1} x", "null", "{\"tls.insecure_skip_verify\": \"\xc3\x28\"}"};
    for (size_t i = 0; i < sizeof badjson / sizeof badjson[0]; i++) {
        st = lifeline_client_configure(c, badjson[i], &err);
        CHECK(st == LIFELINE_E_INVALID_ARGUMENT && strstr(err.message, "json"), &err, "bad json #%zu: %d", i, st);
    }
    /* Issue 20, break 8: a stray closing brace or bracket after the object,
     * and a key given twice, were applied (the last key winning). */
    static const struct {
        const char *doc, *says;
    } strict[] = {
        {"{\"retry.max_attempts\": 5}}", "trailing data after the object at byte 25"},
        {"{\"retry.max_attempts\": 5}]", "trailing data after the object at byte 25"},
        {"{\"retry.max_attempts\": 5, \"retry.max_attempts\": 1}", "key \"retry.max_attempts\" given twice"},
        {"{\"retry\": {\"max_attempts\": 5, \"max_attempts\": 1}}", "key \"retry.max_attempts\" given twice"},
    };
    for (size_t i = 0; i < sizeof strict / sizeof strict[0]; i++) {
        st = lifeline_client_configure(c, strict[i].doc, &err);
        CHECK(st == LIFELINE_E_INVALID_ARGUMENT && strstr(err.message, strict[i].says), &err, "%s: %d",
              strict[i].doc, st);
    }
    st = lifeline_client_set_string(c, "dial.hosts", "{\"a\": [\"127.0.0.1\"], \"a\": [\"127.0.0.2\"]}", &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "given twice"), &err, "hosts twice %d", st);
    CHECK(lifeline_client_configure(c, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL json");
    CHECK(lifeline_client_config_json(c, &doc, NULL, &err) == LIFELINE_OK, &err, "dump 2");
    CHECK(json_int(doc, "retry.max_attempts") == 2, NULL, "a failed configure changed the config: %s", doc);
    CHECK(json_int(doc, "dial.connect_timeout_ms") == 1234 && json_int(doc, "dial.attempt_delay_ms") == 100, NULL,
          "%s", doc);
    CHECK(strstr(doc, "\"retry.budget.ratio\":0.2") && strstr(doc, "\"svc.test\":[\"127.0.0.1\"]"), NULL, "%s", doc);
    lifeline_free(doc);

    /* dial.hosts is used, then the configuration is frozen. */
    char *url = fmt("http://svc.test:%s/hello", strrchr(env("LL_HTTP"), ':') + 1);
    lifeline_request r = get(url);
    lifeline_response *resp = NULL;
    st = lifeline_request_do(c, &r, &resp, &err);
    CHECK(st == LIFELINE_OK && resp->status == 200, &err, "request via dial.hosts %d", st);
    lifeline_response_free(resp);
    st = lifeline_client_set_int(c, "dial.connect_timeout_ms", 1, &err);
    CHECK(st == LIFELINE_E_STATE && strstr(err.message, "frozen"), &err, "frozen %d", st);
    CHECK(lifeline_client_configure(c, "{}", &err) == LIFELINE_E_STATE, &err, "frozen json");

    /* A whole-config inconsistency fails the first request, naming the key,
     * and leaves the client configurable. */
    lifeline_client c2 = new_client("{\"retry.initial_interval_ms\": 9000, \"retry.max_interval_ms\": 1000}");
    st = lifeline_request_do(c2, &r, &resp, &err);
    CHECK(st == LIFELINE_E_BAD_VALUE && strstr(err.message, "retry.initial_interval_ms"), &err, "inconsistent %d",
          st);
    CHECK(lifeline_client_set_int(c2, "retry.max_interval_ms", 10000, &err) == LIFELINE_OK, &err, "fix");
    CHECK(lifeline_client_set_string(c2, "dial.hosts", "{\"svc.test\": [\"127.0.0.1\"]}", &err) == LIFELINE_OK,
          &err, "hosts");
    st = lifeline_request_do(c2, &r, &resp, &err);
    CHECK(st == LIFELINE_OK, &err, "after fix %d", st);
    lifeline_response_free(resp);
    lifeline_client_close(c2, NULL);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok config\n");
}

/* ------------------------------------------------------------------ */

struct cbrec {
    atomic_int calls;
    atomic_int status;
    atomic_ullong op;
    atomic_int on_starting_thread;
    pthread_t starter;
};

static void record_cb(lifeline_op op, int32_t status, void *ud) {
    struct cbrec *r = (struct cbrec *)ud;
    atomic_store(&r->status, status);
    atomic_store(&r->op, op);
    if (pthread_equal(pthread_self(), r->starter)) atomic_store(&r->on_starting_thread, 1);
    atomic_fetch_add(&r->calls, 1);
}

static void t_async(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    enum { N = 20 };
    struct cbrec recs[N];
    lifeline_op ops[N];
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    for (int i = 0; i < N; i++) {
        memset(&recs[i], 0, sizeof recs[i]);
        recs[i].starter = pthread_self();
        lifeline_callback cb = i % 4 == 3 ? NULL : record_cb;
        CHECK(lifeline_request_start(c, &r, cb, &recs[i], &ops[i], &err) == LIFELINE_OK && ops[i] != 0, &err,
              "start %d", i);
    }
    for (int i = 0; i < N; i++) {
        /* Poll until done, then wait: both say finished. */
        int32_t st;
        double t0 = now_ms();
        while ((st = lifeline_op_poll(ops[i], &err)) == LIFELINE_E_PENDING && now_ms() - t0 < 5000) sleep_ms(1);
        CHECK(st == LIFELINE_OK, &err, "poll %d: %d", i, st);
        CHECK(lifeline_op_wait(ops[i], -1, &err) == LIFELINE_OK, &err, "wait");
        if (i % 4 != 3) {
            /* wait returned: the callback has returned too. */
            CHECK(atomic_load(&recs[i].calls) == 1, NULL, "callback ran %d times", atomic_load(&recs[i].calls));
            CHECK(atomic_load(&recs[i].status) == LIFELINE_OK && atomic_load(&recs[i].op) == ops[i], NULL, "cb args");
            CHECK(!atomic_load(&recs[i].on_starting_thread), NULL, "callback on the starting thread");
        }
        lifeline_response *resp = NULL;
        CHECK(lifeline_op_response(ops[i], &resp, &err) == LIFELINE_OK && resp->status == 200, &err, "response");
        lifeline_response_free(resp);
        CHECK(lifeline_op_response(ops[i], &resp, &err) == LIFELINE_E_STATE && resp == NULL, &err, "taken twice");
        int fd = 7;
        CHECK(lifeline_op_fd(ops[i], &fd, &err) == LIFELINE_E_STATE && fd == -1, &err, "fd of a request");
        CHECK(lifeline_op_cancel(ops[i], &err) == LIFELINE_OK, &err, "cancel after done");
        CHECK(lifeline_op_free(ops[i], &err) == LIFELINE_OK, &err, "free");
        CHECK(lifeline_op_free(ops[i], &err) == LIFELINE_E_INVALID_HANDLE, &err, "double free");
        CHECK(lifeline_op_wait(ops[i], 0, &err) == LIFELINE_E_INVALID_HANDLE, &err, "wait on freed");
    }
    sleep_ms(50);
    for (int i = 0; i < N; i++)
        if (i % 4 != 3) CHECK(atomic_load(&recs[i].calls) == 1, NULL, "callback %d ran %d times", i, recs[i].calls);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok async\n");
}

/* A callback that takes the result, waits on its own op and frees it. */
struct reentrant {
    atomic_int done;
    atomic_int wait_status, resp_status, free_status, http;
};

static void reentrant_cb(lifeline_op op, int32_t status, void *ud) {
    struct reentrant *r = (struct reentrant *)ud;
    (void)status;
    lifeline_error err = LIFELINE_ERROR_INIT;
    atomic_store(&r->wait_status, lifeline_op_wait(op, -1, &err));
    lifeline_response *resp = NULL;
    atomic_store(&r->resp_status, lifeline_op_response(op, &resp, &err));
    if (resp) atomic_store(&r->http, resp->status);
    lifeline_response_free(resp);
    atomic_store(&r->free_status, lifeline_op_free(op, &err));
    lifeline_error_clear(&err);
    atomic_store(&r->done, 1);
}

static void t_reentrant(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    struct reentrant rec;
    memset(&rec, 0, sizeof rec);
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_op op;
    CHECK(lifeline_request_start(c, &r, reentrant_cb, &rec, &op, NULL) == LIFELINE_OK, NULL, "start");
    double t0 = now_ms();
    while (!atomic_load(&rec.done) && now_ms() - t0 < 5000) sleep_ms(1);
    CHECK(atomic_load(&rec.done), NULL, "callback deadlocked or never ran");
    CHECK(rec.wait_status == LIFELINE_OK && rec.resp_status == LIFELINE_OK && rec.free_status == LIFELINE_OK &&
              rec.http == 200,
          NULL, "wait %d resp %d free %d http %d", rec.wait_status, rec.resp_status, rec.free_status, rec.http);
    lifeline_client_close(c, NULL);
    printf("ok callback_reentrant\n");
}

struct canceller {
    lifeline_op op;
    int delay_ms;
    double at;
    int32_t st1, st2;
};

static void *cancel_thread(void *p) {
    struct canceller *k = (struct canceller *)p;
    sleep_ms(k->delay_ms);
    k->at = now_ms();
    k->st1 = lifeline_op_cancel(k->op, NULL);
    k->st2 = lifeline_op_cancel(k->op, NULL); /* idempotent */
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void t_cancel(void) {
    lifeline_client c = new_client("{\"transport.first_byte_timeout_ms\": 20000, \"request_timeout_ms\": 20000}");
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    enum { RUNS = 7 };
    double lat[RUNS];
    for (int i = 0; i < RUNS; i++) {
        struct cbrec rec;
        memset(&rec, 0, sizeof rec);
        rec.starter = pthread_self();
        lifeline_request r = get(fmt("http://%s/", env("LL_HANG")));
        struct canceller k = {0, 150, 0, -1, -1};
        CHECK(lifeline_request_start(c, &r, record_cb, &rec, &k.op, &err) == LIFELINE_OK, &err, "start");
        pthread_t th;
        pthread_create(&th, NULL, cancel_thread, &k);
        int32_t st = lifeline_op_wait(k.op, -1, &err);
        double done = now_ms();
        pthread_join(th, NULL);
        CHECK(st == LIFELINE_OK && k.st1 == LIFELINE_OK && k.st2 == LIFELINE_OK, &err, "wait %d cancel %d %d", st,
              k.st1, k.st2);
        lat[i] = done - k.at;
        lifeline_response *resp = NULL;
        st = lifeline_op_response(k.op, &resp, &err);
        CHECK(st == LIFELINE_E_CANCELED && strcmp(err.phase, "canceled") == 0 && !err.timeout, &err, "result %d", st);
        CHECK(atomic_load(&rec.calls) == 1 && rec.status == LIFELINE_E_CANCELED, NULL, "callback %d status %d",
              rec.calls, rec.status);
        CHECK(lifeline_op_cancel(k.op, &err) == LIFELINE_OK, &err, "cancel after finish");
        sleep_ms(20);
        CHECK(atomic_load(&rec.calls) == 1, NULL, "callback ran again");
        lifeline_op_free(k.op, NULL);
    }
    qsort(lat, RUNS, sizeof lat[0], cmp_double);
    CHECK(lat[RUNS / 2] < 100, NULL, "median cancel latency %.1f ms", lat[RUNS / 2]);
    CHECK(lat[RUNS - 1] < 2000, NULL, "max cancel latency %.1f ms", lat[RUNS - 1]); /* loaded machines: the hang is 5 s+ */

    /* Cancel before any I/O could happen, and cancel of a dial stuck in a
     * TLS handshake and in a connect. */
    lifeline_op op;
    lifeline_request r = get(fmt("http://%s/", env("LL_HANG")));
    CHECK(lifeline_request_start(c, &r, NULL, NULL, &op, &err) == LIFELINE_OK, &err, "start");
    lifeline_op_cancel(op, NULL);
    CHECK(lifeline_op_wait(op, 1000, &err) == LIFELINE_OK, &err, "immediate cancel");
    CHECK(lifeline_op_response(op, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL out");
    lifeline_response *resp;
    CHECK(lifeline_op_response(op, &resp, &err) == LIFELINE_E_CANCELED, &err, "immediate cancel result");
    lifeline_op_free(op, NULL);
    lifeline_client_close(c, NULL);

    c = new_client(fmt("{\"dial.tls_handshake_timeout_ms\": 20000, \"dial.connect_timeout_ms\": 20000, "
                       "\"dial.timeout_ms\": 30000, \"tls.ca_file\": \"%s\"}",
                       env("LL_CA_FILE")));
    const char *targets[][2] = {{"tls", env("LL_TLS_STALL")}, {"tcp", env("LL_BLACKHOLE")}};
    for (int i = 0; i < 2; i++) {
        struct canceller k = {0, 150, 0, -1, -1};
        CHECK(lifeline_dial_start(c, targets[i][0], targets[i][1], 0, NULL, NULL, &k.op, &err) == LIFELINE_OK, &err,
              "dial start");
        pthread_t th;
        pthread_create(&th, NULL, cancel_thread, &k);
        CHECK(lifeline_op_wait(k.op, 5000, &err) == LIFELINE_OK, &err, "dial wait");
        double el = now_ms() - k.at;
        pthread_join(th, NULL);
        int fd = 5;
        int32_t st = lifeline_op_fd(k.op, &fd, &err);
        CHECK(st == LIFELINE_E_CANCELED && fd == -1, &err, "dial %s result %d", targets[i][0], st);
        CHECK(el < 2000, NULL, "dial %s cancel took %.0f ms", targets[i][0], el);
        lifeline_op_free(k.op, NULL);
    }
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok cancel median_ms=%.2f max_ms=%.2f\n", lat[RUNS / 2], lat[RUNS - 1]);
}

/* Issue 20, break 6: a cancel (or a client close) while the library waits
 * to retry a 503 with Retry-After used to complete LIFELINE_OK with the
 * held 503. lifeline.h: LIFELINE_E_CANCELED (LIFELINE_E_CLOSED). */
static void t_cancel_held(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/unavailable", env("LL_HTTP")));
    for (int closing = 0; closing < 2; closing++) {
        lifeline_client c = new_client("{\"request_timeout_ms\": 20000}");
        CHECK(c, NULL, "client");
        struct cbrec rec;
        memset(&rec, 0, sizeof rec);
        lifeline_op op;
        CHECK(lifeline_request_start(c, &r, record_cb, &rec, &op, &err) == LIFELINE_OK, &err, "start");
        sleep_ms(300); /* the 503 arrived; the library waits out Retry-After: 5 */
        CHECK(lifeline_op_poll(op, &err) == LIFELINE_E_PENDING, &err, "finished before the cancel");
        double t0 = now_ms();
        if (closing)
            lifeline_client_close(c, NULL);
        else
            lifeline_op_cancel(op, NULL);
        CHECK(lifeline_op_wait(op, 5000, &err) == LIFELINE_OK, &err, "wait");
        double el = now_ms() - t0;
        lifeline_response *resp = (lifeline_response *)1;
        int32_t want = closing ? LIFELINE_E_CLOSED : LIFELINE_E_CANCELED;
        int32_t st = lifeline_op_response(op, &resp, &err);
        CHECK(st == want && resp == NULL && strcmp(err.phase, "canceled") == 0, &err, "%s: status %d, want %d",
              closing ? "close" : "cancel", st, want);
        CHECK(rec.calls == 1 && rec.status == want, NULL, "callback status %d", rec.status);
        CHECK(el < 2000, NULL, "ended %.0f ms after the %s", el, closing ? "close" : "cancel");
        lifeline_op_free(op, NULL);
        if (!closing) lifeline_client_close(c, NULL);
    }
    lifeline_error_clear(&err);
    printf("ok cancel_held\n");
}

/* ------------------------------------------------------------------ */
/* The C ABI stress program: threads start requests and dials, cancel,
 * poll, wait on, take from and free the same and different operations at
 * once, from callbacks too, while another thread closes the client under
 * them and replaces it. No crash (ASan watches), no status the ABI does
 * not promise, every callback exactly once, every library allocation and
 * descriptor given back, all in bounded time. */

enum { STRESS_SLOTS = 32, STRESS_THREADS = 8 };
static _Atomic lifeline_client stress_client;
static atomic_ullong stress_slots[STRESS_SLOTS];
static atomic_int stress_stop, stress_cb_expected, stress_cb_ran, stress_bad;
static char stress_why[256];
static char stress_urls[3][256]; /* set before the threads start (fmt is not thread-safe) */
static char stress_config[512];

static void stress_badf(const char *what, int32_t st) {
    if (atomic_fetch_add(&stress_bad, 1) == 0) snprintf(stress_why, sizeof stress_why, "%s: status %d", what, st);
}

/* An op's result: one of what the ABI promises for these targets. */
static int stress_result_ok(int32_t st) {
    return st == LIFELINE_OK || st == LIFELINE_E_CANCELED || st == LIFELINE_E_CLOSED || st == LIFELINE_E_TIMEOUT ||
           st == LIFELINE_E_NETWORK || st == LIFELINE_E_STATE || st == LIFELINE_E_PENDING ||
           st == LIFELINE_E_INVALID_HANDLE || st == LIFELINE_E_UNAVAILABLE;
}

struct stress_rec {
    int reenter;
};

static void stress_cb(lifeline_op op, int32_t status, void *ud) {
    struct stress_rec *rec = (struct stress_rec *)ud;
    if (rec->reenter) {
        /* Calls from inside the callback, on its own op (maybe already
         * freed by another thread: then E_INVALID_HANDLE). */
        int32_t st = lifeline_op_wait(op, 0, NULL);
        if (st != LIFELINE_OK && st != LIFELINE_E_INVALID_HANDLE) stress_badf("wait in callback", st);
        lifeline_op_cancel(op, NULL);
    }
    if (!stress_result_ok(status) || status == LIFELINE_E_PENDING) stress_badf("callback status", status);
    free(rec);
    atomic_fetch_add(&stress_cb_ran, 1);
}

static void stress_take(lifeline_op op, lifeline_error *err) {
    lifeline_response *resp = NULL;
    int32_t st = lifeline_op_response(op, &resp, err);
    if (st == LIFELINE_OK) {
        if (!resp) stress_badf("response NULL", st);
        lifeline_response_free(resp);
    } else if (!stress_result_ok(st)) {
        stress_badf("response", st);
    }
    int fd = -1;
    st = lifeline_op_fd(op, &fd, err);
    if (st == LIFELINE_OK) {
        if (fd < 0) stress_badf("fd -1", st);
        /* The relay may be gone already (no SIGPIPE for that). */
        (void)send(fd, "ping", 4, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
    } else if (!stress_result_ok(st)) {
        stress_badf("fd", st);
    }
}

static void *stress_worker(void *p) {
    unsigned seed = (unsigned)(uintptr_t)p * 7919u + 1;
    lifeline_error err = LIFELINE_ERROR_INIT;
    const char *urls[] = {stress_urls[0], stress_urls[1], stress_urls[2]};
    while (!atomic_load(&stress_stop)) {
        int slot = rand_r(&seed) % STRESS_SLOTS;
        int action = rand_r(&seed) % 10;
        lifeline_op op = atomic_load(&stress_slots[slot]);
        int32_t st;
        switch (action) {
        case 0:
        case 1: { /* start a request or a dial into the slot */
            lifeline_client c = atomic_load(&stress_client);
            struct stress_rec *rec = NULL;
            int with_cb = rand_r(&seed) % 2;
            if (with_cb) {
                rec = (struct stress_rec *)calloc(1, sizeof *rec);
                rec->reenter = rand_r(&seed) % 2;
            }
            lifeline_op nop = 0;
            int kind = rand_r(&seed) % 6;
            if (kind < 3) {
                lifeline_request r = get(urls[kind]);
                r.deadline_ms = 100 + rand_r(&seed) % 400;
                st = lifeline_request_start(c, &r, with_cb ? stress_cb : NULL, rec, &nop, &err);
            } else {
                const char *targets[][2] = {{"tcp", env("LL_ECHO_TCP")}, {"tls", env("LL_ECHO_TLS")},
                                            {"tls", env("LL_TLS_STALL")}};
                st = lifeline_dial_start(c, targets[kind - 3][0], targets[kind - 3][1], 100 + rand_r(&seed) % 400,
                                         with_cb ? stress_cb : NULL, rec, &nop, &err);
            }
            if (st != LIFELINE_OK) {
                /* The closer thread closed this client under us. */
                if (st != LIFELINE_E_CLOSED && st != LIFELINE_E_INVALID_HANDLE) stress_badf("start", st);
                free(rec);
                break;
            }
            if (with_cb) atomic_fetch_add(&stress_cb_expected, 1);
            lifeline_op old = atomic_exchange(&stress_slots[slot], nop);
            if (old) lifeline_op_free(old, NULL); /* ours now: running or not */
            break;
        }
        case 2: /* cancel, twice */
            lifeline_op_cancel(op, NULL);
            lifeline_op_cancel(op, NULL);
            break;
        case 3:
            st = lifeline_op_poll(op, &err);
            if (!stress_result_ok(st)) stress_badf("poll", st);
            break;
        case 4:
        case 5:
            st = lifeline_op_wait(op, rand_r(&seed) % 50, &err);
            if (!stress_result_ok(st)) stress_badf("wait", st);
            break;
        case 6:
        case 7:
            stress_take(op, &err);
            break;
        default: { /* take it out of the table and free it, maybe after a wait */
            lifeline_op old = atomic_exchange(&stress_slots[slot], 0);
            if (!old) break;
            if (rand_r(&seed) % 2) lifeline_op_wait(old, 20, NULL);
            st = lifeline_op_free(old, &err);
            if (st != LIFELINE_OK) stress_badf("free of an owned op", st);
            st = lifeline_op_free(old, &err);
            if (st != LIFELINE_E_INVALID_HANDLE) stress_badf("second free", st);
        }
        }
    }
    lifeline_error_clear(&err);
    return NULL;
}

static void *stress_closer(void *p) {
    (void)p;
    while (!atomic_load(&stress_stop)) {
        sleep_ms(150);
        lifeline_client nc = new_client(stress_config);
        lifeline_client old = atomic_exchange(&stress_client, nc);
        if (lifeline_client_close(old, NULL) != LIFELINE_OK) stress_badf("close", -1);
    }
    return NULL;
}

static char stress_fds0[4096]; /* 1: open before the stress */

static int open_fds(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1) n++;
    return n;
}

/* new_fds describes the descriptors open now that were not at the start. */
static const char *new_fds(void) {
    static char out[512];
    size_t k = 0;
    out[0] = 0;
    for (int fd = 0; fd < 4096 && k < sizeof out - 80; fd++) {
        if (stress_fds0[fd] || fcntl(fd, F_GETFD) == -1) continue;
        char path[64], target[64] = "?";
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 0) target[n] = 0;
        k += snprintf(out + k, sizeof out - k, " %d=%s", fd, target);
    }
    return out;
}

static void t_stress(void) {
    const char *ds = getenv("LL_STRESS_MS");
    int duration = ds ? atoi(ds) : 3000;
    lifeline_client observer = new_client(NULL);
    CHECK(observer, NULL, "observer");
    /* Warm up: the Go runtime opens its poller's descriptors at its first
     * network I/O, once per process. */
    lifeline_request warm = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_response *resp = NULL;
    CHECK(lifeline_request_do(observer, &warm, &resp, NULL) == LIFELINE_OK, NULL, "warm-up");
    lifeline_response_free(resp);
    lifeline_client_close(observer, NULL);
    observer = new_client(NULL);
    long long live0 = metric(observer, "live_allocations");
    int fds0 = open_fds();
    for (int fd = 0; fd < 4096; fd++) stress_fds0[fd] = fcntl(fd, F_GETFD) != -1;
    snprintf(stress_urls[0], sizeof stress_urls[0], "%s/hello", env("LL_HTTP"));
    snprintf(stress_urls[1], sizeof stress_urls[1], "%s/unavailable", env("LL_HTTP"));
    snprintf(stress_urls[2], sizeof stress_urls[2], "http://%s/", env("LL_HANG"));
    snprintf(stress_config, sizeof stress_config, "{\"retry.max_attempts\": 2, \"tls.ca_file\": \"%s\"}",
             env("LL_CA_FILE"));
    atomic_store(&stress_client, new_client(stress_config));
    atomic_store(&stress_stop, 0);
    pthread_t th[STRESS_THREADS + 1];
    double t0 = now_ms();
    for (int i = 0; i < STRESS_THREADS; i++) pthread_create(&th[i], NULL, stress_worker, (void *)(uintptr_t)(i + 1));
    pthread_create(&th[STRESS_THREADS], NULL, stress_closer, NULL);
    sleep_ms(duration);
    atomic_store(&stress_stop, 1);
    for (int i = 0; i <= STRESS_THREADS; i++) pthread_join(th[i], NULL);
    double joined = now_ms() - t0;
    /* Drain: free what is left (running ops are cancelled), close. */
    for (int i = 0; i < STRESS_SLOTS; i++) {
        lifeline_op op = atomic_exchange(&stress_slots[i], 0);
        if (op) lifeline_op_free(op, NULL);
    }
    lifeline_client_close(atomic_exchange(&stress_client, 0), NULL);
    double t1 = now_ms();
    while ((atomic_load(&stress_cb_ran) != atomic_load(&stress_cb_expected) ||
            metric(observer, "live_allocations") != live0 || open_fds() != fds0) &&
           now_ms() - t1 < 5000)
        sleep_ms(10);
    double drained = now_ms() - t1;
    long long live1 = metric(observer, "live_allocations");
    int fds1 = open_fds();
    lifeline_client_close(observer, NULL);
    CHECK(atomic_load(&stress_bad) == 0, NULL, "%d bad results, first: %s", atomic_load(&stress_bad), stress_why);
    CHECK(atomic_load(&stress_cb_ran) == atomic_load(&stress_cb_expected), NULL, "callbacks ran %d, expected %d",
          atomic_load(&stress_cb_ran), atomic_load(&stress_cb_expected));
    CHECK(live1 == live0, NULL, "live allocations %lld, %lld before", live1, live0);
    CHECK(fds1 == fds0, NULL, "open descriptors %d, %d before; new:%s", fds1, fds0, new_fds());
    CHECK(joined < duration + 5000, NULL, "threads took %.0f ms to stop", joined - duration);
    printf("ok stress duration_ms=%d callbacks=%d drained_ms=%.0f\n", duration, atomic_load(&stress_cb_ran),
           drained);
}

static void t_free_running(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    struct cbrec rec;
    memset(&rec, 0, sizeof rec);
    lifeline_request r = get(fmt("http://%s/", env("LL_HANG")));
    lifeline_op op;
    CHECK(lifeline_request_start(c, &r, record_cb, &rec, &op, NULL) == LIFELINE_OK, NULL, "start");
    sleep_ms(50);
    CHECK(lifeline_op_free(op, NULL) == LIFELINE_OK, NULL, "free running");
    double t0 = now_ms();
    while (atomic_load(&rec.calls) == 0 && now_ms() - t0 < 2000) sleep_ms(1);
    CHECK(atomic_load(&rec.calls) == 1 && rec.status == LIFELINE_E_CANCELED && rec.op == op, NULL,
          "callback after free: calls %d status %d", rec.calls, rec.status);
    CHECK(lifeline_op_cancel(op, NULL) == LIFELINE_E_INVALID_HANDLE, NULL, "stale handle");
    lifeline_client_close(c, NULL);
    printf("ok free_running\n");
}

static void t_close(void) {
    lifeline_client c = new_client("{\"transport.first_byte_timeout_ms\": 20000}");
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    enum { N = 3 };
    struct cbrec recs[N];
    lifeline_op ops[N];
    lifeline_request r = get(fmt("http://%s/", env("LL_HANG")));
    for (int i = 0; i < N; i++) {
        memset(&recs[i], 0, sizeof recs[i]);
        CHECK(lifeline_request_start(c, &r, record_cb, &recs[i], &ops[i], &err) == LIFELINE_OK, &err, "start");
    }
    sleep_ms(100);
    double t0 = now_ms();
    CHECK(lifeline_client_close(c, &err) == LIFELINE_OK, &err, "close");
    for (int i = 0; i < N; i++) {
        CHECK(lifeline_op_wait(ops[i], 2000, &err) == LIFELINE_OK, &err, "wait after close");
        lifeline_response *resp;
        int32_t st = lifeline_op_response(ops[i], &resp, &err);
        CHECK(st == LIFELINE_E_CLOSED && strcmp(err.phase, "canceled") == 0, &err, "status %d", st);
        CHECK(recs[i].calls == 1 && recs[i].status == LIFELINE_E_CLOSED, NULL, "callback");
        lifeline_op_free(ops[i], NULL);
    }
    double el = now_ms() - t0;
    CHECK(el < 2000, NULL, "close took %.0f ms to end the operations", el);
    CHECK(lifeline_client_close(c, &err) == LIFELINE_E_INVALID_HANDLE, &err, "double close");
    lifeline_response *resp;
    CHECK(lifeline_request_do(c, &r, &resp, &err) == LIFELINE_E_INVALID_HANDLE, &err, "request on closed client");
    lifeline_error_clear(&err);
    printf("ok close elapsed_ms=%.0f\n", el);
}

/* ------------------------------------------------------------------ */

static void t_bad_args(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_response *resp = NULL;
    lifeline_op op = 0;
    int32_t st;
    char *url = fmt("%s/hello", env("LL_HTTP"));

#define EXPECT(call, want, what)                                                                                  \
    do {                                                                                                          \
        st = (call);                                                                                              \
        CHECK(st == (want) && err.status == (want) && (st == 0 || err.message), &err, "%s: got %d, want %d",      \
              what, st, want);                                                                                    \
    } while (0)

    EXPECT(lifeline_client_new(NULL, &err), LIFELINE_E_INVALID_ARGUMENT, "client_new(NULL)");
    EXPECT(lifeline_request_do(c, NULL, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL request");
    lifeline_request r = get(url);
    EXPECT(lifeline_request_do(c, &r, NULL, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL out");
    r.url = NULL;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL url");
    CHECK(strstr(err.message, "url") && strcmp(err.phase, "argument") == 0, &err, "names url");
    const char *bad_urls[] = {"", "ftp://127.0.0.1/", "http://", "http://a b/", "http://\xff\xfe/", "::::", "/path"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        r.url = bad_urls[i];
        EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, fmt("bad url #%zu", i));
        CHECK(resp == NULL, NULL, "resp set");
    }
    r = get(url);
    r.method = "GE T";
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "bad method");
    r.method = "G\xc3";
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "non-UTF-8 method");
    r = get(url);
    r.header_count = -1;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "negative header_count");
    CHECK(strstr(err.message, "header_count"), &err, "names header_count");
    r.header_count = 2;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL headers");
    r.header_count = INT64_MAX;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "huge header_count");
    lifeline_header bad_headers[][1] = {{{NULL, "v"}}, {{"X-A", NULL}}, {{"Bad Name", "v"}}, {{"", "v"}},
                                        {{"X-A", "a\r\nInjected: 1"}}, {{"X-A", "\xff"}}};
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        r = get(url);
        r.headers = bad_headers[i];
        r.header_count = 1;
        EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, fmt("bad header #%zu", i));
        CHECK(strstr(err.message, "headers[0]"), &err, "names the header");
    }
    r = get(url);
    r.body_len = -5;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "negative body_len");
    CHECK(strstr(err.message, "body_len"), &err, "names body_len");
    r.body_len = 10;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL body");
    r = get(url);
    r.deadline_ms = INT64_MAX;
    EXPECT(lifeline_request_do(c, &r, &resp, &err), LIFELINE_E_INVALID_ARGUMENT, "deadline overflow");
    r = get(url);
    EXPECT(lifeline_request_start(c, &r, NULL, NULL, NULL, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL op out");
    r.url = "nope";
    op = 99;
    EXPECT(lifeline_request_start(c, &r, NULL, NULL, &op, &err), LIFELINE_E_INVALID_ARGUMENT, "start bad url");
    CHECK(op == 0, NULL, "op set on failure");

    /* Handles: zero, unknown, forged, freed, the wrong kind. */
    r = get(url);
    lifeline_client bogus[] = {0, 1, 12345, (lifeline_client)-1, c ^ 1, c + (1u << 21)};
    for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
        EXPECT(lifeline_request_do(bogus[i], &r, &resp, &err), LIFELINE_E_INVALID_HANDLE, fmt("client #%zu", i));
        EXPECT(lifeline_client_set_int(bogus[i], "retry.max_attempts", 1, &err), LIFELINE_E_INVALID_HANDLE, "set");
        EXPECT(lifeline_op_wait(bogus[i], 0, &err), LIFELINE_E_INVALID_HANDLE, "op");
        EXPECT(lifeline_op_cancel(bogus[i], &err), LIFELINE_E_INVALID_HANDLE, "cancel");
        EXPECT(lifeline_op_free(bogus[i], &err), LIFELINE_E_INVALID_HANDLE, "free");
    }
    EXPECT(lifeline_request_start(c, &r, NULL, NULL, &op, &err), LIFELINE_OK, "start");
    EXPECT(lifeline_request_do((lifeline_client)op, &r, &resp, &err), LIFELINE_E_INVALID_HANDLE, "op as client");
    CHECK(strstr(err.message, "operation"), &err, "says it is an operation");
    EXPECT(lifeline_op_wait((lifeline_op)c, 0, &err), LIFELINE_E_INVALID_HANDLE, "client as op");
    EXPECT(lifeline_client_close((lifeline_client)op, &err), LIFELINE_E_INVALID_HANDLE, "close an op");
    lifeline_op_wait(op, -1, NULL);
    lifeline_op_free(op, NULL);
    EXPECT(lifeline_op_response(op, &resp, &err), LIFELINE_E_INVALID_HANDLE, "freed op");

    /* Dials. */
    int fd = 3;
    EXPECT(lifeline_dial(c, "udp", "127.0.0.1:1", 0, &fd, &err), LIFELINE_E_INVALID_ARGUMENT, "udp");
    CHECK(fd == -1, NULL, "fd set on failure");
    EXPECT(lifeline_dial(c, "tcp", "no-port", 0, &fd, &err), LIFELINE_E_INVALID_ARGUMENT, "address");
    EXPECT(lifeline_dial(c, NULL, "127.0.0.1:1", 0, &fd, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL network");
    EXPECT(lifeline_dial(c, "tcp", NULL, 0, &fd, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL address");
    EXPECT(lifeline_dial(c, "tcp", "127.0.0.1:1", 0, NULL, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL fd");
    EXPECT(lifeline_dial_start(c, "tcp", "127.0.0.1:1", 0, NULL, NULL, NULL, &err), LIFELINE_E_INVALID_ARGUMENT,
           "NULL op");

    /* Out-parameters. */
    EXPECT(lifeline_client_config_json(c, NULL, NULL, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL config out");
    EXPECT(lifeline_client_metrics_json(c, NULL, NULL, &err), LIFELINE_E_INVALID_ARGUMENT, "NULL metrics out");

    /* A NULL error record is fine everywhere. */
    CHECK(lifeline_request_do(c, NULL, &resp, NULL) == LIFELINE_E_INVALID_ARGUMENT, NULL, "NULL err");
    CHECK(lifeline_op_free(0, NULL) == LIFELINE_E_INVALID_HANDLE, NULL, "NULL err");
    lifeline_error_clear(NULL);
    lifeline_free(NULL);
    lifeline_response_free(NULL);

    /* The record is reused across calls without leaking: its message is
     * replaced (ASan/LSan would see a leak otherwise). */
    for (int i = 0; i < 100; i++) lifeline_request_do(0, &r, &resp, &err);
    lifeline_error_clear(&err);
    CHECK(err.message == NULL && err.status == 0, NULL, "clear");
    lifeline_client_close(c, NULL);
    printf("ok bad_args\n");
#undef EXPECT
}

/* ------------------------------------------------------------------ */

static void t_dial(void) {
    lifeline_client c = new_client(fmt("{\"tls.ca_file\": \"%s\"}", env("LL_CA_FILE")));
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    int fd = -1;
    CHECK(lifeline_dial(c, "tcp", env("LL_ECHO_TCP"), 5000, &fd, &err) == LIFELINE_OK && fd >= 0, &err, "tcp dial");
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, NULL, "not close-on-exec");
    CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK), NULL, "non-blocking");
    CHECK(write(fd, "ping", 4) == 4, NULL, "write");
    char buf[64];
    ssize_t n = 0, k;
    while (n < 4 && (k = read(fd, buf + n, sizeof buf - n)) > 0) n += k;
    CHECK(n == 4 && memcmp(buf, "ping", 4) == 0, NULL, "echo");
    close(fd);

    /* TLS through the relay: plaintext on the descriptor. */
    lifeline_op op;
    struct cbrec rec;
    memset(&rec, 0, sizeof rec);
    CHECK(lifeline_dial_start(c, "tls", env("LL_ECHO_TLS"), 5000, record_cb, &rec, &op, &err) == LIFELINE_OK, &err,
          "tls start");
    CHECK(lifeline_op_wait(op, 5000, &err) == LIFELINE_OK, &err, "tls wait");
    CHECK(rec.calls == 1 && rec.status == LIFELINE_OK, NULL, "callback");
    CHECK(lifeline_op_fd(op, &fd, &err) == LIFELINE_OK && fd >= 0, &err, "tls fd");
    int fd2 = 9;
    CHECK(lifeline_op_fd(op, &fd2, &err) == LIFELINE_E_STATE && fd2 == -1, &err, "fd taken twice");
    lifeline_response *resp;
    CHECK(lifeline_op_response(op, &resp, &err) == LIFELINE_E_STATE, &err, "response of a dial");
    lifeline_op_free(op, NULL);
    CHECK(lifeline_op_fd(op, &fd2, &err) == LIFELINE_E_INVALID_HANDLE && fd2 == -1, &err, "freed");
    CHECK(lifeline_op_wait(op, 0, NULL) == LIFELINE_E_INVALID_HANDLE, NULL, "freed");
    const char *msg = "hello over tls";
    ssize_t w = write(fd, msg, strlen(msg));
    CHECK(w == (ssize_t)strlen(msg), NULL, "tls write: %zd fd %d: %s", w, fd, strerror(errno));
    n = 0;
    while (n < (ssize_t)strlen(msg) && (k = read(fd, buf + n, sizeof buf - n)) > 0) n += k;
    CHECK(n == (ssize_t)strlen(msg) && memcmp(buf, msg, n) == 0, NULL, "tls echo");
    /* close_notify to the peer; the echo server then closes; we read EOF. */
    shutdown(fd, SHUT_WR);
    k = read(fd, buf, sizeof buf);
    CHECK(k == 0, NULL, "want EOF after the peer closed, got %zd", k);
    close(fd);
    /* The relay tells the host EOF before it finishes its own teardown:
     * wait (bounded) for it to be gone before counting relays again. */
    double t_first = now_ms();
    while (metric(c, "tls_relays") != 0 && now_ms() - t_first < 2000) sleep_ms(10);
    CHECK(metric(c, "tls_relays") == 0, NULL, "first relay still running %.0f ms after both ends closed",
          now_ms() - t_first);

    /* Closing the descriptor without shutdown ends the relay too, even
     * though the echo peer would keep its side open. */
    CHECK(lifeline_dial(c, "tls", env("LL_ECHO_TLS"), 5000, &fd, &err) == LIFELINE_OK, &err, "tls dial 2");
    CHECK(metric(c, "tls_relays") == 1, NULL, "relays %lld", metric(c, "tls_relays"));
    CHECK(write(fd, "x", 1) == 1, NULL, "write");
    close(fd);
    double t1 = now_ms();
    while (metric(c, "tls_relays") != 0 && now_ms() - t1 < 2000) sleep_ms(10);
    CHECK(metric(c, "tls_relays") == 0, NULL, "relay still running %.0f ms after the host closed its end",
          now_ms() - t1);

    /* A descriptor nobody takes is closed by lifeline_op_free (no leak). */
    CHECK(lifeline_dial_start(c, "tcp", env("LL_ECHO_TCP"), 0, NULL, NULL, &op, &err) == LIFELINE_OK, &err, "start");
    CHECK(lifeline_op_wait(op, 5000, &err) == LIFELINE_OK, &err, "wait");
    lifeline_op_free(op, NULL);

    /* Failures. */
    int32_t st = lifeline_dial(c, "tcp", env("LL_REFUSED"), 0, &fd, &err);
    CHECK(st == LIFELINE_E_NETWORK && strcmp(err.phase, "connect") == 0 &&
              strcmp(err.error_type, "connect_refused") == 0 && fd == -1,
          &err, "refused %d", st);
    lifeline_client_close(c, NULL);
    c = new_client(fmt("{\"dial.tls_handshake_timeout_ms\": 300, \"tls.ca_file\": \"%s\"}", env("LL_CA_FILE")));
    double t0 = now_ms();
    st = lifeline_dial(c, "tls", env("LL_TLS_STALL"), 0, &fd, &err);
    double el = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && strcmp(err.phase, "tls") == 0 && err.timeout && el < 2000, &err,
          "tls stall %d in %.0f ms", st, el);
    t0 = now_ms();
    st = lifeline_dial(c, "tcp", env("LL_BLACKHOLE"), 300, &fd, &err);
    el = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && strcmp(err.phase, "connect") == 0 && strcmp(err.error_type, "deadline") == 0 &&
              el < 2000,
          &err, "dial deadline %d in %.0f ms", st, el);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok dial\n");
}

static void t_metrics(void) {
    lifeline_client c = new_client("{\"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_response *resp;
    for (int i = 0; i < 3; i++) {
        CHECK(lifeline_request_do(c, &r, &resp, &err) == LIFELINE_OK, &err, "get");
        lifeline_response_free(resp);
    }
    r = get(fmt("http://%s/", env("LL_REFUSED")));
    CHECK(lifeline_request_do(c, &r, &resp, &err) == LIFELINE_E_NETWORK, &err, "refused");
    char *doc = NULL;
    size_t n = 0;
    CHECK(lifeline_client_metrics_json(c, &doc, &n, &err) == LIFELINE_OK && n == strlen(doc), &err, "metrics");
    CHECK(json_int(doc, "requests_started") == 4 && json_int(doc, "requests_ok") == 3 &&
              json_int(doc, "requests_failed") == 1 && json_int(doc, "in_flight") == 0,
          NULL, "counts: %s", doc);
    CHECK(strstr(doc, "\"connect_refused\":1") && strstr(doc, "\"connect\":1"), NULL, "by type/phase: %s", doc);
    CHECK(strstr(doc, "\"peer\":\"127.0.0.1:") && json_int(doc, "refusals") >= 0, NULL, "health: %s", doc);
    CHECK(strstr(doc, "\"name\":\"lifeline.dial.duration\"") && strstr(doc, "\"name\":\"lifeline.http.attempts\""),
          NULL, "otel metrics: %.2000s", doc);
    CHECK(json_int(doc, "goroutines") > 0, NULL, "process");
    lifeline_free(doc);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok metrics\n");
}

/* Many threads, one client: blocking requests, async requests cancelled at
 * random, clients made and closed. */
struct worker {
    lifeline_client c;
    int id, ok, canceled, bad;
};

static void *work(void *p) {
    struct worker *w = (struct worker *)p;
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    for (int i = 0; i < 100; i++) {
        lifeline_response *resp;
        if (i % 3 == 0) {
            lifeline_op op;
            struct cbrec rec;
            memset(&rec, 0, sizeof rec);
            if (lifeline_request_start(w->c, &r, record_cb, &rec, &op, &err) != LIFELINE_OK) {
                w->bad++;
                continue;
            }
            if (i % 2) lifeline_op_cancel(op, NULL);
            lifeline_op_wait(op, -1, NULL);
            int32_t st = lifeline_op_response(op, &resp, &err);
            if (st == LIFELINE_OK) {
                w->ok++;
                lifeline_response_free(resp);
            } else if (st == LIFELINE_E_CANCELED) {
                w->canceled++;
            } else {
                w->bad++;
            }
            if (rec.calls != 1) w->bad++;
            lifeline_op_free(op, NULL);
        } else if (lifeline_request_do(w->c, &r, &resp, &err) == LIFELINE_OK) {
            w->ok++;
            lifeline_response_free(resp);
        } else {
            w->bad++;
        }
        if (i % 25 == 0) {
            lifeline_client tmp = new_client("{\"retry.max_attempts\": 2}");
            if (lifeline_client_close(tmp, NULL) != LIFELINE_OK) w->bad++;
        }
    }
    lifeline_error_clear(&err);
    return NULL;
}

static void t_threads(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    enum { T = 8 };
    pthread_t th[T];
    struct worker w[T];
    for (int i = 0; i < T; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].c = c;
        w[i].id = i;
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    int ok = 0, canceled = 0, bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        canceled += w[i].canceled;
        bad += w[i].bad;
    }
    CHECK(bad == 0 && ok + canceled == T * 100 && ok >= T * 80, NULL, "ok %d canceled %d bad %d", ok, canceled, bad);
    CHECK(metric(c, "in_flight") == 0, NULL, "in flight");
    lifeline_client_close(c, NULL);
    printf("ok threads ok=%d canceled=%d\n", ok, canceled);
}

static void t_fork(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, NULL, "fork");
    if (pid == 0) {
        /* The child: every call must return LIFELINE_E_FORKED at once. */
        alarm(5);
        lifeline_error err = LIFELINE_ERROR_INIT;
        lifeline_client c2;
        int bad = 0;
        if (lifeline_client_new(&c2, &err) != LIFELINE_E_FORKED || !err.message || !strstr(err.message, "fork")) bad |= 1;
        lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
        lifeline_response *resp;
        if (lifeline_request_do(c, &r, &resp, &err) != LIFELINE_E_FORKED) bad |= 2;
        if (lifeline_op_cancel(1, &err) != LIFELINE_E_FORKED) bad |= 4;
        if (lifeline_abi_version() != LIFELINE_ABI_VERSION || !*lifeline_version()) bad |= 8;
        lifeline_error_clear(&err);
        _exit(bad);
    }
    int status = 0;
    double t0 = now_ms();
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() - t0 < 10000) sleep_ms(5);
    if (w == 0) kill(pid, SIGKILL);
    CHECK(w == pid, NULL, "the forked child hung");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, NULL, "child status %d", status);
    /* The parent still works. */
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_response *resp;
    CHECK(lifeline_request_do(c, &r, &resp, NULL) == LIFELINE_OK, NULL, "parent after fork");
    lifeline_response_free(resp);
    lifeline_client_close(c, NULL);
    printf("ok fork\n");
}

/* 10,000 requests: memory, goroutines and live allocations stay flat. */
static void t_loop(void) {
    const char *ns = getenv("LL_LOOP");
    int n = ns ? atoi(ns) : 10000;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    long rss0 = 0;
    long long g0 = 0, live0 = 0, live_before = metric(c, "live_allocations");
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        if (i == n / 10) {
            rss0 = rss_kb();
            g0 = metric(c, "goroutines");
            live0 = metric(c, "live_allocations");
        }
        lifeline_response *resp = NULL;
        int32_t st;
        if (i % 2) {
            st = lifeline_request_do(c, &r, &resp, &err);
        } else {
            lifeline_op op;
            st = lifeline_request_start(c, &r, NULL, NULL, &op, &err);
            if (st == LIFELINE_OK) {
                lifeline_op_wait(op, -1, NULL);
                st = lifeline_op_response(op, &resp, &err);
                lifeline_op_free(op, NULL);
            }
        }
        CHECK(st == LIFELINE_OK && resp->status == 200, &err, "request %d: %d", i, st);
        lifeline_response_free(resp);
    }
    double el = now_ms() - t0;
    long rss1 = rss_kb();
    long long g1 = metric(c, "goroutines"), live1 = metric(c, "live_allocations");
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("measure loop n=%d elapsed_ms=%.0f rss_kb_at_10pct=%ld rss_kb_end=%ld goroutines_at_10pct=%lld "
           "goroutines_end=%lld live_allocations_at_10pct=%lld live_allocations_end=%lld\n",
           n, el, rss0, rss1, g0, g1, live0, live1);
    CHECK(live0 == live_before && live1 == live_before, NULL, "library allocations not freed: %lld, %lld, %lld",
          live_before, live0, live1);
    CHECK(g1 <= g0 + 4, NULL, "goroutines grew from %lld to %lld", g0, g1);
    if (!getenv("LL_ASAN")) /* ASan's quarantine holds freed memory on purpose */
        CHECK(rss1 - rss0 < 16 * 1024, NULL, "RSS grew by %ld KiB over %d requests", rss1 - rss0, n * 9 / 10);
    printf("ok loop\n");
}

/* Fail fast (ABI 3): LL_REVIVE refuses connects until GET LL_HTTP/revive
 * starts a server on it. After 5 refused connects the upstream is known
 * down: requests fail in microseconds with LIFELINE_E_UNAVAILABLE
 * (error_type "unavailable", phase "upstream", the refusal in the
 * message), not attempted; a request with LIFELINE_CALL_WAIT_FOR_READY
 * waits instead and is served once the upstream is back; then it is open
 * for every request. transport.disable_fail_fast keeps the refusals. */
static void t_unavailable(void) {
    lifeline_client c = new_client("{\"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    char url[256];
    snprintf(url, sizeof url, "http://%s/", env("LL_REVIVE"));
    lifeline_request r = get(url);
    lifeline_response *resp = NULL;
    for (int i = 0; i < 5; i++) {
        int32_t st = lifeline_request_do(c, &r, &resp, &err);
        CHECK(st == LIFELINE_E_NETWORK && strcmp(err.error_type, "connect_refused") == 0, &err, "refusal %d: %d", i,
              st);
    }
    double worst = 0, t0 = now_ms();
    for (int i = 0; i < 100; i++) {
        double t1 = now_ms();
        int32_t st = lifeline_request_do(c, &r, &resp, &err);
        double el = now_ms() - t1;
        if (el > worst) worst = el;
        CHECK(st == LIFELINE_E_UNAVAILABLE && err.status == LIFELINE_E_UNAVAILABLE && resp == NULL, &err,
              "request %d after 5 refusals: %d", i, st);
        CHECK(strcmp(err.error_type, "unavailable") == 0 && strcmp(err.phase, "upstream") == 0 && !err.timeout, &err,
              "error_type/phase");
        CHECK(err.message && strstr(err.message, "refused"), &err, "the last failure in the message");
    }
    double total = now_ms() - t0;
    CHECK(worst < 100, NULL, "a fail fast took %.1f ms", worst);
    CHECK(strstr(lifeline_status_string(LIFELINE_E_UNAVAILABLE), "UNAVAILABLE") != NULL, NULL, "status string");
    char *doc = NULL;
    CHECK(lifeline_client_metrics_json(c, &doc, NULL, &err) == LIFELINE_OK, &err, "metrics");
    int seen = strstr(doc, "\"lifeline.throttled\"") != NULL && strstr(doc, "\"lifeline.upstream.down\"") != NULL;
    lifeline_free(doc);
    CHECK(seen, NULL, "lifeline.throttled and lifeline.upstream.down in the snapshot");

    /* Wait for ready, with attempts enough to outlast a probe or two. */
    lifeline_call_options o;
    memset(&o, 0, sizeof o);
    o.max_attempts = 10;
    lifeline_op op = 0;
    r.deadline_ms = 20000;
    CHECK(lifeline_request_start_opts(c, &r, LIFELINE_STREAM_UPLOAD, &o, NULL, NULL, &op, &err) ==
              LIFELINE_E_INVALID_ARGUMENT && op == 0, &err, "upload flag refused");
    CHECK(lifeline_request_start_opts(c, &r, LIFELINE_CALL_WAIT_FOR_READY, &o, NULL, NULL, &op, &err) == LIFELINE_OK,
          &err, "start wait for ready");
    CHECK(lifeline_op_wait(op, 300, &err) == LIFELINE_E_PENDING, &err, "a request that waits for ready waits");
    lifeline_request rv = get(fmt("%s/revive", env("LL_HTTP")));
    CHECK(lifeline_request_do(c, &rv, &resp, &err) == LIFELINE_OK && resp->status == 200, &err, "revive");
    lifeline_response_free(resp);
    resp = NULL;
    double t2 = now_ms();
    CHECK(lifeline_op_wait(op, 15000, &err) == LIFELINE_OK, &err, "served once the upstream is back");
    double served = now_ms() - t2;
    CHECK(lifeline_op_response(op, &resp, &err) == LIFELINE_OK && resp->status == 200, &err, "wait for ready response");
    lifeline_response_free(resp);
    resp = NULL;
    lifeline_op_free(op, NULL);
    CHECK(lifeline_request_do(c, &r, &resp, &err) == LIFELINE_OK && resp->status == 200, &err, "open again");
    lifeline_response_free(resp);
    resp = NULL;
    lifeline_client_close(c, NULL);

    /* Fail fast off: every request is refused, none fails fast. */
    c = new_client("{\"retry.max_attempts\": 1, \"transport.disable_fail_fast\": true}");
    CHECK(c, NULL, "client");
    r = get(fmt("http://%s/", env("LL_REFUSED")));
    for (int i = 0; i < 10; i++)
        CHECK(lifeline_request_do(c, &r, &resp, &err) == LIFELINE_E_NETWORK, &err, "fail fast off: request %d", i);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok unavailable fail_fast_100_ms=%.1f worst_ms=%.2f wait_for_ready_served_ms=%.0f\n", total, worst, served);
}

/* streamed bodies */

/* stream_start starts a streamed request and waits for its headers. */
static lifeline_op stream_start_opts(lifeline_client c, lifeline_request *r, uint32_t flags,
                                     const lifeline_call_options *opts, lifeline_error *err) {
    lifeline_op op = 0;
    if (lifeline_request_start_stream(c, r, flags, opts, NULL, NULL, &op, err) != LIFELINE_OK) return 0;
    return op;
}

static lifeline_op stream_start(lifeline_client c, lifeline_request *r, uint32_t flags, lifeline_error *err) {
    return stream_start_opts(c, r, flags, NULL, err);
}

/* stream_read_all reads a body to its end (or failure) with reads of
 * timeout_ms each, counting read timeouts; returns the final status. */
static int32_t stream_read_all(lifeline_op op, char *out, size_t cap, size_t *len, int64_t timeout_ms,
                               int *timeouts, lifeline_error *err) {
    *len = 0;
    for (;;) {
        uint8_t buf[1000];
        size_t n = 0;
        int32_t st = lifeline_body_read(op, buf, sizeof buf, timeout_ms, &n, err);
        if (st == LIFELINE_E_TIMEOUT && strcmp(err->phase, "read") == 0) {
            if (timeouts) (*timeouts)++;
            continue;
        }
        if (st != LIFELINE_OK) return st;
        if (n == 0) return LIFELINE_OK;
        if (*len + n <= cap) memcpy(out + *len, buf, n);
        *len += n;
    }
}

static void t_stream_sse(void) {
    current = "stream_sse";
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/sse", env("LL_STREAM")));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start");
    /* A read before the headers waits for them too (within its timeout). */
    CHECK(lifeline_op_wait(op, 5000, &err) == LIFELINE_OK, &err, "headers");
    lifeline_response *resp = NULL;
    CHECK(lifeline_op_response(op, &resp, &err) == LIFELINE_OK && resp->status == 200 && resp->body_len == 0 &&
              header(resp, "Content-Type") && strcmp(header(resp, "Content-Type"), "text/event-stream") == 0,
          &err, "response");
    lifeline_response_free(resp);
    char body[4096];
    size_t len = 0;
    int timeouts = 0;
    int32_t st = stream_read_all(op, body, sizeof body - 1, &len, 10, &timeouts, &err);
    CHECK(st == LIFELINE_OK && len < sizeof body, &err, "read: %d", st);
    body[len] = 0;
    char want[512] = "";
    for (int i = 0; i < 5; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "data: event %d\n\n", i);
    CHECK(strcmp(body, want) == 0, NULL, "body %s", body);
    CHECK(timeouts > 0, NULL, "no read timed out between events 50 ms apart with a 10 ms timeout");
    /* The end, every time; nothing buffered, nothing to follow. */
    uint8_t b[4];
    size_t n = 9;
    CHECK(lifeline_body_read(op, b, sizeof b, 0, &n, &err) == LIFELINE_OK && n == 0, &err, "end again");
    int ended = 0;
    CHECK(lifeline_body_available(op, &n, &ended, &err) == LIFELINE_OK && n == 0 && ended == 1, &err, "available");
    lifeline_op_free(op, NULL);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_sse read_timeouts=%d\n", timeouts);
}

static void t_stream_stall(void) {
    current = "stream_stall";
    lifeline_client c = new_client("{\"transport.stall_timeout_ms\": 300, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/stall", env("LL_HTTP")));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start");
    char body[64];
    size_t len = 0;
    double t0 = now_ms();
    int32_t st = stream_read_all(op, body, sizeof body, &len, -1, NULL, &err);
    double el = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && err.timeout && strcmp(err.phase, "stall") == 0 &&
              strcmp(err.error_type, "stall_timeout") == 0,
          &err, "status %d", st);
    CHECK(len == 7 && memcmp(body, "partial", 7) == 0, NULL, "bytes before the stall: %zu", len);
    CHECK(el >= 250 && el < 5000, NULL, "stall after %.0f ms, limit 300", el);
    /* Final: said again at once. */
    uint8_t b[4];
    size_t n;
    CHECK(lifeline_body_read(op, b, sizeof b, 0, &n, &err) == LIFELINE_E_TIMEOUT && strcmp(err.phase, "stall") == 0,
          &err, "again");
    lifeline_op_free(op, NULL);
    lifeline_client_close(c, NULL);

    /* The same limit as this call's own, on a client without one. */
    c = new_client("{\"transport.stall_timeout_ms\": -1, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    lifeline_call_options opts = {0, 300, 1};
    op = stream_start_opts(c, &r, 0, &opts, &err);
    CHECK(op, &err, "start with options");
    st = stream_read_all(op, body, sizeof body, &len, -1, NULL, &err);
    CHECK(st == LIFELINE_E_TIMEOUT && strcmp(err.phase, "stall") == 0 && len == 7, &err, "per-call stall: %d", st);
    lifeline_op_free(op, NULL);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_stall elapsed_ms=%.0f\n", el);
}

struct blocked_read {
    lifeline_op op;
    int32_t status;
    double ended_at;
};

static void *blocked_reader(void *p) {
    struct blocked_read *b = (struct blocked_read *)p;
    lifeline_error err = LIFELINE_ERROR_INIT;
    uint8_t buf[64];
    size_t n;
    for (;;) {
        b->status = lifeline_body_read(b->op, buf, sizeof buf, -1, &n, &err);
        if (b->status != LIFELINE_OK || n == 0) break;
    }
    b->ended_at = now_ms();
    lifeline_error_clear(&err);
    return NULL;
}

/* A read blocked (no timeout) on a body that never ends returns when
 * another thread cancels the op, frees it, or closes the client. */
static void t_stream_cancel(void) {
    current = "stream_cancel";
    const char *how[3] = {"cancel", "free", "close"};
    int32_t want[3] = {LIFELINE_E_CANCELED, LIFELINE_E_CANCELED, LIFELINE_E_CLOSED};
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        lifeline_client c = new_client("{\"transport.stall_timeout_ms\": -1}");
        CHECK(c, NULL, "client");
        lifeline_error err = LIFELINE_ERROR_INIT;
        lifeline_request r = get(fmt("%s/stall", env("LL_HTTP")));
        r.deadline_ms = -1;
        struct blocked_read b = {0, 0, 0};
        b.op = stream_start(c, &r, 0, &err);
        CHECK(b.op, &err, "start");
        pthread_t th;
        pthread_create(&th, NULL, blocked_reader, &b);
        sleep_ms(200);
        double t0 = now_ms();
        if (k == 0) CHECK(lifeline_op_cancel(b.op, &err) == LIFELINE_OK, &err, "cancel");
        if (k == 1) CHECK(lifeline_op_free(b.op, &err) == LIFELINE_OK, &err, "free");
        if (k == 2) CHECK(lifeline_client_close(c, &err) == LIFELINE_OK, &err, "close");
        pthread_join(th, NULL);
        double el = b.ended_at - t0;
        if (el > worst) worst = el;
        CHECK(b.status == want[k], NULL, "%s: blocked read returned %d", how[k], b.status);
        CHECK(el < 2000, NULL, "%s: the blocked read ended %.0f ms after", how[k], el);
        if (k != 1) lifeline_op_free(b.op, NULL);
        if (k != 2) lifeline_client_close(c, NULL);
        lifeline_error_clear(&err);
    }
    printf("ok stream_cancel worst_ms=%.1f\n", worst);
}

struct blocked_write {
    lifeline_op op;
    int32_t status;
    char phase[16];
    long long written;
};

static void *blocked_writer(void *p) {
    struct blocked_write *b = (struct blocked_write *)p;
    lifeline_error err = LIFELINE_ERROR_INIT;
    static uint8_t piece[1 << 20];
    for (;;) {
        size_t n = 0;
        b->status = lifeline_body_write(b->op, piece, sizeof piece, -1, &n, &err);
        b->written += (long long)n;
        if (b->status != LIFELINE_OK) break;
    }
    snprintf(b->phase, sizeof b->phase, "%s", err.phase);
    lifeline_error_clear(&err);
    return NULL;
}

static void t_stream_upload(void) {
    current = "stream_upload";
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/echo", env("LL_STREAM")));
    r.method = "POST";
    r.deadline_ms = 10000;
    lifeline_op op = stream_start(c, &r, LIFELINE_STREAM_UPLOAD, &err);
    CHECK(op, &err, "start");
    enum { PIECES = 100, PIECE = 10000 };
    static char sent[PIECES * PIECE], got[PIECES * PIECE + 1];
    for (int i = 0; i < PIECES; i++) {
        memset(sent + i * PIECE, 'a' + i % 26, PIECE);
        size_t n = 0;
        CHECK(lifeline_body_write(op, (const uint8_t *)sent + i * PIECE, PIECE, 5000, &n, &err) == LIFELINE_OK &&
                  n == PIECE,
              &err, "write %d: %zu", i, n);
    }
    CHECK(lifeline_body_close_write(op, &err) == LIFELINE_OK, &err, "close_write");
    CHECK(lifeline_body_close_write(op, &err) == LIFELINE_E_STATE, &err, "close_write twice");
    size_t len = 0;
    CHECK(stream_read_all(op, got, sizeof got, &len, 5000, NULL, &err) == LIFELINE_OK, &err, "read");
    CHECK(len == sizeof sent && memcmp(got, sent, len) == 0, NULL, "echo: %zu bytes", len);
    lifeline_response *resp = NULL;
    CHECK(lifeline_op_response(op, &resp, &err) == LIFELINE_OK && resp->status == 200, &err, "response");
    lifeline_response_free(resp);
    lifeline_op_free(op, NULL);

    /* Calls that do not fit the op. */
    lifeline_request hello = get(fmt("%s/hello", env("LL_HTTP")));
    CHECK(lifeline_request_start(c, &hello, NULL, NULL, &op, &err) == LIFELINE_OK, &err, "buffered start");
    uint8_t b[8];
    size_t n;
    CHECK(lifeline_body_read(op, b, sizeof b, 1000, &n, &err) == LIFELINE_E_STATE, &err, "read of a buffered op");
    lifeline_op_free(op, NULL);
    op = stream_start(c, &hello, 0, &err);
    CHECK(op, &err, "stream start");
    CHECK(lifeline_body_write(op, b, 1, 0, &n, &err) == LIFELINE_E_STATE, &err, "write without the flag");
    CHECK(lifeline_body_read(op, NULL, 8, 0, &n, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL buf");
    CHECK(lifeline_body_read(op, b, 0, 0, &n, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "cap 0");
    CHECK(lifeline_body_read(op, b, sizeof b, 0, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL n");
    lifeline_op_free(op, NULL);
    CHECK(lifeline_body_read(op, b, sizeof b, 0, &n, &err) == LIFELINE_E_INVALID_HANDLE, &err, "freed op");
    CHECK(lifeline_request_start_stream(c, &hello, 0x80, NULL, NULL, NULL, &op, &err) ==
                  LIFELINE_E_INVALID_ARGUMENT &&
              op == 0,
          &err, "unknown flag");
    lifeline_call_options bad = {0, 0, -1};
    CHECK(lifeline_request_start_stream(c, &hello, 0, &bad, NULL, NULL, &op, &err) == LIFELINE_E_INVALID_ARGUMENT &&
              strstr(err.message, "max_attempts"),
          &err, "bad option");
    lifeline_client_close(c, NULL);

    /* A peer that reads nothing: the upload stalls, a blocked writer gets
     * phase "upload_stall"; a write with a timeout got "write" first. */
    c = new_client("{\"transport.stall_timeout_ms\": 300, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    r = get(fmt("http://%s/up", env("LL_HANG")));
    r.method = "PUT";
    r.deadline_ms = -1;
    op = stream_start(c, &r, LIFELINE_STREAM_UPLOAD, &err);
    CHECK(op, &err, "start");
    static uint8_t piece[1 << 20];
    int32_t st = LIFELINE_OK;
    double t0 = now_ms();
    while ((st = lifeline_body_write(op, piece, sizeof piece, 50, &n, &err)) == LIFELINE_OK && now_ms() - t0 < 10000) {
    }
    CHECK(st == LIFELINE_E_TIMEOUT && strcmp(err.phase, "write") == 0 && strcmp(err.error_type, "write_timeout") == 0,
          &err, "write timeout: %d", st);
    struct blocked_write bw;
    memset(&bw, 0, sizeof bw);
    bw.op = op;
    pthread_t th;
    pthread_create(&th, NULL, blocked_writer, &bw);
    pthread_join(th, NULL);
    CHECK(bw.status == LIFELINE_E_TIMEOUT && strcmp(bw.phase, "upload_stall") == 0, NULL,
          "blocked writer: %d phase %s", bw.status, bw.phase);
    CHECK(lifeline_op_wait(op, 5000, &err) == LIFELINE_OK, &err, "op ends");
    lifeline_op_free(op, NULL);

    /* A writer blocked on a full buffer is ended by a cancel from here. */
    lifeline_client_close(c, NULL);
    c = new_client("{\"transport.stall_timeout_ms\": -1, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    op = stream_start(c, &r, LIFELINE_STREAM_UPLOAD, &err);
    CHECK(op, &err, "start");
    memset(&bw, 0, sizeof bw);
    bw.op = op;
    pthread_create(&th, NULL, blocked_writer, &bw);
    sleep_ms(300);
    lifeline_op_cancel(op, NULL);
    pthread_join(th, NULL);
    CHECK(bw.status == LIFELINE_E_CANCELED, NULL, "cancelled writer: %d", bw.status);
    lifeline_op_free(op, NULL);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_upload\n");
}

/* Streamed requests in a loop — read whole, or freed after the first
 * piece of a large body — leave no library allocation and no goroutine
 * behind. */
static void t_stream_loop(void) {
    current = "stream_loop";
    const char *ns = getenv("LL_LOOP");
    int n = (ns ? atoi(ns) : 10000) / 5;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request hello = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_request big = get(fmt("%s/big", env("LL_HTTP")));
    long long live0 = metric(c, "live_allocations"), g0 = 0;
    for (int i = 0; i < n; i++) {
        if (i == n / 10) g0 = metric(c, "goroutines");
        lifeline_op op = stream_start(c, i % 2 ? &big : &hello, 0, &err);
        CHECK(op, &err, "start %d", i);
        uint8_t buf[4096];
        size_t got = 0;
        if (i % 2) {
            CHECK(lifeline_body_read(op, buf, sizeof buf, 5000, &got, &err) == LIFELINE_OK && got > 0, &err,
                  "big %d", i);
        } else {
            char body[16];
            CHECK(stream_read_all(op, body, sizeof body, &got, 5000, NULL, &err) == LIFELINE_OK && got == 5, &err,
                  "hello %d", i);
        }
        lifeline_op_free(op, NULL);
    }
    sleep_ms(200); /* the freed bodies' goroutines end */
    long long g1 = metric(c, "goroutines"), live1 = metric(c, "live_allocations");
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("measure stream_loop n=%d goroutines_at_10pct=%lld goroutines_end=%lld live_allocations=%lld,%lld\n", n,
           g0, g1, live0, live1);
    CHECK(live1 == live0, NULL, "library allocations not freed: %lld then %lld", live0, live1);
    CHECK(g1 <= g0 + 4, NULL, "goroutines grew from %lld to %lld", g0, g1);
    printf("ok stream_loop\n");
}

/* An event loop's view: poll() on lifeline_body_fd says when to read; the
 * reads then never wait (timeout 0) and never time out. */
static void t_stream_poll(void) {
    current = "stream_poll";
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request r = get(fmt("%s/sse", env("LL_STREAM")));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start");
    int fd = -1, fd2 = -1;
    CHECK(lifeline_body_fd(op, &fd, &err) == LIFELINE_OK && fd >= 0, &err, "fd");
    CHECK(lifeline_body_fd(op, &fd2, &err) == LIFELINE_OK && fd2 == fd, &err, "same fd");
    char body[4096];
    size_t len = 0;
    int wakeups = 0;
    double t0 = now_ms();
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, 5000);
        CHECK(pr == 1 && (p.revents & POLLIN), NULL, "poll %d revents %d", pr, p.revents);
        wakeups++;
        uint8_t buf[1000];
        size_t n = 0;
        int32_t st = lifeline_body_read(op, buf, sizeof buf, 0, &n, &err);
        CHECK(st == LIFELINE_OK, &err, "read after poll: %d", st);
        if (n == 0) break;
        CHECK(len + n < sizeof body, NULL, "too long");
        memcpy(body + len, buf, n);
        len += n;
        CHECK(now_ms() - t0 < 10000, NULL, "poll loop too long");
    }
    body[len] = 0;
    CHECK(strstr(body, "data: event 0") && strstr(body, "data: event 4"), NULL, "body %s", body);
    /* The descriptor goes with its op. */
    lifeline_op_free(op, NULL);
    CHECK(lifeline_body_fd(op, &fd, &err) == LIFELINE_E_INVALID_HANDLE && fd == -1, &err, "after free");
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_poll wakeups=%d\n", wakeups);
}

#ifdef LL_TESTHOOKS
static void t_panic_op(void) {
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    struct cbrec rec;
    memset(&rec, 0, sizeof rec);
    lifeline_request r = get(fmt("%s/hello", env("LL_HTTP")));
    lifeline_op op;
    lifelinego_test_arm_panic("op");
    CHECK(lifeline_request_start(c, &r, record_cb, &rec, &op, NULL) == LIFELINE_OK, NULL, "start");
    lifeline_error err = LIFELINE_ERROR_INIT;
    double t0 = now_ms();
    while (atomic_load(&rec.calls) == 0 && now_ms() - t0 < 5000) sleep_ms(1);
    sleep_ms(50);
    CHECK(rec.calls == 1 && rec.status == LIFELINE_E_INTERNAL, NULL, "callback calls %d status %d", rec.calls,
          rec.status);
    lifeline_client c2;
    int32_t st = lifeline_client_new(&c2, &err);
    CHECK(st == LIFELINE_E_INTERNAL && strstr(err.message, "disabled") && strstr(err.message, "deliberate panic"),
          &err, "poisoned: %d", st);
    CHECK(lifeline_op_wait(op, 0, &err) == LIFELINE_E_INTERNAL, &err, "poisoned wait");
    lifeline_error_clear(&err);
    printf("ok panic_op\n");
}

static void t_panic_export(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c;
    lifelinego_test_arm_panic("export");
    int32_t st = lifeline_client_new(&c, &err);
    CHECK(st == LIFELINE_E_INTERNAL && strcmp(err.phase, "internal") == 0 && strstr(err.message, "deliberate panic"),
          &err, "panic: %d", st);
    st = lifeline_client_new(&c, &err);
    CHECK(st == LIFELINE_E_INTERNAL && strstr(err.message, "disabled"), &err, "after: %d", st);
    /* The plain C functions keep working. */
    CHECK(lifeline_abi_version() == LIFELINE_ABI_VERSION, NULL, "abi");
    lifeline_error_clear(&err);
    printf("ok panic_export\n");
}
#endif

/* websocket sessions */

#include <poll.h>

/* ws_url is LL_WS with path appended. */
static const char *ws_url(const char *path) { return fmt("%s%s", env("LL_WS"), path); }

/* session_event takes the next event within ms, or NULL (the test fails). */
static lifeline_event *session_event(lifeline_session s, int64_t ms) {
    lifeline_event *ev = NULL;
    lifeline_error err = LIFELINE_ERROR_INIT;
    int32_t st = lifeline_session_next_event(s, ms, &ev, &err);
    if (st != LIFELINE_OK) {
        failf(__LINE__, "lifeline_session_next_event", &err, "status %d", st);
        lifeline_error_clear(&err);
        return NULL;
    }
    return ev;
}

/* session_event_of skips events until one of kind (freeing the others). */
static lifeline_event *session_event_of(lifeline_session s, int32_t kind, int64_t ms) {
    double end = now_ms() + (double)ms;
    for (;;) {
        int64_t left = (int64_t)(end - now_ms());
        lifeline_event *ev = session_event(s, left > 0 ? left : 0);
        if (!ev || ev->kind == kind) return ev;
        int32_t k = ev->kind;
        lifeline_event_free(ev);
        if (k == LIFELINE_EVENT_CLOSED) {
            failf(__LINE__, "closed", NULL, "session closed while waiting for event %d", kind);
            return NULL;
        }
    }
}

/* session_drain frees events until CLOSED was taken; returns 1 when it was. */
static int session_drain(lifeline_session s) {
    for (;;) {
        lifeline_event *ev = NULL;
        int32_t st = lifeline_session_next_event(s, 5000, &ev, NULL);
        if (st == LIFELINE_E_CLOSED) return 1;
        if (st != LIFELINE_OK) return 0;
        lifeline_event_free(ev);
    }
}

static int fd_readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int n;
    while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR) {
    }
    return n == 1 && (p.revents & POLLIN);
}

static void t_session_echo(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    lifeline_header hs[] = {{"X-Test", "yes"}};
    /* Bad arguments first: nothing is created, nothing leaks. */
    CHECK(lifeline_session_new(c, "http://127.0.0.1:1/", NULL, 0, NULL, &s, &err) == LIFELINE_E_INVALID_ARGUMENT,
          &err, "http url");
    CHECK(lifeline_session_new(c, NULL, NULL, 0, NULL, &s, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL url");
    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), NULL, 1, NULL, &s, &err) == LIFELINE_E_INVALID_ARGUMENT, &err,
          "NULL headers with a count");
    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), NULL, 0, "{\"nope\": 1}", &s, &err) == LIFELINE_E_UNKNOWN_KEY,
          &err, "unknown key");
    CHECK(lifeline_session_new(0, ws_url("/ws/echo"), NULL, 0, NULL, &s, &err) == LIFELINE_E_INVALID_HANDLE, &err,
          "client 0");
    CHECK(strstr(lifeline_status_string(LIFELINE_E_DISCONNECTED), "DISCONNECTED"), NULL, "status string");

    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), hs, 1, "{\"ping_interval_ms\": 1000}", &s, &err) == LIFELINE_OK,
          &err, "session_new");
    int fd = -1;
    CHECK(lifeline_session_event_fd(s, &fd, &err) == LIFELINE_OK && fd >= 0, &err, "event fd");
    CHECK(lifeline_session_wait_connected(s, 5000, &err) == LIFELINE_OK, &err, "wait_connected");
    int32_t state = -1;
    CHECK(lifeline_session_state(s, &state, &err) == LIFELINE_OK && state == LIFELINE_SESSION_CONNECTED, &err,
          "state %d", state);
    lifeline_event *ev = session_event_of(s, LIFELINE_EVENT_CONNECTED, 5000);
    CHECK(ev && ev->connection == 1 && ev->state == LIFELINE_SESSION_CONNECTED && ev->len == 0 && ev->data, NULL,
          "connected event");
    lifeline_event_free(ev);
    const uint8_t bin[] = {0, 1, 2, 255};
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"hello", 5, 0, 0, &err) == LIFELINE_OK,
          &err, "send text");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_BINARY, bin, 4, 1000, 0, &err) == LIFELINE_OK, &err, "send bin");
    CHECK(lifeline_session_send(s, 3, bin, 4, 0, 0, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "type 3");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, bin, 4, 0, 0, &err) == LIFELINE_E_INVALID_ARGUMENT, &err,
          "text not UTF-8");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, NULL, 3, 0, 0, &err) == LIFELINE_E_INVALID_ARGUMENT, &err,
          "NULL buf");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, NULL, 0, 0, LIFELINE_SEND_ON_CONNECT, &err) ==
              LIFELINE_E_STATE,
          &err, "on_connect send without a step");
    CHECK(fd_readable(fd, 5000), NULL, "event fd not readable after the echo");
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev && ev->message_type == LIFELINE_MESSAGE_TEXT && ev->len == 5 && memcmp(ev->data, "hello", 6) == 0, NULL,
          "text echo");
    lifeline_event_free(ev);
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev && ev->message_type == LIFELINE_MESSAGE_BINARY && ev->len == 4 && memcmp(ev->data, bin, 4) == 0, NULL,
          "binary echo");
    lifeline_event_free(ev);
    CHECK(lifeline_session_next_event(s, 0, &ev, &err) == LIFELINE_E_PENDING && ev == NULL, &err, "pending");
    CHECK(!fd_readable(fd, 0), NULL, "event fd readable with an empty queue");
    CHECK(lifeline_session_close(s, &err) == LIFELINE_OK, &err, "close");
    CHECK(lifeline_session_close(s, &err) == LIFELINE_OK, &err, "second close");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"x", 1, 0, 0, &err) == LIFELINE_E_CLOSED,
          &err, "send after close");
    ev = session_event_of(s, LIFELINE_EVENT_CLOSED, 5000);
    CHECK(ev && ev->cause.status == 0 && ev->cause.message == NULL, NULL, "closed event");
    lifeline_event_free(ev);
    CHECK(lifeline_session_next_event(s, 1000, &ev, &err) == LIFELINE_E_CLOSED, &err, "after closed");
    CHECK(fd_readable(fd, 0), NULL, "event fd not readable after the end");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_E_INVALID_HANDLE, &err, "second free");
    CHECK(lifeline_session_send(s, 1, NULL, 0, 0, 0, &err) == LIFELINE_E_INVALID_HANDLE, &err, "send after free");
    lifeline_event_free(NULL);
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_echo\n");
}

/* t_session_reconnect: a server that sends ten numbered messages on each
 * connection and closes it (1001): each connection's messages come in
 * order, between its CONNECTED and its DISCONNECTED (cause close_1001), and
 * the session redials by itself. */
static void t_session_reconnect(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client("{\"retry.initial_interval_ms\": 10, \"retry.max_interval_ms\": 50}");
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, ws_url("/ws/drop"), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err, "new");
    long long first = -1;
    for (int round = 0; round < 3; round++) {
        lifeline_event *ev = session_event_of(s, LIFELINE_EVENT_CONNECTED, 5000);
        CHECK(ev && ev->connection == (uint64_t)round + 1, NULL, "connected %llu in round %d",
              ev ? (unsigned long long)ev->connection : 0ULL, round);
        lifeline_event_free(ev);
        long long n = -1;
        for (int i = 0; i < 10; i++) {
            ev = session_event(s, 5000);
            CHECK(ev && ev->kind == LIFELINE_EVENT_MESSAGE && ev->connection == (uint64_t)round + 1, NULL,
                  "round %d: event %d kind %d", round, i, ev ? ev->kind : -1);
            long long got_n = -1, got_i = -1;
            CHECK(sscanf((const char *)ev->data, "%lld:%lld", &got_n, &got_i) == 2 && got_i == i, NULL,
                  "round %d: message %s, want index %d", round, (const char *)ev->data, i);
            if (n < 0) n = got_n;
            CHECK(got_n == n, NULL, "messages of two connections mixed");
            lifeline_event_free(ev);
        }
        if (first < 0) first = n;
        CHECK(n == first + round, NULL, "round %d: server connection %lld after %lld", round, n, first);
        ev = session_event_of(s, LIFELINE_EVENT_DISCONNECTED, 5000);
        CHECK(ev && ev->cause.status != 0 && strcmp(ev->cause.error_type, "close_1001") == 0 && ev->cause.message,
              ev ? &ev->cause : NULL, "disconnected cause");
        lifeline_event_free(ev);
    }
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_reconnect\n");
}

/* t_session_stall: a server that accepts and never answers the upgrade.
 * wait_connected times out, the session redials, and close returns at
 * once (100 ms promised). */
static void t_session_stall(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, fmt("ws://%s/", env("LL_HANG")), NULL, 0, "{\"handshake_timeout_ms\": 200}", &s,
                               &err) == LIFELINE_OK,
          &err, "new");
    double t0 = now_ms();
    CHECK(lifeline_session_wait_connected(s, 800, &err) == LIFELINE_E_TIMEOUT && err.timeout, &err, "wait");
    double waited = now_ms() - t0;
    CHECK(waited >= 700 && waited < 5000, NULL, "waited %.0f ms for 800", waited);
    t0 = now_ms();
    CHECK(lifeline_session_close(s, &err) == LIFELINE_OK, &err, "close");
    double closed = now_ms() - t0;
    CHECK(closed < 2000, NULL, "close took %.0f ms", closed);
    CHECK(session_drain(s), NULL, "no closed event");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_stall close_ms=%.1f\n", closed);
}

/* t_session_step: with on_connect, the host resubscribes in the connect
 * step; a plain send fails fast meanwhile; after ready the echo of the
 * step's message is the first message. */
static void t_session_step(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), NULL, 0, "{\"on_connect\": true}", &s, &err) == LIFELINE_OK,
          &err, "new");
    lifeline_event *ev = session_event_of(s, LIFELINE_EVENT_CONNECT, 5000);
    CHECK(ev && ev->connection == 1 && ev->state == LIFELINE_SESSION_CONNECTING, NULL, "connect event");
    uint64_t conn = ev->connection;
    lifeline_event_free(ev);
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"early", 5, 0, 0, &err) ==
              LIFELINE_E_DISCONNECTED,
          &err, "plain send in the step");
    CHECK(lifeline_session_wait_connected(s, 0, &err) == LIFELINE_E_TIMEOUT, &err, "connected before ready");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"sub", 3, 0, LIFELINE_SEND_ON_CONNECT,
                                &err) == LIFELINE_OK,
          &err, "step send");
    CHECK(lifeline_session_ready(s, conn + 1, &err) == LIFELINE_E_STATE, &err, "ready of another connection");
    CHECK(lifeline_session_ready(s, conn, &err) == LIFELINE_OK, &err, "ready");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"after", 5, 5000,
                                LIFELINE_SEND_WHEN_CONNECTED, &err) == LIFELINE_OK,
          &err, "send when connected");
    ev = session_event_of(s, LIFELINE_EVENT_CONNECTED, 5000);
    CHECK(ev && ev->connection == conn, NULL, "connected");
    lifeline_event_free(ev);
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev && strcmp((const char *)ev->data, "sub") == 0, NULL, "first message %s", ev ? (char *)ev->data : "");
    lifeline_event_free(ev);
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev && strcmp((const char *)ev->data, "after") == 0, NULL, "second message");
    lifeline_event_free(ev);
    CHECK(lifeline_session_set_header(s, "Authorization", "Bearer next", &err) == LIFELINE_OK, &err, "set header");
    CHECK(lifeline_session_set_header(s, "Authorization", NULL, &err) == LIFELINE_OK, &err, "remove header");
    CHECK(lifeline_session_set_header(s, "Bad Name", "v", &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "bad name");
    CHECK(lifeline_session_set_header(s, "X-A", "a\r\nb: c", &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "CRLF");
    CHECK(lifeline_session_set_header(s, "Connection", "close", &err) == LIFELINE_E_INVALID_ARGUMENT, &err,
          "a header the handshake sets");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_step\n");
}

struct session_waiter {
    lifeline_session s;
    int which; /* 0: next_event(-1), 1: wait_connected(-1), 2: send WHEN_CONNECTED(-1) */
    int32_t status;
    double ended;
};

static void *session_wait_thread(void *p) {
    struct session_waiter *w = p;
    lifeline_error err = LIFELINE_ERROR_INIT;
    if (w->which == 0) {
        lifeline_event *ev = NULL;
        /* Take events until the end: a CLOSED event or the free. */
        while ((w->status = lifeline_session_next_event(w->s, -1, &ev, &err)) == LIFELINE_OK) lifeline_event_free(ev);
    } else if (w->which == 1) {
        w->status = lifeline_session_wait_connected(w->s, -1, &err);
    } else {
        w->status = lifeline_session_send(w->s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"x", 1, -1,
                                          LIFELINE_SEND_WHEN_CONNECTED, &err);
    }
    w->ended = now_ms();
    lifeline_error_clear(&err);
    return NULL;
}

/* t_session_threads: threads blocked without a limit in next_event,
 * wait_connected and a WHEN_CONNECTED send on a session whose handshake
 * stalls are all released by a close from another thread, promptly. */
static void t_session_threads(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, fmt("ws://%s/", env("LL_HANG")), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err,
          "new");
    struct session_waiter w[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct session_waiter){s, i, -1, 0};
        pthread_create(&th[i], NULL, session_wait_thread, &w[i]);
    }
    sleep_ms(100);
    double t0 = now_ms();
    CHECK(lifeline_session_close(s, &err) == LIFELINE_OK, &err, "close");
    for (int i = 1; i < 3; i++) pthread_join(th[i], NULL);
    CHECK(w[1].status == LIFELINE_E_CLOSED && w[2].status == LIFELINE_E_CLOSED, NULL, "wait %d send %d",
          w[1].status, w[2].status);
    CHECK(w[1].ended - t0 < 2000 && w[2].ended - t0 < 2000, NULL, "released after %.0f / %.0f ms",
          w[1].ended - t0, w[2].ended - t0);
    pthread_join(th[0], NULL); /* it took the CLOSED event, then E_CLOSED */
    CHECK(w[0].status == LIFELINE_E_CLOSED, NULL, "next_event %d", w[0].status);
    /* Free while a thread waits in next_event on a live session. */
    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err, "new");
    CHECK(lifeline_session_wait_connected(s, 5000, &err) == LIFELINE_OK, &err, "connected");
    w[0] = (struct session_waiter){s, 0, -1, 0};
    pthread_create(&th[0], NULL, session_wait_thread, &w[0]);
    sleep_ms(50);
    t0 = now_ms();
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    pthread_join(th[0], NULL);
    CHECK(w[0].status == LIFELINE_E_CLOSED || w[0].status == LIFELINE_E_INVALID_HANDLE, NULL, "next_event %d",
          w[0].status);
    CHECK(w[0].ended - t0 < 2000, NULL, "released after %.0f ms", w[0].ended - t0);
    /* The client's close ends its sessions. */
    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err, "new");
    CHECK(lifeline_session_wait_connected(s, 5000, &err) == LIFELINE_OK, &err, "connected");
    lifeline_client_close(c, NULL);
    CHECK(session_drain(s), NULL, "client close: no closed event");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    lifeline_error_clear(&err);
    printf("ok session_threads\n");
}

/* t_session_flood: 10,000 messages drained from an event loop (poll on
 * the event fd), in order, every event freed. */
static void t_session_flood(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    long long live0 = metric(c, "live_allocations"), g0 = metric(c, "goroutines");
    CHECK(lifeline_session_new(c, ws_url("/ws/burst"), NULL, 0, "{\"queue_max_events\": 64}", &s, &err) ==
              LIFELINE_OK,
          &err, "new");
    int fd = -1;
    CHECK(lifeline_session_event_fd(s, &fd, &err) == LIFELINE_OK, &err, "fd");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"go", 2, 5000,
                                LIFELINE_SEND_WHEN_CONNECTED, &err) == LIFELINE_OK,
          &err, "go");
    int next = 0;
    double t0 = now_ms();
    while (next < 10000) {
        CHECK(fd_readable(fd, 5000), NULL, "no event within 5s at message %d", next);
        lifeline_event *ev = NULL;
        int32_t st;
        while ((st = lifeline_session_next_event(s, 0, &ev, &err)) == LIFELINE_OK) {
            int bad = 0;
            if (ev->kind == LIFELINE_EVENT_MESSAGE) {
                bad = atoi((const char *)ev->data) != next;
                next++;
            }
            lifeline_event_free(ev);
            CHECK(!bad, NULL, "message out of order at %d", next - 1);
        }
        CHECK(st == LIFELINE_E_PENDING, &err, "next_event %d", st);
    }
    double ms = now_ms() - t0;
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    long long live1 = metric(c, "live_allocations");
    CHECK(live1 == live0, NULL, "live allocations %lld before the session, %lld after", live0, live1);
    /* Everything the session started has ended (a little slack for the
     * runtime's own goroutines). */
    long long g1 = metric(c, "goroutines");
    for (int i = 0; i < 100 && g1 > g0 + 2; i++) {
        sleep_ms(20);
        g1 = metric(c, "goroutines");
    }
    CHECK(g1 <= g0 + 2, NULL, "goroutines %lld before the session, %lld after", g0, g1);
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_flood messages=10000 ms=%.0f goroutines=%lld,%lld\n", ms, g0, g1);
}


/* Callback mode: events counted by the callback, which frees its own
 * session when the CLOSED event comes. */
static atomic_int cb_messages, cb_order_bad, cb_closed;

static void session_cb(lifeline_session s, lifeline_event *ev, void *ud) {
    (void)ud;
    if (ev->kind == LIFELINE_EVENT_MESSAGE) {
        int want = atomic_load(&cb_messages);
        if (atoi((const char *)ev->data) != want) atomic_store(&cb_order_bad, 1);
        atomic_fetch_add(&cb_messages, 1);
    }
    int closed = ev->kind == LIFELINE_EVENT_CLOSED;
    lifeline_event_free(ev);
    if (closed) {
        lifeline_session_free(s, NULL); /* from inside its own callback */
        atomic_store(&cb_closed, 1);
    }
}

static void t_session_callback(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, ws_url("/ws/burst"), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err, "new");
    CHECK(lifeline_session_set_callback(s, NULL, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL callback");
    CHECK(lifeline_session_set_callback(s, session_cb, NULL, &err) == LIFELINE_OK, &err, "set callback");
    CHECK(lifeline_session_set_callback(s, session_cb, NULL, &err) == LIFELINE_E_STATE, &err, "twice");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"go", 2, 5000,
                                LIFELINE_SEND_WHEN_CONNECTED, &err) == LIFELINE_OK,
          &err, "go");
    double end = now_ms() + 10000;
    while (atomic_load(&cb_messages) < 10000 && now_ms() < end) sleep_ms(5);
    CHECK(atomic_load(&cb_messages) == 10000 && !atomic_load(&cb_order_bad), NULL, "%d messages, order bad %d",
          atomic_load(&cb_messages), atomic_load(&cb_order_bad));
    CHECK(lifeline_session_close(s, &err) == LIFELINE_OK, &err, "close");
    end = now_ms() + 5000;
    while (!atomic_load(&cb_closed) && now_ms() < end) sleep_ms(5);
    CHECK(atomic_load(&cb_closed), NULL, "the callback never got the CLOSED event");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_E_INVALID_HANDLE, &err, "freed by the callback");
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_callback\n");
}

/* adversary: sessions and streams */

struct adv_taker {
    lifeline_session s;
    int taken;
    int32_t status;
};

static void *adv_take_thread(void *p) {
    struct adv_taker *w = p;
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_event *ev = NULL;
    while ((w->status = lifeline_session_next_event(w->s, -1, &ev, &err)) == LIFELINE_OK) {
        w->taken++;
        lifeline_event_free(ev);
    }
    lifeline_error_clear(&err);
    return NULL;
}

static atomic_int adv_cb_calls, adv_cb_after_close, adv_cb_closed;

/* Closes its own session from inside the callback at the first message;
 * counts what still comes (the CLOSED event must, and nothing after it). */
static void adv_close_cb(lifeline_session s, lifeline_event *ev, void *ud) {
    (void)ud;
    int n = atomic_fetch_add(&adv_cb_calls, 1);
    if (atomic_load(&adv_cb_closed)) atomic_fetch_add(&adv_cb_after_close, 1);
    if (ev->kind == LIFELINE_EVENT_MESSAGE && n >= 0) lifeline_session_close(s, NULL);
    if (ev->kind == LIFELINE_EVENT_CLOSED) atomic_store(&adv_cb_closed, 1);
    lifeline_event_free(ev);
}

/* t_adv_sessions: a hostile host. Handles of the other kinds in every new
 * function, garbage arguments, eight threads taking events while a ninth
 * frees the session, close from inside a callback, session and stream
 * calls in a forked child; no library allocation left. */
static void t_adv_sessions(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    long long live0 = metric(c, "live_allocations");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, ws_url("/ws/echo"), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err, "new");
    CHECK(lifeline_session_wait_connected(s, 5000, &err) == LIFELINE_OK, &err, "connected");
    lifeline_request r = get(fmt("%s/sse", env("LL_STREAM")));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "stream start");
    /* Handles of the wrong kind: a session where an op goes and back, a
     * client where either goes, forged and zero handles. */
    uint8_t buf[64];
    size_t n = 7;
    int fd = 7;
    lifeline_event *ev = (lifeline_event *)1;
    CHECK(lifeline_body_read(s, buf, sizeof buf, 0, &n, &err) == LIFELINE_E_INVALID_HANDLE && n == 0, &err,
          "body_read of a session");
    CHECK(lifeline_body_write(s, buf, 1, 0, &n, &err) == LIFELINE_E_INVALID_HANDLE, &err, "body_write of a session");
    CHECK(lifeline_body_fd(s, &fd, &err) == LIFELINE_E_INVALID_HANDLE && fd == -1, &err, "body_fd of a session");
    CHECK(lifeline_op_wait(s, 0, &err) == LIFELINE_E_INVALID_HANDLE, &err, "op_wait of a session");
    CHECK(lifeline_op_free(s, &err) == LIFELINE_E_INVALID_HANDLE, &err, "op_free of a session");
    CHECK(lifeline_client_close(s, &err) == LIFELINE_E_INVALID_HANDLE, &err, "client_close of a session");
    lifeline_session bad[] = {0, op, c, s ^ 1, s + 2, UINT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lifeline_session h = bad[i];
        int32_t st;
        CHECK((st = lifeline_session_next_event(h, 0, &ev, &err)) == LIFELINE_E_INVALID_HANDLE && ev == NULL, &err,
              "next_event of handle %zu: %d", i, st);
        fd = 7;
        CHECK(lifeline_session_event_fd(h, &fd, &err) == LIFELINE_E_INVALID_HANDLE && fd == -1, &err, "event_fd %zu", i);
        CHECK(lifeline_session_send(h, 1, (const uint8_t *)"x", 1, 0, 0, &err) == LIFELINE_E_INVALID_HANDLE, &err,
              "send %zu", i);
        CHECK(lifeline_session_ready(h, 1, &err) == LIFELINE_E_INVALID_HANDLE, &err, "ready %zu", i);
        CHECK(lifeline_session_close(h, &err) == LIFELINE_E_INVALID_HANDLE, &err, "close %zu", i);
        CHECK(lifeline_session_free(h, &err) == LIFELINE_E_INVALID_HANDLE, &err, "free %zu", i);
        CHECK(lifeline_session_set_callback(h, adv_close_cb, NULL, &err) == LIFELINE_E_INVALID_HANDLE, &err,
              "set_callback %zu", i);
        CHECK(lifeline_session_set_header(h, "X-A", "b", &err) == LIFELINE_E_INVALID_HANDLE, &err, "set_header %zu", i);
        CHECK(lifeline_session_wait_connected(h, 0, &err) == LIFELINE_E_INVALID_HANDLE, &err, "wait %zu", i);
    }
    /* Garbage arguments on a live session. */
    CHECK(lifeline_session_next_event(s, 0, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL event");
    CHECK(lifeline_session_event_fd(s, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL fd");
    CHECK(lifeline_session_state(s, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL state");
    CHECK(lifeline_session_send(s, 1, buf, -1, 0, 0, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "negative len");
    CHECK(lifeline_session_send(s, 1, buf, INT64_MAX, 0, 0, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "huge len");
    CHECK(lifeline_session_send(s, 1, (const uint8_t *)"\xc3\x28", 2, 0, 0, &err) == LIFELINE_E_INVALID_ARGUMENT,
          &err, "invalid UTF-8 text");
    CHECK(lifeline_session_send(s, 1, buf, 1, 0, 0x80, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "unknown flag");
    CHECK(lifeline_session_send(s, 1, buf, 1, 0, 3, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "both flags");
    CHECK(lifeline_session_set_header(s, NULL, "v", &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL name");
    CHECK(lifeline_session_set_header(s, "X-A", "\xff", &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "bad value");
    CHECK(lifeline_session_ready(s, 1, &err) == LIFELINE_E_STATE, &err, "ready without on_connect");
    CHECK(lifeline_body_read(op, buf, 0, 0, &n, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "cap 0");
    CHECK(lifeline_body_read(op, NULL, 8, 0, &n, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL buf");
    CHECK(lifeline_body_read(op, buf, 8, 0, NULL, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL n");
    CHECK(lifeline_body_write(op, buf, 1, 0, &n, &err) == LIFELINE_E_STATE, &err, "write to a download");
    CHECK(lifeline_body_write(op, NULL, 5, 0, &n, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "NULL data");
    CHECK(lifeline_body_write(op, buf, SIZE_MAX, 0, &n, &err) == LIFELINE_E_INVALID_ARGUMENT, &err, "huge write");
    /* An event taken before fork, freed in the child and in the parent. */
    CHECK(lifeline_session_send(s, 1, (const uint8_t *)"f", 1, 1000, 0, &err) == LIFELINE_OK, &err, "send");
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev, NULL, "echo");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        lifeline_error e2 = LIFELINE_ERROR_INIT;
        int badc = 0;
        lifeline_event *e3 = NULL;
        lifeline_session s2 = 0;
        int fd2 = -1;
        size_t n2 = 0;
        if (lifeline_session_next_event(s, 0, &e3, &e2) != LIFELINE_E_FORKED) badc |= 1;
        if (lifeline_session_send(s, 1, (const uint8_t *)"x", 1, 0, 0, &e2) != LIFELINE_E_FORKED) badc |= 2;
        if (lifeline_session_free(s, &e2) != LIFELINE_E_FORKED) badc |= 4;
        if (lifeline_session_new(c, "ws://127.0.0.1:1/", NULL, 0, NULL, &s2, &e2) != LIFELINE_E_FORKED) badc |= 8;
        if (lifeline_session_event_fd(s, &fd2, &e2) != LIFELINE_E_FORKED) badc |= 16;
        if (lifeline_body_read(op, buf, sizeof buf, 0, &n2, &e2) != LIFELINE_E_FORKED) badc |= 32;
        if (lifeline_request_start_stream(c, &r, 0, NULL, NULL, NULL, &op, &e2) != LIFELINE_E_FORKED) badc |= 64;
        lifeline_event_free(ev); /* works in a child */
        lifeline_error_clear(&e2);
        _exit(badc);
    }
    CHECK(pid > 0, NULL, "fork");
    int wst = 0;
    waitpid(pid, &wst, 0);
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, NULL, "child: status %d (bits of the calls that did not refuse)",
          WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
    lifeline_event_free(ev);
    CHECK(lifeline_op_free(op, &err) == LIFELINE_OK, &err, "op free");
    CHECK(lifeline_body_read(op, buf, sizeof buf, 0, &n, &err) == LIFELINE_E_INVALID_HANDLE, &err, "read after free");
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    /* Eight takers on a flood while a ninth thread (this one) frees. */
    for (int round = 0; round < 3; round++) {
        CHECK(lifeline_session_new(c, ws_url("/ws/burst"), NULL, 0, "{\"queue_max_events\": 4}", &s, &err) ==
                  LIFELINE_OK,
              &err, "new burst");
        CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"go", 2, 5000,
                                    LIFELINE_SEND_WHEN_CONNECTED, &err) == LIFELINE_OK,
              &err, "go");
        struct adv_taker w[8];
        pthread_t th[8];
        for (int i = 0; i < 8; i++) {
            w[i] = (struct adv_taker){s, 0, -1};
            pthread_create(&th[i], NULL, adv_take_thread, &w[i]);
        }
        sleep_ms(20 + 10 * round);
        CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free under takers");
        CHECK(lifeline_session_free(s, &err) == LIFELINE_E_INVALID_HANDLE, &err, "free twice");
        fd = 7;
        CHECK(lifeline_session_event_fd(s, &fd, &err) == LIFELINE_E_INVALID_HANDLE && fd == -1, &err,
              "event fd after free");
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            CHECK(w[i].status == LIFELINE_E_CLOSED || w[i].status == LIFELINE_E_INVALID_HANDLE, NULL,
                  "taker %d ended with %d", i, w[i].status);
        }
    }
    /* Close from inside the callback: the CLOSED event still comes, once,
     * last; then free from this thread. */
    CHECK(lifeline_session_new(c, ws_url("/ws/burst"), NULL, 0, NULL, &s, &err) == LIFELINE_OK, &err, "new cb");
    CHECK(lifeline_session_set_callback(s, adv_close_cb, NULL, &err) == LIFELINE_OK, &err, "set callback");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"go", 2, 5000,
                                LIFELINE_SEND_WHEN_CONNECTED, &err) == LIFELINE_OK,
          &err, "go");
    double end = now_ms() + 5000;
    while (!atomic_load(&adv_cb_closed) && now_ms() < end) sleep_ms(5);
    CHECK(atomic_load(&adv_cb_closed), NULL, "no CLOSED event after a close in the callback");
    sleep_ms(50);
    CHECK(atomic_load(&adv_cb_after_close) == 0, NULL, "%d callbacks after CLOSED", atomic_load(&adv_cb_after_close));
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free after callback close");
    long long live1 = metric(c, "live_allocations");
    CHECK(live1 == live0, NULL, "live allocations %lld before, %lld after", live0, live1);
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok adv_sessions\n");
}

/* t_stream_faults: a streamed request whose headers never come ends by
 * the first-byte limit (phase "first_byte"), for a read and for the op;
 * a body whose server goes away mid-way fails at once (not at the stall
 * limit), and the next stream to the same server works. */
static void t_stream_faults(void) {
    current = "stream_faults";
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client("{\"transport.first_byte_timeout_ms\": 300, \"retry.max_attempts\": 1, "
                                   "\"transport.stall_timeout_ms\": 10000}");
    CHECK(c, NULL, "client");
    lifeline_request r = get(fmt("http://%s/", env("LL_HANG")));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start");
    uint8_t buf[256];
    size_t n = 0;
    double t0 = now_ms();
    int32_t st = lifeline_body_read(op, buf, sizeof buf, -1, &n, &err);
    double el = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && strcmp(err.phase, "first_byte") == 0 && err.timeout, &err, "read: %d", st);
    CHECK(el >= 250 && el < 5000, NULL, "first byte limit after %.0f ms, limit 300", el);
    double first_byte = el;
    lifeline_response *resp = NULL;
    CHECK(lifeline_op_response(op, &resp, &err) == LIFELINE_E_TIMEOUT && resp == NULL &&
              strcmp(err.phase, "first_byte") == 0,
          &err, "op result");
    lifeline_op_free(op, NULL);
    /* The server goes away mid-body: the read fails at once (a 10 s stall
     * limit would otherwise be what ends it). */
    r = get(fmt("%s/cut", env("LL_STREAM")));
    r.deadline_ms = -1;
    op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start cut");
    size_t got = 0;
    t0 = now_ms();
    while ((st = lifeline_body_read(op, buf, sizeof buf, 5000, &n, &err)) == LIFELINE_OK && n > 0) got += n;
    el = now_ms() - t0;
    CHECK(st == LIFELINE_E_NETWORK && got == 5 && err.error_type[0] && !strchr(err.error_type, '*'), &err,
          "cut body: %d after %zu bytes", st, got);
    CHECK(el < 3000, NULL, "cut body reported after %.0f ms", el);
    lifeline_op_free(op, NULL);
    r = get(fmt("%s/sse", env("LL_STREAM")));
    r.deadline_ms = -1;
    op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start after");
    char body[512];
    CHECK(stream_read_all(op, body, sizeof body, &got, 5000, NULL, &err) == LIFELINE_OK && got > 0, &err,
          "the next stream");
    lifeline_op_free(op, NULL);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_faults first_byte_ms=%.0f cut_ms=%.0f\n", first_byte, el);
}

/* t_stream_slow_reader: a body that trickles (a line every 50 ms, under
 * the 300 ms stall limit) read by a host that sleeps a second between its
 * first reads is not cut: the stall limit times the peer, not the host;
 * every byte arrives, in order. */
static void t_stream_slow_reader(void) {
    current = "stream_slow_reader";
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client("{\"transport.stall_timeout_ms\": 300, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    lifeline_request r = get(fmt("%s/trickle", env("LL_STREAM")));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start");
    static char body[16384];
    size_t len = 0;
    for (int i = 0;; i++) {
        if (i < 3) usleep(1000 * 1000);
        uint8_t buf[4096];
        size_t n = 0;
        int32_t st = lifeline_body_read(op, buf, sizeof buf, 5000, &n, &err);
        CHECK(st == LIFELINE_OK, &err, "read after %zu bytes: %d (a slow host taken for a stall?)", len, st);
        if (n == 0) break;
        CHECK(len + n <= sizeof body, NULL, "body longer than sent: %zu", len + n);
        memcpy(body + len, buf, n);
        len += n;
    }
    CHECK(len == 40 * 200, NULL, "got %zu bytes, want 8000", len);
    for (int i = 0; i < 40; i++) {
        char want[8];
        snprintf(want, sizeof want, "%03d:", i);
        CHECK(memcmp(body + 200 * i, want, 4) == 0 && body[200 * i + 199] == '\n', NULL, "line %d out of place", i);
    }
    lifeline_op_free(op, NULL);
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_slow_reader bytes=%zu\n", len);
}

/* t_session_slow_reader: a host that takes no event for many ping
 * intervals. The session stops reading at queue_max_events and still
 * answers pings: no DISCONNECTED, and all 10,000 messages then arrive in
 * order on connection 1. */
static void t_session_slow_reader(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client(NULL);
    CHECK(c, NULL, "client");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, ws_url("/ws/burst"), NULL, 0,
                               "{\"queue_max_events\": 16, \"ping_interval_ms\": 100, \"pong_timeout_ms\": 200}", &s,
                               &err) == LIFELINE_OK,
          &err, "new");
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"go", 2, 5000,
                                LIFELINE_SEND_WHEN_CONNECTED, &err) == LIFELINE_OK,
          &err, "go");
    sleep_ms(1500);
    int next = 0;
    while (next < 10000) {
        lifeline_event *ev = session_event(s, 5000);
        CHECK(ev, NULL, "no event at message %d", next);
        int kind = ev->kind, bad = 0;
        uint64_t conn = ev->connection;
        if (kind == LIFELINE_EVENT_MESSAGE) {
            bad = atoi((const char *)ev->data) != next || conn != 1;
            next++;
        }
        lifeline_event_free(ev);
        CHECK(kind != LIFELINE_EVENT_DISCONNECTED && kind != LIFELINE_EVENT_CLOSED, NULL,
              "event %d at message %d: the slow host cost the connection", kind, next);
        CHECK(!bad, NULL, "message %d out of order or on connection %llu", next - 1, (unsigned long long)conn);
    }
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_slow_reader\n");
}

/* vanished peers: run inside a network namespace (the Go driver,
 * TestCVanishedPeer, runs this program with `ip netns exec`), against
 * servers in it (LL_NS_WS, LL_NS_STREAM); LL_VANISH_CMD makes nftables
 * drop their traffic, LL_FLOW_CMD lets it flow again. */

static void run_cmd(const char *name) {
    const char *cmd = env(name);
    int rc = system(cmd);
    if (rc != 0) failf(__LINE__, name, NULL, "%s: exit %d", cmd, rc);
}

/* t_session_vanish: the peer vanishes; DISCONNECTED says pong_timeout
 * within ping + pong (+ slack), the failed redials' STATE events say why,
 * and the session reconnects once the traffic flows again. */
static void t_session_vanish(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client("{\"dial.connect_timeout_ms\": 300, \"dial.timeout_ms\": 600, "
                                   "\"retry.initial_interval_ms\": 20, \"retry.max_interval_ms\": 200}");
    CHECK(c, NULL, "client");
    long long live0 = metric(c, "live_allocations");
    lifeline_session s = 0;
    CHECK(lifeline_session_new(c, env("LL_NS_WS"), NULL, 0,
                               "{\"ping_interval_ms\": 200, \"pong_timeout_ms\": 400, \"handshake_timeout_ms\": 600}",
                               &s, &err) == LIFELINE_OK,
          &err, "new");
    lifeline_event *ev = session_event_of(s, LIFELINE_EVENT_CONNECTED, 10000);
    CHECK(ev && ev->connection == 1, NULL, "connected");
    lifeline_event_free(ev);
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"before", 6, 1000, 0, &err) == LIFELINE_OK,
          &err, "send");
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev && strcmp((const char *)ev->data, "before") == 0, NULL, "echo");
    lifeline_event_free(ev);
    run_cmd("LL_VANISH_CMD");
    double t0 = now_ms();
    ev = session_event_of(s, LIFELINE_EVENT_DISCONNECTED, 10000);
    double took = now_ms() - t0;
    CHECK(ev && ev->cause.status == LIFELINE_E_TIMEOUT && strcmp(ev->cause.phase, "websocket") == 0 &&
              strcmp(ev->cause.error_type, "pong_timeout") == 0 && ev->cause.timeout == 1 && ev->cause.message,
          ev ? &ev->cause : NULL, "disconnected cause");
    lifeline_event_free(ev);
    CHECK(took < 200 + 400 + 2000, NULL, "vanished peer reported after %.0f ms (ping 200 + pong 400)", took);
    /* While dropped, each redial fails and its STATE event says why. */
    for (;;) {
        ev = session_event(s, 10000);
        CHECK(ev && ev->kind != LIFELINE_EVENT_CONNECTED, NULL, "connected while the traffic is dropped");
        int done = ev->kind == LIFELINE_EVENT_STATE && ev->state == LIFELINE_SESSION_DISCONNECTED;
        if (done) {
            CHECK(ev->cause.status == LIFELINE_E_TIMEOUT && ev->cause.timeout == 1 && ev->cause.message &&
                      ev->cause.phase[0] && ev->cause.error_type[0] && !strchr(ev->cause.error_type, '*'),
                  &ev->cause, "failed redial's cause");
        }
        lifeline_event_free(ev);
        if (done) break;
    }
    run_cmd("LL_FLOW_CMD");
    ev = session_event_of(s, LIFELINE_EVENT_CONNECTED, 10000);
    CHECK(ev && ev->connection == 2, NULL, "reconnected");
    lifeline_event_free(ev);
    CHECK(lifeline_session_send(s, LIFELINE_MESSAGE_TEXT, (const uint8_t *)"after", 5, 1000, 0, &err) == LIFELINE_OK,
          &err, "send after");
    ev = session_event_of(s, LIFELINE_EVENT_MESSAGE, 5000);
    CHECK(ev && strcmp((const char *)ev->data, "after") == 0, NULL, "echo after");
    lifeline_event_free(ev);
    CHECK(lifeline_session_free(s, &err) == LIFELINE_OK, &err, "free");
    CHECK(metric(c, "live_allocations") == live0, NULL, "live allocations not back to %lld", live0);
    lifeline_client_close(c, NULL);
    lifeline_error_clear(&err);
    printf("ok session_vanish detected_ms=%.0f\n", took);
}

/* t_stream_vanish: a streamed body whose peer vanishes ends by the stall
 * limit (phase "stall"). */
static void t_stream_vanish(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_client c = new_client("{\"transport.stall_timeout_ms\": 500, \"retry.max_attempts\": 1}");
    CHECK(c, NULL, "client");
    lifeline_request r = get(env("LL_NS_STREAM"));
    r.deadline_ms = -1;
    lifeline_op op = stream_start(c, &r, 0, &err);
    CHECK(op, &err, "start");
    uint8_t buf[4096];
    size_t n = 0, got = 0;
    while (got < 30) {
        CHECK(lifeline_body_read(op, buf, sizeof buf, 5000, &n, &err) == LIFELINE_OK && n > 0, &err, "read");
        got += n;
    }
    run_cmd("LL_VANISH_CMD");
    double t0 = now_ms();
    int32_t st;
    while ((st = lifeline_body_read(op, buf, sizeof buf, -1, &n, &err)) == LIFELINE_OK && n > 0) {
    }
    double took = now_ms() - t0;
    CHECK(st == LIFELINE_E_TIMEOUT && strcmp(err.phase, "stall") == 0 && strcmp(err.error_type, "stall_timeout") == 0,
          &err, "read after the peer vanished: %d", st);
    CHECK(took < 500 + 3000, NULL, "stall after %.0f ms, limit 500", took);
    lifeline_op_free(op, NULL);
    run_cmd("LL_FLOW_CMD");
    lifeline_error_clear(&err);
    lifeline_client_close(c, NULL);
    printf("ok stream_vanish stall_ms=%.0f\n", took);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifdef LL_TESTHOOKS
    if (strcmp(mode, "panic_op") == 0) {
        current = "panic_op";
        t_panic_op();
        return failures ? 1 : 0;
    }
    if (strcmp(mode, "panic_export") == 0) {
        current = "panic_export";
        t_panic_export();
        return failures ? 1 : 0;
    }
#endif
    if (strcmp(mode, "vanish") == 0) { /* only inside the driver's namespace */
        current = "session_vanish";
        t_session_vanish();
        current = "stream_vanish";
        t_stream_vanish();
        printf(failures ? "FAILED %d\n" : "PASS\n", failures);
        return failures ? 1 : 0;
    }
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"version", t_version},   {"get", t_get},
        {"post", t_post},         {"https", t_https},
        {"config", t_config},     {"first_byte", t_first_byte},
        {"tls_stall", t_tls_stall}, {"connect_hang", t_connect_hang},
        {"refused", t_refused},   {"deadline", t_deadline},
        {"deadline_phase", t_deadline_phase},
        {"dns", t_dns},           {"stall", t_stall},
        {"large", t_large},       {"async", t_async},
        {"reentrant", t_reentrant}, {"cancel", t_cancel},
        {"cancel_held", t_cancel_held}, {"stress", t_stress},
        {"free_running", t_free_running}, {"close", t_close},
        {"bad_args", t_bad_args}, {"dial", t_dial},
        {"metrics", t_metrics},   {"threads", t_threads},
        {"fork", t_fork},         {"loop", t_loop},
        {"unavailable", t_unavailable},
        /* websocket sessions */
        {"session_echo", t_session_echo}, {"session_reconnect", t_session_reconnect},
        {"session_stall", t_session_stall}, {"session_step", t_session_step},
        {"session_threads", t_session_threads}, {"session_flood", t_session_flood},
        {"session_callback", t_session_callback}, {"session_slow_reader", t_session_slow_reader},
        /* streamed bodies */
        {"stream_sse", t_stream_sse}, {"stream_stall", t_stream_stall},
        {"stream_cancel", t_stream_cancel}, {"stream_upload", t_stream_upload},
        {"stream_loop", t_stream_loop}, {"stream_poll", t_stream_poll},
        {"stream_faults", t_stream_faults}, {"stream_slow_reader", t_stream_slow_reader},
        /* adversary: sessions and streams */
        {"adv_sessions", t_adv_sessions},
    };
    int ran = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (strcmp(mode, "all") != 0 && strcmp(mode, tests[i].name) != 0) continue;
        current = tests[i].name;
        tests[i].fn();
        ran++;
    }
    if (failures == 0 && strcmp(mode, "all") == 0) {
        /* Every test freed what it got: no library allocation is live. */
        lifeline_client c = new_client(NULL);
        long long live = metric(c, "live_allocations");
        lifeline_client_close(c, NULL);
        if (live != 0) {
            printf("FAIL leaks: %lld library allocations not freed after all tests\n", live);
            failures++;
        } else {
            printf("ok no_leaks\n");
        }
    }
    if (!ran) {
        printf("FAIL main: no test named %s\n", mode);
        return 2;
    }
    printf(failures ? "FAILED %d\n" : "PASS\n", failures);
    return failures ? 1 : 0;
}
