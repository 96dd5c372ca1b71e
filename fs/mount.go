//go:build linux

package fs

import (
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// MountOptions tune a mount.
type MountOptions struct {
	FsName        string        // source shown in /proc/mounts
	Name          string        // subtype: the mount shows as fuse.<Name>
	AllowOther    bool          // let other users than the mounter in (always when root)
	ReadOnly      bool          // mount read-only
	Debug         bool          // log every FUSE request
	Timeout       time.Duration // entry and attribute cache; 0 for the default
	DisableXattrs bool
	// LowerPassthrough serves files of lower layers by FUSE passthrough
	// too: reads at the speed of the layer's filesystem, but a file open
	// read-only from a lower layer keeps reading the lower file after
	// another open copies it up (kernel overlayfs's open file follows).
	LowerPassthrough bool
	// Flags are generic mount flags: nosuid, nodev, noexec, noatime,
	// relatime, strictatime, nodiratime, lazytime, sync, dirsync; their
	// opposites (suid, dev, exec, atime, ...) are the default. A container root filesystem needs set-user-ID files and
	// devices to work, so by default neither is blocked, as with kernel
	// overlayfs.
	Flags  []string
	Logger *log.Logger // for errors that have no caller to go to
}

// Mount serves stack at mountpoint and returns once the mount is live.
func Mount(mountpoint string, stack *cow.Stack, o MountOptions) (*fuse.Server, error) {
	return Serve(mountpoint, &Root{Stack: stack}, o)
}

// Serve is Mount for a Root the caller made, and so can Freeze. The
// Logger and LowerPassthrough of o are set on r.
func Serve(mountpoint string, r *Root, o MountOptions) (*fuse.Server, error) {
	r.Logger, r.LowerPassthrough = o.Logger, o.LowerPassthrough
	// The kernel applies the caller's umask to the mode of every mkdir,
	// create, mknod and tmpfile before sending it (FUSE_DONT_MASK is not
	// negotiated); the daemon's own umask must not apply a second time.
	// This is the process's umask: a daemon serves one mount.
	unix.Umask(0)
	root, attr, err := NewRoot(r)
	if err != nil {
		return nil, fmt.Errorf("resolve root: %w", err)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = cacheTimeout
	}
	mopts := fuse.MountOptions{
		FsName: o.FsName,
		Name:   o.Name,
		// As root the mount serves containers, whose processes run as
		// any user; the kernel checks their permissions
		// (default_permissions), as with fuse-overlayfs run by root.
		AllowOther:    o.AllowOther || os.Geteuid() == 0,
		Debug:         o.Debug,
		DisableXAttrs: o.DisableXattrs,
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		// Locks stay in the kernel, which implements POSIX semantics
		// (per process, released on any close); go-fuse would take
		// them on the daemon's own fds, per open file.
		EnableLocks:          false,
		EnableSymlinkCaching: true,
		DirectMount:          true,
		MaxBackground:        64,
		// The kernel checks permissions from the attributes, as it
		// does for kernel overlayfs; the daemon runs privileged.
		Options: []string{"default_permissions"},
	}
	// A non-zero value keeps go-fuse from adding nosuid,nodev when it
	// calls mount(2) itself; MS_SILENT changes nothing else.
	mopts.DirectMountFlags = unix.MS_SILENT
	for _, f := range o.Flags {
		if bit, ok := mountFlagBits[f]; ok {
			mopts.DirectMountFlags |= bit
		}
		if os.Geteuid() != 0 {
			mopts.Options = append(mopts.Options, f) // for fusermount3
		}
	}
	if o.ReadOnly || !r.Stack.Writable() {
		if os.Geteuid() == 0 {
			mopts.DirectMountFlags |= unix.MS_RDONLY
		} else {
			mopts.Options = append(mopts.Options, "ro")
		}
	}
	opts := &gofs.Options{
		MountOptions:    mopts,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		RootStableAttr:  attr,
		Logger:          o.Logger,
		NullPermissions: true,
	}
	srv, err := gofs.Mount(mountpoint, root, opts)
	if err != nil {
		return nil, err
	}
	if err := setReadahead(mountpoint, readaheadKB); err != nil && o.Logger != nil {
		o.Logger.Printf("readahead of %s stays at the kernel's default: %v", mountpoint, err)
	}
	return srv, nil
}

// readaheadKB is the read-ahead window of a mount. Files of lower layers
// are read through the page cache (see newFileLocked), where the FUSE
// default of 128 KiB costs a round trip to the daemon every 128 KiB; a
// window of 4 MiB lets the kernel send reads of max_pages (1 MiB) back to
// back, which takes a cold sequential read from about a third of kernel
// overlayfs's rate to most of it.
const readaheadKB = 4096

// setReadahead sets the read-ahead of the mount's backing device info,
// which the kernel names after the mount's device number.
func setReadahead(mountpoint string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(strconv.Itoa(kb)), 0)
}

// mountFlagBits are the generic mount options that are mount(2) flags.
var mountFlagBits = map[string]uintptr{
	"nosuid":      unix.MS_NOSUID,
	"nodev":       unix.MS_NODEV,
	"noexec":      unix.MS_NOEXEC,
	"noatime":     unix.MS_NOATIME,
	"nodiratime":  unix.MS_NODIRATIME,
	"relatime":    unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
	"lazytime":    unix.MS_LAZYTIME,
	"sync":        unix.MS_SYNCHRONOUS,
	"dirsync":     unix.MS_DIRSYNC,
}
