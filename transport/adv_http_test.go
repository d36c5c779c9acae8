package transport_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/transport"
)

// foreignServer records the Authorization values it receives.
type foreignServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func startForeign(t *testing.T, tls bool) *foreignServer {
	f := &foreignServer{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		fmt.Fprint(w, "foreign")
	}))
	f.srv.Config.ErrorLog = quietLog()
	if tls {
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *foreignServer) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auth...)
}

// TestAdvRedirectDoesNotCarryCredentials: an http.Client that follows the
// API's redirect to another origin sends the Transport's credentials to
// the API only: net/http strips the caller's Authorization on a redirect to
// another host, and the Transport must not add its own back. A redirect
// within the origin keeps them; one that left the origin and came back
// does not get them again (the foreign hop chose where it goes).
func TestAdvRedirectDoesNotCarryCredentials(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			a := startAuthServer(t, h2)
			foreignTLS := startForeign(t, true)
			foreignPlain := startForeign(t, false)
			a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				switch r.URL.Path {
				case "/tls":
					http.Redirect(w, r, foreignTLS.srv.URL+"/x", http.StatusFound)
					return false
				case "/plain":
					http.Redirect(w, r, foreignPlain.srv.URL+"/x", http.StatusFound)
					return false
				case "/same":
					http.Redirect(w, r, "/", http.StatusFound)
					return false
				case "/bounce":
					// Through another origin and back to the API's.
					http.Redirect(w, r, foreignTLS.srv.URL+"/back", http.StatusFound)
					return false
				}
				return true
			})
			foreignTLS.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				foreignTLS.mu.Lock()
				foreignTLS.auth = append(foreignTLS.auth, r.Header.Get("Authorization"))
				foreignTLS.mu.Unlock()
				if r.URL.Path == "/back" {
					http.Redirect(w, r, a.srv.URL+"/", http.StatusFound)
					return
				}
				fmt.Fprint(w, "foreign")
			})
			tr := a.transport(t, transport.NewBearerCredentials(a.fetch))
			cfg := tr.TLSClientConfig.Clone()
			cfg.RootCAs.AddCert(foreignTLS.srv.Certificate())
			tr.TLSClientConfig = cfg
			client := transport.NewClient(tr)

			code, body := getBody(t, client, t.Context(), a.srv.URL+"/same")
			assert.Equal(t, http.StatusOK, code, "a redirect within the origin keeps the credentials")
			assert.Equal(t, "ok", body)

			code, body = getBody(t, client, t.Context(), a.srv.URL+"/tls")
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, "foreign", body)
			code, _ = getBody(t, client, t.Context(), a.srv.URL+"/plain")
			assert.Equal(t, http.StatusOK, code)
			for _, v := range append(foreignTLS.seen(), foreignPlain.seen()...) {
				assert.Empty(t, v, "the token went to another origin")
			}

			before := a.rejected.Load()
			code, _ = getBody(t, client, t.Context(), a.srv.URL+"/bounce")
			assert.Equal(t, http.StatusUnauthorized, code, "back from a foreign hop: no credentials")
			assert.EqualValues(t, before+1, a.rejected.Load(), "and no Refresh and resend for it")
			for _, v := range foreignTLS.seen() {
				assert.Empty(t, v, "the token went to another origin")
			}
		})
	}
}

var _ = io.Discard
var _ atomic.Int32
var _ = time.Second
var _ context.Context
var _ = require.NoError
