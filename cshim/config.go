package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// Defaults of the shim's own keys.
const (
	defaultRequestTimeout   = 30 * time.Second
	defaultMaxResponseBytes = 64 << 20
	defaultHealthHalfLife   = time.Minute
	defaultHealthMaxPeers   = 1024
)

// config is a client's configuration as set by key: the packages' own
// field types, zero meaning their default, resolved when the client is
// frozen (build). It is a plain value: configure works on a copy and
// commits it whole.
type config struct {
	requestTimeout   time.Duration
	maxResponseBytes int64
	userAgent        string
	name             string

	// transport
	firstByte, stall, hedgeDelay, idle, lifetime time.Duration
	hedgeQuantile                                float64
	maxConns, maxIdle                            int
	maxHeaderBytes                               int
	proxy                                        string
	disableFailFast, disableShedding             bool

	// dial
	resolveTO, connectTO, attemptDelay, handshakeTO, dialFirstByte, greeting, dialTO, userTO time.Duration
	maxPerAddr                                                                               int
	keepAlive                                                                                keepAliveConfig
	hosts                                                                                    map[string][]netip.Addr

	// health
	halfLife time.Duration
	maxPeers int

	// retry
	maxAttempts                                            int
	initialInterval, maxInterval, attemptTO, maxRetryAfter time.Duration
	multiplier, jitter                                     float64
	budgetRatio, budgetMin                                 float64
	budgetSet                                              bool

	// tls
	caFile, caPEM, certFile, keyFile, certPEM, keyPEM, serverName, minVersion string
	insecure                                                                  bool
	alpn                                                                      []string
}

// keepAliveConfig mirrors net.KeepAliveConfig with an explicit "set".
type keepAliveConfig struct {
	enableSet, enable bool
	idle, interval    time.Duration
	count             int
}

type valueKind uint8

const (
	kDuration valueKind = iota
	kInt
	kFloat
	kBool
	kString
	kHosts
)

func (k valueKind) String() string {
	return [...]string{"integer (milliseconds)", "integer", "number", "boolean", "string", "object"}[k]
}

// value is one typed value on its way to a key.
type value struct {
	kind  valueKind
	i     int64
	f     float64
	b     bool
	s     string
	hosts map[string][]netip.Addr
}

// keySpec is one configuration key: its type, its check and where it goes.
type keySpec struct {
	kind valueKind
	// check validates v; the message completes "bad value for KEY: ".
	check func(v value) string
	set   func(c *config, v value)
	// get returns the effective value for config_json.
	get func(c *config) any
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// resolved returns v, def when v is zero, or -1 (off) when v is negative,
// as the packages resolve their durations.
func resolved(v, def time.Duration) int64 {
	switch {
	case v == 0:
		return ms(def)
	case v < 0:
		return -1
	}
	return ms(v)
}

func nonNegative(v value) string {
	if v.i < 0 {
		return "must be >= 0"
	}
	return ""
}

func finite(v value) string {
	if math.IsNaN(v.f) || math.IsInf(v.f, 0) {
		return "must be a finite number"
	}
	return ""
}

func durKey(field func(c *config) *time.Duration, def time.Duration) keySpec {
	return keySpec{kind: kDuration,
		set: func(c *config, v value) { *field(c) = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any { return resolved(*field(c), def) }}
}

func intKey(field func(c *config) *int, get func(c *config) any, check func(value) string) keySpec {
	return keySpec{kind: kInt, check: check,
		set: func(c *config, v value) { *field(c) = int(v.i) }, get: get}
}

func floatKey(field func(c *config) *float64, get func(c *config) any, check func(value) string) keySpec {
	return keySpec{kind: kFloat, check: func(v value) string {
		if m := finite(v); m != "" {
			return m
		}
		if check != nil {
			return check(v)
		}
		return ""
	}, set: func(c *config, v value) { *field(c) = v.f }, get: get}
}

func strKey(field func(c *config) *string, check func(value) string, show func(c *config) any) keySpec {
	if show == nil {
		show = func(c *config) any { return *field(c) }
	}
	return keySpec{kind: kString, check: check,
		set: func(c *config, v value) { *field(c) = v.s }, get: show}
}

// secretShown shows whether a PEM or file key is set, never its contents.
func secretShown(field func(c *config) *string) func(c *config) any {
	return func(c *config) any {
		if *field(c) == "" {
			return ""
		}
		return "(set)"
	}
}

func fileShown(field func(c *config) *string) func(c *config) any {
	return func(c *config) any { return *field(c) }
}

func checkCA(pemText string) string {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pemText)) {
		return "no PEM certificate found"
	}
	return ""
}

