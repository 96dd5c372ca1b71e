//go:build linux

package ovl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Dialect is what an upper's filesystem, with our privileges, lets us
// write: it decides the form of each whiteout, opaque mark, redirect and
// metacopy record. Probe it once per upper; the zero Dialect writes the
// OCI forms and no xattrs.
type Dialect struct {
	// KernelWhiteouts: a character device 0/0 can be made (CAP_MKNOD).
	// Else whiteouts are OCI ".wh.<name>" files.
	KernelWhiteouts bool
	// TrustedXattrs: trusted.* xattrs can be set (CAP_SYS_ADMIN).
	// Else user.overlay.* is written where it can be.
	TrustedXattrs bool
	// UserXattrs: user.* xattrs can be set on a directory.
	UserXattrs bool
}

// Kernel reports whether d writes kernel overlayfs's format exactly
// (char 0/0 whiteouts, trusted.overlay.* xattrs).
func (d Dialect) Kernel() bool { return d.KernelWhiteouts && d.TrustedXattrs }

// ProbePrefix starts the names Probe makes (and removes) in the directory
// it probes; a crash may leave one behind, which cleaners may remove.
const ProbePrefix = "#strata.probe."

// Probe finds out the dialect of the filesystem of the directory dirfd,
// by making a device 0/0 and a directory there and setting xattrs on the
// directory. It leaves nothing behind.
func Probe(dirfd int) (Dialect, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := ProbePrefix + hex.EncodeToString(b[:])
	var d Dialect
	switch err := unix.Mknodat(dirfd, name, unix.S_IFCHR, WhiteoutDev); {
	case err == nil:
		d.KernelWhiteouts = true
		if err := unix.Unlinkat(dirfd, name, 0); err != nil {
			return d, fmt.Errorf("probe overlay format: %w", err)
		}
	case !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES):
		return d, fmt.Errorf("probe overlay format: mknod: %w", err)
	}
	if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
		return d, fmt.Errorf("probe overlay format: mkdir: %w", err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		p := ProcPath(fd)
		d.TrustedXattrs = unix.Setxattr(p, XattrOpaque, []byte("y"), 0) == nil
		d.UserXattrs = unix.Setxattr(p, XattrUserOpaque, []byte("y"), 0) == nil
		unix.Close(fd)
	}
	if rerr := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return d, fmt.Errorf("probe overlay format: %w", err)
	}
	return d, nil
}

// ErrNoXattrs is the error of writing a redirect or metacopy record on a
// filesystem that takes neither trusted.* nor user.* xattrs: these have
// no other form.
var ErrNoXattrs = errors.New("the filesystem takes no overlay xattrs")

// WhiteoutName is the name a whiteout of name has in d: name itself (a
// device 0/0) or ".wh."+name.
func (d Dialect) WhiteoutName(name string) string {
	if d.KernelWhiteouts {
		return name
	}
	return WhiteoutPrefix + name
}

// Whiteout makes a whiteout of name in the directory dirfd, where no
// entry of that name (or its whiteout name) is: a character device 0/0,
// or an empty ".wh.<name>" file.
func (d Dialect) Whiteout(dirfd int, name string) error {
	if d.KernelWhiteouts {
		if err := unix.Mknodat(dirfd, name, unix.S_IFCHR, WhiteoutDev); err != nil {
			return fmt.Errorf("make whiteout %s: %w", name, err)
		}
		return nil
	}
	fd, err := unix.Openat(dirfd, WhiteoutPrefix+name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("make whiteout file %s%s: %w", WhiteoutPrefix, name, err)
	}
	return unix.Close(fd)
}

// setXattr sets one of x's names on fd: the trusted one where d allows,
// else the user one. It reports ErrNoXattrs where d allows neither.
func (d Dialect) setXattr(fd int, x Xattrs, v []byte) error {
	var name string
	switch {
	case d.TrustedXattrs:
		name = x.Trusted
	case d.UserXattrs:
		name = x.User
	default:
		return ErrNoXattrs
	}
	if err := unix.Setxattr(ProcPath(fd), name, v, 0); err != nil {
		return fmt.Errorf("set xattr %s: %w", name, err)
	}
	return nil
}

// SetOpaque marks the directory fd (O_PATH or not) opaque: opaque xattr
// "y" in d's namespace, else (no xattrs) the OCI marker file in it.
func (d Dialect) SetOpaque(fd int) error {
	err := d.setXattr(fd, OpaqueXattrs, []byte("y"))
	if !errors.Is(err, ErrNoXattrs) {
		return err
	}
	mfd, err := unix.Openat(fd, OpaqueMarker, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("make %s: %w", OpaqueMarker, err)
	}
	return unix.Close(mfd)
}

// SetRedirect records on fd (a directory, or a metacopy file) that the
// layers beneath hold it at lower, a path from the layer root without a
// leading slash: the absolute form, which the kernel reads wherever the
// entry is.
func (d Dialect) SetRedirect(fd int, lower string) error {
	if lower == "" {
		return fmt.Errorf("%w: the root", ErrBadRedirect)
	}
	return d.setXattr(fd, RedirectXattrs, FormatRedirect(lower))
}

// SetMetacopy marks the regular file fd as holding metadata only, with
// the empty value that kernel overlayfs writes without verity.
func (d Dialect) SetMetacopy(fd int) error {
	return d.setXattr(fd, MetacopyXattrs, nil)
}
