// Package state is how a running daemon tells other uffdgate commands (status,
// explain, probe, audit) what it enforces: a JSON file it rewrites atomically.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultPath is where `uffdgate run` publishes its state.
const DefaultPath = "/run/uffdgate/state.json"

// State is the daemon's published state. Field names are part of the interface
// (`uffdgate status --json` prints it).
type State struct {
	PID          int       `json:"pid"`
	Version      string    `json:"version"`
	Backend      string    `json:"backend"` // "lsm"
	State        string    `json:"state"`   // "enforcing" or "auditing"
	Started      time.Time `json:"started"`
	Updated      time.Time `json:"updated"`
	Mode         string    `json:"mode"`
	Audit        bool      `json:"audit"`
	PolicySource string    `json:"policy_source"`
	PolicyDigest string    `json:"policy_digest"`
	// PolicyYAML is the text of the policy in force, so that other commands
	// evaluate exactly it.
	PolicyYAML        string            `json:"policy_yaml"`
	AllowCapabilities []string          `json:"allow_capabilities"`
	Rules             []string          `json:"rules"`     // "name:grant", "(audit-only)" when on trial
	Decisions         map[string]uint64 `json:"decisions"` // "verdict/path" -> count
	// DecisionsByMode: "mode/verdict/path" -> count, exact from the kernel.
	DecisionsByMode    map[string]uint64 `json:"decisions_by_mode"`
	EventsLost         uint64            `json:"events_lost"`
	LogLinesSuppressed uint64            `json:"log_lines_suppressed"`
	MetricsAddr        string            `json:"metrics_addr"`
	ReloadsOK          uint64            `json:"reloads_ok"`
	ReloadsFailed      uint64            `json:"reloads_failed"`
	LastReload         time.Time         `json:"last_reload,omitzero"`
	// ExecTracking: the exec tracker runs (the policy has had executable rules).
	ExecTracking bool `json:"exec_tracking"`
}

// Write replaces the state file atomically.
func Write(path string, s State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ErrNotRunning means no daemon publishes state at the path.
var ErrNotRunning = errors.New("no uffdgate daemon is running")

// Read returns the state of the running daemon. A state file left by a daemon
// that is gone (killed without cleanup) is reported as ErrNotRunning.
func Read(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("%w (no %s)", ErrNotRunning, path)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s is not a uffdgate state file: %w", path, err)
	}
	if !alive(s.PID) {
		return s, fmt.Errorf("%w (%s names pid %d, which is gone)", ErrNotRunning, path, s.PID)
	}
	return s, nil
}

// alive reports whether pid is a running uffdgate.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.HasPrefix(strings.TrimSpace(string(comm)), "uffdgate")
}

// Remove deletes the state file on a clean stop.
func Remove(path string) error {
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
