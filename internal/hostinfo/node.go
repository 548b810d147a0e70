package hostinfo

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Capabilities that override file permissions (include/uapi/linux/capability.h).
const (
	capDACOverride   = 1
	capDACReadSearch = 2
)

// DeviceName is /dev/userfaultfd in Host.FS.
const DeviceName = "dev/userfaultfd"

// ACLXattr holds a file's access ACL.
const ACLXattr = "system.posix_acl_access"

// Perm is a set of rwx bits.
type Perm uint16

const (
	PermExec  Perm = 1
	PermWrite Perm = 2
	PermRead  Perm = 4
)

func (p Perm) String() string {
	b := []byte("---")
	if p&PermRead != 0 {
		b[0] = 'r'
	}
	if p&PermWrite != 0 {
		b[1] = 'w'
	}
	if p&PermExec != 0 {
		b[2] = 'x'
	}
	return string(b)
}

// ACLTag is the kind of an ACL entry (include/uapi/linux/posix_acl.h).
type ACLTag uint16

const (
	TagUserObj  ACLTag = 0x01
	TagUser     ACLTag = 0x02
	TagGroupObj ACLTag = 0x04
	TagGroup    ACLTag = 0x08
	TagMask     ACLTag = 0x10
	TagOther    ACLTag = 0x20
)

func (t ACLTag) String() string {
	switch t {
	case TagUserObj, TagUser:
		return "user"
	case TagGroupObj, TagGroup:
		return "group"
	case TagMask:
		return "mask"
	case TagOther:
		return "other"
	}
	return fmt.Sprintf("tag(0x%x)", uint16(t))
}

// ACLEntry is one entry; ID is meaningful for TagUser and TagGroup only.
type ACLEntry struct {
	Tag  ACLTag
	Perm Perm
	ID   uint32
}

// ACL is a decoded POSIX access ACL.
type ACL struct{ Entries []ACLEntry }

const (
	aclVersion   = 2
	aclUndefined = 0xffffffff
)

