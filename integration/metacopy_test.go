package integration

// Metadata-only copy-up (issue 11 §4), side by side with kernel overlayfs
// mounted redirect_dir=on,metacopy=on: chmod, chown, utimes and setxattr
// of a lower file copy up its metadata only, the data on the first write.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mcData is the lower file's content: several blocks, so that an upper
// holding the data shows st_blocks > 0.
var mcData = strings.Repeat("0123456789abcdef", 1024)

// mcMtime is an explicit time, inside the window the tree comparison
// compares (dtExplicitTime).
const mcMtime = dtExplicitBase + 4242

func mcLayers(t testing.TB, dirs []string) {
	t.Helper()
	writeTree(t, dirs[0], map[string]string{"d/f": mcData, "d/g": "small"})
	ts := []unix.Timespec{{Sec: mcMtime - 100}, {Sec: mcMtime - 100}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dirs[0], "d/f"), ts, 0); err != nil {
		t.Fatal(err)
	}
}

// mcUpperState describes the upper's copy of rel on side s: whether it
// holds data and carries the metacopy xattr. Data is asked with
// SEEK_DATA, not st_blocks: ext4 counts an xattr block in st_blocks.
func mcUpperState(t testing.TB, s *ovSide, rel string) (data bool, size int64, metacopy bool) {
	t.Helper()
	p := filepath.Join(s.upper, rel)
	fh, err := os.Open(p)
	if err != nil {
		t.Fatalf("%s: the upper has no copy of %s after a metadata change: %v", s.name, rel, err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	_, err = unix.Seek(int(fh.Fd()), 0, unix.SEEK_DATA)
	switch {
	case err == nil:
		data = true
	case err != unix.ENXIO:
		t.Fatalf("%s: lseek(%s, SEEK_DATA): %v", s.name, p, err)
	}
	_, err = unix.Lgetxattr(p, "trusted.overlay.metacopy", nil)
	return data, fi.Size(), err == nil
}

// mcCheckMetaOnly asserts that the upper copy of rel is metadata only on
// every side: sparse, of the lower's size, marked metacopy.
func mcCheckMetaOnly(p *ovPair, rel string, size int64, when string) {
	p.t.Helper()
	for _, s := range p.sides {
		data, sz, meta := mcUpperState(p.t, s, rel)
		if data || sz != size || !meta {
			p.t.Errorf("%s %s: upper %s has data=%v size=%d metacopy xattr=%v; want a metadata-only copy: sparse (no data, SEEK_DATA fails), size=%d, metacopy xattr set", s.name, when, rel, data, sz, meta, size)
		}
	}
}

// mcCheckData asserts that the upper copy of rel holds its data.
func mcCheckData(p *ovPair, rel string, when string) {
	p.t.Helper()
	for _, s := range p.sides {
		data, _, meta := mcUpperState(p.t, s, rel)
		if !data || meta {
			p.t.Errorf("%s %s: upper %s has data=%v metacopy xattr=%v; want the data copied up and no metacopy xattr", s.name, when, rel, data, meta)
		}
	}
}

// mcStat asserts a property of rel's stat through each mount.
func mcStat(p *ovPair, rel, what string, ok func(st *unix.Stat_t) bool) {
	p.t.Helper()
	for _, s := range p.sides {
		var st unix.Stat_t
		if err := unix.Stat(s.path(rel), &st); err != nil {
			p.t.Fatalf("%s: stat %s: %v", s.name, rel, err)
		}
		if !ok(&st) {
			p.t.Errorf("%s: stat %s: want %s; got mode %o uid %d gid %d size %d mtime %d blocks %d", s.name, rel, what, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Blocks)
		}
	}
}

func TestMetacopy(t *testing.T) {
	const f = "d/f"
	size := int64(len(mcData))
	cases := []struct {
		name    string
		byWrite bool // a write changes what the op set (mtime)
		op      func(p *ovPair)
		check   func(p *ovPair) // the metadata change is visible
	}{
		{"chmod", false, func(p *ovPair) {
			p.do("chmod(d/f, 0600)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, f), 0o600) })
		}, func(p *ovPair) {
			mcStat(p, f, "mode 0600", func(st *unix.Stat_t) bool { return st.Mode&0o7777 == 0o600 })
		}},
		{"chown", false, func(p *ovPair) {
			p.do("chown(d/f, 1000, 1001)", 0, func(r string) error { return unix.Chown(filepath.Join(r, f), 1000, 1001) })
		}, func(p *ovPair) {
			mcStat(p, f, "owner 1000:1001", func(st *unix.Stat_t) bool { return st.Uid == 1000 && st.Gid == 1001 })
		}},
		{"utimes", true, func(p *ovPair) {
			p.do("utimensat(d/f, mtime)", 0, func(r string) error {
				return unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(r, f), []unix.Timespec{{Sec: mcMtime}, {Sec: mcMtime}}, 0)
			})
		}, func(p *ovPair) {
			mcStat(p, f, fmt.Sprintf("mtime %d", mcMtime), func(st *unix.Stat_t) bool { return st.Mtim.Sec == mcMtime })
		}},
		{"setxattr", false, func(p *ovPair) {
			p.do("setxattr(d/f, user.mc, v)", 0, func(r string) error { return unix.Setxattr(filepath.Join(r, f), "user.mc", []byte("v"), 0) })
		}, func(p *ovPair) {
			for _, s := range p.sides {
				buf := make([]byte, 16)
				n, err := unix.Getxattr(s.path(f), "user.mc", buf)
				if err != nil || string(buf[:n]) != "v" {
					p.t.Errorf("%s: getxattr d/f user.mc: %q, %v; want \"v\"", s.name, buf[:max(n, 0)], err)
				}
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newOvPair(t, 1, kernelRedirectOpts, "", mcLayers)
			c.op(p)
			c.check(p)
			p.readFile(f, 0, mcData)
			mcStat(p, f, fmt.Sprintf("size %d and st_blocks of the data", size), func(st *unix.Stat_t) bool { return st.Size == size && st.Blocks > 0 })
			mcCheckMetaOnly(p, f, size, "after "+c.name)
			p.sameTree("after " + c.name)

			p.remount()
			c.check(p)
			p.readFile(f, 0, mcData)
			mcCheckMetaOnly(p, f, size, "after "+c.name+" and a remount")

			// The first write copies the data up: an overwrite at the
			// start and an append, read back.
			p.do("pwrite(d/f, XX, 0)", 0, func(r string) error {
				fh, err := os.OpenFile(filepath.Join(r, f), os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				_, err = fh.WriteAt([]byte("XX"), 0)
				return err
			})
			p.appendFile(f, "tail", 0)
			want := "XX" + mcData[2:] + "tail"
			p.readFile(f, 0, want)
			if !c.byWrite {
				c.check(p)
			}
			mcCheckData(p, f, "after a write")
			p.sameTree("after the write")
			p.remount()
			p.readFile(f, 0, want)
			if !c.byWrite {
				c.check(p)
			}
			mcCheckData(p, f, "after a write and a remount")
			p.strataUnderKernel(kernelRedirectOpts)
		})
	}
	t.Run("truncate-copies-data", func(t *testing.T) {
		p := newOvPair(t, 1, kernelRedirectOpts, "", mcLayers)
		p.do("chmod(d/f, 0640)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, f), 0o640) })
		mcCheckMetaOnly(p, f, size, "after chmod")
		p.do("truncate(d/f, 100)", 0, func(r string) error { return unix.Truncate(filepath.Join(r, f), 100) })
		p.readFile(f, 0, mcData[:100])
		mcCheckData(p, f, "after truncate")
		p.remount()
		p.readFile(f, 0, mcData[:100])
	})
	t.Run("read-only-open-keeps-metacopy", func(t *testing.T) {
		p := newOvPair(t, 1, kernelRedirectOpts, "", mcLayers)
		p.do("chmod(d/f, 0640)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, f), 0o640) })
		p.readFile(f, 0, mcData)
		p.do("open(d/f, O_RDONLY) and mmap", 0, func(r string) error {
			fh, err := os.Open(filepath.Join(r, f))
			if err != nil {
				return err
			}
			defer fh.Close()
			m, err := unix.Mmap(int(fh.Fd()), 0, len(mcData), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				return err
			}
			defer unix.Munmap(m)
			if !bytes.Equal(m, []byte(mcData)) {
				return fmt.Errorf("mmap shows other data: %w", unix.EBADMSG)
			}
			return nil
		})
		mcCheckMetaOnly(p, f, size, "after read-only opens")
	})
}

// TestMetacopyChmodLargeFileFast times a chmod of a 1 GiB lower file
// through strata: a metadata-only copy-up does not read the data.
func TestMetacopyChmodLargeFileFast(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 1 GiB lower file")
	}
	needFUSE(t)
	l := newLayout(t, 1)
	big := filepath.Join(l.lowers[0], "big")
	fh, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("strata metacopy "), 1<<16) // 1 MiB of real data
	for i := 0; i < 1024; i++ {
		if _, err := fh.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
	// Look the file up first: the time is the chmod's, not the lookup's.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(l.mnt, "big"), &st); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := unix.Chmod(filepath.Join(l.mnt, "big"), 0o600); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("chmod of a 1 GiB lower file took %v", took)
	if took > 50*time.Millisecond {
		t.Errorf("chmod of a 1 GiB lower file took %v, want under 50ms (a metadata-only copy-up reads no data)", took)
	}
	if err := unix.Lstat(filepath.Join(l.upper, "big"), &st); err != nil {
		t.Fatalf("no upper copy after chmod: %v", err)
	}
	if st.Blocks > 8 {
		t.Errorf("upper copy of big has st_blocks=%d after chmod, want none but an xattr block (metadata only)", st.Blocks)
	}
}

// hostileLayers: the bottom layer holds a private file and dir; the top
// one a file whose metacopy xattr and redirect point at the private file,
// and a dir redirected at the private dir, as a hostile image would if
// apply let it.
func hostileLayers(t testing.TB, dirs []string) {
	t.Helper()
	writeTree(t, dirs[0], map[string]string{"secret": "SECRET", "private/key": "KEY"})
	writeTree(t, dirs[1], map[string]string{"d/": ""})
	f := filepath.Join(dirs[1], "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, int64(len("SECRET"))); err != nil {
		t.Fatal(err)
	}
	for _, x := range [][3]string{
		{f, "trusted.overlay.metacopy", ""},
		{f, "trusted.overlay.redirect", "/secret"},
		{filepath.Join(dirs[1], "d"), "trusted.overlay.redirect", "/private"},
	} {
		if err := unix.Lsetxattr(x[0], x[1], []byte(x[2]), 0); err != nil {
			t.Fatalf("setxattr %s %s: %v", x[0], x[1], err)
		}
	}
}

// TestHostileLowerNotFollowed: with metacopy=off,redirect_dir=nofollow
// (the kernel's names, for lowers the user does not trust) the metacopy
// file's data is not taken from the other layer, nor the redirected dir's
// entries: the kernel refuses both lookups with EPERM, and lists the names.
func TestHostileLowerNotFollowed(t *testing.T) {
	const opts = "metacopy=off,redirect_dir=nofollow"
	p := newOvPair(t, 2, opts, opts, hostileLayers)
	p.do("lstat(f)", unix.EPERM, func(r string) error {
		var st unix.Stat_t
		return unix.Lstat(filepath.Join(r, "f"), &st)
	})
	p.readFile("f", unix.EPERM, "")
	p.readFile("secret", 0, "SECRET")
	// The kernel refuses the redirected dir rather than show it without
	// what it points at ("refusing to follow redirect").
	p.openDir("d", unix.EPERM)
	p.readFile("d/key", unix.EPERM, "")
	for _, s := range p.sides {
		names, err := dtReaddirnames(s.mnt)
		if err != nil || strings.Join(names, " ") != "d f private secret" {
			p.t.Errorf("%s: readdir of the root: %q, %v; want [d f private secret]", s.name, names, err)
		}
	}
	// The kernel refuses metacopy=on with redirect_dir=nofollow: metacopy
	// needs redirects followed.
	for _, s := range p.sides {
		s.unmount(t)
	}
	k := *p.k
	k.opts = "metacopy=on,redirect_dir=nofollow"
	if err := unix.Mount("overlay", k.mnt, "overlay", 0, k.options()); err == nil {
		unmountT(t, k.mnt)
		t.Errorf("kernel: mount -o %s succeeded; the scenario expects it refused", k.opts)
	}
	if !*ovKernelOnly {
		s := *p.s
		s.opts = k.opts
		if err := strataMount(s.mnt, s.options()); err == nil {
			unmountT(t, s.mnt)
			t.Errorf("strata: mount -o %s succeeded; want it refused, as the kernel does (metacopy needs redirects followed)", s.opts)
		}
	}
}

// TestTrustedLowerFollowed: with the defaults the same layers are trusted,
// and strata follows their metacopy and redirect xattrs as the kernel does
// with redirect_dir=on,metacopy=on.
func TestTrustedLowerFollowed(t *testing.T) {
	p := newOvPair(t, 2, kernelRedirectOpts, "", hostileLayers)
	p.noInodeCheck = true // private/key shows at d/key too
	p.readFile("f", 0, "SECRET")
	p.readFile("d/key", 0, "KEY")
	p.sameTree("over lowers with metacopy and redirect xattrs")
}
