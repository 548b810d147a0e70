package events

import (
	"sync"
	"time"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// LimitKey is what the log is rate-limited by: one executable asking again and
// again for the same outcome, as one user, is one story, told once and then
// summarized. (Per user: another user running the same program has a story of
// its own, which a flood must not hide.)
type LimitKey struct {
	Exe     string
	EUID    uint32
	Verdict decision.Verdict
}

// Overflow is the executable named in the key that collects events of keys
// beyond the limiter's capacity.
const Overflow = "(other executables)"

// Limiter lets through a burst of events per key, then one per interval, and
// counts the rest for periodic summaries. Its memory is bounded by MaxKeys
// whatever the event rate or variety.
type Limiter struct {
	Burst    int           // lines per key before limiting
	Interval time.Duration // one more line per key per interval
	MaxKeys  int

	mu         sync.Mutex
	buckets    map[LimitKey]*bucket
	suppressed uint64 // in all, since start
}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed uint64 // since the last summary
}

// NewLimiter returns a limiter with uffdgate's defaults: 10 lines per key, then
// one every 10 s; 1024 keys.
func NewLimiter() *Limiter {
	return &Limiter{Burst: 10, Interval: 10 * time.Second, MaxKeys: 1024}
}

// Allow reports whether an event with key k may be logged now. held is how
// many events of the key were already held back before this one (by the kernel)
// and goes into the key's summary.
func (l *Limiter) Allow(k LimitKey, now time.Time, held uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(k, now)
	b.suppressed += held
	l.suppressed += held
	b.tokens = min(float64(l.Burst), b.tokens+now.Sub(b.last).Seconds()/l.Interval.Seconds())
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	b.suppressed++
	l.suppressed++
	return false
}

// Add counts n events of key k that were held back elsewhere (pending in the
// kernel's limit when the daemon stops) into its next summary.
func (l *Limiter) Add(k LimitKey, n uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucket(k, now).suppressed += n
	l.suppressed += n
}

// bucket finds or makes k's bucket; beyond MaxKeys, new keys share one
// overflow bucket per verdict. l.mu is held.
func (l *Limiter) bucket(k LimitKey, now time.Time) *bucket {
	if l.buckets == nil {
		l.buckets = map[LimitKey]*bucket{}
	}
	if b, ok := l.buckets[k]; ok {
		return b
	}
	if len(l.buckets) >= l.MaxKeys {
		k = LimitKey{Exe: Overflow, Verdict: k.Verdict}
		if b, ok := l.buckets[k]; ok {
			return b
		}
	}
	b := &bucket{tokens: float64(l.Burst), last: now}
	l.buckets[k] = b
	return b
}

// Summary is how many events of a key were not logged since the last summary.
type Summary struct {
	Key        LimitKey
	Suppressed uint64
}

// Flush returns the keys with suppressed events and resets their counts; keys
// idle for a whole interval with a full bucket are forgotten, which keeps the
// map small once a flood stops.
func (l *Limiter) Flush(now time.Time) []Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Summary
	for k, b := range l.buckets {
		if b.suppressed > 0 {
			out = append(out, Summary{Key: k, Suppressed: b.suppressed})
			b.suppressed = 0
			continue
		}
		if now.Sub(b.last) > l.Interval && b.tokens+now.Sub(b.last).Seconds()/l.Interval.Seconds() >= float64(l.Burst) {
			delete(l.buckets, k)
		}
	}
	return out
}

// Suppressed is how many events were not logged since start.
func (l *Limiter) Suppressed() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.suppressed
}

// Keys is how many keys the limiter tracks now.
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