// DecodeACL decodes the system.posix_acl_access xattr: a little-endian u32
// version (2), then 8-byte entries {u16 tag, u16 perm, u32 id}. It applies the
// kernel's validity rules (posix_acl_valid), so what it accepts is what the
// kernel enforces.
func DecodeACL(b []byte) (*ACL, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("ACL xattr: %d bytes, shorter than its 4-byte header", len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != aclVersion {
		return nil, fmt.Errorf("ACL xattr: version %d, want %d", v, aclVersion)
	}
	if (len(b)-4)%8 != 0 {
		return nil, fmt.Errorf("ACL xattr: %d bytes of entries, not a multiple of 8", len(b)-4)
	}
	a := &ACL{}
	counts := map[ACLTag]int{}
	var lastTag ACLTag
	var lastID uint32
	for off := 4; off < len(b); off += 8 {
		e := ACLEntry{
			Tag:  ACLTag(binary.LittleEndian.Uint16(b[off:])),
			Perm: Perm(binary.LittleEndian.Uint16(b[off+2:])),
			ID:   binary.LittleEndian.Uint32(b[off+4:]),
		}
		n := len(a.Entries)
		switch e.Tag {
		case TagUserObj, TagGroupObj, TagMask, TagOther, TagUser, TagGroup:
		default:
			return nil, fmt.Errorf("ACL entry %d: unknown tag 0x%x", n, uint16(e.Tag))
		}
		if e.Perm&^7 != 0 {
			return nil, fmt.Errorf("ACL entry %d (%s): permission bits 0x%x beyond rwx", n, e.Tag, uint16(e.Perm))
		}
		if e.Tag < lastTag {
			return nil, fmt.Errorf("ACL entry %d (%s): entries out of order (the kernel requires them sorted by tag)", n, e.Tag)
		}
		if e.Tag == TagUser || e.Tag == TagGroup {
			if e.Tag == lastTag && e.ID <= lastID {
				return nil, fmt.Errorf("ACL entry %d: %s %d repeated or out of order", n, e.Tag, e.ID)
			}
			lastID = e.ID
		} else if counts[e.Tag] > 0 {
			return nil, fmt.Errorf("ACL entry %d: second %s entry", n, e.Tag)
		}
		if e.Tag != lastTag && (e.Tag == TagUser || e.Tag == TagGroup) {
			lastID = e.ID
		}
		counts[e.Tag]++
		lastTag = e.Tag
		a.Entries = append(a.Entries, e)
	}
	for _, t := range []ACLTag{TagUserObj, TagGroupObj, TagOther} {
		if counts[t] != 1 {
			return nil, fmt.Errorf("ACL xattr: no %s entry for the file's %s class", t, map[ACLTag]string{TagUserObj: "owner", TagGroupObj: "group", TagOther: "other"}[t])
		}
	}
	if counts[TagUser]+counts[TagGroup] > 0 && counts[TagMask] == 0 {
		return nil, fmt.Errorf("ACL xattr: named entries without a mask entry")
	}
	return a, nil
}

// find returns the first entry with tag t (and id, for named entries).
func (a *ACL) find(t ACLTag) (ACLEntry, bool) {
	for _, e := range a.Entries {
		if e.Tag == t {
			return e, true
		}
	}
	return ACLEntry{}, false
}

// mask is the mask entry's bits, rwx when there is none.
func (a *ACL) mask() Perm {
	if e, ok := a.find(TagMask); ok {
		return e.Perm
	}
	return 7
}

// String is getfacl's short form: "user::rw-,user:1000:r--,group::---,mask::r--,other::---".
func (a *ACL) String() string {
	var parts []string
	for _, e := range a.Entries {
		id := ""
		if e.Tag == TagUser || e.Tag == TagGroup {
			id = fmt.Sprint(e.ID)
		}
		parts = append(parts, e.Tag.String()+":"+id+":"+e.Perm.String())
	}
	return strings.Join(parts, ",")
}

// Extended reports whether the ACL says more than the mode bits.
func (a *ACL) Extended() bool {
	for _, e := range a.Entries {
		if e.Tag == TagUser || e.Tag == TagGroup || e.Tag == TagMask {
			return true
		}
	}
	return false
}

// Node is a device node with what governs opening it.
type Node struct {
	Name    string // path in Host.FS
	Present bool
	CharDev bool
	Major   uint32
	Minor   uint32
	Ino     uint64
	Dev     uint64
	UID     uint32
	GID     uint32
	Perm    fs.FileMode // permission bits
	ACL     *ACL        // nil: none
}

// Path is the node's absolute path.
func (n Node) Path() string { return "/" + n.Name }

// ModeString is like ls: "crw-rw----".
func (n Node) ModeString() string {
	t := "-"
	if n.CharDev {
		t = "c"
	}
	s := t + Perm(n.Perm>>6&7).String() + Perm(n.Perm>>3&7).String() + Perm(n.Perm&7).String()
	if n.ACL != nil && n.ACL.Extended() {
		s += "+"
	}
	return s
}

// Node stats a node and reads its ACL. A missing node is Present == false.
func (h Host) Node(name string) (Node, error) {
	n := Node{Name: name}
	fi, err := fs.Stat(h.FS, name)
	if isNotExist(err) {
		return n, nil
	}
	if err != nil {
		return n, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return n, fmt.Errorf("/%s: the file system gives no owner or mode (no stat_t)", name)
	}
	n.Present = true
	n.CharDev = fi.Mode()&fs.ModeCharDevice != 0
	n.Major, n.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	n.Ino, n.Dev = st.Ino, st.Dev
	n.UID, n.GID = st.Uid, st.Gid
	n.Perm = fs.FileMode(st.Mode & 0o7777)
	raw, err := h.Xattr.Get(name, ACLXattr)
	if err != nil {
		return n, err
	}
	if raw != nil {
		if n.ACL, err = DecodeACL(raw); err != nil {
			return n, fmt.Errorf("/%s: %w", name, err)
		}
	}
	return n, nil
}

// Cred is what the kernel's permission check looks at.
type Cred struct {
	UID, GID uint32 // filesystem ids
	Groups   []uint32
	CapEff   uint64
	// InitUserNS: the credentials belong to the initial user namespace. In any
	// other, a capability overrides DAC only if the namespace maps the file's
	// owner and group (capable_wrt_inode_uidgid); UIDMap and GIDMap tell.
	InitUserNS bool
	UIDMap     IDMap
	GIDMap     IDMap
}

func (c Cred) inGroup(g uint32) bool { return c.GID == g || slices.Contains(c.Groups, g) }

// capOverInode is capable_wrt_inode_uidgid(inode, cap).
func (c Cred) capOverInode(n Node, cp int) bool {
	if c.CapEff&(1<<uint(cp)) == 0 {
		return false
	}
	return c.InitUserNS || (c.UIDMap.MapsOutside(uint64(n.UID)) && c.GIDMap.MapsOutside(uint64(n.GID)))
}

// classPerm is the DAC/ACL part of generic_permission: the bits of the class
// the credentials fall into, and that class's description.
func (n Node) classPerm(c Cred, want Perm) (Perm, string) {
	mode := Perm(n.Perm)
	if c.UID == n.UID {
		p := mode >> 6 & 7
		if n.ACL != nil {
			e, _ := n.ACL.find(TagUserObj)
			p = e.Perm
		}
		return p, fmt.Sprintf("the owner (uid %d) has %s", n.UID, p)
	}
	if n.ACL != nil {
		m := n.ACL.mask()
		for _, e := range n.ACL.Entries {
			if e.Tag == TagUser && e.ID == c.UID {
				return e.Perm & m, fmt.Sprintf("ACL entry user:%d:%s (mask %s) gives %s", e.ID, e.Perm, m, e.Perm&m)
			}
		}
		// Group class: any matching group entry that grants everything wins;
		// matching some but none granting denies (posix_acl_permission).
		matched := ""
		for _, e := range n.ACL.Entries {
			var ok bool
			var what string
			switch e.Tag {
			case TagGroupObj:
				ok, what = c.inGroup(n.GID), fmt.Sprintf("ACL entry group::%s for the owning group %d", e.Perm, n.GID)
			case TagGroup:
				ok, what = c.inGroup(e.ID), fmt.Sprintf("ACL entry group:%d:%s", e.ID, e.Perm)
			}
			if !ok {
				continue
			}
			// The mask bounds every group-class entry (it is rwx when absent).
			eff := e.Perm & m
			if eff&want == want {
				return eff, fmt.Sprintf("%s (mask %s) gives %s", what, m, eff)
			}
			if matched == "" {
				matched = fmt.Sprintf("%s (mask %s) gives only %s", what, m, eff)
			}
		}
		if matched != "" {
			return 0, matched
		}
		e, _ := n.ACL.find(TagOther)
		return e.Perm, fmt.Sprintf("other has %s", e.Perm)
	}
	if c.inGroup(n.GID) {
		p := mode >> 3 & 7
		return p, fmt.Sprintf("the group (gid %d) has %s", n.GID, p)
	}
	p := mode & 7
	return p, fmt.Sprintf("other has %s", p)
}

// Allows reports whether the credentials may open the node with access want
// (read, write or both), as generic_permission decides for a device node, with
// the reason.
func (n Node) Allows(c Cred, want Perm) (bool, string) {
	if !n.Present {
		return false, n.Path() + " does not exist"
	}
	p, why := n.classPerm(c, want)
	if p&want == want {
		return true, why
	}
	if n.capOverInode(c, capDACOverride) {
		return true, why + ", but CAP_DAC_OVERRIDE overrides it"
	}
	if want == PermRead && n.capOverInode(c, capDACReadSearch) {
		return true, why + ", but CAP_DAC_READ_SEARCH overrides it for reading"
	}
	return false, why
}

// Opens reports whether the credentials can open the node in some mode that
// allows USERFAULTFD_IOC_NEW: the ioctl does not check the open mode, so read
// access alone, or write access alone, is enough.
func (n Node) Opens(c Cred) (bool, string) {
	if ok, why := n.Allows(c, PermRead|PermWrite); ok {
		return true, why
	}
	okR, whyR := n.Allows(c, PermRead)
	if okR {
		return true, "read access, which is enough: " + whyR
	}
	okW, whyW := n.Allows(c, PermWrite)
	if okW {
		return true, "write access, which is enough: " + whyW
	}
	if whyR == whyW {
		return false, whyR
	}
	return false, whyR + "; " + whyW
}

func (n Node) capOverInode(c Cred, cp int) bool { return c.capOverInode(n, cp) }

// Grant is one class of users the node lets open it without any capability.
type Grant struct {
	// Kind: "owner", "user", "group", "owning-group", "other".
	Kind string `json:"kind"`
	ID   *int64 `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
	// Perm: the effective bits (after the ACL mask); only r and w matter.
	Perm string `json:"perm"`
	// Via: "mode" or "acl".
	Via string `json:"via"`
}

// Who is the grant in words.
func (g Grant) Who() string {
	id := func() string {
		if g.ID == nil {
			return ""
		}
		if g.Name != "" {
			return fmt.Sprintf("%s (%d)", g.Name, *g.ID)
		}
		return fmt.Sprint(*g.ID)
	}
	switch g.Kind {
	case "owner":
		return "its owner, user " + id()
	case "user":
		return "user " + id()
	case "owning-group":
		return "members of its group " + id()
	case "group":
		return "members of group " + id()
	}
	return "every user"
}

// Grants lists who can open the node for read or write by its mode and ACL
// alone: each gets kernel-fault contexts with no capability check.
func (n Node) Grants(names Names) []Grant {
	if !n.Present {
		return nil
	}
	uid := func(id uint32) *int64 { v := int64(id); return &v }
	var out []Grant
	add := func(kind string, id *int64, name string, p Perm, via string) {
		if p&(PermRead|PermWrite) != 0 {
			out = append(out, Grant{Kind: kind, ID: id, Name: name, Perm: p.String(), Via: via})
		}
	}
	mode := Perm(n.Perm)
	if n.ACL == nil || !n.ACL.Extended() {
		add("owner", uid(n.UID), names.User(n.UID), mode>>6&7, "mode")
		add("owning-group", uid(n.GID), names.Group(n.GID), mode>>3&7, "mode")
		add("other", nil, "", mode&7, "mode")
		return out
	}
	m := n.ACL.mask()
	for _, e := range n.ACL.Entries {
		switch e.Tag {
		case TagUserObj:
			add("owner", uid(n.UID), names.User(n.UID), e.Perm, "acl")
		case TagUser:
			add("user", uid(e.ID), names.User(e.ID), e.Perm&m, "acl")
		case TagGroupObj:
			add("owning-group", uid(n.GID), names.Group(n.GID), e.Perm&m, "acl")
		case TagGroup:
			add("group", uid(e.ID), names.Group(e.ID), e.Perm&m, "acl")
		case TagOther:
			add("other", nil, "", e.Perm, "acl")
		}
	}
	return out
}

// RootOnly reports whether nobody but uid 0 (and the root group, when root owns
// it) gets access by mode and ACL: the kernel's default 0600 root:root.
func (n Node) RootOnly(names Names) bool {
	for _, g := range n.Grants(names) {
		if g.Kind != "owner" || *g.ID != 0 {
			return false
		}
	}
	return true
}
