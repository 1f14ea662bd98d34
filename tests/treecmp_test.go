package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// tnode is what compareTrees looks at of one entry of a tree.
type tnode struct {
	typ          uint32 // S_IFMT bits
	perm         uint32 // permission, setuid, setgid and sticky bits
	uid, gid     uint32
	size         int64 // regular files and symlinks
	sum          string
	target       string
	major, minor uint64
	mtime        int64
	nlink        uint64
	xattrs       map[string]string
	dev, ino     uint64
}

// keptXattr says which xattrs compareTrees compares: user.* and security.capability,
// the ones an image carries and both imgfs and umoci (as root) keep. Others (say
// security.selinux set by the host) belong to the host filesystem.
func keptXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "security.capability"
}

// scanTree walks root and returns its entries by path relative to root ("." for root).
func scanTree(root string) (map[string]*tnode, error) {
	nodes := map[string]*tnode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n := &tnode{typ: st.Mode & syscall.S_IFMT, perm: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid,
			mtime: st.Mtim.Sec, nlink: uint64(st.Nlink), dev: uint64(st.Dev), ino: st.Ino}
		switch n.typ {
		case syscall.S_IFREG:
			n.size = st.Size
			if n.sum, err = fileSum(p); err != nil {
				return err
			}
		case syscall.S_IFLNK:
			n.size = st.Size
			if n.target, err = os.Readlink(p); err != nil {
				return err
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			r := uint64(st.Rdev)
			n.major = (r>>8)&0xfff | (r>>32)&^0xfff
			n.minor = r&0xff | (r>>12)&^0xff
		}
		if n.typ != syscall.S_IFLNK { // no Llistxattr in syscall; symlinks hold no user.* xattrs
			if n.xattrs, err = xattrs(p); err != nil {
				return fmt.Errorf("%s: %v", p, err)
			}
		}
		nodes[rel] = n
		return nil
	})
	return nodes, err
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// xattrs returns p's kept xattrs (it follows symlinks: not for symlinks).
func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(p, buf)
	if errors.Is(err, syscall.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" || !keptXattr(name) {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := syscall.Getxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %v", name, err)
		}
		m[name] = string(v[:vn])
	}
	return m, nil
}

// cmpOpts says what compareTrees compares beyond the rest.
type cmpOpts struct {
	dirMtime        bool // compare directory mtimes
	rootMeta        bool // compare the metadata of the root directory itself
	skipEmptyXattrs bool // leave out xattrs with an empty value, on both sides
}

// compareTrees compares the tree at got with the one at want and returns every
// difference, one line each ("path: field got X, want Y"), sorted.
func compareTrees(got, want string, o cmpOpts) ([]string, error) {
	g, err := scanTree(got)
	if err != nil {
		return nil, err
	}
	w, err := scanTree(want)
	if err != nil {
		return nil, err
	}
	var diffs []string
	add := func(p, field string, gv, wv any) {
		diffs = append(diffs, fmt.Sprintf("%q: %s got %v, want %v", p, field, gv, wv))
	}
	gGroups, wGroups := linkGroups(g), linkGroups(w)
	for _, p := range slices.Sorted(maps.Keys(w)) {
		wn, gn := w[p], g[p]
		if gn == nil {
			diffs = append(diffs, fmt.Sprintf("%q: missing (want %s)", p, typeName(wn.typ)))
			continue
		}
		if gn.typ != wn.typ {
			add(p, "type", typeName(gn.typ), typeName(wn.typ))
			continue
		}
		isDir := wn.typ == syscall.S_IFDIR
		if p == "." && !o.rootMeta {
			continue
		}
		if gn.perm != wn.perm {
			add(p, "mode", fmt.Sprintf("%04o", gn.perm), fmt.Sprintf("%04o", wn.perm))
		}
		if gn.uid != wn.uid || gn.gid != wn.gid {
			add(p, "owner", fmt.Sprintf("%d:%d", gn.uid, gn.gid), fmt.Sprintf("%d:%d", wn.uid, wn.gid))
		}
		if gn.size != wn.size && !isDir {
			add(p, "size", gn.size, wn.size)
		}
		if gn.sum != wn.sum {
			add(p, "sha256", gn.sum, wn.sum)
		}
		if gn.target != wn.target {
			add(p, "symlink target", fmt.Sprintf("%q", gn.target), fmt.Sprintf("%q", wn.target))
		}
		if gn.major != wn.major || gn.minor != wn.minor {
			add(p, "device", fmt.Sprintf("%d:%d", gn.major, gn.minor), fmt.Sprintf("%d:%d", wn.major, wn.minor))
		}
		if gn.mtime != wn.mtime && (!isDir || o.dirMtime) {
			add(p, "mtime", gn.mtime, wn.mtime)
		}
		if !isDir && gn.nlink != wn.nlink {
			add(p, "nlink", gn.nlink, wn.nlink)
		}
		gx, wx := gn.xattrs, wn.xattrs
		if o.skipEmptyXattrs {
			gx, wx = nonEmpty(gx), nonEmpty(wx)
		}
		if !maps.Equal(gx, wx) {
			add(p, "xattrs", fmtXattrs(gx), fmtXattrs(wx))
		}
		if !isDir && gGroups[p] != wGroups[p] {
			add(p, "hard links", "["+gGroups[p]+"]", "["+wGroups[p]+"]")
		}
	}
	for _, p := range slices.Sorted(maps.Keys(g)) {
		if w[p] == nil {
			diffs = append(diffs, fmt.Sprintf("%q: extra %s (not in want)", p, typeName(g[p].typ)))
		}
	}
	return diffs, nil
}

// linkGroups maps each non-directory's path to the sorted paths sharing its inode.
func linkGroups(nodes map[string]*tnode) map[string]string {
	type key struct{ dev, ino uint64 }
	byIno := map[key][]string{}
	for p, n := range nodes {
		if n.typ != syscall.S_IFDIR {
			k := key{n.dev, n.ino}
			byIno[k] = append(byIno[k], p)
		}
	}
	groups := map[string]string{}
	for _, ps := range byIno {
		slices.Sort(ps)
		s := strings.Join(ps, " ")
		for _, p := range ps {
			groups[p] = s
		}
	}
	return groups
}

func nonEmpty(m map[string]string) map[string]string {
	r := map[string]string{}
	for k, v := range m {
		if v != "" {
			r[k] = v
		}
	}
	return r
}

func fmtXattrs(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func typeName(t uint32) string {
	switch t {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFCHR:
		return "char device"
	case syscall.S_IFBLK:
		return "block device"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type %o", t)
}
