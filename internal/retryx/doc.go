// Package retryx reaches what package retry keeps out of its API, for
// lifeline's own packages: [DoLean], the retry loop without the attempt
// number in each attempt's context, which the HTTP transport uses to save
// an allocation per request.
package retryx
