package integration

// Kernel flags and attribute masks that reach the mount program, each
// case run side by side on kernel overlayfs and on the program over
// copies of the same lower layers: what the callers see must be the same,
// and what a user would expect (asserted on its own, so that two mounts
// failing alike do not pass).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kfSide is one mount of a side-by-side case.
type kfSide struct {
	name string
	mnt  string
	l    *layout
}

// kfMount mounts kernel overlayfs and the program under test, each over
// its own two lower layers filled by fill (fill(top, bottom)), writable or
// read-only (no upper layer), and returns both sides, the kernel first.
func kfMount(t *testing.T, writable bool, fill func(top, bottom string)) []kfSide {
	t.Helper()
	needFUSE(t)
	var sides []kfSide
	for _, name := range []string{"kernel", "prog"} {
		l := newLayout(t, 2)
		fill(l.lowers[0], l.lowers[1])
		opts := l.roOpts()
		if writable {
			opts = l.opts()
		}
		if name == "kernel" {
			kopts := opts
			if writable {
				// strata's defaults, in the kernel's terms.
				kopts += ",redirect_dir=on,index=on,metacopy=on"
			}
			if err := unix.Mount("overlay", l.mnt, "overlay", 0, kopts); err != nil {
				t.Fatalf("mount -t overlay -o %s: %v", kopts, err)
			}
			t.Cleanup(func() { unmountT(t, l.mnt) })
		} else {
			mountFUSE(t, l.mnt, "-o", opts, l.mnt)
		}
		sides = append(sides, kfSide{name, l.mnt, l})
	}
	return sides
}

// kfSame runs do on both sides and fails unless they report the same.
// It returns the program's report.
func kfSame(t *testing.T, sides []kfSide, do func(root string) string) string {
	t.Helper()
	k, p := do(sides[0].mnt), do(sides[1].mnt)
	if k != p {
		t.Errorf("kernel overlayfs and %s differ:\nkernel:\n%s\nprog:\n%s", filepath.Base(strataFuse), k, p)
	}
	return p
}

func kfErr(err error) string {
	if err == nil {
		return "ok"
	}
	return unix.ErrnoName(dtErrnoOf(err))
}

func kfStat(p string) string {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return kfErr(err)
	}
	return fmt.Sprintf("%06o %d:%d size=%d mtime=%d", st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec)
}

