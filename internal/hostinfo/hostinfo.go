// Package hostinfo reads what audit, explain and probe need to know about a host:
// processes (/proc), the userfaultfd sysctl and its sysctl.d sources, the
// /dev/userfaultfd node with its POSIX ACL, the LSM stack, user and group names,
// and whether a uffdgate daemon is running. Everything is read through an fs.FS
// rooted at "/" and a small xattr interface, so tests run against fixture trees.
package hostinfo

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Xattrs reads extended attributes. Name is a path in Host.FS (no leading "/").
// An absent attribute is (nil, nil).
type Xattrs interface {
	Get(name, attr string) ([]byte, error)
}

// Host is one machine as seen through FS, rooted at "/": "proc/1/status",
// "sys/kernel/security/lsm", "etc/sysctl.d", "dev/userfaultfd".
type Host struct {
	FS    fs.FS
	Xattr Xattrs
}

// Live is the running host.
func Live() Host { return Host{FS: os.DirFS("/"), Xattr: liveXattrs{}} }

type liveXattrs struct{}

func (liveXattrs) Get(name, attr string) ([]byte, error) {
	p := "/" + name
	buf := make([]byte, 256)
	for {
		n, err := unix.Getxattr(p, attr, buf)
		switch {
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP):
			return nil, nil
		case errors.Is(err, unix.ERANGE):
			// Grown between the size query and the read: ask again.
			sz, serr := unix.Getxattr(p, attr, nil)
			if serr != nil {
				return nil, &fs.PathError{Op: "getxattr " + attr, Path: p, Err: serr}
			}
			buf = make([]byte, sz+64)
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "getxattr " + attr, Path: p, Err: err}
		}
		return buf[:n], nil
	}
}

// MapXattrs is a fixture: name -> attribute -> value.
type MapXattrs map[string]map[string][]byte

// Get implements Xattrs.
func (m MapXattrs) Get(name, attr string) ([]byte, error) { return m[name][attr], nil }

// readTrim reads a small file and trims surrounding white space.
func (h Host) readTrim(name string) (string, error) {
	b, err := fs.ReadFile(h.FS, name)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// LSMs returns the active LSM stack from securityfs.
func (h Host) LSMs() ([]string, error) {
	s, err := h.readTrim("sys/kernel/security/lsm")
	if err != nil {
		return nil, err
	}
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, ","), nil
}

// BootParam returns the value of a kernel command-line parameter (the last one
// wins, as in the kernel) and whether it is present.
func (h Host) BootParam(name string) (string, bool, error) {
	s, err := h.readTrim("proc/cmdline")
	if err != nil {
		return "", false, err
	}
	val, found := "", false
	for _, f := range strings.Fields(s) {
		if f == "--" {
			break // what follows is for init, not the kernel
		}
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			val, found = v, true
		}
	}
	return val, found, nil
}

// KernelRelease is uname -r, read from /proc so fixtures can set it.
func (h Host) KernelRelease() string {
	s, err := h.readTrim("proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return s
}

// MiscMinor returns the minor number the misc driver gave to name (/proc/misc).
func (h Host) MiscMinor(name string) (uint32, bool) {
	b, err := fs.ReadFile(h.FS, "proc/misc")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[1] == name {
			var m uint32
			for _, c := range f[0] {
				if c < '0' || c > '9' {
					return 0, false
				}
				m = m*10 + uint32(c-'0')
			}
			return m, true
		}
	}
	return 0, false
}

// isNotExist also covers ESRCH and ENOENT from processes exiting under us.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// resolveLink turns the target of the symlink at name into an FS path.
func resolveLink(name, target string) string {
	if strings.HasPrefix(target, "/") {
		return path.Clean(strings.TrimPrefix(target, "/"))
	}
	return path.Clean(path.Join(path.Dir(name), target))
}
