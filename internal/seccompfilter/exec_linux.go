//go:build linux

package seccompfilter

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// CommandError is a command that could not be started; ExitCode is what a shell
// would exit with: 127 when it does not exist, 126 when it cannot be executed.
type CommandError struct {
	Name     string
	Err      error
	ExitCode int
}

func (e *CommandError) Error() string { return e.Name + ": " + e.Err.Error() }

func (e *CommandError) Unwrap() error { return e.Err }

// LookPath resolves name like a shell does (PATH unless it contains a slash).
func LookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err // drop exec's repetition of the name
	}
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, exec.ErrDot):
		return "", &CommandError{name, fmt.Errorf("found only through a relative PATH entry (as %s), which is refused so a directory you stand in cannot supply the program; pass ./%s to mean it", p, name), 126}
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return "", &CommandError{name, errors.New("command not found"), 127}
	}
	if errors.Is(err, os.ErrPermission) {
		err = fmt.Errorf("%w (not executable, or a directory on the way is not searchable)", err)
	}
	return "", &CommandError{name, err, 126}
}

// Exec installs the filter (see Install) and replaces the process with path,
// from the thread that holds the filter. It returns only on failure.
func Exec(path string, argv, env []string, o Options) error {
	if err := Install(o); err != nil {
		return err
	}
	err := unix.Exec(path, argv, env)
	if errors.Is(err, unix.ENOENT) {
		if _, serr := os.Stat(path); serr == nil {
			// Like a shell's "bad interpreter": the file is there, what it needs is not.
			return &CommandError{path, fmt.Errorf("execve: %w (its #! interpreter or ELF loader is missing)", err), 126}
		}
		return &CommandError{path, fmt.Errorf("execve: %w", err), 127}
	}
	return &CommandError{path, fmt.Errorf("execve: %w", err), 126}
}