func checkPEMBlock(text, want string) string {
	rest := []byte(text)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return "no PEM block of type " + want
		}
		if strings.Contains(b.Type, want) {
			return ""
		}
	}
}

func readFileCheck(path string, check func(string) string) string {
	if path == "" {
		return ""
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "cannot read the file: " + err.Error()
	}
	return check(string(data))
}

// checkName keeps a client's name fit for a metric label: short, printable.
func checkName(v value) string {
	if len(v.s) > 64 {
		return "must be at most 64 bytes (it is a metric label)"
	}
	for _, r := range v.s {
		if r < 0x20 || r == 0x7f {
			return "must not contain control characters"
		}
	}
	return ""
}

func noCtl(v value) string {
	if strings.ContainsAny(v.s, "\r\n\x00") {
		return "must not contain CR, LF or NUL"
	}
	return ""
}

var keys = map[string]keySpec{
	"request_timeout_ms": durKey(func(c *config) *time.Duration { return &c.requestTimeout }, defaultRequestTimeout),
	"max_response_bytes": {kind: kInt,
		set: func(c *config, v value) { c.maxResponseBytes = v.i },
		get: func(c *config) any {
			switch {
			case c.maxResponseBytes == 0:
				return int64(defaultMaxResponseBytes)
			case c.maxResponseBytes < 0:
				return -1
			}
			return c.maxResponseBytes
		}},
	"user_agent": strKey(func(c *config) *string { return &c.userAgent }, noCtl, func(c *config) any { return c.ua() }),
	"name":       strKey(func(c *config) *string { return &c.name }, checkName, nil),

	"transport.first_byte_timeout_ms": durKey(func(c *config) *time.Duration { return &c.firstByte }, transport.DefaultFirstByteTimeout),
	"transport.stall_timeout_ms":      durKey(func(c *config) *time.Duration { return &c.stall }, transport.DefaultStallTimeout),
	"transport.hedge_delay_ms": {kind: kDuration,
		set: func(c *config, v value) { c.hedgeDelay = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any { return max(ms(c.hedgeDelay), 0) }},
	"transport.hedge_quantile": floatKey(func(c *config) *float64 { return &c.hedgeQuantile },
		func(c *config) any { return c.hedgeQuantile },
		func(v value) string {
			if v.f < 0 || v.f >= 1 {
				return "must be in [0, 1)"
			}
			return ""
		}),
	"transport.idle_conn_timeout_ms": durKey(func(c *config) *time.Duration { return &c.idle }, transport.DefaultIdleConnTimeout),
	"transport.max_conn_lifetime_ms": durKey(func(c *config) *time.Duration { return &c.lifetime }, transport.DefaultMaxConnLifetime),
	"transport.max_conns_per_host": intKey(func(c *config) *int { return &c.maxConns },
		func(c *config) any { return resolvedInt(c.maxConns, transport.DefaultMaxConnsPerHost) }, nil),
	"transport.max_idle_conns_per_host": intKey(func(c *config) *int { return &c.maxIdle },
		func(c *config) any { return resolvedInt(c.maxIdle, transport.DefaultMaxIdleConnsPerHost) }, nil),
	"transport.max_response_header_bytes": intKey(func(c *config) *int { return &c.maxHeaderBytes },
		func(c *config) any {
			return resolvedInt(c.maxHeaderBytes, int(transport.DefaultMaxResponseHeaderBytes))
		}, nil),
	"transport.disable_fail_fast": {kind: kBool,
		set: func(c *config, v value) { c.disableFailFast = v.b },
		get: func(c *config) any { return c.disableFailFast }},
	"transport.disable_load_shedding": {kind: kBool,
		set: func(c *config, v value) { c.disableShedding = v.b },
		get: func(c *config) any { return c.disableShedding }},
	"transport.proxy": strKey(func(c *config) *string { return &c.proxy }, checkProxy, func(c *config) any {
		if c.proxy == "" {
			return "env"
		}
		// A proxy URL's password is a secret: the snapshot is made to
		// be logged.
		if u, err := url.Parse(c.proxy); err == nil {
			return u.Redacted()
		}
		return c.proxy
	}),

	"dial.resolve_timeout_ms":       durKey(func(c *config) *time.Duration { return &c.resolveTO }, dial.DefaultResolveTimeout),
	"dial.connect_timeout_ms":       durKey(func(c *config) *time.Duration { return &c.connectTO }, dial.DefaultConnectTimeout),
	"dial.attempt_delay_ms":         durKey(func(c *config) *time.Duration { return &c.attemptDelay }, dial.DefaultAttemptDelay),
	"dial.tls_handshake_timeout_ms": durKey(func(c *config) *time.Duration { return &c.handshakeTO }, dial.DefaultTLSHandshakeTimeout),
	"dial.first_byte_timeout_ms":    durKey(func(c *config) *time.Duration { return &c.dialFirstByte }, dial.DefaultFirstByteTimeout),
	// A Read before any Write (a server-first greeting) on a lifeline_dial
	// descriptor: 0 follows dial.first_byte_timeout_ms, as Dialer's does.
	"dial.greeting_timeout_ms": {kind: kDuration,
		set: func(c *config, v value) { c.greeting = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any {
			if c.greeting == 0 {
				return resolved(c.dialFirstByte, dial.DefaultFirstByteTimeout)
			}
			return resolved(c.greeting, 0)
		}},
	"dial.timeout_ms":      durKey(func(c *config) *time.Duration { return &c.dialTO }, dial.DefaultTimeout),
	"dial.user_timeout_ms": durKey(func(c *config) *time.Duration { return &c.userTO }, dial.DefaultUserTimeout),
	"dial.max_attempts_per_address": intKey(func(c *config) *int { return &c.maxPerAddr }, func(c *config) any {
		switch {
		case c.maxPerAddr == 0:
			return dial.DefaultMaxAttemptsPerAddress
		case c.maxPerAddr < 0:
			return 1
		}
		return c.maxPerAddr
	}, nil),
	"dial.keepalive.enable": {kind: kBool,
		set: func(c *config, v value) { c.keepAlive.enableSet, c.keepAlive.enable = true, v.b },
		get: func(c *config) any { return !c.keepAlive.enableSet || c.keepAlive.enable }},
	"dial.keepalive.idle_ms":     durKey(func(c *config) *time.Duration { return &c.keepAlive.idle }, dial.DefaultKeepAliveIdle),
	"dial.keepalive.interval_ms": durKey(func(c *config) *time.Duration { return &c.keepAlive.interval }, dial.DefaultKeepAliveInterval),
	"dial.keepalive.count": intKey(func(c *config) *int { return &c.keepAlive.count },
		func(c *config) any { return resolvedInt(c.keepAlive.count, dial.DefaultKeepAliveCount) }, nil),
	"dial.hosts": {kind: kHosts,
		set: func(c *config, v value) { c.hosts = v.hosts },
		get: func(c *config) any {
			out := map[string][]string{}
			for h, addrs := range c.hosts {
				for _, a := range addrs {
					out[h] = append(out[h], a.String())
				}
				if out[h] == nil {
					out[h] = []string{}
				}
			}
			return out
		}},

	"health.half_life_ms": {kind: kDuration, check: nonNegative,
		set: func(c *config, v value) { c.halfLife = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any { return resolved(c.halfLife, defaultHealthHalfLife) }},
	"health.max_peers": intKey(func(c *config) *int { return &c.maxPeers },
		func(c *config) any { return resolvedInt(c.maxPeers, defaultHealthMaxPeers) }, nonNegative),

	"retry.max_attempts": intKey(func(c *config) *int { return &c.maxAttempts },
		func(c *config) any { return resolvedInt(c.maxAttempts, retry.DefaultMaxAttempts) }, nonNegative),
	"retry.initial_interval_ms": {kind: kDuration, check: nonNegative,
		set: func(c *config, v value) { c.initialInterval = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any { return resolved(c.initialInterval, retry.DefaultInitialInterval) }},
	"retry.max_interval_ms": {kind: kDuration, check: nonNegative,
		set: func(c *config, v value) { c.maxInterval = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any { return resolved(c.maxInterval, retry.DefaultMaxInterval) }},
	"retry.multiplier": floatKey(func(c *config) *float64 { return &c.multiplier },
		func(c *config) any { return orFloat(c.multiplier, retry.DefaultMultiplier) },
		func(v value) string {
			if v.f != 0 && v.f < 1 {
				return "must be 0 (default) or >= 1"
			}
			return ""
		}),
	"retry.jitter": floatKey(func(c *config) *float64 { return &c.jitter },
		func(c *config) any {
			if c.jitter < 0 {
				return 0.0
			}
			return orFloat(c.jitter, retry.DefaultJitter)
		},
		func(v value) string {
			if v.f > 1 {
				return "must be <= 1 (negative: no jitter)"
			}
			return ""
		}),
	"retry.attempt_timeout_ms": {kind: kDuration,
		set: func(c *config, v value) { c.attemptTO = time.Duration(v.i) * time.Millisecond },
		get: func(c *config) any { return max(ms(c.attemptTO), 0) }},
	"retry.max_retry_after_ms": durKey(func(c *config) *time.Duration { return &c.maxRetryAfter }, retry.DefaultMaxRetryAfter),
	"retry.budget.ratio": {kind: kFloat, check: budgetCheck,
		set: func(c *config, v value) { c.budgetRatio, c.budgetSet = v.f, true },
		get: func(c *config) any { return c.budget().ratio }},
	"retry.budget.min_per_second": {kind: kFloat, check: budgetCheck,
		set: func(c *config, v value) { c.budgetMin, c.budgetSet = v.f, true },
		get: func(c *config) any { return c.budget().min }},

	"tls.ca_file": strKey(func(c *config) *string { return &c.caFile },
		func(v value) string { return readFileCheck(v.s, checkCA) }, fileShown(func(c *config) *string { return &c.caFile })),
	"tls.ca_pem": strKey(func(c *config) *string { return &c.caPEM },
		func(v value) string {
			if v.s == "" {
				return ""
			}
			return checkCA(v.s)
		}, secretShown(func(c *config) *string { return &c.caPEM })),
	"tls.cert_file": strKey(func(c *config) *string { return &c.certFile },
		func(v value) string {
			return readFileCheck(v.s, func(s string) string { return checkPEMBlock(s, "CERTIFICATE") })
		}, fileShown(func(c *config) *string { return &c.certFile })),
	"tls.key_file": strKey(func(c *config) *string { return &c.keyFile },
		func(v value) string {
			return readFileCheck(v.s, func(s string) string { return checkPEMBlock(s, "PRIVATE KEY") })
		}, fileShown(func(c *config) *string { return &c.keyFile })),
	"tls.cert_pem": strKey(func(c *config) *string { return &c.certPEM },
		func(v value) string {
			if v.s == "" {
				return ""
			}
			return checkPEMBlock(v.s, "CERTIFICATE")
		}, secretShown(func(c *config) *string { return &c.certPEM })),
	"tls.key_pem": strKey(func(c *config) *string { return &c.keyPEM },
		func(v value) string {
			if v.s == "" {
				return ""
			}
			return checkPEMBlock(v.s, "PRIVATE KEY")
		}, secretShown(func(c *config) *string { return &c.keyPEM })),
	"tls.server_name": strKey(func(c *config) *string { return &c.serverName }, noCtl, nil),
	"tls.insecure_skip_verify": {kind: kBool,
		set: func(c *config, v value) { c.insecure = v.b },
		get: func(c *config) any { return c.insecure }},
	"tls.min_version": strKey(func(c *config) *string { return &c.minVersion },
		func(v value) string {
			switch v.s {
			case "", "1.2", "1.3":
				return ""
			}
			return `must be "1.2" or "1.3"`
		}, func(c *config) any {
			if c.minVersion == "" {
				return "1.2"
			}
			return c.minVersion
		}),
	"tls.alpn": {kind: kString,
		check: func(v value) string {
			for _, p := range splitList(v.s) {
				if len(p) > 255 {
					return "a protocol name is longer than 255 bytes"
				}
			}
			return noCtl(v)
		},
		set: func(c *config, v value) { c.alpn = splitList(v.s) },
		get: func(c *config) any { return strings.Join(c.alpn, ",") }},
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func resolvedInt(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return -1
	}
	return v
}

func orFloat(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

func budgetCheck(v value) string {
	if m := finite(v); m != "" {
		return m
	}
	if v.f < 0 {
		return "must be >= 0"
	}
	return ""
}

type budgetParams struct{ ratio, min float64 }

// budget returns the retry budget's parameters: the Transport's defaults
// unless a budget key was set (then the unset one keeps its default).
func (c *config) budget() budgetParams {
	if !c.budgetSet {
		return budgetParams{retry.DefaultBudgetRatio, retry.DefaultBudgetMinPerSecond}
	}
	return budgetParams{c.budgetRatio, c.budgetMin}
}

func (c *config) ua() string {
	if c.userAgent == "" {
		return "lifeline-cshim/" + Version
	}
	return c.userAgent
}

func checkProxy(v value) string {
	switch v.s {
	case "", "env", "none":
		return ""
	}
	u, err := url.Parse(v.s)
	if err != nil {
		// url.Parse's text quotes the value, userinfo and all, and
		// its reason may quote a piece of a malformed password.
		return "not a URL (the value is not shown: it may hold a password)"
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return `want "env", "none" or a proxy URL (http, https, socks5)`
	}
	if u.Host == "" {
		return "proxy URL has no host"
	}
	return ""
}

func unknownKey(key string) *Error {
	return &Error{Status: statusUnknownKey, Phase: "config", Type: "unknown_key",
		Msg: fmt.Sprintf("lifeline: unknown configuration key %q", key)}
}

func badValue(key, msg string) *Error {
	return &Error{Status: statusBadValue, Phase: "config", Type: "bad_value",
		Msg: fmt.Sprintf("lifeline: bad value for %q: %s", key, msg)}
}

// maxMillis is the largest duration in milliseconds a time.Duration holds.
const maxMillis = math.MaxInt64 / int64(time.Millisecond)

// setKey checks v against key and applies it to c.
func (c *config) setKey(key string, v value) *Error {
	spec, ok := keys[key]
	if !ok {
		return unknownKey(key)
	}
	if spec.kind != v.kind {
		// An integer is a fine number.
		if spec.kind == kFloat && v.kind == kInt {
			v = value{kind: kFloat, f: float64(v.i)}
		} else if spec.kind == kHosts && v.kind == kString {
			h, err := parseHostsJSON([]byte(v.s))
			if err != nil {
				return badValue(key, err.Error())
			}
			v = value{kind: kHosts, hosts: h}
		} else {
			return badValue(key, "want "+spec.kind.String()+", got "+v.kind.String())
		}
	}
	switch spec.kind {
	case kDuration:
		if v.i > maxMillis || v.i < -maxMillis {
			return badValue(key, fmt.Sprintf("%d ms is out of range", v.i))
		}
	case kInt:
		if v.i > math.MaxInt32 || v.i < math.MinInt32 {
			if key != "max_response_bytes" {
				return badValue(key, fmt.Sprintf("%d is out of range", v.i))
			}
		}
	case kString:
		if !utf8.ValidString(v.s) {
			return badValue(key, "not valid UTF-8")
		}
	}
	if spec.check != nil {
		if msg := spec.check(v); msg != "" {
			return badValue(key, msg)
		}
	}
	spec.set(c, v)
	return nil
}

func parseHostsJSON(data []byte) (map[string][]netip.Addr, error) {
	var raw map[string][]string
	if err := decodeStrict(data, &raw); err != nil {
		return nil, fmt.Errorf(`want an object of host names to lists of IP addresses, e.g. {"api.example": ["127.0.0.1"]}: %v`, err)
	}
	return hostsFrom(raw)
}

// decodeStrict decodes doc, which must be exactly one JSON value, into v
// (numbers as json.Number). Unlike json.Unmarshal it rejects a key given
// twice in one object (which would silently win over the first) and names
// it; unlike a Decoder checked with More, it rejects any trailing byte but
// white space (a stray "}" or "]" included) and says where it starts.
func decodeStrict(doc []byte, v any) error {
	if err := noDuplicateKeys(doc); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed or not an object: %w", err)
	}
	rest := bytes.TrimLeft(doc[dec.InputOffset():], " \t\r\n")
	if len(rest) == 0 {
		return nil
	}
	at := len(doc) - len(rest)
	if len(rest) > 16 {
		rest = rest[:16]
	}
	return fmt.Errorf("trailing data after the object at byte %d: %q", at, rest)
}

// noDuplicateKeys walks doc's tokens and fails on the first object key
// given twice in the same object, naming it by its dotted path. Syntax
// errors are left to the decoder, which reports them with more context.
func noDuplicateKeys(doc []byte) error {
	type object struct {
		path    string
		seen    map[string]bool
		wantKey bool
		key     string
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var stack []*object // nil for an array
	// valueDone: the value of the innermost object's current key (when the
	// innermost container is an object) is complete; a key comes next.
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1] != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // end of the value, or a syntax error Decode reports
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.wantKey {
			k, ok := tok.(string)
			if !ok { // the object's closing brace
				stack = stack[:len(stack)-1]
				valueDone()
				continue
			}
			full := k
			if top.path != "" {
				full = top.path + "." + k
			}
			if top.seen[k] {
				return fmt.Errorf("key %q given twice", full)
			}
			top.seen[k], top.wantKey, top.key = true, false, full
			continue
		}
		switch tok {
		case json.Delim('{'):
			path := ""
			if top != nil {
				path = top.key
			}
			stack = append(stack, &object{path: path, seen: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
		if len(stack) == 0 {
			return nil // the first value is complete; trailing data is Decode's caller's
		}
	}
}

func hostsFrom(raw map[string][]string) (map[string][]netip.Addr, error) {
	out := make(map[string][]netip.Addr, len(raw))
	for h, list := range raw {
		if h == "" || strings.ContainsAny(h, " \t\r\n/:") {
			return nil, fmt.Errorf("%q is not a host name", h)
		}
		addrs := make([]netip.Addr, 0, len(list))
		for _, s := range list {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q (for %q) is not an IP address", s, h)
			}
			addrs = append(addrs, a.Unmap())
		}
		out[strings.ToLower(strings.TrimSuffix(h, "."))] = addrs
	}
	return out, nil
}

// configureJSON applies a JSON object of keys (dotted or nested) to a copy
// of c, and returns the copy: all or nothing.
func (c config) configureJSON(doc []byte) (config, *Error) {
	if !utf8.Valid(doc) {
		return c, argError("json: not valid UTF-8")
	}
	var top map[string]any
	if err := decodeStrict(doc, &top); err != nil {
		return c, argError("json: %v", err)
	}
	if top == nil {
		return c, argError("json: not an object (null)")
	}
	flat := map[string]any{}
	if e := flatten("", top, flat); e != nil {
		return c, e
	}
	names := make([]string, 0, len(flat))
	for k := range flat {
		names = append(names, k)
	}
	sort.Strings(names) // deterministic: the first bad key in order is reported
	// Colliding spellings ("dial.timeout_ms" and {"dial":{"timeout_ms"}})
	// are rejected: which one should win is a guess.
	next := c
	next.hosts = maps(c.hosts)
	for _, k := range names {
		v, e := jsonValue(k, flat[k])
		if e != nil {
			return c, e
		}
		if e := next.setKey(k, v); e != nil {
			return c, e
		}
	}
	return next, nil
}

func maps(m map[string][]netip.Addr) map[string][]netip.Addr {
	if m == nil {
		return nil
	}
	out := make(map[string][]netip.Addr, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

// flatten turns nested objects into dotted keys; "dial.hosts" is a value,
// not a level.
func flatten(prefix string, obj map[string]any, out map[string]any) *Error {
	for k, v := range obj {
		full := k
		if prefix != "" {
			full = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && full != "dial.hosts" {
			if _, known := keys[full]; !known {
				if e := flatten(full, sub, out); e != nil {
					return e
				}
				continue
			}
		}
		if _, dup := out[full]; dup {
			return badValue(full, "given twice (dotted and nested)")
		}
		out[full] = v
	}
	return nil
}

func jsonValue(key string, v any) (value, *Error) {
	spec, ok := keys[key]
	if !ok {
		return value{}, unknownKey(key)
	}
	switch x := v.(type) {
	case json.Number:
		if spec.kind == kFloat {
			f, err := x.Float64()
			if err != nil {
				return value{}, badValue(key, "not a number: "+x.String())
			}
			return value{kind: kFloat, f: f}, nil
		}
		i, err := x.Int64()
		if err != nil {
			return value{}, badValue(key, "want an integer, got "+x.String())
		}
		if spec.kind == kDuration {
			return value{kind: kDuration, i: i}, nil
		}
		return value{kind: kInt, i: i}, nil
	case bool:
		return value{kind: kBool, b: x}, nil
	case string:
		return value{kind: kString, s: x}, nil
	case map[string]any:
		if spec.kind != kHosts {
			return value{}, badValue(key, "want "+spec.kind.String()+", got an object")
		}
		raw := map[string][]string{}
		for h, list := range x {
			arr, ok := list.([]any)
			if !ok {
				return value{}, badValue(key, fmt.Sprintf("%q: want a list of IP addresses", h))
			}
			for _, a := range arr {
				s, ok := a.(string)
				if !ok {
					return value{}, badValue(key, fmt.Sprintf("%q: want a list of IP address strings", h))
				}
				raw[h] = append(raw[h], s)
			}
			if raw[h] == nil {
				raw[h] = []string{}
			}
		}
		hm, err := hostsFrom(raw)
		if err != nil {
			return value{}, badValue(key, err.Error())
		}
		return value{kind: kHosts, hosts: hm}, nil
	case nil:
		return value{}, badValue(key, "null is not a value (omit the key for the default)")
	}
	return value{}, badValue(key, fmt.Sprintf("want %s, got %T", spec.kind, v))
}

// effective returns every key with its effective value.
func (c *config) effective() map[string]any {
	out := make(map[string]any, len(keys))
	for name, spec := range keys {
		out[name] = spec.get(c)
	}
	return out
}

// Whole-config checks, made when a client is frozen (setters may pass
// through inconsistent states, e.g. a certificate before its key).

func (c *config) tlsConfig() (*tls.Config, *Error) {
	cfg := &tls.Config{ServerName: c.serverName, InsecureSkipVerify: c.insecure} // #nosec: the host's explicit choice
	switch c.minVersion {
	case "", "1.2":
		cfg.MinVersion = tls.VersionTLS12
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	}
	if c.caFile != "" || c.caPEM != "" {
		pool := x509.NewCertPool()
		if c.caFile != "" {
			data, err := os.ReadFile(c.caFile)
			if err != nil {
				return nil, badValue("tls.ca_file", err.Error())
			}
			if !pool.AppendCertsFromPEM(data) {
				return nil, badValue("tls.ca_file", "no PEM certificate found")
			}
		}
		if c.caPEM != "" && !pool.AppendCertsFromPEM([]byte(c.caPEM)) {
			return nil, badValue("tls.ca_pem", "no PEM certificate found")
		}
		cfg.RootCAs = pool
	}
	certPEM, keyPEM := []byte(c.certPEM), []byte(c.keyPEM)
	certKey, keyKey := "tls.cert_pem", "tls.key_pem"
	if c.certFile != "" {
		data, err := os.ReadFile(c.certFile)
		if err != nil {
			return nil, badValue("tls.cert_file", err.Error())
		}
		certPEM, certKey = data, "tls.cert_file"
	}
	if c.keyFile != "" {
		data, err := os.ReadFile(c.keyFile)
		if err != nil {
			return nil, badValue("tls.key_file", err.Error())
		}
		keyPEM, keyKey = data, "tls.key_file"
	}
	switch {
	case len(certPEM) > 0 && len(keyPEM) > 0:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, badValue(certKey, "certificate and "+keyKey+" do not form a key pair: "+err.Error())
		}
		cfg.Certificates = []tls.Certificate{pair}
	case len(certPEM) > 0:
		return nil, badValue(certKey, "a client certificate needs tls.key_pem or tls.key_file")
	case len(keyPEM) > 0:
		return nil, badValue(keyKey, "a client key needs tls.cert_pem or tls.cert_file")
	}
	return cfg, nil
}

// retryPolicy returns the retry.Policy of c, checked by retry itself.
func (c *config) retryPolicy() (retry.Policy, *Error) {
	p := retry.Policy{
		MaxAttempts: c.maxAttempts, InitialInterval: c.initialInterval, MaxInterval: c.maxInterval,
		Multiplier: c.multiplier, Jitter: c.jitter, AttemptTimeout: c.attemptTO,
		MaxRetryAfter: c.maxRetryAfter,
	}
	if c.initialInterval > 0 || c.maxInterval > 0 {
		ii := c.initialInterval
		if ii == 0 {
			ii = retry.DefaultInitialInterval
		}
		mi := c.maxInterval
		if mi == 0 {
			mi = retry.DefaultMaxInterval
		}
		if ii > mi {
			return p, badValue("retry.initial_interval_ms",
				fmt.Sprintf("%d ms is above retry.max_interval_ms (%d ms)", ms(ii), ms(mi)))
		}
	}
	return p, nil
}
