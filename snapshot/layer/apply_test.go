//go:build linux

package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// ---------------------------------------------------------------------
// Layer tars described as data.

// atEntry is one tar entry of a fixture.
type atEntry struct {
	name         string
	typ          byte
	data         string
	link         string
	mode         int64
	uid, gid     int
	mtime, atime time.Time
	xattrs       map[string]string
	major, minor int64
	// size, when headerOnly, is the header's size; the archive stops
	// after the header.
	size       int64
	headerOnly bool
}

// atTime is the default mtime of fixtures: whole seconds, so that an
// entry needs no PAX header for it (atT1... have nanoseconds).
var atTime = time.Unix(1600000000, 0)

func atT(sec int64) time.Time { return time.Unix(sec, 5000) }

func atFile(name, data string) atEntry {
	return atEntry{name: name, typ: tar.TypeReg, data: data, mode: 0o644}
}
func atDir(name string) atEntry { return atEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func atSym(name, to string) atEntry {
	return atEntry{name: name, typ: tar.TypeSymlink, link: to, mode: 0o777}
}
func atLink(name, to string) atEntry { return atEntry{name: name, typ: tar.TypeLink, link: to} }
func atFifo(name string) atEntry     { return atEntry{name: name, typ: tar.TypeFifo, mode: 0o644} }
func atChar(name string, major, minor int64) atEntry {
	return atEntry{name: name, typ: tar.TypeChar, mode: 0o666, major: major, minor: minor}
}
func atBlock(name string, major, minor int64) atEntry {
	return atEntry{name: name, typ: tar.TypeBlock, mode: 0o660, major: major, minor: minor}
}

// atWh is the OCI whiteout entry of name.
func atWh(name string) atEntry {
	dir, base := filepath.Split(name)
	return atFile(dir+ovl.WhiteoutPrefix+base, "")
}

func (e atEntry) mod(m int64) atEntry      { e.mode = m; return e }
func (e atEntry) own(u, g int) atEntry     { e.uid, e.gid = u, g; return e }
func (e atEntry) at(t time.Time) atEntry   { e.mtime = t; return e }
func (e atEntry) atim(t time.Time) atEntry { e.atime = t; return e }
func (e atEntry) x(k, v string) atEntry {
	e.xattrs = maps.Clone(e.xattrs)
	if e.xattrs == nil {
		e.xattrs = map[string]string{}
	}
	e.xattrs[k] = v
	return e
}

// atTar encodes entries as a tar (PAX where needed).
func atTar(t testing.TB, entries ...atEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:       e.name,
			Typeflag:   e.typ,
			Linkname:   e.link,
			Mode:       e.mode,
			Uid:        e.uid,
			Gid:        e.gid,
			ModTime:    e.mtime,
			AccessTime: e.atime,
			Devmajor:   e.major,
			Devminor:   e.minor,
			Format:     tar.FormatPAX,
		}
		if hdr.ModTime.IsZero() {
			hdr.ModTime = atTime
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.data))
		}
		if e.headerOnly {
			hdr.Size = e.size
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[applyXattrPrefix+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.headerOnly {
			return buf.Bytes()
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatalf("tar data %q: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar close: %v", err)
	}
	return buf.Bytes()
}

func atCompress(t testing.TB, c Compression, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch c {
	case Gzip:
		w = gzip.NewWriter(&buf)
	case Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		return b
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ---------------------------------------------------------------------
// Trees on disk described as data.

// atTempDir is t.TempDir, made removable even when a layer left
// directories without write permission (matters when not root).
func atTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	return dir
}

// atNode is one entry of a tree built directly on disk (lowers,
// sentinels).
type atNode struct {
	path     string
	kind     uint32 // S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR (whiteout)
	data     string // file data or symlink target
	mode     uint32
	uid, gid int
	mtime    time.Time
	xattrs   map[string]string
}

func atBuild(t testing.TB, root string, nodes []atNode) {
	t.Helper()
	var dirs []atNode
	for _, n := range nodes {
		p := filepath.Join(root, n.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch n.kind {
		case unix.S_IFDIR:
			if n.path != "" {
				err = os.Mkdir(p, 0o755)
			}
			dirs = append(dirs, n)
		case unix.S_IFREG:
			err = os.WriteFile(p, []byte(n.data), 0o644)
		case unix.S_IFLNK:
			err = os.Symlink(n.data, p)
		case unix.S_IFCHR:
			err = unix.Mknod(p, unix.S_IFCHR, 0)
		}
		if err != nil {
			t.Fatalf("build %s: %v", p, err)
		}
		for k, v := range n.xattrs {
			if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil {
				t.Fatalf("build %s: xattr %s: %v", p, k, err)
			}
		}
		if n.kind == unix.S_IFREG {
			atSetMeta(t, p, n)
		}
	}
	for _, n := range slices.Backward(dirs) {
		atSetMeta(t, filepath.Join(root, n.path), n)
	}
}

func atSetMeta(t testing.TB, p string, n atNode) {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := os.Lchown(p, n.uid, n.gid); err != nil {
			t.Fatal(err)
		}
	}
	if n.mode != 0 {
		if err := os.Chmod(p, os.FileMode(n.mode&0o777)); err != nil {
			t.Fatal(err)
		}
	}
	if !n.mtime.IsZero() {
		if err := os.Chtimes(p, n.mtime, n.mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// atTs is how atDescribe writes a time.
func atTs(t time.Time) string { return fmt.Sprintf("t=%d.%09d", t.Unix(), t.Nanosecond()) }

// atDescribe describes every entry under root (root itself as ".") in
// one line each: type, mode, owner, contents, mtime, xattrs.
func atDescribe(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out[rel], err = atDesc(p)
		return err
	})
	if err != nil {
		t.Fatalf("describe %s: %v", root, err)
	}
	return out
}

func atDesc(p string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "", err
	}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFCHR && st.Rdev == ovl.WhiteoutDev {
		return "whiteout", nil
	}
	var b strings.Builder
	b.WriteString(map[uint32]string{
		unix.S_IFDIR: "dir", unix.S_IFREG: "file", unix.S_IFLNK: "symlink",
		unix.S_IFCHR: "char", unix.S_IFBLK: "block", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "socket",
	}[typ])
	if typ != unix.S_IFLNK {
		fmt.Fprintf(&b, " %04o", st.Mode&0o7777)
	}
	fmt.Fprintf(&b, " %d:%d", st.Uid, st.Gid)
	switch typ {
	case unix.S_IFREG:
		data, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " %q", data)
		if st.Nlink > 1 {
			fmt.Fprintf(&b, " nlink=%d", st.Nlink)
		}
	case unix.S_IFLNK:
		to, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " ->%s", to)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(&b, " dev=%d/%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	fmt.Fprintf(&b, " %s", atTs(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)))
	xs, err := atXattrs(p)
	if err != nil {
		return "", err
	}
	for _, k := range slices.Sorted(maps.Keys(xs)) {
		fmt.Fprintf(&b, " %s=%q", k, xs[k])
	}
	return b.String(), nil
}

// atXattrs reads every xattr of p, not following a symlink.
func atXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for name := range strings.SplitSeq(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = string(v[:n])
	}
	return out, nil
}

var atAnyTime = regexp.MustCompile(`t=[0-9]+\.[0-9]+`)

// atCompareTree compares a described tree with want, where "t=?" in a
// wanted line matches any time; on a difference it prints both trees.
func atCompareTree(t testing.TB, got, want map[string]string) {
	t.Helper()
	norm := maps.Clone(got)
	for k, w := range want {
		if g, ok := norm[k]; ok && strings.Contains(w, "t=?") {
			norm[k] = atAnyTime.ReplaceAllString(g, "t=?")
		}
	}
	if maps.Equal(norm, want) {
		return
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(atMapsUnion(norm, want))) {
		g, w := norm[k], want[k]
		mark := "  "
		if g != w {
			mark = "! "
		}
		fmt.Fprintf(&b, "%s%-14s got:  %s\n%s%-14s want: %s\n", mark, k, g, mark, "", w)
	}
	t.Errorf("tree differs:\n%s", b.String())
}

func atMapsUnion(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// ---------------------------------------------------------------------
// Valid layers.

// atCap is a security.capability value (VFS_CAP_REVISION_2, effective,
// cap_net_bind_service permitted).
const atCap = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

var (
	atT1, atT2, atT3, atT4 = atT(1000000001), atT(1000000002), atT(1000000003), atT(1000000004)
	atTDef                 = atTs(atTime)
)

func TestApply(t *testing.T) {
	root := os.Geteuid() == 0
	tests := []struct {
		name     string
		needRoot bool
		lowers   [][]atNode
		entries  []atEntry
		want     map[string]string
		warns    []string
		check    func(t *testing.T, dir string)
	}{
		{
			name:     "every type",
			needRoot: true,
			entries: []atEntry{
				atDir("d").mod(0o750).own(1000, 1000).at(atT1),
				atFile("d/f", "hello").mod(0o640).own(1000, 1001).at(atT2).atim(atT3),
				atFile("suid", "x").mod(0o4755).own(0, 0).at(atT2),
				atFile("sgid", "y").mod(0o2711).own(1, 2).at(atT2),
				atFile("sticky/t", "").mod(0o1777),
				atSym("d/l", "../suid").own(5, 6).at(atT3).x("trusted.sym", "1"),
				atSym("abs", "/etc/passwd"),
				atLink("d/h", "d/f"),
				atLink("lh", "d/l"),
				atFifo("p").mod(0o640).own(7, 8).at(atT4),
				atChar("c", 1, 3).mod(0o666),
				atBlock("b", 7, 200).mod(0o660).own(0, 6),
			},
			want: map[string]string{
				".":        "dir 0755 0:0 t=?",
				"d":        "dir 0750 1000:1000 " + atTs(atT1),
				"d/f":      `file 0640 1000:1001 "hello" nlink=2 ` + atTs(atT2),
				"d/h":      `file 0640 1000:1001 "hello" nlink=2 ` + atTs(atT2),
				"d/l":      "symlink 5:6 ->../suid " + atTs(atT3) + ` trusted.sym="1"`,
				"lh":       "symlink 5:6 ->../suid " + atTs(atT3) + ` trusted.sym="1"`,
				"suid":     `file 4755 0:0 "x" ` + atTs(atT2),
				"sgid":     `file 2711 1:2 "y" ` + atTs(atT2),
				"sticky":   "dir 0755 0:0 t=?",
				"sticky/t": `file 1777 0:0 "" ` + atTDef,
				"abs":      "symlink 0:0 ->/etc/passwd " + atTDef,
				"p":        "fifo 0640 7:8 " + atTs(atT4),
				"c":        "char 0666 0:0 dev=1/3 " + atTDef,
				"b":        "block 0660 0:6 dev=7/200 " + atTDef,
			},
			check: func(t *testing.T, dir string) {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, "d/f"), &st); err != nil {
					t.Fatal(err)
				}
				if got := time.Unix(st.Atim.Sec, st.Atim.Nsec); !got.Equal(atT3) {
					t.Errorf("d/f atime = %v, want %v", got, atT3)
				}
			},
		},
		{
			name:     "xattrs, the overlay's own dropped",
			needRoot: true,
			entries: []atEntry{
				atDir("d").x("user.dir", "1").x("trusted.overlay.opaque", "y"),
				atFile("d/f", "data").mod(0o755).own(1000, 1000).
					x("user.foo", "bar").
					x("security.capability", atCap).
					x("trusted.overlay.opaque", "y").
					x("user.overlay.whiteout", "y").
					x("user.fuseoverlayfs.opaque", "y").
					x("trusted.strata", "kept"),
				atFile(".wh.gone", "").x("user.ignored", "1"),
				atSym("s", "d/f").x("user.s", "1"),
			},
			want: map[string]string{
				".":    "dir 0755 0:0 t=?",
				"d":    `dir 0755 0:0 ` + atTDef + ` user.dir="1"`,
				"d/f":  `file 0755 1000:1000 "data" ` + atTDef + ` security.capability="` + strings.ReplaceAll(fmt.Sprintf("%q", atCap), `"`, "") + `" trusted.strata="kept" user.foo="bar"`,
				"gone": "whiteout",
				"s":    "symlink 0:0 ->d/f " + atTDef,
			},
			warns: []string{`apply layer: entry "s": xattr user.s skipped: operation not permitted`},
		},
		{
			name:     "directory times survive their entries",
			needRoot: true,
			entries: []atEntry{
				atDir("a").at(atT1),
				atDir("a/b").at(atT2),
				atFile("a/b/f", "").at(atT3),
				atFile("a/c", "").at(atT4),
				atDir("./").mod(0o700).own(3, 4).at(atT4),
				atFile("a/b/g", "").at(atT3),
			},
			want: map[string]string{
				".":     "dir 0700 3:4 " + atTs(atT4),
				"a":     "dir 0755 0:0 " + atTs(atT1),
				"a/b":   "dir 0755 0:0 " + atTs(atT2),
				"a/b/f": `file 0644 0:0 "" ` + atTs(atT3),
				"a/b/g": `file 0644 0:0 "" ` + atTs(atT3),
				"a/c":   `file 0644 0:0 "" ` + atTs(atT4),
			},
		},
		{
			name:     "names are cleaned",
			needRoot: true,
			entries: []atEntry{
				atFile("./a", "1"),
				atFile("b/../c", "2"),
				atFile("d//e/./f", "3"),
				atDir("./d/"),
			},
			want: map[string]string{
				".":     "dir 0755 0:0 t=?",
				"a":     `file 0644 0:0 "1" ` + atTDef,
				"c":     `file 0644 0:0 "2" ` + atTDef,
				"d":     "dir 0755 0:0 " + atTDef,
				"d/e":   "dir 0755 0:0 t=?",
				"d/e/f": `file 0644 0:0 "3" ` + atTDef,
			},
		},
		{
			name:     "whiteouts",
			needRoot: true,
			entries: []atEntry{
				atWh("gone"),
				atDir("d"),
				atWh("d/x"),
				atWh("implicit/y"),
			},
			want: map[string]string{
				".":          "dir 0755 0:0 t=?",
				"gone":       "whiteout",
				"d":          "dir 0755 0:0 " + atTDef,
				"d/x":        "whiteout",
				"implicit":   "dir 0755 0:0 t=?",
				"implicit/y": "whiteout",
			},
		},
		{
			name:     "opaque marker before siblings",
			needRoot: true,
			entries:  []atEntry{atDir("d"), atFile("d/.wh..wh..opq", ""), atFile("d/a", "a"), atWh("d/b")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   "dir 0755 0:0 " + atTDef + ` trusted.overlay.opaque="y"`,
				"d/a": `file 0644 0:0 "a" ` + atTDef,
				"d/b": "whiteout",
			},
		},
		{
			name:     "opaque marker after siblings",
			needRoot: true,
			entries:  []atEntry{atDir("d"), atFile("d/a", "a"), atWh("d/b"), atFile("d/.wh..wh..opq", "")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   "dir 0755 0:0 " + atTDef + ` trusted.overlay.opaque="y"`,
				"d/a": `file 0644 0:0 "a" ` + atTDef,
				"d/b": "whiteout",
			},
		},
		{
			name:     "opaque marker before its directory entry",
			needRoot: true,
			entries:  []atEntry{atFile("d/.wh..wh..opq", ""), atDir("d").mod(0o711).at(atT1)},
			want: map[string]string{
				".": "dir 0755 0:0 t=?",
				"d": "dir 0711 0:0 " + atTs(atT1) + ` trusted.overlay.opaque="y"`,
			},
		},
		{
			name:     "opaque root",
			needRoot: true,
			entries:  []atEntry{atFile(".wh..wh..opq", ""), atFile("a", "")},
			want: map[string]string{
				".": `dir 0755 0:0 t=? trusted.overlay.opaque="y"`,
				"a": `file 0644 0:0 "" ` + atTDef,
			},
		},
		{
			name:     "whiteout then file of the same name",
			needRoot: true,
			entries:  []atEntry{atWh("x"), atFile("x", "new")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "x": `file 0644 0:0 "new" ` + atTDef},
		},
		{
			name:     "file then whiteout of the same name",
			needRoot: true,
			entries:  []atEntry{atFile("x", "new"), atWh("x")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "x": `file 0644 0:0 "new" ` + atTDef},
		},
		{
			name:     "whiteout then directory of the same name",
			needRoot: true,
			entries:  []atEntry{atWh("d"), atDir("d").at(atT1), atFile("d/f", "")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   "dir 0755 0:0 " + atTs(atT1) + ` trusted.overlay.opaque="y"`,
				"d/f": `file 0644 0:0 "" ` + atTDef,
			},
		},
		{
			name:     "directory then whiteout of the same name",
			needRoot: true,
			entries:  []atEntry{atDir("d").at(atT1), atFile("d/f", ""), atWh("d")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   "dir 0755 0:0 " + atTs(atT1) + ` trusted.overlay.opaque="y"`,
				"d/f": `file 0644 0:0 "" ` + atTDef,
			},
		},
		{
			name:     "whiteout then entries beneath the name",
			needRoot: true,
			lowers:   [][]atNode{{{path: "d", kind: unix.S_IFDIR, mode: 0o700, uid: 9, gid: 9, mtime: atT1}}},
			entries:  []atEntry{atWh("d"), atFile("d/f", "")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   `dir 0755 0:0 t=? trusted.overlay.opaque="y"`,
				"d/f": `file 0644 0:0 "" ` + atTDef,
			},
		},
		{
			name:     "entries beneath a name, then its whiteout",
			needRoot: true,
			lowers:   [][]atNode{{{path: "d", kind: unix.S_IFDIR, mode: 0o700, uid: 9, gid: 9, mtime: atT1}}},
			entries:  []atEntry{atFile("d/f", ""), atWh("d")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   `dir 0755 0:0 t=? trusted.overlay.opaque="y"`,
				"d/f": `file 0644 0:0 "" ` + atTDef,
			},
		},
		// A name given twice: the last entry wins (docker, containerd).
		{
			name:     "file twice: the second content wins",
			needRoot: true,
			entries:  []atEntry{atFile("x", "first").at(atT1), atFile("./y/../x", "second").mod(0o600).at(atT2)},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "x": `file 0600 0:0 "second" ` + atTs(atT2)},
		},
		{
			name:     "directory twice: its entries stay, the last metadata wins",
			needRoot: true,
			entries:  []atEntry{atDir("d").mod(0o700).at(atT1), atFile("d/f", "f"), atDir("d/").mod(0o750).own(3, 4).at(atT2)},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   "dir 0750 3:4 " + atTs(atT2),
				"d/f": `file 0644 0:0 "f" ` + atTDef,
			},
		},
		{
			name:     "root twice: the last metadata wins",
			needRoot: true,
			entries:  []atEntry{atDir("./").mod(0o700).at(atT1), atFile("f", ""), atDir(".").mod(0o751).at(atT2)},
			want:     map[string]string{".": "dir 0751 0:0 " + atTs(atT2), "f": `file 0644 0:0 "" ` + atTDef},
		},
		{
			name:     "directory then file: the directory's entries go",
			needRoot: true,
			entries: []atEntry{
				atDir("d"), atFile("d/f", "f"), atDir("d/e"), atFile("d/e/g", "g"), atWh("d/w"), atLink("h", "d/e/g"),
				atFile("d", "now a file").at(atT1),
			},
			want: map[string]string{
				".": "dir 0755 0:0 t=?",
				"d": `file 0644 0:0 "now a file" ` + atTs(atT1),
				"h": `file 0644 0:0 "g" ` + atTDef, // a link to what d/e/g was
			},
		},
		{
			name:     "implicit directory then file",
			needRoot: true,
			entries:  []atEntry{atFile("d/f", "f"), atFile("d", "file")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "d": `file 0644 0:0 "file" ` + atTDef},
		},
		{
			name:     "file then directory with entries: opaque",
			needRoot: true,
			lowers:   [][]atNode{{{path: "d", kind: unix.S_IFDIR, mode: 0o755}, {path: "d/lower", kind: unix.S_IFREG}}},
			entries:  []atEntry{atFile("d", "file"), atDir("d").at(atT1), atFile("d/f", "f")},
			want: map[string]string{
				".":   "dir 0755 0:0 t=?",
				"d":   "dir 0755 0:0 " + atTs(atT1) + ` trusted.overlay.opaque="y"`,
				"d/f": `file 0644 0:0 "f" ` + atTDef,
			},
		},
		{
			name:     "file, directory with entries, then file again",
			needRoot: true,
			entries:  []atEntry{atFile("d", "file"), atDir("d"), atFile("d/f", "f"), atFile("d", "again")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "d": `file 0644 0:0 "again" ` + atTDef},
		},
		{
			name:     "symlink then file",
			needRoot: true,
			entries:  []atEntry{atSym("l", "/etc/passwd"), atFile("l", "file")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "l": `file 0644 0:0 "file" ` + atTDef},
		},
		{
			name:     "file then symlink",
			needRoot: true,
			entries:  []atEntry{atFile("l", "file"), atSym("l", "target")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "l": "symlink 0:0 ->target " + atTDef},
		},
		{
			name:     "hard link, then its target replaced",
			needRoot: true,
			entries:  []atEntry{atFile("f", "old"), atLink("h", "f"), atFile("f", "new")},
			want: map[string]string{
				".": "dir 0755 0:0 t=?",
				"f": `file 0644 0:0 "new" ` + atTDef,
				"h": `file 0644 0:0 "old" ` + atTDef, // what f held at the link entry
			},
		},
		{
			name:     "target replaced, then a hard link to it",
			needRoot: true,
			entries:  []atEntry{atFile("f", "old"), atFile("f", "new"), atLink("h", "f")},
			want: map[string]string{
				".": "dir 0755 0:0 t=?",
				"f": `file 0644 0:0 "new" nlink=2 ` + atTDef,
				"h": `file 0644 0:0 "new" nlink=2 ` + atTDef,
			},
		},
		{
			name:     "hard link replaced by a file",
			needRoot: true,
			entries:  []atEntry{atFile("f", "f"), atLink("h", "f"), atFile("h", "h")},
			want: map[string]string{
				".": "dir 0755 0:0 t=?",
				"f": `file 0644 0:0 "f" ` + atTDef,
				"h": `file 0644 0:0 "h" ` + atTDef,
			},
		},
		{
			name:     "whiteout, file, file: the last file over the whiteout",
			needRoot: true,
			lowers:   [][]atNode{{{path: "x", kind: unix.S_IFREG}}},
			entries:  []atEntry{atWh("x"), atFile("x", "1"), atFile("x", "2"), atWh("x")},
			want:     map[string]string{".": "dir 0755 0:0 t=?", "x": `file 0644 0:0 "2" ` + atTDef},
		},
		{
			name:     "whiteout and opaque marker twice",
			needRoot: true,
			entries:  []atEntry{atWh("x"), atWh("x"), atFile("d/.wh..wh..opq", ""), atFile("d/.wh..wh..opq", "")},
			want: map[string]string{
				".": "dir 0755 0:0 t=?",
				"x": "whiteout",
				"d": `dir 0755 0:0 t=? trusted.overlay.opaque="y"`,
			},
		},
		{
			name:     "implicit parents take the lowers' merged metadata",
			needRoot: true,
			lowers: [][]atNode{
				{ // top
					{path: "", kind: unix.S_IFDIR, mode: 0o751, uid: 1, gid: 1, mtime: atT4},
					{path: "a", kind: unix.S_IFDIR, mode: 0o750, uid: 1000, gid: 1000, mtime: atT1,
						xattrs: map[string]string{"user.l": "1", ovl.XattrOpaque: "y", ovl.XattrOrigin: "x"}},
					{path: "w", kind: unix.S_IFCHR},
					{path: "s", kind: unix.S_IFLNK, data: "a"},
				},
				{
					{path: "", kind: unix.S_IFDIR, mode: 0o700, uid: 2, gid: 2, mtime: atT3},
					{path: "a/b", kind: unix.S_IFDIR, mode: 0o711, uid: 2, gid: 2, mtime: atT2},
					{path: "e", kind: unix.S_IFDIR, mode: 0o700, uid: 3, gid: 3, mtime: atT3},
					{path: "w", kind: unix.S_IFDIR, mode: 0o700, uid: 4, gid: 4, mtime: atT3},
					{path: "s", kind: unix.S_IFDIR, mode: 0o700, uid: 4, gid: 4, mtime: atT3},
				},
			},
			entries: []atEntry{atFile("a/b/c", ""), atFile("e/f/g", ""), atFile("w/x", ""), atFile("s/y", "")},
			want: map[string]string{
				".":     "dir 0751 1:1 " + atTs(atT4),
				"a":     "dir 0750 1000:1000 " + atTs(atT1) + ` user.l="1"`,
				"a/b":   "dir 0755 0:0 t=?", // hidden by the opaque a above
				"a/b/c": `file 0644 0:0 "" ` + atTDef,
				"e":     "dir 0700 3:3 " + atTs(atT3),
				"e/f":   "dir 0755 0:0 t=?",
				"e/f/g": `file 0644 0:0 "" ` + atTDef,
				"w":     "dir 0755 0:0 t=?", // whited out above
				"w/x":   `file 0644 0:0 "" ` + atTDef,
				"s":     "dir 0755 0:0 t=?", // a symlink above
				"s/y":   `file 0644 0:0 "" ` + atTDef,
			},
		},
		{
			name:    "aufs metadata is skipped",
			entries: []atEntry{atDir(".wh..wh.plnk"), atFile(".wh..wh.plnk/1.2", ""), atFile(".wh..wh.aufs", "")},
			want:    map[string]string{".": fmt.Sprintf("dir 0755 %d:%d t=?", os.Geteuid(), os.Getegid())},
			warns: []string{
				`apply layer: entry ".wh..wh.plnk": aufs metadata skipped`,
				`apply layer: entry ".wh..wh.plnk/1.2": aufs metadata skipped`,
				`apply layer: entry ".wh..wh.aufs": aufs metadata skipped`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needRoot && !root {
				t.Skip("needs root: owners, devices, kernel whiteouts and trusted.* xattrs")
			}
			sandbox := atTempDir(t)
			var lowers []string
			for i, nodes := range tc.lowers {
				l := filepath.Join(sandbox, fmt.Sprintf("lower%d", i))
				if err := os.Mkdir(l, 0o755); err != nil {
					t.Fatal(err)
				}
				atBuild(t, l, nodes)
				lowers = append(lowers, l)
			}
			dir := filepath.Join(sandbox, "layer")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			var warns []string
			blob := atTar(t, tc.entries...)
			res, err := Apply(context.Background(), dir, bytes.NewReader(blob), ApplyOptions{
				Lowers: lowers,
				Warn:   func(msg string) { warns = append(warns, msg) },
			})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tc.check != nil { // first: reading the tree moves atimes
				tc.check(t, dir)
			}
			atCompareTree(t, atDescribe(t, dir), tc.want)
			if !slices.Equal(warns, tc.warns) {
				t.Errorf("warnings:\n got  %q\n want %q", warns, tc.warns)
			}
			if want := atSHA256(blob); res.DiffID != want || res.Digest != want {
				t.Errorf("DiffID, Digest = %s, %s; want %s", res.DiffID, res.Digest, want)
			}
		})
	}
}

