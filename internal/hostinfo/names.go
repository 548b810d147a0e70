package hostinfo

import (
	"io/fs"
	"strconv"
	"strings"
)

// Names maps user and group ids to names from /etc/passwd and /etc/group. Both
// may be missing (a minimal initramfs): lookups then return "".
type Names struct {
	users, groups map[uint32]string
	// primary gid and supplementary groups of each user, for hypothetical
	// identities.
	primary map[uint32]uint32
	members map[string][]uint32
}

// Names reads /etc/passwd and /etc/group, ignoring what is missing or malformed.
func (h Host) Names() Names {
	n := Names{users: map[uint32]string{}, groups: map[uint32]string{}, primary: map[uint32]uint32{},
		members: map[string][]uint32{}}
	if b, err := fs.ReadFile(h.FS, "etc/passwd"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ":")
			if len(f) < 4 {
				continue
			}
			uid, err1 := strconv.ParseUint(f[2], 10, 32)
			gid, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				continue
			}
			if _, dup := n.users[uint32(uid)]; !dup {
				n.users[uint32(uid)] = f[0]
				n.primary[uint32(uid)] = uint32(gid)
			}
		}
	}
	if b, err := fs.ReadFile(h.FS, "etc/group"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ":")
			if len(f) < 4 {
				continue
			}
			gid, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				continue
			}
			if _, dup := n.groups[uint32(gid)]; !dup {
				n.groups[uint32(gid)] = f[0]
			}
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					n.members[m] = append(n.members[m], uint32(gid))
				}
			}
		}
	}
	return n
}

// User is the name of uid, or "".
func (n Names) User(uid uint32) string { return n.users[uid] }

// Group is the name of gid, or "".
func (n Names) Group(gid uint32) string { return n.groups[gid] }

// Account returns a user's primary gid and supplementary groups; ok is false
// when /etc/passwd does not know the uid.
func (n Names) Account(uid uint32) (gid uint32, groups []uint32, ok bool) {
	name, ok := n.users[uid]
	if !ok {
		return 0, nil, false
	}
	return n.primary[uid], n.members[name], true
}

// UserLabel is "name (uid)" or "uid N".
func (n Names) UserLabel(uid uint32) string {
	if s := n.User(uid); s != "" {
		return s + " (" + strconv.FormatUint(uint64(uid), 10) + ")"
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

// GroupLabel is "name (gid)" or "gid N".
func (n Names) GroupLabel(gid uint32) string {
	if s := n.Group(gid); s != "" {
		return s + " (" + strconv.FormatUint(uint64(gid), 10) + ")"
	}
	return "gid " + strconv.FormatUint(uint64(gid), 10)
}
