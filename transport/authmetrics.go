package transport

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// authRefreshesName is the counter of the Refresh calls a Transport made
// after a 401 answer, by lifeline.outcome: "resent" (refreshed, the
// request sent once more), "not_resent" (refreshed; the request's body
// cannot be replayed, the 401 was returned) and "error" (Refresh failed).
const authRefreshesName = "lifeline.http.auth.refreshes"

// Outcomes of lifeline.http.auth.refreshes.
const (
	authResent    = "resent"
	authNotResent = "not_resent"
	authError     = "error"
)

// authInstruments are the credentials' instruments of a Transport; the
// zero value (no Credentials) records nothing.
type authInstruments struct {
	refreshes metric.Int64Counter
	opts      map[string]metric.AddOption // one per outcome, made once
}

func newAuthInstruments(mp metric.MeterProvider) authInstruments {
	m := otelx.Meter(mp, otelx.ScopeTransport)
	c, _ := m.Int64Counter(authRefreshesName, metric.WithUnit("{refresh}"),
		metric.WithDescription("Credentials refreshed after a 401 answer, by outcome."))
	a := authInstruments{refreshes: c, opts: map[string]metric.AddOption{}}
	for _, o := range []string{authResent, authNotResent, authError} {
		a.opts[o] = metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(o)))
	}
	return a
}

// refreshed counts one Refresh with its outcome.
func (a *authInstruments) refreshed(ctx context.Context, outcome string) {
	if a.refreshes == nil {
		return
	}
	a.refreshes.Add(ctx, 1, a.opts[outcome])
}
