package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-fs/strata/internal/debfixture"
)

// dpkgPackage is the package the dpkg workload installs: a 40 MB .deb of
// 561 files (game data: textures, models, sounds) with no dependencies,
// so it installs on a minbase root filesystem as it is.
const dpkgPackage = "extremetuxracer-data"

// dpkgEnv is the environment of dpkg in the chroot.
var dpkgEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LC_ALL=C", "DEBIAN_FRONTEND=noninteractive",
}

// fxDebian: the lower layer is a debootstrap minbase bookworm root
// filesystem, unpacked from the tarball the integration tests share
// (internal/debfixture), and dpkgPackage's .deb.
func (b *bench) fxDebian() error {
	if b.fx.debianLower != nil {
		return nil
	}
	c, err := debfixture.Open(debfixture.Dir(), b.logf)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Minute)
	defer cancel()
	tarball, err := c.RootfsTarball(ctx, debfixture.Bookworm)
	if err != nil {
		return err
	}
	debs, err := c.Debs(ctx, dpkgPackage)
	if err != nil {
		return err
	}
	name := strings.TrimSuffix(filepath.Base(tarball), ".tar")
	dir, err := b.fixture(name, "unpacked "+name, func(dir string) error {
		l0 := filepath.Join(dir, "L0")
		if err := os.Mkdir(l0, 0o755); err != nil {
			return err
		}
		cmd := exec.Command("tar", "--extract", "--file", tarball, "--directory", l0,
			"--numeric-owner", "--preserve-permissions", "--xattrs", "--xattrs-include=*")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tar: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.fx.debianLower = layers(dir, "L0")
	b.fx.deb = debs[0]
	return nil
}

// 11. dpkg -i of dpkgPackage in a chroot on the mount of the Debian
// lower layer. dpkg unpacks each file under a temporary name, fsyncs it
// and renames it into place, and rewrites its database: the writes,
// fsyncs and renames of a real package manager. The fsyncs make the
// figure follow the disk's flush latency, which on a shared machine
// varies more than the filesystems do, so the same install is timed
// again with --force-unsafe-io (no fsyncs): the filesystem's own cost.
func (b *bench) runDpkg(im *impl, o *outcome) {
	o.fail("dpkg", b.timeDpkg(im, o, "dpkg"))
	o.fail("dpkg_unsafe", b.timeDpkg(im, o, "dpkg_unsafe", "--force-unsafe-io"))
}

// timeDpkg times one dpkg -i of dpkgPackage with extra dpkg options on a
// fresh mount and records it under key.
func (b *bench) timeDpkg(im *impl, o *outcome, key string, opts ...string) error {
	return b.withMount(im, b.fx.debianLower, func(m *mount) error {
		for _, l := range b.fx.debianLower {
			if err := warmTree(l, true); err != nil {
				return err
			}
		}
		data, err := os.ReadFile(b.fx.deb)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(m.dir, "tmp", filepath.Base(b.fx.deb)), data, 0o644); err != nil {
			return err
		}
		if _, err := command(m, "/", dpkgEnv, "sync"); err != nil {
			return err
		}
		args := append([]string{m.dir, "dpkg"}, opts...)
		args = append(args, "-i", "/tmp/"+filepath.Base(b.fx.deb))
		start := time.Now()
		if _, err := command(m, "/", dpkgEnv, "chroot", args...); err != nil {
			return err
		}
		d := time.Since(start)
		out, err := command(m, "/", dpkgEnv, "chroot", m.dir, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", dpkgPackage)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(out)); got != "ii" {
			return fmt.Errorf("after dpkg -i, %s has status %q, want ii", dpkgPackage, got)
		}
		o.set(key, d.Seconds())
		return nil
	})
}
