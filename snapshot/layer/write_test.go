//go:build linux

package layer

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// A writeTestNode is one entry of a fixture tree, described as data.
type writeTestNode struct {
	path   string
	kind   uint32 // unix.S_IF*, or 0 for a hard link to data
	data   string // file contents, symlink target, or hard link target path
	mode   uint32 // permission bits; 0: 0755 for directories, 0644 else
	rdev   [2]uint32
	uid    int
	gid    int
	xattrs map[string]string
	mtime  time.Time // zero: writeTestTime
}

// writeTestTime is the mtime of fixture entries that name none: it has
// nanoseconds, which only PAX headers keep.
var writeTestTime = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)

func wtDir(p string) writeTestNode { return writeTestNode{path: p, kind: unix.S_IFDIR} }
func wtFile(p, data string) writeTestNode {
	return writeTestNode{path: p, kind: unix.S_IFREG, data: data}
}
func wtSymlink(p, to string) writeTestNode {
	return writeTestNode{path: p, kind: unix.S_IFLNK, data: to}
}
func wtLink(p, to string) writeTestNode { return writeTestNode{path: p, data: to} }
func wtFifo(p string) writeTestNode     { return writeTestNode{path: p, kind: unix.S_IFIFO} }
func wtSocket(p string) writeTestNode   { return writeTestNode{path: p, kind: unix.S_IFSOCK} }
func wtChar(p string, major, minor uint32) writeTestNode {
	return writeTestNode{path: p, kind: unix.S_IFCHR, rdev: [2]uint32{major, minor}}
}
func wtBlock(p string, major, minor uint32) writeTestNode {
	return writeTestNode{path: p, kind: unix.S_IFBLK, rdev: [2]uint32{major, minor}}
}

// wtWhiteout is a kernel whiteout: a character device 0/0.
func wtWhiteout(p string) writeTestNode { return wtChar(p, 0, 0) }

// wtXattrWhiteout is a kernel 6.7+ whiteout: an empty file with the xattr.
func wtXattrWhiteout(p, xattr string) writeTestNode {
	return wtFile(p, "").withXattr(xattr, "y")
}

func (n writeTestNode) withMode(m uint32) writeTestNode    { n.mode = m; return n }
func (n writeTestNode) withOwner(u, g int) writeTestNode   { n.uid, n.gid = u, g; return n }
func (n writeTestNode) withTime(t time.Time) writeTestNode { n.mtime = t; return n }
func (n writeTestNode) withXattr(k, v string) writeTestNode {
	x := make(map[string]string, len(n.xattrs)+1)
	for k, v := range n.xattrs {
		x[k] = v
	}
	x[k] = v
	n.xattrs = x
	return n
}

