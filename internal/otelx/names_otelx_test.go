package otelx_test

import (
	"archive/zip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

func TestVersionOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build info", nil, false, otelx.DevelVersion},
		{"lifeline is the main module, devel", &debug.BuildInfo{Main: debug.Module{Path: otelx.ModulePath, Version: "(devel)"}}, true, otelx.DevelVersion},
		{"lifeline is the main module, stamped", &debug.BuildInfo{Main: debug.Module{Path: otelx.ModulePath, Version: "v0.4.0"}}, true, "v0.4.0"},
		{"a dependency", &debug.BuildInfo{Main: debug.Module{Path: "example.com/rooms", Version: "v1.2.3"},
			Deps: []*debug.Module{{Path: "golang.org/x/sys", Version: "v0.47.0"}, {Path: otelx.ModulePath, Version: "v0.3.1"}}}, true, "v0.3.1"},
		{"a dependency replaced by another version", &debug.BuildInfo{Main: debug.Module{Path: "example.com/rooms"},
			Deps: []*debug.Module{{Path: otelx.ModulePath, Version: "v0.3.1", Replace: &debug.Module{Path: "example.com/fork", Version: "v0.3.2-fix"}}}}, true, "v0.3.2-fix"},
		{"a dependency replaced by a directory", &debug.BuildInfo{Main: debug.Module{Path: "example.com/rooms"},
			Deps: []*debug.Module{{Path: otelx.ModulePath, Version: "v0.3.1", Replace: &debug.Module{Path: "../lifeline"}}}}, true, otelx.DevelVersion},
		{"not in the build", &debug.BuildInfo{Main: debug.Module{Path: "example.com/rooms", Version: "v1.2.3"}}, true, otelx.DevelVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, otelx.VersionOf(tc.bi, tc.ok))
		})
	}
}

// TestVersionIsTheScopes: the version the tracers and meters report is
// the one the running binary's build info gives (a test binary of
// lifeline's own module: "(devel)", hence DevelVersion).
func TestVersionIsTheScopes(t *testing.T) {
	assert.Equal(t, otelx.VersionOf(debug.ReadBuildInfo()), otelx.Version)
	assert.Equal(t, otelx.DevelVersion, otelx.Version)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	_, span := otelx.Tracer(tp, otelx.ScopeDial).Start(context.Background(), "x")
	span.End()
	require.Len(t, rec.Ended(), 1)
	assert.Equal(t, otelx.Version, rec.Ended()[0].InstrumentationScope().Version)
	assert.NotEqual(t, "0.1.0", otelx.Version, "no hard-coded version")
}

// TestVersionInADependentBinary builds a program that requires lifeline at
// a release version (served from a file proxy made here, no network) and
// checks the version its build info gives VersionOf.
func TestVersionInADependentBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	// The program prints the dependencies its build info records.
	write := func(name, body string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	// A module proxy on disk with one tiny version of a module whose path
	// is lifeline's: the build info records it as a dependency at v0.9.7.
	mod := "proxy/github.com/lifeline-go/lifeline/@v/"
	write(mod+"list", "v0.9.7\n")
	write(mod+"v0.9.7.mod", "module github.com/lifeline-go/lifeline\n\ngo 1.25\n")
	write(mod+"v0.9.7.info", `{"Version":"v0.9.7"}`)
	zipPath := filepath.Join(dir, mod+"v0.9.7.zip")
	makeModZip(t, zipPath, "github.com/lifeline-go/lifeline@v0.9.7", map[string]string{
		"go.mod": "module github.com/lifeline-go/lifeline\n\ngo 1.25\n",
		"v/v.go": "package v\n\nimport \"runtime/debug\"\n\n// Info is the build info.\nfunc Info() (*debug.BuildInfo, bool) { return debug.ReadBuildInfo() }\n",
	})
	write("app/go.mod", "module example.com/rooms\n\ngo 1.25\n\nrequire github.com/lifeline-go/lifeline v0.9.7\n")
	write("app/main.go", "package main\n\nimport (\n\t\"fmt\"\n\n\tv \"github.com/lifeline-go/lifeline/v\"\n)\n\nfunc main() {\n\tbi, _ := v.Info()\n\tfor _, d := range bi.Deps {\n\t\tfmt.Println(d.Path, d.Version)\n\t}\n}\n")
	cmd := exec.Command(goBin, "mod", "download", "github.com/lifeline-go/lifeline@v0.9.7")
	cmd.Dir = filepath.Join(dir, "app")
	env := append(os.Environ(), "GOPROXY=file://"+filepath.Join(dir, "proxy"), "GOFLAGS=-mod=mod", "GONOSUMDB=*",
		"GOSUMDB=off", "GOTOOLCHAIN=local", "GOMODCACHE="+filepath.Join(dir, "modcache"), "GOWORK=off")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod download: %v\n%s", err, out)
	}
	cmd = exec.Command(goBin, "run", ".")
	cmd.Dir = filepath.Join(dir, "app")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	// The module cache is read-only; let TempDir remove it.
	_ = filepath.WalkDir(filepath.Join(dir, "modcache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	require.NoError(t, err, "%s", out)
	var deps []*debug.Module
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			deps = append(deps, &debug.Module{Path: f[0], Version: f[1]})
		}
	}
	bi := &debug.BuildInfo{Main: debug.Module{Path: "example.com/rooms", Version: "(devel)"}, Deps: deps}
	assert.Equal(t, "v0.9.7", otelx.VersionOf(bi, true), "deps: %s", out)
}

