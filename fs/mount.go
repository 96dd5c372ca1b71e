package fs

import (
	"fmt"
	"log"
	"os"
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
	AllowOther    bool          // let other users than the mounter in
	ReadOnly      bool          // mount read-only
	Debug         bool          // log every FUSE request
	Timeout       time.Duration // entry and attribute cache; 0 for the default
	DisableXattrs bool
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
	r := &Root{Stack: stack, Logger: o.Logger}
	root, attr, err := NewRoot(r)
	if err != nil {
		return nil, fmt.Errorf("resolve root: %w", err)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = cacheTimeout
	}
	mopts := fuse.MountOptions{
		FsName:               o.FsName,
		Name:                 o.Name,
		AllowOther:           o.AllowOther,
		Debug:                o.Debug,
		DisableXAttrs:        o.DisableXattrs,
		MaxWrite:             1 << 20,
		MaxReadAhead:         1 << 20,
		EnableLocks:          true,
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
	if o.ReadOnly || !stack.Writable() {
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
	return gofs.Mount(mountpoint, root, opts)
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
