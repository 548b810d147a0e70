// Package metrics exposes the daemon's counters to Prometheus. Decision counts
// are read from the kernel's exact per-CPU counters at scrape time, so they are
// exact however many events the log or the ring buffer dropped.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// DefaultAddr is loopback only: the counts say who probes the kernel.
const DefaultAddr = "127.0.0.1:9808"

// Source is what the daemon knows.
type Source interface {
	// Decisions returns counts indexed [mode][verdict][path].
	Decisions() ([decision.NumModes][decision.NumVerdicts][decision.NumPaths]uint64, error)
	EventsLost() (uint64, error)
	LogSuppressed() uint64
	Reloads() (ok, failed uint64, last time.Time)
	Enforcing() bool
}

var (
	descDecisions = prometheus.NewDesc("uffdgate_decisions_total",
		"userfaultfd context creations decided by the gate, by outcome, creation path and policy mode (exact, from per-CPU kernel counters).",
		[]string{"decision", "path", "mode"}, nil)
	descLost = prometheus.NewDesc("uffdgate_events_lost_total",
		"Decision events that did not fit in the kernel ring buffer (the decisions themselves are still counted).", nil, nil)
	descSuppressed = prometheus.NewDesc("uffdgate_log_lines_suppressed_total",
		"Decision events not logged by the per-executable rate limit (summarized in periodic log lines).", nil, nil)
	descReloads = prometheus.NewDesc("uffdgate_policy_reloads_total",
		"Policy reloads by result.", []string{"result"}, nil)
	descLastReload = prometheus.NewDesc("uffdgate_policy_last_reload_timestamp_seconds",
		"Time of the last policy reload attempt, in seconds since the epoch (0: none yet).", nil, nil)
	descEnforcing = prometheus.NewDesc("uffdgate_enforcing",
		"1 when the gate refuses requests, 0 when it only audits.", nil, nil)
)

type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDecisions, descLost, descSuppressed, descReloads, descLastReload, descEnforcing} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if d, err := c.src.Decisions(); err == nil {
		for m := range d {
			for v := range d[m] {
				for p, n := range d[m][v] {
					// Every combination, zeros included: rates need the series to exist.
					ch <- prometheus.MustNewConstMetric(descDecisions, prometheus.CounterValue, float64(n),
						decision.Verdict(v).String(), decision.Path(p).String(), decision.Mode(m).String())
				}
			}
		}
	} else {
		ch <- prometheus.NewInvalidMetric(descDecisions, err)
	}
	if n, err := c.src.EventsLost(); err == nil {
		ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(n))
	} else {
		ch <- prometheus.NewInvalidMetric(descLost, err)
	}
	ch <- prometheus.MustNewConstMetric(descSuppressed, prometheus.CounterValue, float64(c.src.LogSuppressed()))
	ok, failed, last := c.src.Reloads()
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(ok), "ok")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(failed), "failed")
	ts := 0.0
	if !last.IsZero() {
		ts = float64(last.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(descLastReload, prometheus.GaugeValue, ts)
	enf := 0.0
	if c.src.Enforcing() {
		enf = 1
	}
	ch <- prometheus.MustNewConstMetric(descEnforcing, prometheus.GaugeValue, enf)
}

// Registry builds the registry: uffdgate's metrics, build info, and the Go and
// process collectors.
func Registry(src Source, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{src})
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "uffdgate_build_info",
		Help:        "uffdgate's version and Go version; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	bi.Set(1)
	reg.MustRegister(bi, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve serves /metrics on addr until ctx is done. It fails at once when addr
// cannot be listened on, so the daemon can say so before claiming anything.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Timeouts bound what idle or slow clients can hold (each holds a file
	// descriptor); a scrape takes milliseconds.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener was closed under us; nothing to do
		}
	}()
	// Stopping closes every connection at once: the daemon is exiting, and a
	// scrape cut short is retried by Prometheus.
	return func() { srv.Close() }, nil
}
