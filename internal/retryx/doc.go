// Package retryx reaches what package retry keeps out of its API, for
// lifeline's own packages: [Prepare] and [DoPrepared], the retry loop of a
// policy checked once and without the attempt number in each attempt's
// context, which the HTTP transport uses to save an allocation and the
// policy's checks per request.
package retryx
