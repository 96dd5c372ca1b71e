package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/debfixture"
)

// A real Debian userland on strata: a debootstrap root filesystem is
// imported as an image, and Debian's own tools (dpkg, useradd, ldconfig,
// perl, bash, tar) run on a container's mount under runc. The same steps
// run under runc on kernel overlayfs over the same lower layer directory,
// and the two resulting trees are compared entry by entry. The container
// is then committed, and a container on the committed image checks what
// the first one did.
//
// The rootfs (a minute or more of debootstrap) and the .deb files are
// cached outside the checkout by internal/debfixture; the first run on a
// machine builds them.

// Packages installed (and tree removed) in the containers: small, with
// dependencies that minbase has (libc6; libattr1 for attr).
var userlandDebs = []string{"hello", "tree", "attr"}

// userlandScript runs in the first container: on strata and on kernel
// overlayfs alike. Its output must be the same on both. It removes tree
// again, reinstalls hello over itself, diverts a lower file (a rename
// into a copy-up and a whiteout), renames a directory of the lower layer
// and one it made, and prints the byte count of a tar stream of
// /usr/share last.
const userlandScript = `set -eu
cd /
dpkg -i /tmp/debs/hello_*.deb /tmp/debs/tree_*.deb /tmp/debs/attr_*.deb >/tmp/dpkg-i.log
hello
tree --version | cut -d' ' -f1-2
dpkg -r tree >/tmp/dpkg-r.log
dpkg -i /tmp/debs/hello_*.deb >>/tmp/dpkg-i.log
dpkg-divert --quiet --local --rename --add /usr/bin/yes
! command -v tree
useradd -m -u 1001 -s /bin/bash -c 'Alice Example' alice
id alice
ldconfig
ldconfig -p | grep -c 'libc.so.6'
perl -e 'use strict; my %h = map { $_ => $_ * $_ } 1..20;
  open(my $f, ">", "/root/squares") or die "open: $!";
  print $f join(",", map { "$_=$h{$_}" } sort { $a <=> $b } keys %h), "\n";
  close($f) or die "close: $!";
  rename("/root/squares", "/root/squares.txt") or die "rename: $!";
  printf("perl %vd ok\n", $^V);'
cat >/root/build.sh <<'EOF'
#!/bin/bash
set -euo pipefail
mkdir -p /srv/build/a/b/c /srv/build/d
for i in $(seq 1 40); do
	printf 'file %d\n' "$i" >"/srv/build/a/b/c/f$i"
done
ln -s ../a/b/c/f1 /srv/build/d/link
chmod 0750 /srv/build/a/b
mv /srv/build/a/b/c /srv/build/a/b/renamed
mv /srv/build /srv/built
# A directory of the lower layer, renamed: a copy-up of the directory.
mv /usr/share/doc/bash /usr/share/doc/bash.moved
rm /srv/built/a/b/renamed/f40
echo built "$(find /srv/built | wc -l)" entries
EOF
chmod 0755 /root/build.sh
/root/build.sh
# What package scripts and admins do besides: replace a lower directory
# with a new one (opaque), edit in place, links, special files, locks,
# alternatives, sparse and preallocated files, times, group changes.
rm -rf /usr/share/doc && mkdir /usr/share/doc && echo new >/usr/share/doc/README
sed -i 's/^root:/root:/; $a # edited' /etc/login.defs
ln /etc/hostname /root/hostname.hard
ln -sfn /usr/share/zoneinfo/UTC /etc/localtime
mkfifo -m 0640 /root/fifo
mknod -m 0600 /root/null c 1 3
flock /var/lock/userland.lock -c 'echo locked >/root/locked'
update-alternatives --quiet --install /usr/bin/pager pager /bin/more 10
groupadd -g 1500 staff2 && usermod -aG staff2 alice && id -nG alice
truncate -s 1M /root/sparse && printf x | dd of=/root/sparse bs=1 seek=4096 conv=notrunc status=none
fallocate -l 64k /root/prealloc
touch -d '2001-02-03 04:05:06' /root/squares.txt && stat -c '%y' /root/squares.txt
cp -a /etc/skel /root/skel.copy && chmod -R go-rwx /root/skel.copy
mv -T /root/skel.copy /root/skel.moved
find /root -newer /root/squares.txt -maxdepth 1 | sort | wc -l
# Extended attributes, with the tools of a package just installed: on a
# new file, on a lower file (a copy-up), a file capability, a removal.
setfattr -n user.note -v hello /root/squares.txt
setfattr -n user.tag -v lower /etc/debian_version
cp /bin/true /root/captrue
setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= /root/captrue
setfattr -n user.gone -v x /root/locked && setfattr -x user.gone /root/locked
getfattr -d -m - --absolute-names /root/squares.txt /etc/debian_version /root/captrue /root/locked
cd /usr/share && tar cf - . | wc -c
`

