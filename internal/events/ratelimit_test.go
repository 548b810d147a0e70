package events

import (
	"fmt"
	"testing"
	"time"

	"github.com/uffdgate/uffdgate/internal/decision"
)

func TestLimiterBurstThenInterval(t *testing.T) {
	l := &Limiter{Burst: 3, Interval: 10 * time.Second, MaxKeys: 8}
	k := LimitKey{Exe: "/usr/bin/x", Verdict: decision.Deny}
	now := time.Unix(1000, 0)
	logged := 0
	for range 100 {
		if l.Allow(k, now, 0) {
			logged++
		}
	}
	if logged != 3 || l.Suppressed() != 97 {
		t.Fatalf("burst: logged %d, suppressed %d", logged, l.Suppressed())
	}
	if l.Allow(k, now.Add(5*time.Second), 0) {
		t.Error("a line half an interval later")
	}
	if !l.Allow(k, now.Add(11*time.Second), 0) {
		t.Error("no line an interval later")
	}
	s := l.Flush(now.Add(11 * time.Second))
	if len(s) != 1 || s[0].Suppressed != 98 || s[0].Key != k {
		t.Errorf("summary %+v", s)
	}
	if s := l.Flush(now.Add(12 * time.Second)); len(s) != 0 {
		t.Errorf("second summary %+v", s)
	}
	// Events held back by the kernel count into the key's summary.
	l.Allow(k, now.Add(20*time.Second), 40)
	if s := l.Flush(now.Add(20 * time.Second)); len(s) != 1 || s[0].Suppressed != 40 {
		t.Errorf("summary with kernel-held events %+v", s)
	}
	// Another key, or another verdict for the same executable, has its own budget.
	if !l.Allow(LimitKey{Exe: "/usr/bin/x", Verdict: decision.WouldDeny}, now, 0) || !l.Allow(LimitKey{Exe: "/usr/bin/y", Verdict: decision.Deny}, now, 0) {
		t.Error("independent keys were limited together")
	}
}

// TestLimiterBounded: a flood of distinct executables never grows the limiter
// beyond MaxKeys (+ one overflow key per verdict), and the counts stay exact.
func TestLimiterBounded(t *testing.T) {
	l := &Limiter{Burst: 2, Interval: time.Second, MaxKeys: 100}
	now := time.Unix(1000, 0)
	logged := 0
	const n = 100000
	for i := range n {
		if l.Allow(LimitKey{Exe: fmt.Sprintf("/tmp/x%d", i), Verdict: decision.Deny}, now, 0) {
			logged++
		}
	}
	if l.Keys() > 101 {
		t.Errorf("%d keys", l.Keys())
	}
	if uint64(logged)+l.Suppressed() != n {
		t.Errorf("logged %d + suppressed %d != %d", logged, l.Suppressed(), n)
	}
	var sum uint64
	for _, s := range l.Flush(now) {
		sum += s.Suppressed
		if s.Key.Exe != Overflow {
			t.Errorf("summary for a regular key: %+v", s)
		}
	}
	if sum != l.Suppressed() {
		t.Errorf("summaries add up to %d, suppressed %d", sum, l.Suppressed())
	}
	// Once the flood stops, idle keys are forgotten.
	l.Flush(now.Add(10 * time.Second))
	if l.Keys() != 0 {
		t.Errorf("%d keys after the flood", l.Keys())
	}
}