// TestNamedMeterProvider: every point of every kind of synchronous
// instrument, and what a registered callback observes, carries the name;
// the caller's own attributes stay.
func TestNamedMeterProvider(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	m := otelx.NamedMeterProvider(mp, "rooms").Meter("test")
	ctx := context.Background()
	own := metric.WithAttributes(attribute.String("k", "v"))
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String("k", "v")))
	ic, _ := m.Int64Counter("ic")
	ic.Add(ctx, 1, own)
	ic.Add(ctx, 1, set)
	fc, _ := m.Float64Counter("fc")
	fc.Add(ctx, 1, own)
	iu, _ := m.Int64UpDownCounter("iu")
	iu.Add(ctx, 1, own)
	fu, _ := m.Float64UpDownCounter("fu")
	fu.Add(ctx, 1, own)
	ih, _ := m.Int64Histogram("ih")
	ih.Record(ctx, 1, own)
	fh, _ := m.Float64Histogram("fh")
	fh.Record(ctx, 1, own)
	ig, _ := m.Int64Gauge("ig")
	ig.Record(ctx, 1, own)
	fg, _ := m.Float64Gauge("fg")
	fg.Record(ctx, 1, own)
	og, _ := m.Int64ObservableGauge("og")
	of, _ := m.Float64ObservableGauge("of")
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(og, 1, metric.WithAttributes(attribute.String("k", "v")))
		o.ObserveFloat64(of, 1, metric.WithAttributes(attribute.String("k", "v")))
		return nil
	}, og, of)
	require.NoError(t, err)
	defer func() { _ = reg.Unregister() }()

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	seen := 0
	for _, sm := range rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			var sets []attribute.Set
			switch d := mm.Data.(type) {
			case metricdata.Sum[int64]:
				require.Len(t, d.DataPoints, 1, "%s: one stream, with or without a precomputed set", mm.Name)
				assert.EqualValues(t, 2-btoi(mm.Name != "ic"), d.DataPoints[0].Value, mm.Name)
				sets = append(sets, d.DataPoints[0].Attributes)
			case metricdata.Sum[float64]:
				sets = append(sets, d.DataPoints[0].Attributes)
			case metricdata.Histogram[int64]:
				sets = append(sets, d.DataPoints[0].Attributes)
			case metricdata.Histogram[float64]:
				sets = append(sets, d.DataPoints[0].Attributes)
			case metricdata.Gauge[int64]:
				sets = append(sets, d.DataPoints[0].Attributes)
			case metricdata.Gauge[float64]:
				sets = append(sets, d.DataPoints[0].Attributes)
			}
			for _, s := range sets {
				seen++
				name, _ := s.Value(otelx.KeyClientName)
				k, _ := s.Value("k")
				assert.Equal(t, "rooms", name.AsString(), mm.Name)
				assert.Equal(t, "v", k.AsString(), mm.Name)
			}
		}
	}
	assert.Equal(t, 10, seen)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestNamedProvidersPassThrough: no name, or a no-op provider, gives the
// provider itself (callers' no-op checks keep working); a name gives the
// same wrapper each time (the caches keyed by provider find it again).
func TestNamedProvidersPassThrough(t *testing.T) {
	mp := sdkmetric.NewMeterProvider()
	defer func() { _ = mp.Shutdown(context.Background()) }()
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	assert.Equal(t, metric.MeterProvider(mp), otelx.NamedMeterProvider(mp, ""))
	assert.Equal(t, metric.MeterProvider(metricnoop.NewMeterProvider()), otelx.NamedMeterProvider(metricnoop.NewMeterProvider(), "x"))
	assert.Equal(t, any(tracenoop.NewTracerProvider()), any(otelx.NamedTracerProvider(tracenoop.NewTracerProvider(), "x")))
	assert.Same(t, otelx.NamedMeterProvider(mp, "x"), otelx.NamedMeterProvider(mp, "x"))
	assert.Same(t, otelx.NamedTracerProvider(tp, "x"), otelx.NamedTracerProvider(tp, "x"))
	assert.NotSame(t, otelx.NamedMeterProvider(mp, "x"), otelx.NamedMeterProvider(mp, "y"))
}

// TestNamedPrecomputedSetAllocs: recording with a precomputed attribute
// set through a named instrument allocates no more than without a name.
func TestNamedPrecomputedSetAllocs(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	opts := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("k", "v")))}
	plain, _ := mp.Meter("t").Int64Counter("c")
	named, _ := otelx.NamedMeterProvider(mp, "rooms").Meter("t").Int64Counter("c")
	ctx := context.Background()
	named.Add(ctx, 1, opts...) // the join is remembered
	base := testing.AllocsPerRun(100, func() { plain.Add(ctx, 1, opts...) })
	got := testing.AllocsPerRun(100, func() { named.Add(ctx, 1, opts...) })
	assert.LessOrEqual(t, got, base, "named %v allocs, plain %v", got, base)
}

// makeModZip writes a module zip (files under prefix/) at path.
func makeModZip(t *testing.T, path, prefix string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	zw := zip.NewWriter(f)
	for name, body := range files {
		w, err := zw.Create(prefix + "/" + name)
		require.NoError(t, err)
		_, err = w.Write([]byte(body))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())
}