// userlandCheck runs in a container on the committed image: everything
// the first container did must be there.
const userlandCheck = `set -eu
getent passwd alice
test -d /home/alice
test "$(stat -c %U /home/alice)" = alice
dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' hello
if dpkg-query -W -f='${db:Status-Abbrev}' tree 2>/dev/null | grep -q '^ii'; then echo tree still installed; exit 1; fi
hello
cat /root/squares.txt
test ! -e /srv/build
test -d /srv/built/a/b/renamed
test "$(stat -c %a /srv/built/a/b)" = 750
test "$(readlink /srv/built/d/link)" = ../a/b/c/f1
test "$(ls /srv/built/a/b/renamed | wc -l)" = 39
test "$(ls -A /usr/share/doc)" = README
test "$(stat -c %h /etc/hostname)" = 2
test "$(stat -c %i /etc/hostname)" = "$(stat -c %i /root/hostname.hard)"
test "$(readlink /etc/localtime)" = /usr/share/zoneinfo/UTC
test -p /root/fifo && test "$(stat -c %a /root/fifo)" = 640
test "$(stat -c '%F %t,%T' /root/null)" = 'character special file 1,3'
test "$(readlink /etc/alternatives/pager)" = /bin/more
id -nG alice
test "$(stat -c %s /root/sparse)" = 1048576
test "$(dd if=/root/sparse bs=1 skip=4096 count=1 status=none)" = x
stat -c %y /root/squares.txt
tail -n 1 /etc/login.defs
test ! -e /usr/bin/yes && /usr/bin/yes.distrib | head -n 1
dpkg-divert --list /usr/bin/yes
getfattr -d -m - --absolute-names /root/squares.txt /etc/debian_version /root/captrue /root/locked
echo check ok
`

// userlandExclusions are the files whose contents legitimately differ
// between two runs of the same steps, each with why; these are the
// only entries that differ when nothing is excluded. Only their content
// hash is left out of the comparison. A pattern matches a slash path
// with path.Match; every other entry is compared whole.
var userlandExclusions = []struct{ pattern, reason string }{
	{"var/log/dpkg.log", "one timestamped line per dpkg action: same size, other seconds"},
	{"var/cache/ldconfig/aux-cache", "ldconfig caches each library's inode number and ctime, which no two filesystems share"},
	{"var/log/alternatives.log", "one timestamped line per update-alternatives action"},
}

// userlandExcluded reports whether rel's content is left out of the
// comparison.
func userlandExcluded(rel string) bool {
	for _, e := range userlandExclusions {
		if ok, _ := path.Match(e.pattern, rel); ok {
			return true
		}
	}
	return false
}

// debianFixture returns the cached bookworm rootfs tarball and the .deb
// files of pkgs, building or fetching what is missing.
func debianFixture(t testing.TB, pkgs ...string) (tarball string, debs []string) {
	t.Helper()
	needTool(t, "debootstrap", "apt-get")
	start := time.Now()
	c, err := debfixture.Open(debfixture.Dir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if tarball, err = c.RootfsTarball(ctx, debfixture.Bookworm); err != nil {
		t.Fatal(err)
	}
	if debs, err = c.Debs(ctx, pkgs...); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("Debian fixture ready after %v", d.Round(time.Second))
	}
	return tarball, debs
}

// runcRunner runs containers with runc, its state under a directory of
// the test's own, and deletes every container it started on cleanup.
type runcRunner struct {
	t     testing.TB
	runc  string
	state string // runc --root
	dir   string // bundles
	seq   int
}

func newRunc(t testing.TB) *runcRunner {
	t.Helper()
	r := &runcRunner{t: t, runc: needTool(t, "runc")[0], state: filepath.Join(t.TempDir(), "runc"), dir: t.TempDir()}
	return r
}

// containerTimeout bounds one container's run.
const containerTimeout = 3 * time.Minute

