package otelx

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tembedded "go.opentelemetry.io/otel/trace/embedded"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// KeyClientName is the Name of the Transport, WebSocketDialer or Dialer that
// made a span or a metric point, so that two clients built on lifeline in
// one process can be told apart. It is absent when the Name is "".
const KeyClientName = attribute.Key("lifeline.client.name")

// Named providers put KeyClientName on everything made through them: every
// span a tracer of theirs starts, every point an instrument of theirs
// records. Wrapping the provider, not each call site, is what makes "every"
// hold: a span or a metric added later is named without anyone
// remembering to.
//
// A wrapper is interned per (provider, name), so that the caches keyed by
// provider (Tracer, the instrument caches, retry's) find it again and a
// named client costs no new tracer or instruments per call. At most
// namedMax pairs are interned (a program names a handful of clients); a
// new pair past that takes the place of an old one, so that the pairs of
// clients gone (a test binary's, a tenant's) neither pin their providers
// nor leave the ones that come after them uncached.
const namedMax = 64

type namedKey[P comparable] struct {
	p    P
	name string
}

type namedTable[P comparable, W any] struct {
	mu sync.RWMutex
	m  map[namedKey[P]]W
}

func (t *namedTable[P, W]) get(p P, name string, build func() W) W {
	if !Comparable(p) {
		return build()
	}
	k := namedKey[P]{p, name}
	t.mu.RLock()
	w, ok := t.m[k]
	t.mu.RUnlock()
	if ok {
		return w
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if w, ok := t.m[k]; ok {
		return w
	}
	w = build()
	if t.m == nil {
		t.m = make(map[namedKey[P]]W)
	}
	if len(t.m) >= namedMax {
		// Full: forget one pair (the map's order: any) rather than
		// refuse every pair from now on. The pairs of a program's few
		// clients are back at their next look-up; a client holding a
		// forgotten wrapper keeps using it, named the same.
		for old := range t.m {
			delete(t.m, old)
			break
		}
	}
	t.m[k] = w
	return w
}

var (
	namedTracers namedTable[trace.TracerProvider, trace.TracerProvider]
	namedMeters  namedTable[metric.MeterProvider, metric.MeterProvider]
)

// NamedTracerProvider returns tp (nil: the otel global) wrapped so that
// every span started through it carries KeyClientName=name. It returns tp
// itself when name is "" and for a no-op provider, so that the callers'
// no-op checks still hold.
func NamedTracerProvider(tp trace.TracerProvider, name string) trace.TracerProvider {
	if name == "" {
		return tp
	}
	if _, noop := tp.(tracenoop.TracerProvider); noop {
		return tp
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return namedTracers.get(tp, name, func() trace.TracerProvider {
		return &namedTracerProvider{tp: tp, opt: trace.WithAttributes(KeyClientName.String(name))}
	})
}

type namedTracerProvider struct {
	tembedded.TracerProvider
	tp  trace.TracerProvider
	opt trace.SpanStartEventOption
}

func (p *namedTracerProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return &namedTracer{t: p.tp.Tracer(name, opts...), opt: p.opt}
}

type namedTracer struct {
	tembedded.Tracer
	t   trace.Tracer
	opt trace.SpanStartEventOption
}

// Start starts the span with the name among its start attributes, where a
// sampler sees it.
func (t *namedTracer) Start(ctx context.Context, spanName string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return t.t.Start(ctx, spanName, append(opts[:len(opts):len(opts)], t.opt)...)
}

// NamedMeterProvider returns mp (nil: the otel global) wrapped so that every
// point recorded through its synchronous instruments, and every observation
// made in callbacks registered with Meter.RegisterCallback, carries
// KeyClientName=name. (Callbacks given to an observable instrument's
// constructor are not named: nothing in lifeline's named scopes uses
// them.) It returns mp itself when name is "" and for a no-op provider.
//
// The name joins the attributes a caller passes; a caller's precomputed
// attribute set (metric.WithAttributeSet) is joined once and remembered,
// so recording with one costs no allocation more than without a name.
func NamedMeterProvider(mp metric.MeterProvider, name string) metric.MeterProvider {
	if name == "" {
		return mp
	}
	if _, noop := mp.(metricnoop.MeterProvider); noop {
		return mp
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return namedMeters.get(mp, name, func() metric.MeterProvider {
		return &namedMeterProvider{mp: mp, j: &joiner{kv: KeyClientName.String(name)}}
	})
}

type namedMeterProvider struct {
	embedded.MeterProvider
	mp metric.MeterProvider
	j  *joiner
}

func (p *namedMeterProvider) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return &namedMeter{Meter: p.mp.Meter(name, opts...), j: p.j}
}

// joiner adds one attribute to measurement attribute sets, remembering
// the joined sets of the sets it has seen (up to joinMax: callers pass a
// bounded number of precomputed sets; attributes built per call are joined
// per call).
type joiner struct {
	kv attribute.KeyValue
	mu sync.RWMutex
	m  map[attribute.Distinct]*joined
}

// joined is one joined set as the option slices of each kind of
// measurement: passing a slice that exists costs no allocation.
type joined struct {
	add []metric.AddOption
	rec []metric.RecordOption
	obs []metric.ObserveOption
}

const joinMax = 1024

func (j *joiner) join(set attribute.Set) *joined {
	d := set.Equivalent()
	j.mu.RLock()
	o, ok := j.m[d]
	j.mu.RUnlock()
	if ok {
		return o
	}
	kvs := append(set.ToSlice(), j.kv) // the name wins over a caller's key of the same name
	opt := metric.WithAttributeSet(attribute.NewSet(kvs...))
	o = &joined{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}, obs: []metric.ObserveOption{opt}}
	j.mu.Lock()
	if len(j.m) < joinMax {
		if j.m == nil {
			j.m = make(map[attribute.Distinct]*joined)
		}
		j.m[d] = o
	}
	j.mu.Unlock()
	return o
}

func (j *joiner) add(opts []metric.AddOption) []metric.AddOption {
	return j.join(metric.NewAddConfig(opts).Attributes()).add
}

func (j *joiner) record(opts []metric.RecordOption) []metric.RecordOption {
	return j.join(metric.NewRecordConfig(opts).Attributes()).rec
}

func (j *joiner) observe(opts []metric.ObserveOption) []metric.ObserveOption {
	return j.join(metric.NewObserveConfig(opts).Attributes()).obs
}

type namedMeter struct {
	metric.Meter // observable instruments pass through; see RegisterCallback
	j            *joiner
}

func (m *namedMeter) Int64Counter(name string, options ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	i, err := m.Meter.Int64Counter(name, options...)
	return namedInt64Counter{i, m.j}, err
}

func (m *namedMeter) Float64Counter(name string, options ...metric.Float64CounterOption) (metric.Float64Counter, error) {
	i, err := m.Meter.Float64Counter(name, options...)
	return namedFloat64Counter{i, m.j}, err
}

func (m *namedMeter) Int64UpDownCounter(name string, options ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	i, err := m.Meter.Int64UpDownCounter(name, options...)
	return namedInt64UpDownCounter{i, m.j}, err
}

func (m *namedMeter) Float64UpDownCounter(name string, options ...metric.Float64UpDownCounterOption) (metric.Float64UpDownCounter, error) {
	i, err := m.Meter.Float64UpDownCounter(name, options...)
	return namedFloat64UpDownCounter{i, m.j}, err
}

func (m *namedMeter) Int64Histogram(name string, options ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	i, err := m.Meter.Int64Histogram(name, options...)
	return namedInt64Histogram{i, m.j}, err
}

func (m *namedMeter) Float64Histogram(name string, options ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	i, err := m.Meter.Float64Histogram(name, options...)
	return namedFloat64Histogram{i, m.j}, err
}

func (m *namedMeter) Int64Gauge(name string, options ...metric.Int64GaugeOption) (metric.Int64Gauge, error) {
	i, err := m.Meter.Int64Gauge(name, options...)
	return namedInt64Gauge{i, m.j}, err
}

func (m *namedMeter) Float64Gauge(name string, options ...metric.Float64GaugeOption) (metric.Float64Gauge, error) {
	i, err := m.Meter.Float64Gauge(name, options...)
	return namedFloat64Gauge{i, m.j}, err
}

// RegisterCallback names what f observes.
func (m *namedMeter) RegisterCallback(f metric.Callback, instruments ...metric.Observable) (metric.Registration, error) {
	return m.Meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		return f(ctx, &namedObserver{Observer: o, j: m.j})
	}, instruments...)
}

