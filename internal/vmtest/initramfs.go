package vmtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/cavaliergopher/cpio"
)

const (
	etcPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"tester:x:1000:1000:tester:/tmp:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	etcGroup = "root:x:0:\ntester:x:1000:\nnogroup:x:65534:\n"
)

// writeInitramfs writes an uncompressed newc archive (fast to build and for
// the kernel to unpack) with guestinit as /init, the spec and g's files.
func writeInitramfs(dst, initBin string, files map[string]string, spec guestSpec) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriter(f)

	// The kernel opens /dev/console for pid 1's stdio before anything is
	// mounted, and the cpio package cannot write device numbers, so these
	// entries are written by hand; the kernel reads them as part of the
	// same archive.
	for i, n := range []struct {
		name         string
		mode         uint32
		major, minor int
	}{
		{"dev", cpio.TypeDir | 0o755, 0, 0},
		{"dev/console", cpio.TypeChar | 0o600, 5, 1},
		{"dev/null", cpio.TypeChar | 0o666, 1, 3},
	} {
		if err := writeNode(bw, 0x7000_0000+i, n.name, n.mode, n.major, n.minor); err != nil {
			return err
		}
	}

	specJSON, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	type entry struct {
		data string // inline content
		host string // or a host file
	}
	entries := map[string]entry{
		"/init":        {host: initBin},
		"/vmtest.json": {data: string(specJSON)},
		"/etc/passwd":  {data: etcPasswd},
		"/etc/group":   {data: etcGroup},
	}
	dirs := map[string]bool{"/proc": true, "/sys": true, "/tmp": true, "/run": true, "/etc": true, "/root": true}
	for guest, host := range files {
		if !path.IsAbs(guest) || path.Clean(guest) != guest || guest == "/" {
			return fmt.Errorf("guest path %q: want a clean absolute path", guest)
		}
		if _, ok := entries[guest]; ok {
			return fmt.Errorf("guest path %q is reserved by vmtest", guest)
		}
		entries[guest] = entry{host: host}
	}
	for p := range entries {
		for d := path.Dir(p); d != "/" && d != "/dev"; d = path.Dir(d) {
			dirs[d] = true
		}
	}

	w := cpio.NewWriter(bw)
	// Sorted, so parents precede children.
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := w.WriteHeader(&cpio.Header{Name: d[1:], Mode: cpio.TypeDir | 0o755}); err != nil {
			return err
		}
	}
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		e := entries[p]
		if err := writeFile(w, p[1:], e.data, e.host); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

func writeFile(w *cpio.Writer, name, data, host string) error {
	var r io.Reader = strings.NewReader(data)
	size := int64(len(data))
	if host != "" {
		hf, err := os.Open(host)
		if err != nil {
			return err
		}
		defer hf.Close()
		st, err := hf.Stat()
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", host)
		}
		r, size = hf, st.Size()
	}
	if err := w.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | 0o755, Size: size}); err != nil {
		return err
	}
	if _, err := io.CopyN(w, r, size); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// writeNode writes one newc header with no data (directories and device
// nodes). Every field is 8 hex digits; the name is NUL-terminated and padded
// so the next header starts 4-byte aligned.
// Callers pass inode numbers far above the cpio package's own counter.
func writeNode(w io.Writer, ino int, name string, mode uint32, major, minor int) error {
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, 1, 0, 0, 0, 0, major, minor, len(name)+1, 0)
	rec := hdr + name + "\x00"
	rec += strings.Repeat("\x00", (4-len(rec)%4)%4)
	_, err := io.WriteString(w, rec)
	return err
}