// run runs script with bash in a new container on rootfs, as root, with
// private namespaces (network included) and no terminal, and returns
// its stdout. A non-zero exit fails the test with both outputs.
func (r *runcRunner) run(rootfs, script string) string {
	r.t.Helper()
	r.seq++
	id := fmt.Sprintf("strata-userland-%d-%d", os.Getpid(), r.seq)
	bundle := filepath.Join(r.dir, id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		r.t.Fatal(err)
	}
	if out, err := exec.Command(r.runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		r.t.Fatalf("runc spec: %v: %s", err, out)
	}
	if err := editSpec(filepath.Join(bundle, "config.json"), rootfs, []string{"/bin/bash", "-c", script}); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { r.delete(id) })

	stdout, err := os.Create(filepath.Join(bundle, "stdout"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(bundle, "stderr"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer stderr.Close()
	// Output to files, not pipes: a process left in the container could
	// hold a pipe open and keep Wait from returning.
	cmd := exec.Command(r.runc, "--root", r.state, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(containerTimeout):
		_ = exec.Command(r.runc, "--root", r.state, "kill", id, "KILL").Run()
		<-done
		runErr = fmt.Errorf("did not finish within %v", containerTimeout)
	}
	out, _ := os.ReadFile(stdout.Name())
	errOut, _ := os.ReadFile(stderr.Name())
	if runErr != nil {
		r.t.Fatalf("runc run on %s: %v\nstdout:\n%s\nstderr:\n%s", rootfs, runErr, out, errOut)
	}
	return string(out)
}

// delete removes container id, killing what is left in it; runc knows
// its processes by the container's cgroup, so nothing else is touched.
func (r *runcRunner) delete(id string) {
	out, err := exec.Command(r.runc, "--root", r.state, "delete", "--force", id).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		r.t.Errorf("runc delete %s: %v: %s", id, err, out)
	}
}

// editSpec turns runc's default spec into the one the tests use: the
// rootfs, writable; the command; no terminal; root with the capabilities
// a package manager needs (chown, fowner, setuid...). runc's default
// namespaces (pid, network, ipc, uts, mount) are kept: a private
// network namespace, no network.
func editSpec(file, rootfs string, args []string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("runc spec: %w", err)
	}
	spec["root"] = map[string]any{"path": rootfs, "readonly": false}
	proc, ok := spec["process"].(map[string]any)
	if !ok {
		return errors.New("runc spec: no process object")
	}
	proc["terminal"] = false
	proc["args"] = args
	proc["cwd"] = "/"
	proc["user"] = map[string]any{"uid": 0, "gid": 0}
	proc["env"] = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive",
	}
	caps := []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
		"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_SETFCAP",
		"CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE",
	}
	proc["capabilities"] = map[string]any{"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps}
	out, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(file, out, 0o644)
}

// userlandTree describes every entry below root by slash path (root
// itself as "."): type and permission bits, owner, the link count of
// what is not a directory, and for a regular file its size and content
// hash, for a symlink its target, for a device
// its numbers, and every extended attribute. Times are left out: the
// same steps run at different times. Directory sizes are left out: they
// are the filesystem's business.
func userlandTree(t testing.TB, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		if !fi.IsDir() {
			desc += fmt.Sprintf(" links=%d", st.Nlink)
		}
		switch {
		case fi.Mode().IsRegular():
			n, sum, err := fileSHA256(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" size=%d sha256=%x", n, sum[:12])
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode()&os.ModeDevice != 0:
			desc += fmt.Sprintf(" dev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		tree[filepath.ToSlash(rel)] = desc + xattrString(p)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return tree
}

// compareTrees reports every difference between two trees, at most 60
// of them, and how many there were. For an entry that contentExcluded
// names, the content hash is left out: it must still be there on both
// sides, with the same type, mode, owner and size.
func compareTrees(t testing.TB, what string, want, got map[string]string, contentExcluded func(string) bool) {
	t.Helper()
	norm := func(tree map[string]string) map[string]string {
		out := make(map[string]string, len(tree))
		for p, d := range tree {
			if contentExcluded(p) {
				d = contentHashRE.ReplaceAllString(d, "")
			}
			out[p] = d
		}
		return out
	}
	diffs := diffSnapshots(norm(want), norm(got))
	if len(diffs) == 0 {
		return
	}
	n := len(diffs)
	if n > 60 {
		diffs = append(diffs[:60], "...")
	}
	t.Errorf("%s: %d entries differ (removed: only in want, added: only in got):\n%s", what, n, strings.Join(diffs, "\n"))
}

// contentHashRE matches the content hash in a userlandTree description.
var contentHashRE = regexp.MustCompile(` sha256=[0-9a-f]+`)

// copyInto copies host files into dir, which is created, keeping their
// names.
func copyInto(t testing.TB, dir string, files ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFile(filepath.Join(dir, filepath.Base(f)), b); err != nil {
			t.Fatal(err)
		}
	}
}

// kernelOverlay mounts kernel overlayfs over lowers (top first) with a
// fresh upper and work directory under base, and returns the merged
// directory; it is unmounted on cleanup.
func kernelOverlay(t testing.TB, base string, lowers []string) string {
	t.Helper()
	upper, work, mnt := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("mount -t overlay -o %s: %v", opts, err)
	}
	t.Cleanup(func() { unmountT(t, mnt) })
	return mnt
}