type namedObserver struct {
	metric.Observer
	j *joiner
}

func (o *namedObserver) ObserveFloat64(obs metric.Float64Observable, v float64, opts ...metric.ObserveOption) {
	o.Observer.ObserveFloat64(obs, v, o.j.observe(opts)...)
}

func (o *namedObserver) ObserveInt64(obs metric.Int64Observable, v int64, opts ...metric.ObserveOption) {
	o.Observer.ObserveInt64(obs, v, o.j.observe(opts)...)
}

type namedInt64Counter struct {
	metric.Int64Counter
	j *joiner
}

func (i namedInt64Counter) Add(ctx context.Context, v int64, opts ...metric.AddOption) {
	i.Int64Counter.Add(ctx, v, i.j.add(opts)...)
}

type namedFloat64Counter struct {
	metric.Float64Counter
	j *joiner
}

func (i namedFloat64Counter) Add(ctx context.Context, v float64, opts ...metric.AddOption) {
	i.Float64Counter.Add(ctx, v, i.j.add(opts)...)
}

type namedInt64UpDownCounter struct {
	metric.Int64UpDownCounter
	j *joiner
}

func (i namedInt64UpDownCounter) Add(ctx context.Context, v int64, opts ...metric.AddOption) {
	i.Int64UpDownCounter.Add(ctx, v, i.j.add(opts)...)
}

type namedFloat64UpDownCounter struct {
	metric.Float64UpDownCounter
	j *joiner
}

func (i namedFloat64UpDownCounter) Add(ctx context.Context, v float64, opts ...metric.AddOption) {
	i.Float64UpDownCounter.Add(ctx, v, i.j.add(opts)...)
}

type namedInt64Histogram struct {
	metric.Int64Histogram
	j *joiner
}

func (i namedInt64Histogram) Record(ctx context.Context, v int64, opts ...metric.RecordOption) {
	i.Int64Histogram.Record(ctx, v, i.j.record(opts)...)
}

type namedFloat64Histogram struct {
	metric.Float64Histogram
	j *joiner
}

func (i namedFloat64Histogram) Record(ctx context.Context, v float64, opts ...metric.RecordOption) {
	i.Float64Histogram.Record(ctx, v, i.j.record(opts)...)
}

type namedInt64Gauge struct {
	metric.Int64Gauge
	j *joiner
}

func (i namedInt64Gauge) Record(ctx context.Context, v int64, opts ...metric.RecordOption) {
	i.Int64Gauge.Record(ctx, v, i.j.record(opts)...)
}

type namedFloat64Gauge struct {
	metric.Float64Gauge
	j *joiner
}

func (i namedFloat64Gauge) Record(ctx context.Context, v float64, opts ...metric.RecordOption) {
	i.Float64Gauge.Record(ctx, v, i.j.record(opts)...)
}