// TestApplyCompression applies one layer as a plain tar, gzip and zstd.
func TestApplyCompression(t *testing.T) {
	plain := atTar(t, atDir("d").at(atT1), atFile("d/f", strings.Repeat("strata ", 1000)).at(atT2))
	// Writers pad to a record: the padding belongs to the diff ID.
	padded := append(slices.Clone(plain), make([]byte, 10240-len(plain)%10240)...)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		for _, tarball := range [][]byte{plain, padded} {
			t.Run(fmt.Sprintf("%s/%d", c, len(tarball)), func(t *testing.T) {
				blob := atCompress(t, c, tarball)
				dir := filepath.Join(atTempDir(t), "layer")
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				res, err := Apply(context.Background(), dir, bytes.NewReader(blob), ApplyOptions{})
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				want := ApplyResult{
					DiffID:      atSHA256(tarball),
					Size:        int64(len(tarball)),
					Digest:      atSHA256(blob),
					BlobSize:    int64(len(blob)),
					Compression: c,
				}
				if res != want {
					t.Errorf("Apply = %+v\nwant    %+v", res, want)
				}
				got := atDescribe(t, dir)
				if g, w := got["d/f"], fmt.Sprintf(`%q`, strings.Repeat("strata ", 1000)); !strings.Contains(g, w) {
					t.Errorf("d/f = %.80s..., want its data", g)
				}
				id, size, err := DiffID(bytes.NewReader(blob))
				if err != nil || id != want.DiffID || size != want.Size {
					t.Errorf("DiffID = %s, %d, %v; want %s, %d", id, size, err, want.DiffID, want.Size)
				}
				rc, gotC, err := Decompress(bytes.NewReader(blob))
				if err != nil || gotC != c {
					t.Fatalf("Decompress = %v, %v; want %v", gotC, err, c)
				}
				data, err := io.ReadAll(rc)
				if err != nil || !bytes.Equal(data, tarball) {
					t.Errorf("Decompress read %d bytes, %v; want the %d of the tar", len(data), err, len(tarball))
				}
				if err := rc.Close(); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

func TestDiffIDRefuses(t *testing.T) {
	plain := atTruncatable(t)
	if len(plain) != 4608 {
		t.Fatalf("atTruncatable is %d bytes, want 4608", len(plain))
	}
	gz := atCompress(t, Gzip, plain)
	corrupt := slices.Clone(gz)
	corrupt[len(corrupt)-6] ^= 0xff // the CRC
	tests := []struct {
		name string
		blob []byte
		want string
	}{
		{"empty", nil, "truncated tar before the first entry"},
		{"cut in data", plain[:1000], `entry "a": truncated data`},
		{"cut in a header", plain[:2560+100], `truncated tar after entry "a"`},
		{"no end blocks", plain[:3584], `truncated tar after entry "b"`},
		{"one end block", plain[:4096], `truncated tar after entry "b"`},
		{"cut gzip", gz[:len(gz)/2], "unexpected EOF"},
		{"bad gzip checksum", corrupt, "gzip"},
		{"not a tar", bytes.Repeat([]byte("strata"), 200), "tar header before the first entry"},
		{"zero block, then data", append(slices.Clone(plain[:3584]), append(make([]byte, 512), plain[:512]...)...), `tar header after entry "b": archive/tar: invalid tar header`},
		{"endless padding", append(slices.Clone(plain), make([]byte, 2<<20)...), "more than 1048576 bytes after the end of the tar"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DiffID(bytes.NewReader(tc.blob))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("DiffID error = %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestApplyRefusesNonEmptyDir(t *testing.T) {
	dir := atTempDir(t)
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Apply(context.Background(), dir, bytes.NewReader(atTar(t, atFile("a", ""))), ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Apply into a non-empty directory: %v, want an error", err)
	}
}

func TestApplyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := atTempDir(t)
	_, err := Apply(ctx, dir, bytes.NewReader(atTar(t, atFile("a", ""))), ApplyOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a canceled context: %v, want context.Canceled", err)
	}
}

// ---------------------------------------------------------------------
// Hostile layers.

// atSandbox makes a directory with a sentinel tree beside the layer
// directory, and a lower layer given to Apply: neither may change.
func atSandbox(t testing.TB) (sandbox, layer, lower string) {
	t.Helper()
	return atSandboxIn(t, atTempDir(t))
}

// atSandboxIn is atSandbox in an existing empty directory.
func atSandboxIn(t testing.TB, sandbox string) (_, layer, lower string) {
	t.Helper()
	atBuild(t, sandbox, []atNode{
		{path: "outside", kind: unix.S_IFDIR, mode: 0o755, mtime: atT1},
		{path: "outside/file", kind: unix.S_IFREG, data: "secret", mode: 0o600, mtime: atT1},
		{path: "outside/sub", kind: unix.S_IFDIR, mode: 0o755, mtime: atT1},
		{path: "outside/link", kind: unix.S_IFLNK, data: "file"},
		{path: "lower", kind: unix.S_IFDIR, mode: 0o755, mtime: atT1},
		{path: "lower/d", kind: unix.S_IFDIR, mode: 0o750, mtime: atT1},
		{path: "lower/d/f", kind: unix.S_IFREG, data: "lower", mode: 0o644, mtime: atT1},
		{path: "lower/l", kind: unix.S_IFLNK, data: "../outside"},
	})
	layer = filepath.Join(sandbox, "layer")
	if err := os.Mkdir(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	return sandbox, layer, filepath.Join(sandbox, "lower")
}

// atSnapshot records everything under sandbox but the layer directory,
// and the sandbox itself, down to ctime: any write, of data, xattrs,
// owner or mode, moves it.
func atSnapshot(t testing.TB, sandbox string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(sandbox, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(sandbox, p)
		if rel == "layer" {
			out[rel] = "layer"
			return fs.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("mode=%#o owner=%d:%d size=%d rdev=%d ino=%d nlink=%d mtime=%d.%09d ctime=%d.%09d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Rdev, st.Ino, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", sandbox, err)
	}
	return out
}

// atCanary is a name under /tmp that hostile layers try to create.
const atCanary = "strata-apply-test-canary"

// atTruncatable is a layer whose cut points are known (whole seconds:
// no PAX headers): "a"'s header at 0, its 2000-byte body at 512, padded
// to 2560; "b"'s header at 2560, body at 3072, padded to 3584; the end
// blocks at 3584 and 4096.
func atTruncatable(t testing.TB) []byte {
	sec := time.Unix(1000000000, 0)
	return atTar(t, atFile("a", strings.Repeat("a", 2000)).at(sec), atFile("b", "b").at(sec))
}

// atHostile are layers that must be refused, with what the error says.
func atHostile(t testing.TB) []struct {
	name string
	blob []byte
	want string
} {
	long := strings.Repeat("n", 256)
	deep := strings.Repeat("d/", 2100)
	cases := []struct {
		name string
		blob []byte
		want string
	}{
		{"dotdot", atTar(t, atFile("../x", "")), `entry "../x": path escapes the layer`},
		{"dotdot dir", atTar(t, atDir("../")), `entry "../": path escapes the layer`},
		{"absolute", atTar(t, atFile("/etc/x", "")), `entry "/etc/x": absolute path`},
		{"dotdot inside", atTar(t, atFile("a/../../x", "")), `entry "a/../../x": path escapes the layer`},
		{"dotdot deep", atTar(t, atFile("a/b/../../../outside/file", "")), `path escapes the layer`},
		{"symlink parent out", atTar(t, atSym("l", "../outside"), atFile("l/x", "")), `entry "l/x": parent "l": not a directory`},
		{"symlink parent tmp", atTar(t, atSym("l", "/tmp"), atFile("l/"+atCanary, "")), `entry "l/` + atCanary + `": parent "l": not a directory`},
		{"symlink parent dot", atTar(t, atSym("l", "."), atFile("l/x", "")), `entry "l/x": parent "l": not a directory`},
		{"symlink parent dotdot", atTar(t, atSym("l", ".."), atDir("l/outside/evil")), `entry "l/outside/evil": parent "l": not a directory`},
		{"symlink deep parent", atTar(t, atDir("d"), atSym("d/l", "../.."), atFile("d/l/x/y", "")), `entry "d/l/x/y": parent "d/l": not a directory`},
		{"symlink parent of whiteout", atTar(t, atSym("l", "../outside"), atWh("l/file")), `entry "l/.wh.file": parent "l": not a directory`},
		{"symlink parent of opaque", atTar(t, atSym("l", "../outside"), atFile("l/.wh..wh..opq", "")), `entry "l/.wh..wh..opq": parent "l": not a directory`},
		{"hard link out", atTar(t, atLink("h", "../outside/file")), `entry "h": hard link target "../outside/file": path escapes the layer`},
		{"hard link absolute", atTar(t, atLink("h", "/etc/passwd")), `entry "h": hard link target "/etc/passwd": absolute path`},
		{"hard link missing", atTar(t, atLink("h", "nope")), `entry "h": hard link to missing target "nope"`},
		{"hard link later", atTar(t, atLink("h", "f"), atFile("f", "")), `entry "h": hard link to missing target "f"`},
		{"hard link to whiteout", atTar(t, atWh("f"), atLink("h", "f")), `entry "h": hard link to missing target "f"`},
		{"hard link to dir", atTar(t, atDir("d"), atLink("h", "d")), `entry "h": hard link to directory "d"`},
		{"hard link to root", atTar(t, atLink("h", ".")), `entry "h": hard link to directory "."`},
		{"hard link through symlink", atTar(t, atSym("l", "../outside"), atLink("h", "l/file")), `entry "h": hard link to missing target "l/file"`},
		{"file as parent", atTar(t, atFile("f", ""), atFile("f/x", "")), `entry "f/x": parent "f": not a directory`},
		{"root not a dir", atTar(t, atFile(".", "")), `entry ".": the layer root`},
		{"whiteout of dotdot", atTar(t, atFile(".wh...", "")), `entry ".wh...": invalid whiteout: it names ".."`},
		{"whiteout of dotdot below", atTar(t, atFile("d/.wh...", "")), `entry "d/.wh...": invalid whiteout: it names "d/.."`},
		{"whiteout of root", atTar(t, atFile(".wh.", "")), `entry ".wh.": invalid whiteout: it names "/"`},
		{"whiteout of root dot", atTar(t, atFile("./.wh.", "")), `entry "./.wh.": invalid whiteout: it names "/"`},
		{"whiteout of dot", atTar(t, atFile(".wh..", ""), atFile("a", "")), `entry ".wh..": invalid whiteout: it names "."`},
		{"whiteout of dot below", atTar(t, atFile("d/.wh..", "")), `entry "d/.wh..": invalid whiteout: it names "d/."`},
		{"whiteout as parent", atTar(t, atFile(".wh.x/y", "")), `entry ".wh.x/y": parent ".wh.x": invalid whiteout`},
		{"whiteout dotdot dir", atTar(t, atFile(".wh.../x", "")), `entry ".wh.../x": parent ".wh...": invalid whiteout`},
		{"huge size", atTar(t, atEntry{name: "big", typ: tar.TypeReg, headerOnly: true, size: 1 << 41}), `entry "big": size 2199023255552 out of range`},
		{"truncated body", atTruncatable(t)[:1200], `entry "a": truncated data: unexpected EOF`},
		{"truncated header", atTruncatable(t)[:2560+200], `truncated tar after entry "a": unexpected EOF`},
		{"truncated at a block", atTruncatable(t)[:2560], `truncated tar after entry "a": unexpected EOF`},
		{"truncated padding", atTruncatable(t)[:2530], `truncated tar after entry "a": unexpected EOF`},
		{"no end", atTruncatable(t)[:3584], `truncated tar after entry "b": unexpected EOF`},
		{"one end block", atTruncatable(t)[:4096], `truncated tar after entry "b": unexpected EOF`},
		{"empty", nil, `truncated tar before the first entry`},
		{"long name", atTar(t, atFile(strings.Repeat("a/", 2100)+"x", "")), `name longer than 4096 bytes`},
		{"long component", atTar(t, atFile(long, "")), `entry "` + long + `": name component longer than 255 bytes`},
		{"deep dir", atTar(t, atDir(deep)), `name longer than 4096 bytes`},
		{"xattr too big", atTar(t, atFile("x", "").x("user.big", strings.Repeat("v", 64<<10+1))), `entry "x": xattr "user.big": value of 65537 bytes`},
		{"xattr long name", atTar(t, atFile("x", "").x("user."+long, "")), `entry "x": xattr "user.` + long + `": invalid name`},
		{"device out of range", atTar(t, atChar("c", 4096, 0)), `entry "c": device 4096:0 out of range`},
		{"owner out of range", atTar(t, atFile("x", "").own(1<<32, 0)), `entry "x": owner 4294967296:0 out of range`},
		{"unsupported type", atTar(t, atEntry{name: "v", typ: 'V'}), `entry "v": unsupported entry type 'V'`},
		{"symlink without target", atTar(t, atSym("l", "")), `entry "l": symlink target "": invalid`},
	}
	return cases
}

func TestApplyHostile(t *testing.T) {
	for _, tc := range atHostile(t) {
		t.Run(tc.name, func(t *testing.T) {
			sandbox, layer, lower := atSandbox(t)
			before := atSnapshot(t, sandbox)
			canary := filepath.Join("/tmp", atCanary)
			_, err := Apply(context.Background(), layer, bytes.NewReader(tc.blob), ApplyOptions{Lowers: []string{lower}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply error = %v\nwant one containing %s", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "apply layer: ") {
				t.Errorf("Apply error %q does not start with \"apply layer: \"", err)
			}
			atCompareTree(t, atSnapshot(t, sandbox), before)
			if _, err := os.Lstat(canary); err == nil {
				os.Remove(canary)
				t.Errorf("%s was created", canary)
			}
		})
	}
}

// TestApplyOpenDirGuard checks the second line of defence: where the
// records of the layer are wrong (here, forged), the fd-relative
// resolution still refuses to cross a symlink.
func TestApplyOpenDirGuard(t *testing.T) {
	sandbox, layer, _ := atSandbox(t)
	x, err := newExtractor(layer, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	if err := os.Symlink("../outside", filepath.Join(layer, "l")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(layer, "abs")); err != nil {
		t.Fatal(err)
	}
	before := atSnapshot(t, sandbox)
	x.nodes["l"] = &applyNode{kind: applyDir}
	x.nodes["abs"] = &applyNode{kind: applyDir}
	for _, e := range []atEntry{
		atFile("l/x", ""),
		atFile("l/sub/x", ""),
		atFile("abs/tmp/"+atCanary, ""),
		atWh("l/file"),
		atFile("l/.wh..wh..opq", ""),
		atDir("l/newdir"),
	} {
		blob := atTar(t, e)
		s, err := openExtractStream(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		data, frags, sparse := s.data()
		err = x.apply(hdr, applyData{data, frags, sparse})
		if !errors.Is(err, errApplyNotDir) {
			t.Errorf("apply %q through a forged directory: %v, want %v", e.name, err, errApplyNotDir)
		}
	}
	for _, rel := range []string{"l", "l/sub", "abs/tmp", "abs"} {
		if fd, err := x.openDir(rel); err == nil {
			x.closeDir(fd)
			t.Errorf("openDir(%q) crossed a symlink", rel)
		}
	}
	after := atSnapshot(t, sandbox)
	delete(before, "layer")
	delete(after, "layer")
	atCompareTree(t, after, before)
	if _, err := os.Lstat(filepath.Join("/tmp", atCanary)); err == nil {
		t.Errorf("/tmp/%s was created", atCanary)
	}
}

func TestExtractStreamMaxEntries(t *testing.T) {
	blob := atTar(t, atFile("a", ""), atFile("b", ""), atFile("c", ""), atFile("d", ""))
	s, err := openExtractStream(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	s.maxEntries = 3
	for {
		_, err = s.next()
		if err != nil {
			break
		}
	}
	if err == io.EOF || !strings.Contains(err.Error(), `entry "d": more than 3 entries`) {
		t.Errorf("fourth of at most 3 entries: %v", err)
	}
}

// ---------------------------------------------------------------------
// Without privileges.

const atUnprivEnv = "STRATA_LAYER_APPLY_UNPRIV_DIR"

// atUnprivLayer needs what an unprivileged user lacks: CAP_MKNOD for the
// whiteout and the device, trusted.* xattrs, CAP_CHOWN.
func atUnprivLayer(t testing.TB) []atEntry {
	return []atEntry{
		atWh("gone"),
		atDir("d").mod(0o755).at(atT1),
		atFile("d/.wh..wh..opq", ""),
		atFile("d/f", "f").own(1000, 1000).x("trusted.t", "1").x("user.u", "2"),
		atChar("c", 1, 3),
		atLink("ch", "c"),
		atFifo("p"),
	}
}

// TestApplyUnprivileged applies, as nobody, a layer that needs
// privileges: whiteouts and opaque markers fall back to the OCI files
// and userxattr, devices and owners are skipped.
func TestApplyUnprivileged(t *testing.T) {
	if os.Getenv(atUnprivEnv) != "" {
		t.Skip("the child of this test runs TestApplyUnprivilegedChild")
	}
	sandbox := atTempDir(t)
	dir := filepath.Join(sandbox, "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var warns []string
	if os.Geteuid() != 0 {
		_, err := Apply(context.Background(), dir, bytes.NewReader(atTar(t, atUnprivLayer(t)...)), ApplyOptions{
			Warn: func(msg string) { warns = append(warns, msg) },
		})
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
	} else {
		// Run the test binary again as nobody, from a copy it can read.
		const nobody = 65534
		bin, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Skipf("cannot copy the test binary: %v", err)
		}
		exe := filepath.Join(sandbox, "layer.test")
		if err := os.WriteFile(exe, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{filepath.Dir(sandbox), sandbox} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "-test.run=^TestApplyUnprivilegedChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), atUnprivEnv+"="+dir)
		cmd.Dir = sandbox
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child as nobody: %v\n%s", err, out)
		}
		for line := range strings.SplitSeq(string(out), "\n") {
			if w, ok := strings.CutPrefix(line, "WARN "); ok {
				warns = append(warns, w)
			}
		}
	}
	got := atDescribe(t, dir)
	for _, k := range []string{".", "d", "d/f", "p"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
	for _, k := range []string{"c", "ch"} {
		if g, ok := got[k]; ok {
			t.Errorf("%s = %s, want nothing", k, g)
		}
	}
	// Linux 5.8 and later let anyone make a whiteout device.
	if g := got[".wh.gone"]; got["gone"] != "whiteout" && (!strings.HasPrefix(g, `file 0600 `) || !strings.Contains(g, `""`)) {
		t.Errorf("gone = %q, .wh.gone = %q: want a whiteout device or an empty file", got["gone"], g)
	}
	_, marker := got["d/.wh..wh..opq"]
	if !strings.Contains(got["d"], `user.overlay.opaque="y"`) && !marker {
		t.Errorf("d = %s, and no marker file: want it opaque", got["d"])
	}
	if g := got["d"]; !strings.HasPrefix(g, "dir 0755 ") || !strings.Contains(g, atTs(atT1)) {
		t.Errorf("d = %s, want its mode and time", g)
	}
	if g := got["d/f"]; !strings.Contains(g, `"f"`) || strings.Contains(g, "1000:1000") || strings.Contains(g, "trusted.t") {
		t.Errorf("d/f = %s, want its data, not its owner nor trusted.t", g)
	}
	wantWarns := []string{
		`entry "d/f": xattr trusted.t skipped`,
		`entry "c": device 1:3 skipped`,
		`entry "ch": hard link to skipped entry "c" skipped`,
	}
	for _, w := range wantWarns {
		if !slices.ContainsFunc(warns, func(s string) bool { return strings.Contains(s, w) }) {
			t.Errorf("no warning %q in %q", w, warns)
		}
	}
}

// TestApplyUnprivilegedChild is TestApplyUnprivileged's other half.
func TestApplyUnprivilegedChild(t *testing.T) {
	dir := os.Getenv(atUnprivEnv)
	if dir == "" {
		t.Skip("run by TestApplyUnprivileged")
	}
	_, err := Apply(context.Background(), dir, bytes.NewReader(atTar(t, atUnprivLayer(t)...)), ApplyOptions{
		Warn: func(msg string) { fmt.Println("WARN " + msg) },
	})
	if err != nil {
		t.Fatalf("Apply as uid %d: %v", os.Geteuid(), err)
	}
}

// atSHA256 is sha256 of b, as a digest.
func atSHA256(b []byte) digest.Digest {
	sum := sha256.Sum256(b)
	return digest.NewDigestFromBytes(digest.SHA256, sum[:])
}

// atPAXRecord encodes one PAX record ("%d %s=%s\n", the length counting
// itself).
func atPAXRecord(k, v string) string {
	r := " " + k + "=" + v + "\n"
	n := len(r)
	for {
		s := strconv.Itoa(n) + r
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// atSparseTar is a layer of one PAX 1.0 sparse file "f" of realsize
// bytes whose only data is "hello" at offset 0. archive/tar does not
// write sparse files, so the extended header is typed in by hand.
func atSparseTar(t testing.TB, realsize int64) []byte {
	pax := atPAXRecord("GNU.sparse.major", "1") + atPAXRecord("GNU.sparse.minor", "0") +
		atPAXRecord("GNU.sparse.name", "f") + atPAXRecord("GNU.sparse.realsize", strconv.FormatInt(realsize, 10))
	body := make([]byte, 512) // the sparse map: one segment, at 0, of 5 bytes
	copy(body, "1\n0\n5\n")
	body = append(body, "hello"...)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct{ name, data string }{{"PaxHeaders/f", pax}, {"GNUSparseFile.0/f", string(body)}} {
		hdr := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Size: int64(len(e.data)), Mode: 0o644, ModTime: atT(1), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	b[156] = tar.TypeXHeader // the first header becomes the PAX one
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// TestApplySparse checks that zeros become holes: a sparse file of the
// tar stays sparse, and a file of zeros takes no room.
func TestApplySparse(t *testing.T) {
	const big = 1 << 30
	zeros := strings.Repeat("\x00", 1<<20)
	tests := []struct {
		name string
		blob []byte
		file string
		size int64
		head string
	}{
		{"sparse entry", atSparseTar(t, big), "f", big, "hello"},
		{"zeros in data", atTar(t, atFile("z", "x"+zeros+"y")), "z", 1<<20 + 2, "x"},
		{"trailing zeros", atTar(t, atFile("z", "x"+zeros)), "z", 1<<20 + 1, "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := atTempDir(t)
			if _, err := Apply(context.Background(), dir, bytes.NewReader(tc.blob), ApplyOptions{}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			p := filepath.Join(dir, tc.file)
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != tc.size || st.Blocks*512 > 256<<10 {
				t.Errorf("%s: size %d, %d bytes allocated; want size %d, mostly holes", tc.file, st.Size, st.Blocks*512, tc.size)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := make([]byte, len(tc.head))
			if _, err := io.ReadFull(f, head); err != nil || string(head) != tc.head {
				t.Errorf("%s starts with %q, %v; want %q", tc.file, head, err, tc.head)
			}
			if tc.name == "zeros in data" {
				tail := make([]byte, 2)
				if _, err := f.ReadAt(tail, tc.size-2); err != nil || string(tail) != "\x00y" {
					t.Errorf("%s ends with %q, %v; want \"\\x00y\"", tc.file, tail, err)
				}
			}
		})
	}
}
