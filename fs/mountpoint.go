//go:build linux

package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CheckMountpoint refuses a mountpoint that is missing, not a directory,
// or already a mount point (a stale or live mount there would hide ours
// or be hidden by it).
func CheckMountpoint(mp string) error {
	st, err := os.Stat(mp)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("mountpoint %s does not exist: create it first (mkdir -p %s)", mp, mp)
		}
		return fmt.Errorf("mountpoint %s: %w", mp, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory: mount on a directory", mp)
	}
	abs, err := filepath.Abs(mp)
	if err != nil {
		return err
	}
	if ok, err := isMountPoint(abs); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("mountpoint %s is already a mount point: unmount it first ('umount %s')", mp, mp)
	}
	return nil
}

// isMountPoint compares dir with its parent: a different device, or
// statx's mount-root attribute, shows a mount.
func isMountPoint(dir string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var st, pst unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(dir), &pst); err != nil {
		return false, err
	}
	return st.Dev != pst.Dev || st.Ino == pst.Ino, nil
}