// tarBytesRE finds the byte count the script prints last.
var tarBytesRE = regexp.MustCompile(`(?m)^(\d+)\n\z`)

// tarBytes returns the byte count at the end of userlandScript's output.
func tarBytes(t testing.TB, out string) int64 {
	t.Helper()
	m := tarBytesRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no tar byte count at the end of the output:\n%s", out)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUserlandDebian runs a Debian userland on strata and on kernel
// overlayfs over the same layer, compares what the steps printed and the
// trees they left, then commits strata's container and checks the result
// from a container on the committed image.
func TestUserlandDebian(t *testing.T) {
	s := newCLIStore(t)
	tarball, debs := debianFixture(t, userlandDebs...)
	rc := newRunc(t)

	s.imgMust("import", tarball, "debian:bookworm")
	lowers := s.inspectImage("debian:bookworm").GraphDriver.Data.LowerDir
	if lowers == "" {
		t.Fatal("strata inspect debian:bookworm: no GraphDriver.Data.LowerDir")
	}
	s.mustLine("create", "--name", "c1", "debian:bookworm")
	mnt, w := s.mount("c1")
	copyInto(t, filepath.Join(mnt, "tmp/debs"), debs...)
	got := rc.run(mnt, userlandScript)

	// The same steps on kernel overlayfs over the same lower directories.
	kmnt := kernelOverlay(t, filepath.Join(tempBase(t), "kernel"), strings.Split(lowers, ":"))
	copyInto(t, filepath.Join(kmnt, "tmp/debs"), debs...)
	want := rc.run(kmnt, userlandScript)
	if got != want {
		t.Errorf("the steps printed on strata:\n%s\nand on kernel overlayfs:\n%s", got, want)
	}
	for _, line := range []string{"Hello, world!\n", "uid=1001(alice) gid=1001(alice) groups=1001(alice)\n", "perl 5.", "built 45 entries\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("output on strata lacks %q:\n%s", line, got)
		}
	}
	n, kn := tarBytes(t, got), tarBytes(t, want)
	if n != kn {
		t.Errorf("tar cf - . | wc -c in /usr/share: %d bytes on strata, %d on kernel overlayfs", n, kn)
	}
	if n < 30<<20 {
		t.Errorf("tar of /usr/share: %d bytes, want the tens of MiB a minbase has", n)
	}

	strataTree := userlandTree(t, mnt)
	compareTrees(t, "strata's tree against kernel overlayfs's", userlandTree(t, kmnt), strataTree, userlandExcluded)

	// Commit, and check from a container on the committed image.
	s.unmount("c1", w)
	s.mustLine("commit", "-m", "userland steps", "c1", "debian:userland")
	s.mustLine("create", "--name", "c2", "debian:userland")
	mnt2, _ := s.mount("c2")
	compareTrees(t, "a container on the committed image against the committed container", strataTree, userlandTree(t, mnt2), func(string) bool { return false })
	out := rc.run(mnt2, userlandCheck)
	for _, line := range []string{"hello ii \n", "Hello, world!\n", "1=1,2=4,3=9,", "alice staff2\n", "2001-02-03 04:05:06.000000000", "# edited\n",
		"y\nlocal diversion of /usr/bin/yes to /usr/bin/yes.distrib\n", "user.note=\"hello\"\n", "user.tag=\"lower\"\n", "security.capability=0sAQAAAgAgAAAAAAAAAAAAAAAAAAA=\n", "check ok\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("check on the committed image: output lacks %q:\n%s", line, out)
		}
	}
	if strings.Contains(out, "user.gone") {
		t.Errorf("check on the committed image: a removed xattr is back:\n%s", out)
	}
}