func kfLowerFile(top, _ string) {
	must(os.WriteFile(filepath.Join(top, "f"), []byte(strings.Repeat("lower data\n", 2000)), 0o644))
	must(os.Mkdir(filepath.Join(top, "d"), 0o755))
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// The root of the merged tree changes like any directory, as podman's
// chown of merged/ needs; a read-only mount refuses with EROFS.
func TestKernelFlagsRootSetattr(t *testing.T) {
	do := func(root string) string {
		var log []string
		log = append(log, "chmod "+kfErr(os.Chmod(root, 0o711)))
		log = append(log, "chown "+kfErr(os.Chown(root, 1000, 1001)))
		ts := time.Unix(1_600_000_000, 0)
		log = append(log, "utimes "+kfErr(os.Chtimes(root, ts, ts)))
		log = append(log, "setxattr "+kfErr(unix.Setxattr(root, "user.k", []byte("v"), 0)))
		buf := make([]byte, 16)
		n, err := unix.Getxattr(root, "user.k", buf)
		log = append(log, fmt.Sprintf("getxattr %s %q", kfErr(err), buf[:max(n, 0)]))
		log = append(log, "stat "+kfStat(root))
		return strings.Join(log, "\n")
	}
	t.Run("writable", func(t *testing.T) {
		got := kfSame(t, kfMount(t, true, kfLowerFile), do)
		if !strings.Contains(got, "stat 040711 1000:1001 size=") || !strings.Contains(got, `getxattr ok "v"`) {
			t.Errorf("root attributes did not change:\n%s", got)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		got := kfSame(t, kfMount(t, false, kfLowerFile), do)
		if !strings.HasPrefix(got, "chmod EROFS\nchown EROFS\nutimes EROFS\nsetxattr EROFS") {
			t.Errorf("a read-only root changed:\n%s", got)
		}
	})
}

// Under umask 0 new entries get exactly the mode asked for; under 027,
// the umask applies once.
func TestKernelFlagsUmask(t *testing.T) {
	sides := kfMount(t, true, kfLowerFile)
	for _, mask := range []int{0, 0o027} {
		do := func(root string) string {
			old := unix.Umask(mask)
			defer unix.Umask(old)
			dir := filepath.Join(root, fmt.Sprintf("u%o", mask))
			var log []string
			log = append(log, "mkdir "+kfErr(unix.Mkdir(dir, 0o777)))
			fd, err := unix.Open(filepath.Join(dir, "f"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
			if err == nil {
				unix.Close(fd)
			}
			log = append(log, "creat "+kfErr(err))
			log = append(log, "mkfifo "+kfErr(unix.Mkfifo(filepath.Join(dir, "p"), 0o666)))
			log = append(log, "mknod "+kfErr(unix.Mknod(filepath.Join(dir, "c"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))))
			log = append(log, "mkdir-sub "+kfErr(unix.Mkdir(filepath.Join(dir, "s"), 0o1777)))
			// pjdfstest open/02: a name of NAME_MAX bytes, mode 0620.
			long := strings.Repeat("x", 255)
			fd, err = unix.Open(filepath.Join(dir, long), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o620)
			if err == nil {
				unix.Close(fd)
			}
			log = append(log, "creat NAME_MAX "+kfErr(err))
			_, err = unix.Open(filepath.Join(dir, long+"x"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o620)
			log = append(log, "creat NAME_MAX+1 "+kfErr(err))
			for _, n := range []string{"", "f", "p", "c", "s", long} {
				var st unix.Stat_t
				err := unix.Lstat(filepath.Join(dir, n), &st)
				label := n
				if n == long {
					label = "NAME_MAX"
				}
				log = append(log, fmt.Sprintf("%s %s %04o", label, kfErr(err), st.Mode&0o7777))
			}
			return strings.Join(log, "\n")
		}
		got := kfSame(t, sides, do)
		want := map[int][]string{0: {" ok 0777", "f ok 0666", "p ok 0666", "c ok 0666", "s ok 1777", "NAME_MAX ok 0620", "creat NAME_MAX+1 ENAMETOOLONG"},
			0o027: {" ok 0750", "f ok 0640", "p ok 0640", "c ok 0640", "s ok 1750", "NAME_MAX ok 0600"}}[mask]
		for _, w := range want {
			if !strings.Contains(got, "\n"+w) {
				t.Errorf("umask %04o: want %q in\n%s", mask, w, got)
			}
		}
	}
}

// kfDeepName is a directory name; 20 of them nest deeper than PATH_MAX.
var kfDeepName = strings.Repeat("n", 250)

const kfDeepLevels = 20

// kfDeepFill makes a lower tree deeper than PATH_MAX, with a file at the
// bottom and a directory there, built with directory fds as pjdfstest's
// mkdir/03 does with cd.
func kfDeepFill(top, _ string) {
	fd, err := unix.Open(top, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(err)
	for i := 0; i < kfDeepLevels; i++ {
		must(unix.Mkdirat(fd, kfDeepName, 0o755))
		nfd, err := unix.Openat(fd, kfDeepName, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		must(err)
		unix.Close(fd)
		fd = nfd
	}
	ffd, err := unix.Openat(fd, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	must(err)
	_, err = unix.Write(ffd, []byte("deep\n"))
	must(err)
	unix.Close(ffd)
	must(unix.Mkdirat(fd, "lowerdir", 0o755))
	unix.Close(fd)
}

// Paths of PATH_MAX bytes and more below the root, reached through
// directory fds: entering, creating, renaming, removing, and copy-up of
// a file at the bottom of a lower tree (pjdfstest mkdir/03, rmdir/03).
func TestKernelFlagsLongPaths(t *testing.T) {
	sides := kfMount(t, true, kfDeepFill)
	do := func(root string) string {
		var log []string
		step := func(what string, err error) { log = append(log, what+" "+kfErr(err)) }
		// A new tree deeper than PATH_MAX, then removed from the bottom.
		fd, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "open root " + kfErr(err)
		}
		fds := []int{fd}
		for i := 0; i < kfDeepLevels; i++ {
			step(fmt.Sprintf("mkdir %d", i), unix.Mkdirat(fd, "new"+kfDeepName, 0o755))
			nfd, err := unix.Openat(fd, "new"+kfDeepName, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				step(fmt.Sprintf("enter %d", i), err)
				break
			}
			fd = nfd
			fds = append(fds, fd)
		}
		step("mkdir bottom", unix.Mkdirat(fd, "d", 0o700))
		step("rmdir bottom", unix.Unlinkat(fd, "d", unix.AT_REMOVEDIR))
		ffd, err := unix.Openat(fd, "g", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		step("create", err)
		if err == nil {
			unix.Close(ffd)
		}
		step("rename", unix.Renameat(fd, "g", fd, "h"))
		step("chmod", unix.Fchmodat(fd, "h", 0o640, 0))
		var st unix.Stat_t
		step("stat", unix.Fstatat(fd, "h", &st, unix.AT_SYMLINK_NOFOLLOW))
		log = append(log, fmt.Sprintf("mode %04o", st.Mode&0o7777))
		step("unlink", unix.Unlinkat(fd, "h", 0))
		for i := len(fds) - 1; i > 0; i-- {
			unix.Close(fds[i])
			step(fmt.Sprintf("rmdir %d", i), unix.Unlinkat(fds[i-1], "new"+kfDeepName, unix.AT_REMOVEDIR))
		}
		// The lower tree: copy up its bottom file, remove its bottom dir.
		fd = fds[0]
		for i := 0; i < kfDeepLevels; i++ {
			nfd, err := unix.Openat(fd, kfDeepName, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				step(fmt.Sprintf("enter lower %d", i), err)
				break
			}
			if fd != fds[0] {
				unix.Close(fd)
			}
			fd = nfd
		}
		wfd, err := unix.Openat(fd, "f", unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		step("open lower file for writing", err)
		if err == nil {
			_, err = unix.Write(wfd, []byte("more\n"))
			step("append", err)
			unix.Close(wfd)
		}
		rfd, err := unix.Openat(fd, "f", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		buf := make([]byte, 64)
		n := 0
		if err == nil {
			n, _ = unix.Read(rfd, buf)
			unix.Close(rfd)
		}
		log = append(log, fmt.Sprintf("read %s %q", kfErr(err), buf[:max(n, 0)]))
		step("rmdir lower", unix.Unlinkat(fd, "lowerdir", unix.AT_REMOVEDIR))
		step("lookup removed", unix.Fstatat(fd, "lowerdir", &st, unix.AT_SYMLINK_NOFOLLOW))
		unix.Close(fd)
		unix.Close(fds[0])
		return strings.Join(log, "\n")
	}
	got := kfSame(t, sides, do)
	for _, w := range []string{"mkdir 19 ok", "rmdir bottom ok", "mode 0640", "rmdir 1 ok", `read ok "deep\nmore\n"`, "rmdir lower ok", "lookup removed ENOENT"} {
		if !strings.Contains(got, w) {
			t.Errorf("want %q in\n%s", w, got)
		}
	}
	if strings.Contains(got, "ENAMETOOLONG") {
		t.Errorf("a long path failed:\n%s", got)
	}
}

// Open flags a caller may give, on a lower file (read, then written so it
// is copied up) and on an upper file.
func TestKernelFlagsOpenFlags(t *testing.T) {
	sides := kfMount(t, true, kfLowerFile)
	buf, err := unix.Mmap(-1, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	aligned := buf[:4096] // page-aligned, as O_DIRECT wants
	do := func(root string) string {
		var log []string
		try := func(name string, flags int, write []byte) {
			p := filepath.Join(root, name)
			fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
			if err != nil {
				log = append(log, fmt.Sprintf("open %s %#x %s", name, flags, kfErr(err)))
				return
			}
			defer unix.Close(fd)
			if write != nil {
				n, err := unix.Write(fd, write)
				log = append(log, fmt.Sprintf("write %s %#x %d %s", name, flags, n, kfErr(err)))
				return
			}
			n, err := unix.Pread(fd, aligned, 0)
			log = append(log, fmt.Sprintf("read %s %#x %d %s %q", name, flags, n, kfErr(err), aligned[:min(max(n, 0), 11)]))
		}
		for _, name := range []string{"f", "new"} {
			if name == "new" {
				must(os.WriteFile(filepath.Join(root, name), []byte(strings.Repeat("upper data\n", 1000)), 0o644))
			}
			try(name, unix.O_RDONLY|unix.O_DIRECT, nil)
			try(name, unix.O_RDONLY|unix.O_NOATIME, nil)
			try(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_ASYNC, nil)
			try(name, unix.O_WRONLY|unix.O_SYNC, []byte("s"))
			try(name, unix.O_WRONLY|unix.O_DSYNC, []byte("d"))
			try(name, unix.O_WRONLY|unix.O_APPEND, []byte("appended\n"))
			try(name, unix.O_RDWR|unix.O_DIRECT, aligned)
			try(name, unix.O_RDONLY|unix.O_DIRECT, nil)
		}
		for _, name := range []string{"f", "new"} {
			b, err := os.ReadFile(filepath.Join(root, name))
			log = append(log, fmt.Sprintf("%s %s size=%d head=%q tail=%q", name, kfErr(err), len(b), b[:min(len(b), 12)], b[max(len(b)-9, 0):]))
		}
		return strings.Join(log, "\n")
	}
	got := kfSame(t, sides, do)
	if strings.Contains(got, "EINVAL") || !strings.Contains(got, "read f 0x4000 4096 ok") {
		t.Errorf("an open flag was refused:\n%s", got)
	}
}

// fallocate's modes on a lower file (the first one copies it up) and
// renameat2's flags, RENAME_WHITEOUT among them, which only the overlay
// itself may use.
func TestKernelFlagsFallocateRename(t *testing.T) {
	sides := kfMount(t, true, func(top, bottom string) {
		kfLowerFile(top, bottom)
		must(os.WriteFile(filepath.Join(top, "a"), []byte("a"), 0o644))
		must(os.WriteFile(filepath.Join(top, "b"), []byte("b"), 0o644))
	})
	do := func(root string) string {
		var log []string
		fd, err := unix.Open(filepath.Join(root, "f"), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "open " + kfErr(err)
		}
		for _, m := range []struct {
			name      string
			mode      uint32
			off, size int64
		}{
			{"keep-size", unix.FALLOC_FL_KEEP_SIZE, 0, 1 << 16},
			{"punch-hole", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 4096, 4096},
			{"zero-range", unix.FALLOC_FL_ZERO_RANGE, 8192, 4096},
			{"extend", 0, 20000, 12768},
			{"bad-punch", unix.FALLOC_FL_PUNCH_HOLE, 0, 10},
		} {
			log = append(log, m.name+" "+kfErr(unix.Fallocate(fd, m.mode, m.off, m.size)))
		}
		unix.Close(fd)
		b, err := os.ReadFile(filepath.Join(root, "f"))
		zeros := 0
		for _, c := range b {
			if c == 0 {
				zeros++
			}
		}
		log = append(log, fmt.Sprintf("f %s size=%d zeros=%d", kfErr(err), len(b), zeros))
		rn := func(a, b string, flags uint) string {
			return kfErr(unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, a), unix.AT_FDCWD, filepath.Join(root, b), flags))
		}
		log = append(log, "whiteout "+rn("a", "c", unix.RENAME_WHITEOUT))
		log = append(log, "unknown "+rn("a", "c", 1<<5))
		log = append(log, "noreplace "+rn("a", "b", unix.RENAME_NOREPLACE))
		log = append(log, "exchange "+rn("a", "b", unix.RENAME_EXCHANGE))
		log = append(log, "noreplace+exchange "+rn("a", "b", unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE))
		ab, _ := os.ReadFile(filepath.Join(root, "a"))
		log = append(log, fmt.Sprintf("a=%q", ab))
		return strings.Join(log, "\n")
	}
	got := kfSame(t, sides, do)
	for _, w := range []string{"keep-size ok", "punch-hole ok", "zero-range ok", "extend ok", "bad-punch ENOTSUP", "f ok size=32768 zeros=", "whiteout EINVAL", "exchange ok", `a="b"`} {
		if !strings.Contains(got, w) {
			t.Errorf("want %q in\n%s", w, got)
		}
	}
}

// A write by another user to a set-user-ID file clears the bit (the
// kernel's ATTR_KILL_SUID, sent as a mode change); a chown clears it too.
func TestKernelFlagsKillSuid(t *testing.T) {
	sides := kfMount(t, true, func(top, bottom string) {
		for _, n := range []string{"w", "c"} {
			p := filepath.Join(top, n)
			must(os.WriteFile(p, []byte("x"), 0o644))
			must(unix.Chmod(p, 0o6777)) // os.Chmod would drop the set-ID bits
		}
	})
	do := func(root string) string {
		var log []string
		out, err := procRunAsNobody("sh", "-c", "echo more >> "+filepath.Join(root, "w"))
		log = append(log, fmt.Sprintf("nobody write %s %q", kfErr(err), out))
		log = append(log, "chown "+kfErr(os.Chown(filepath.Join(root, "c"), 1, 1)))
		for _, n := range []string{"w", "c"} {
			var st unix.Stat_t
			err := unix.Lstat(filepath.Join(root, n), &st)
			log = append(log, fmt.Sprintf("%s %s %04o", n, kfErr(err), st.Mode&0o7777))
		}
		return strings.Join(log, "\n")
	}
	got := kfSame(t, sides, do)
	if !strings.Contains(got, "w ok 0777") || !strings.Contains(got, "c ok 0777") {
		t.Errorf("set-ID bits survived:\n%s", got)
	}
}

// A copy-up of one name of a lower hard link keeps the two names one
// inode (overlayfs with index=on): after the change that caused it, both
// show the number they had, the link count of both names (and of a new
// one), and the change.
func TestKernelFlagsHardlinkCopyUpIno(t *testing.T) {
	const n = 100
	ops := []struct {
		name  string
		links int // the name's link count after the op
		do    func(p string) error
	}{
		{"chmod", 2, func(p string) error { return os.Chmod(p, 0o600) }},
		{"utimes", 2, func(p string) error { return os.Chtimes(p, time.Unix(1e9, 0), time.Unix(1e9, 0)) }},
		{"truncate", 2, func(p string) error { return os.Truncate(p, 1) }},
		{"setxattr", 2, func(p string) error { return unix.Setxattr(p, "user.k", []byte("v"), 0) }},
		{"write", 2, func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("more\n")
			return errors.Join(err, f.Close())
		}},
		{"link", 3, func(p string) error { return os.Link(p, p+".new") }},
		{"rename", 2, func(p string) error {
			if err := os.Rename(p, p+".moved"); err != nil {
				return err
			}
			var st unix.Stat_t // the moved name is the copy too
			if err := unix.Stat(p+".moved", &st); err != nil || st.Nlink != 2 {
				return fmt.Errorf("moved name: nlink %d, %v", st.Nlink, err)
			}
			return os.Rename(p+".moved", p)
		}},
		{"link-elsewhere", 3, func(p string) error {
			return os.Link(p, filepath.Join(filepath.Dir(p), "..", "other", filepath.Base(p)))
		}},
	}
	sides := kfMount(t, true, func(top, _ string) {
		for _, op := range ops {
			d := filepath.Join(top, op.name)
			must(os.Mkdir(d, 0o755))
			for i := 0; i < n; i++ {
				h := filepath.Join(d, fmt.Sprintf("h%d", i))
				must(os.WriteFile(h, []byte("x\n"), 0o644))
				must(os.Link(h, filepath.Join(d, fmt.Sprintf("v%d", i))))
			}
		}
		must(os.Mkdir(filepath.Join(top, "other"), 0o755))
	})
	do := func(root string) string {
		var log []string
		for _, op := range ops {
			stale, failed := 0, 0
			for i := 0; i < n; i++ {
				h := filepath.Join(root, op.name, fmt.Sprintf("h%d", i))
				var before, after unix.Stat_t
				if err := unix.Stat(h, &before); err != nil {
					failed++
					continue
				}
				if err := op.do(h); err != nil {
					failed++
					continue
				}
				if err := unix.Stat(h, &after); err != nil {
					failed++
					continue
				}
				var other unix.Stat_t // the name not used: the same inode
				if err := unix.Stat(filepath.Join(root, op.name, fmt.Sprintf("v%d", i)), &other); err != nil {
					failed++
					continue
				}
				if after.Ino != before.Ino || int(after.Nlink) != op.links || other.Ino != after.Ino ||
					other.Nlink != after.Nlink || other.Mode != after.Mode || other.Size != after.Size || other.Mtim != after.Mtim {
					stale++
				}
			}
			log = append(log, fmt.Sprintf("%s: %d of %d stale, %d failed", op.name, stale, n, failed))
		}
		return strings.Join(log, "\n")
	}
	got := kfSame(t, sides, do)
	for _, op := range ops {
		if w := fmt.Sprintf("%s: 0 of %d stale, 0 failed", op.name, n); !strings.Contains(got, w) {
			t.Errorf("want %q in\n%s", w, got)
		}
	}
}

// pjdfstest rename/21: moving a directory to another directory takes
// write access to the directory moved (its ".." changes), not only to
// the two parents. The directories are made under umask 0, as the suite
// makes them, so their modes are what mkdir asked for.
func TestKernelFlagsRenameNeedsWriteOnDir(t *testing.T) {
	busybox := staticBusybox(t)
	sides := kfMount(t, true, func(top, _ string) {})
	do := func(root string) string {
		old := unix.Umask(0)
		defer unix.Umask(old)
		var log []string
		for _, d := range []struct {
			name string
			mode uint32
		}{{"src", 0o777}, {"dst", 0o777}, {"src/ro", 0o755}, {"src/rw", 0o777}} {
			log = append(log, "mkdir "+d.name+" "+kfErr(unix.Mkdir(filepath.Join(root, d.name), d.mode)))
		}
		for _, n := range []string{"ro", "rw"} {
			from, to := filepath.Join(root, "src", n), filepath.Join(root, "dst", n)
			// busybox mv: rename(2), and a copy only on EXDEV.
			out, err := procRunAsNobody(busybox, "mv", from, to)
			res := "ok"
			if err != nil {
				res = "refused"
				if strings.Contains(out, "Permission denied") {
					res = "EACCES"
				}
			}
			if res == "refused" {
				res += ": " + strings.TrimSpace(out)
			}
			log = append(log, "nobody renames "+n+" "+res)
		}
		return strings.Join(log, "\n")
	}
	got := kfSame(t, sides, do)
	for _, w := range []string{"nobody renames ro EACCES", "nobody renames rw ok"} {
		if !strings.Contains(got, w) {
			t.Errorf("want %q in\n%s", w, got)
		}
	}
}