// writeTestBuild makes the tree nodes under root, with parents made as
// needed, then sets every entry's mtime (writeTestTime where a node names
// none), children before parents, so that two builds of the same nodes
// are alike in all that a layer holds.
func writeTestBuild(t testing.TB, root string, nodes []writeTestNode) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mknod, chown and trusted.* xattrs")
	}
	times := map[string]time.Time{}
	for _, n := range nodes {
		p := filepath.Join(root, n.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := n.mode
		if mode == 0 {
			mode = 0o644
			if n.kind == unix.S_IFDIR {
				mode = 0o755
			}
		}
		var err error
		switch n.kind {
		case 0:
			err = os.Link(filepath.Join(root, n.data), p)
		case unix.S_IFDIR:
			err = os.Mkdir(p, 0o700)
		case unix.S_IFREG:
			err = os.WriteFile(p, []byte(n.data), 0o600)
		case unix.S_IFLNK:
			err = os.Symlink(n.data, p)
		default:
			err = unix.Mknod(p, n.kind|0o600, int(unix.Mkdev(n.rdev[0], n.rdev[1])))
		}
		if errors.Is(err, unix.EPERM) {
			t.Skipf("needs the privilege to make %s: %v", n.path, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n.kind != 0 {
			if err := os.Lchown(p, n.uid, n.gid); err != nil {
				t.Fatal(err)
			}
			if n.kind != unix.S_IFLNK {
				// After chown, which clears setuid.
				if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, k := range slices.Sorted(maps.Keys(n.xattrs)) {
			if err := unix.Lsetxattr(p, k, []byte(n.xattrs[k]), 0); err != nil {
				t.Skipf("needs xattr %s on %s: %v", k, n.path, err)
			}
		}
		if !n.mtime.IsZero() {
			times[p] = n.mtime
		}
	}
	var all []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		all = append(all, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(all) // children before parents
	for _, p := range all {
		mt, ok := times[p]
		if !ok {
			mt = writeTestTime
		}
		ts := unix.NsecToTimespec(mt.UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

// writeTestDecompress returns the tar held in blob, compressed with c.
func writeTestDecompress(t testing.TB, blob []byte, c Compression) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		return blob
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeTestEntry is a tar entry with its contents.
type writeTestEntry struct {
	hdr  *tar.Header
	data string
}

func writeTestRead(t testing.TB, tarball []byte) []writeTestEntry {
	t.Helper()
	var out []writeTestEntry
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, writeTestEntry{hdr: hdr, data: string(b)})
	}
}

// writeTestWrite writes the layer of upper and checks its descriptor
// against the bytes written: digest and size of the blob, and of the tar
// inside it for the diff ID. It returns the blob and the tar.
func writeTestWrite(t testing.TB, upper string, opts WriteOptions) (Descriptor, []byte, []byte) {
	t.Helper()
	var blob bytes.Buffer
	desc, err := Write(context.Background(), &blob, upper, opts)
	if err != nil {
		t.Fatal(err)
	}
	tarball := writeTestDecompress(t, blob.Bytes(), opts.Compression)
	want := Descriptor{
		MediaType:        opts.Compression.MediaType(),
		Digest:           digest.FromBytes(blob.Bytes()),
		Size:             int64(blob.Len()),
		DiffID:           digest.FromBytes(tarball),
		UncompressedSize: int64(len(tarball)),
	}
	if desc != want {
		t.Errorf("%s: descriptor\n got %+v\nwant %+v", opts.Compression, desc, want)
	}
	// A gzip header with a name or a time in it would make the blob
	// depend on where and when it was written (RFC 1952: FLG, MTIME).
	if b := blob.Bytes(); opts.Compression == Gzip && (b[3] != 0 || !bytes.Equal(b[4:8], []byte{0, 0, 0, 0})) {
		t.Errorf("gzip header % x: want no flags (no name) and mtime 0", b[:10])
	}
	return desc, blob.Bytes(), tarball
}

// writeTestUpper is an upper directory holding every dialect of whiteout
// and opaque directory, hard links, and every file type.
var writeTestUpper = []writeTestNode{
	wtFile(".wh.gone", ""), // OCI whiteout at the root
	wtFile("B", "upper case sorts first"),
	wtFile("a", "a"),
	wtFile("a-b", "a-b"),
	wtDir("a.b"),
	wtFile("a.b/x", "x"),
	wtDir("bin"),
	wtFile("bin/a", "linked three times"),
	wtLink("bin/b", "bin/a"),
	wtSymlink("bin/sh", "busybox").withXattr("trusted.sym", "s"),
	wtFile("bin/su", "setuid").withOwner(1000, 1001).withMode(0o4755),
	wtDir("dev").withMode(0o1777),
	wtBlock("dev/loop0", 7, 0),
	wtChar("dev/null", 1, 3).withMode(0o666),
	wtSocket("dev/log"),
	wtDir("etc"),
	wtFile("etc/.wh.group", ""),
	wtFile("etc/empty", ""),
	wtFile("etc/hosts", "127.0.0.1 localhost\n").
		withXattr("user.foo", "bar").
		withXattr("trusted.foo", "baz").
		withXattr("security.capability", "\x01\x00\x00\x02\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00").
		withXattr(ovl.XattrOrigin, "12345678").
		withXattr(ovl.XattrUserOrigin, "12345678"),
	wtWhiteout("etc/shadow"),
	wtLink("etc/w2", "etc/shadow"), // the kernel shares whiteout inodes
	wtXattrWhiteout("etc/zy", ovl.XattrUserWhiteout),
	wtXattrWhiteout("etc/zz", ovl.XattrWhiteout),
	wtDir("home").withXattr(ovl.XattrFuseOverlayfsOpaque, "y"),
	wtDir("mnt").withXattr(ovl.XattrOpaque, "x"), // holds xattr whiteouts, not opaque
	wtFile("mnt/f", "f"),
	wtDir("opt").withXattr(ovl.XattrUserOpaque, "y"),
	wtWhiteout("opt/x"),
	wtFifo("run/fifo"),
	wtFile("srv/"+ovl.OpaqueMarker, ""),
	wtFile("srv/data", "data"),
	wtLink("usr/c", "bin/a"),
	wtDir("var").withXattr(ovl.XattrOpaque, "y").withXattr("user.dir", "1"),
	wtDir("var/log"),
}

func TestWriteEntries(t *testing.T) {
	upper := t.TempDir()
	writeTestBuild(t, upper, writeTestUpper)
	_, _, tarball := writeTestWrite(t, upper, WriteOptions{})
	entries := writeTestRead(t, tarball)

	type ent struct {
		name     string
		typ      byte
		linkname string
	}
	want := []ent{
		{"./", tar.TypeDir, ""},
		{".wh.gone", tar.TypeReg, ""},
		{"B", tar.TypeReg, ""},
		{"a", tar.TypeReg, ""},
		{"a-b", tar.TypeReg, ""},
		{"a.b/", tar.TypeDir, ""},
		{"a.b/x", tar.TypeReg, ""},
		{"bin/", tar.TypeDir, ""},
		{"bin/a", tar.TypeReg, ""},
		{"bin/b", tar.TypeLink, "bin/a"},
		{"bin/sh", tar.TypeSymlink, "busybox"},
		{"bin/su", tar.TypeReg, ""},
		{"dev/", tar.TypeDir, ""},
		{"dev/loop0", tar.TypeBlock, ""},
		{"dev/null", tar.TypeChar, ""},
		{"etc/", tar.TypeDir, ""},
		{"etc/.wh.group", tar.TypeReg, ""},
		{"etc/.wh.shadow", tar.TypeReg, ""},
		{"etc/.wh.w2", tar.TypeReg, ""},
		{"etc/.wh.zy", tar.TypeReg, ""},
		{"etc/.wh.zz", tar.TypeReg, ""},
		{"etc/empty", tar.TypeReg, ""},
		{"etc/hosts", tar.TypeReg, ""},
		{"home/", tar.TypeDir, ""},
		{"home/.wh..wh..opq", tar.TypeReg, ""},
		{"mnt/", tar.TypeDir, ""},
		{"mnt/f", tar.TypeReg, ""},
		{"opt/", tar.TypeDir, ""},
		{"opt/.wh..wh..opq", tar.TypeReg, ""},
		{"opt/.wh.x", tar.TypeReg, ""},
		{"run/", tar.TypeDir, ""},
		{"run/fifo", tar.TypeFifo, ""},
		{"srv/", tar.TypeDir, ""},
		{"srv/.wh..wh..opq", tar.TypeReg, ""},
		{"srv/data", tar.TypeReg, ""},
		{"usr/", tar.TypeDir, ""},
		{"usr/c", tar.TypeLink, "bin/a"},
		{"var/", tar.TypeDir, ""},
		{"var/.wh..wh..opq", tar.TypeReg, ""},
		{"var/log/", tar.TypeDir, ""},
	}
	var got []ent
	byName := map[string]writeTestEntry{}
	for _, e := range entries {
		got = append(got, ent{e.hdr.Name, e.hdr.Typeflag, e.hdr.Linkname})
		byName[e.hdr.Name] = e
	}
	if !slices.Equal(got, want) {
		var b strings.Builder
		for _, e := range got {
			fmt.Fprintf(&b, "\t%q %c %q\n", e.name, e.typ, e.linkname)
		}
		t.Fatalf("entries:\n%swant:\n%v", b.String(), want)
	}

	for _, e := range entries {
		h := e.hdr
		whiteout := strings.Contains(h.Name, ovl.WhiteoutPrefix)
		// A whiteout needs no PAX record, so Go writes a plain header.
		if h.Format != tar.FormatPAX && !whiteout {
			t.Errorf("%s: format %v, want PAX", h.Name, h.Format)
		}
		if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: uname %q gname %q atime %v ctime %v, want none", h.Name, h.Uname, h.Gname, h.AccessTime, h.ChangeTime)
		}
		wantTime := writeTestTime
		if whiteout {
			wantTime = time.Unix(0, 0)
		}
		// The fixture leaves the root's time as the test made it.
		if !h.ModTime.Equal(wantTime) && h.Name != "./" {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, wantTime)
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") && ovl.IsHiddenXattr(strings.TrimPrefix(k, "SCHILY.xattr.")) {
				t.Errorf("%s: overlay xattr %s written", h.Name, k)
			}
		}
		if whiteout {
			if h.Size != 0 || h.Mode != 0 || h.Uid != 0 || h.Gid != 0 || len(h.PAXRecords) != 0 {
				t.Errorf("%s: whiteout header %+v, want empty, mode 0, owner 0:0, no records", h.Name, h)
			}
		}
	}

	hosts := byName["etc/hosts"].hdr
	wantX := map[string]string{
		"SCHILY.xattr.user.foo":            "bar",
		"SCHILY.xattr.trusted.foo":         "baz",
		"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
	}
	for k, v := range wantX {
		if hosts.PAXRecords[k] != v {
			t.Errorf("etc/hosts: %s = %q, want %q", k, hosts.PAXRecords[k], v)
		}
	}
	if v := byName["bin/sh"].hdr.PAXRecords["SCHILY.xattr.trusted.sym"]; v != "s" {
		t.Errorf("bin/sh: xattr trusted.sym = %q, want s (the symlink's own)", v)
	}
	if v := byName["var/"].hdr.PAXRecords["SCHILY.xattr.user.dir"]; v != "1" {
		t.Errorf("var/: xattr user.dir = %q, want 1", v)
	}
	if e := byName["etc/hosts"]; e.data != "127.0.0.1 localhost\n" || e.hdr.Size != int64(len(e.data)) {
		t.Errorf("etc/hosts: contents %q (size %d)", e.data, e.hdr.Size)
	}
	if e := byName["bin/a"]; e.data != "linked three times" {
		t.Errorf("bin/a: contents %q", e.data)
	}
	if h := byName["bin/su"].hdr; h.Mode != 0o4755 || h.Uid != 1000 || h.Gid != 1001 {
		t.Errorf("bin/su: mode %#o owner %d:%d, want 04755 1000:1001", h.Mode, h.Uid, h.Gid)
	}
	if h := byName["dev/"].hdr; h.Mode != 0o1777 {
		t.Errorf("dev/: mode %#o, want 01777", h.Mode)
	}
	if h := byName["dev/null"].hdr; h.Devmajor != 1 || h.Devminor != 3 || h.Mode != 0o666 {
		t.Errorf("dev/null: %d:%d mode %#o, want 1:3 0666", h.Devmajor, h.Devminor, h.Mode)
	}
	if h := byName["dev/loop0"].hdr; h.Devmajor != 7 || h.Devminor != 0 {
		t.Errorf("dev/loop0: %d:%d, want 7:0", h.Devmajor, h.Devminor)
	}
}

// TestWriteReproducible writes the same changes twice, and from two
// upper directories built alike (other inodes, same metadata): the blobs
// must be byte for byte the same.
func TestWriteReproducible(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeTestBuild(t, a, writeTestUpper)
	writeTestBuild(t, b, writeTestUpper)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		t.Run(c.String(), func(t *testing.T) {
			opts := WriteOptions{Compression: c}
			d1, blob1, _ := writeTestWrite(t, a, opts)
			d2, blob2, _ := writeTestWrite(t, a, opts)
			d3, blob3, _ := writeTestWrite(t, b, opts)
			if d1 != d2 || d1 != d3 || !bytes.Equal(blob1, blob2) || !bytes.Equal(blob1, blob3) {
				t.Errorf("descriptors differ:\n%+v\n%+v\n%+v", d1, d2, d3)
			}
			if c == Uncompressed && (d1.Digest != d1.DiffID || d1.Size != d1.UncompressedSize) {
				t.Errorf("uncompressed: digest %s size %d, diff ID %s size %d: want equal", d1.Digest, d1.Size, d1.DiffID, d1.UncompressedSize)
			}
			if c != Uncompressed && d1.Digest == d1.DiffID {
				t.Errorf("%s: digest equals diff ID", c)
			}
		})
	}
}

// TestWriteZstdConcurrency checks that the zstd stream does not depend on
// the encoder's concurrency, so machines with any number of CPUs write the
// same layer.
func TestWriteZstdConcurrency(t *testing.T) {
	upper := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	writeTestBuild(t, upper, []writeTestNode{
		wtFile("text", writeBenchText(rnd, 768<<10)), // a dozen 128 KiB blocks in all
		wtFile("random", writeBenchRandom(rnd, 256<<10)),
		wtFile("text2", writeBenchText(rnd, 512<<10)),
	})
	var first []byte
	for _, n := range []int{1, 4, 0} {
		var blob bytes.Buffer
		_, err := writeLayer(context.Background(), &blob, upper, WriteOptions{Compression: Zstd},
			writeTuning{zstdLevel: writeZstdLevel, zstdConcurrency: n})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = blob.Bytes()
		} else if !bytes.Equal(first, blob.Bytes()) {
			t.Errorf("concurrency %d: stream differs from concurrency 1", n)
		}
	}
}

func TestWriteSourceDateEpoch(t *testing.T) {
	epoch := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	before := time.Date(2019, 6, 1, 1, 2, 3, 456, time.UTC)
	after := time.Date(2024, 6, 1, 1, 2, 3, 456, time.UTC)
	upper := t.TempDir()
	writeTestBuild(t, upper, []writeTestNode{
		wtDir("new").withTime(after),
		wtFile("new/file", "x").withTime(after),
		wtFile("old", "y").withTime(before),
		wtWhiteout("gone").withTime(after),
		wtWhiteout("gone-old").withTime(before),
		wtDir("opaque").withXattr(ovl.XattrOpaque, "y").withTime(after),
	})
	_, _, tarball := writeTestWrite(t, upper, WriteOptions{SourceDateEpoch: &epoch})
	want := map[string]time.Time{
		"./":                  epoch,           // the root, made now
		".wh.gone":            time.Unix(0, 0), // whiteouts are always at 0
		".wh.gone-old":        time.Unix(0, 0),
		"new/":                epoch,
		"new/file":            epoch,
		"old":                 before,
		"opaque/":             epoch,
		"opaque/.wh..wh..opq": time.Unix(0, 0),
	}
	entries := writeTestRead(t, tarball)
	if len(entries) != len(want) {
		t.Errorf("%d entries, want %d", len(entries), len(want))
	}
	for _, e := range entries {
		if w, ok := want[e.hdr.Name]; !ok || !e.hdr.ModTime.Equal(w) {
			t.Errorf("%s: mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, w)
		}
	}

	// Without the clamp, the times are the upper's.
	_, _, tarball = writeTestWrite(t, upper, WriteOptions{})
	for _, e := range writeTestRead(t, tarball) {
		if e.hdr.Name == "new/file" && !e.hdr.ModTime.Equal(after) {
			t.Errorf("unclamped %s: mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, after)
		}
	}
}

// writeTestShrinker truncates a file the first time something is written
// through it, which is while Write is copying that file.
type writeTestShrinker struct {
	path string
	done bool
}

func (s *writeTestShrinker) Write(p []byte) (int, error) {
	if !s.done {
		s.done = true
		if err := os.Truncate(s.path, 10); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func TestWriteShrunkFile(t *testing.T) {
	upper := t.TempDir()
	writeTestBuild(t, upper, []writeTestNode{wtFile("big", strings.Repeat("x", 4<<20))})
	_, err := Write(context.Background(), &writeTestShrinker{path: filepath.Join(upper, "big")}, upper, WriteOptions{})
	if !errors.Is(err, errChangedDuringWrite) || !strings.Contains(err.Error(), "big") {
		t.Errorf("Write of a shrinking file: %v, want an error naming big", err)
	}
}

func TestWriteCanceled(t *testing.T) {
	upper := t.TempDir()
	writeTestBuild(t, upper, []writeTestNode{wtFile("a", "a")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		if _, err := Write(ctx, io.Discard, upper, WriteOptions{Compression: c}); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Write with a canceled context: %v", c, err)
		}
	}
}

func TestWriteEmpty(t *testing.T) {
	upper := t.TempDir()
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		_, _, tarball := writeTestWrite(t, upper, WriteOptions{Compression: c})
		entries := writeTestRead(t, tarball)
		if len(entries) != 1 || entries[0].hdr.Name != "./" || entries[0].hdr.Typeflag != tar.TypeDir {
			t.Errorf("%s: empty upper gives %d entries, want the root's alone", c, len(entries))
		}
	}
	if _, err := Write(context.Background(), io.Discard, upper, WriteOptions{Compression: 7}); err == nil {
		t.Errorf("Write with compression 7: no error")
	}
}

// writeBenchText returns n bytes of text-like data: words from a small
// vocabulary, compressible about three to four times.
func writeBenchText(rnd *rand.Rand, n int) string {
	words := strings.Fields("the of and to in is that for it as with was on be by at this from " +
		"layer snapshot upper lower whiteout opaque directory file inode mount overlay union " +
		"kernel fuse digest compression gzip zstd tar header entry 0 1 2 3 4 5 6 7 8 9 {} [] :")
	var b strings.Builder
	b.Grow(n)
	for b.Len() < n {
		b.WriteString(words[rnd.IntN(len(words))])
		if rnd.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()[:n]
}

// writeBenchRandom returns n incompressible bytes, as in media files or
// already compressed archives.
func writeBenchRandom(rnd *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rnd.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return string(b)
}

// writeBenchTree is about 64 MiB of mixed data: large text files (logs,
// sources), random data (a quarter: binaries' compressed sections, media),
// sparse-like files (mostly zeros, as in databases and images), and many
// small text files in nested directories.
func writeBenchTree(rnd *rand.Rand) ([]writeTestNode, int64) {
	var nodes []writeTestNode
	var total int64
	add := func(n writeTestNode) {
		nodes = append(nodes, n)
		total += int64(len(n.data))
	}
	for i := range 4 {
		add(wtFile(fmt.Sprintf("text/%d.log", i), writeBenchText(rnd, 6<<20)))
	}
	for i := range 4 {
		add(wtFile(fmt.Sprintf("bin/%d.bin", i), writeBenchRandom(rnd, 4<<20)))
	}
	for i := range 2 {
		sparse := []byte(strings.Repeat("\x00", 6<<20))
		for j := 0; j < len(sparse); j += 4096 {
			copy(sparse[j:], writeBenchRandom(rnd, 64))
		}
		add(wtFile(fmt.Sprintf("db/%d.db", i), string(sparse)))
	}
	for i := range 1536 {
		add(wtFile(fmt.Sprintf("src/%02d/%d.go", i%32, i), writeBenchText(rnd, 4<<10+rnd.IntN(8<<10))))
	}
	return nodes, total
}

// BenchmarkWrite measures Write, compression included, on a 64 MiB tree of
// mixed data in the page cache; "ratio" is compressed/uncompressed size.
func BenchmarkWrite(b *testing.B) {
	upper := b.TempDir()
	nodes, total := writeBenchTree(rand.New(rand.NewPCG(3, 4)))
	writeTestBuild(b, upper, nodes)
	for _, bc := range []struct {
		name string
		c    Compression
		tune writeTuning
	}{
		{"none", Uncompressed, writeTuning{}},
		{"gzip-default", Gzip, writeTuning{gzipLevel: gzip.DefaultCompression}},
		{"gzip-bestspeed", Gzip, writeTuning{gzipLevel: gzip.BestSpeed}},
		{"zstd-default", Zstd, writeTuning{zstdLevel: zstd.SpeedDefault}},
		{"zstd-default-1cpu", Zstd, writeTuning{zstdLevel: zstd.SpeedDefault, zstdConcurrency: 1}},
		{"zstd-fastest", Zstd, writeTuning{zstdLevel: zstd.SpeedFastest}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(total)
			var desc Descriptor
			for b.Loop() {
				var err error
				desc, err = writeLayer(context.Background(), io.Discard, upper, WriteOptions{Compression: bc.c}, bc.tune)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(desc.Size)/float64(desc.UncompressedSize), "ratio")
		})
	}
}

// BenchmarkGzipImplementations compares the standard library's gzip with
// klauspost/compress's, which Write uses, on the tar of the same tree:
// the reason for the dependency.
func BenchmarkGzipImplementations(b *testing.B) {
	upper := b.TempDir()
	nodes, _ := writeBenchTree(rand.New(rand.NewPCG(3, 4)))
	writeTestBuild(b, upper, nodes)
	var tarball bytes.Buffer
	if _, err := Write(context.Background(), &tarball, upper, WriteOptions{Compression: Uncompressed}); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		new  func(io.Writer) io.WriteCloser
	}{
		{"stdlib-bestspeed", func(w io.Writer) io.WriteCloser {
			z, _ := stdgzip.NewWriterLevel(w, stdgzip.BestSpeed)
			return z
		}},
		{"stdlib-default", func(w io.Writer) io.WriteCloser { return stdgzip.NewWriter(w) }},
		{"klauspost-bestspeed", func(w io.Writer) io.WriteCloser {
			z, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
			return z
		}},
		{"klauspost-default", func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(tarball.Len()))
			for b.Loop() {
				z := bc.new(io.Discard)
				if _, err := z.Write(tarball.Bytes()); err != nil {
					b.Fatal(err)
				}
				if err := z.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriteManyFiles measures Write of an upper of 20,000 small
// files in 2,000 directories over a lower layer, uncompressed: the
// per-entry cost (walk, stat, xattrs, headers), which the search for
// split hard links (a walk of the upper's directories) adds to.
func BenchmarkWriteManyFiles(b *testing.B) {
	dir := b.TempDir()
	lower, upper := filepath.Join(dir, "lower"), filepath.Join(dir, "upper")
	var lnodes, unodes []writeTestNode
	for d := range 2000 {
		for f := range 10 {
			p := fmt.Sprintf("d%02d/e%d/f%d", d%40, d, f)
			lnodes = append(lnodes, wtFile(p, "lower"))
			unodes = append(unodes, wtFile(p, "upper"))
		}
	}
	writeTestBuild(b, lower, lnodes)
	writeTestBuild(b, upper, unodes)
	for b.Loop() {
		if _, err := Write(context.Background(), io.Discard, upper, WriteOptions{Lowers: []string{lower}}); err != nil {
			b.Fatal(err)
		}
	}
}
