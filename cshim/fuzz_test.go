package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// configErrorOK checks the error of a rejected configuration: a status a
// configuration call documents, and a message the host can show as it is
// (valid UTF-8, of bounded length, without a secret key's value).
func configErrorOK(t *testing.T, e *Error, secret string) {
	t.Helper()
	switch e.Status {
	case statusInvalidArgument, statusUnknownKey, statusBadValue:
	default:
		t.Fatalf("status %d (%s) for a configuration", e.Status, e.Msg)
	}
	if e.Msg == "" || !utf8.ValidString(e.Msg) {
		t.Fatalf("message %q", e.Msg)
	}
	if secret != "" && strings.Contains(e.Msg, secret) {
		t.Fatalf("the message shows a secret: %q", e.Msg)
	}
}

// freezeAndClose builds a client's machinery from cfg, as its first
// request would, and closes it: no panic, and only a configuration error.
func freezeAndClose(t *testing.T, cfg config) {
	t.Helper()
	c := newClient()
	c.cfg = cfg
	c.mu.Lock()
	_, e := c.freeze()
	c.mu.Unlock()
	if e != nil {
		configErrorOK(t, e, "")
	}
	if _, e := c.configJSON(); e != nil {
		t.Fatalf("configJSON of an accepted configuration: %s", e.Msg)
	}
	closeAndWait(c)
}

// FuzzConfigJSON: any document given to lifeline_client_configure_json is
// accepted or rejected whole, with a clear error, never a panic; a secret
// key's value never shows in the error; an accepted configuration builds.
func FuzzConfigJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"dial.connect_timeout_ms": 100}`, `{"retry": {"max_attempts": 2, "budget": {"ratio": 0.2}}}`,
		`{"dial.hosts": {"svc.test": ["127.0.0.1", "::1"]}}`, `{"transport.hedge_quantile": 0.95}`,
		`{"tls.client_key_pem": "SECRETKEY"}`, `{"tls": {"ca_pem": "-----BEGIN CERTIFICATE-----\nSECRETKEY"}}`,
		`{"transport.proxy": "http://u:SECRETKEY@proxy:8080"}`, `{"dial.timeout_ms": -1}`,
		`{"transport.proxy": "http://u:SECRETKEY@proxy:bad"}`, `{"transport.proxy": "http://u:pa/SECRETKEY@proxy:1"}`,
		`{"a": {"b": {"c": {"d": 1}}}}`, `{"retry.max_attempts": 1e309}`, `{"user_agent": "\u0000"}`,
		`[]`, `null`, `{"x":`, "{\"user_agent\": \"\xff\"}", `{"dial.keepalive": {"enable": false, "idle_ms": 5}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		before := config{maxAttempts: 2}
		after, e := before.configureJSON(doc)
		if e != nil {
			secret := ""
			if strings.Contains(string(doc), "SECRETKEY") && !strings.Contains(string(doc), `"SECRETKEY":`) {
				secret = "SECRETKEY" // a value, not a key name
			}
			configErrorOK(t, e, secret)
			if after.maxAttempts != 2 {
				t.Fatal("a rejected document changed the configuration")
			}
			return
		}
		if _, err := json.Marshal(after.effective()); err != nil {
			t.Fatalf("effective configuration: %v", err)
		}
		freezeAndClose(t, after)
	})
}

// FuzzConfigSet: any key and typed value through the setters
// (lifeline_client_set_int, _float, _bool, _string, _duration_ms) is
// taken or refused with a clear error, never a panic; what is taken
// builds.
func FuzzConfigSet(f *testing.F) {
	for k := range keys {
		f.Add(k, uint8(kInt), int64(1), 0.5, true, "127.0.0.1")
	}
	f.Add("dial.hosts", uint8(kString), int64(0), 0.0, false, `{"h": ["::1"]}`)
	f.Add("tls.min_version", uint8(kString), int64(0), 0.0, false, "1.3")
	f.Add("retry.jitter", uint8(kFloat), int64(0), -1.0, false, "")
	f.Add("nope", uint8(kBool), int64(0), 0.0, true, "")
	f.Fuzz(func(t *testing.T, key string, kind uint8, i int64, fl float64, b bool, s string) {
		var c config
		v := value{kind: valueKind(kind % uint8(kHosts+1)), i: i, f: fl, b: b, s: s}
		if e := c.setKey(key, v); e != nil {
			configErrorOK(t, e, "")
			return
		}
		freezeAndClose(t, c)
	})
}
