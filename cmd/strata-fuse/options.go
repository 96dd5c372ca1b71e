package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/strata-fs/strata/cow"
)

type options struct {
	stack      cow.Options
	fsName     string
	allowOther bool
	readOnly   bool
	debug      bool
	noXattrs   bool
	timeout    time.Duration
	flags      []string // nosuid, nodev, noexec and opposites
	// allowDevices is set by "dev" and cleared by "nodev", the last one
	// given winning; without it the mount is nodev.
	allowDevices bool
	lowerPass    bool
}

// genericOptions are mount(8)'s generic options, which mount.fuse3 passes
// along; they are the kernel's business, not the filesystem's.
var genericOptions = map[string]bool{
	"rw": true, "dev": true, "suid": true, "exec": true, "atime": true, "noatime": true,
	"relatime": true, "norelatime": true, "strictatime": true,
	"diratime": true, "nodiratime": true, "lazytime": true, "sync": true,
	"async": true, "dirsync": true, "auto": true, "noauto": true,
	"user": true, "nouser": true, "users": true, "defaults": true,
	"_netdev": true, "nofail": true, "default_permissions": true,
}

// mountFlags are generic options that become mount(2) flags.
var mountFlags = map[string]bool{
	"nodev": true, "nosuid": true, "noexec": true, "noatime": true,
	"nodiratime": true, "relatime": true, "strictatime": true,
	"lazytime": true, "sync": true, "dirsync": true,
}

// harmlessOptions are fuse-overlayfs options that tune its own
// implementation; strata accepts them with a warning.
var harmlessOptions = map[string]bool{
	"threaded": true, "fast_ino": true, "writeback": true, "noacl": true,
	"static_nlink": true, "xattr_permissions": true, "max_write": true,
	"auto_unmount": true, "clone_fd": true, "max_idle_threads": true,
}

// refusedOptions change semantics in ways strata does not implement.
var refusedOptions = map[string]string{
	"uidmapping":     "id mapping",
	"gidmapping":     "id mapping",
	"squash_to_root": "owner squashing",
	"squash_to_uid":  "owner squashing",
	"squash_to_gid":  "owner squashing",
	"plugins":        "layer plugins",
	"nfs_export":     "NFS export",
	"userxattr":      "user.* overlay xattrs for its own upper",
	"uidmap":         "id mapping",
	"gidmap":         "id mapping",
}

func parseOptions(args []string) (options, []string, error) {
	var o options
	var warnings []string
	metacopyOn := false // given explicitly
	for _, arg := range args {
		for _, kv := range strings.Split(arg, ",") {
			if kv == "" {
				continue
			}
			key, val, hasVal := strings.Cut(kv, "=")
			switch key {
			case "lowerdir":
				for _, l := range strings.Split(val, ":") {
					if l == "" {
						return o, warnings, fmt.Errorf("lowerdir=%s: empty layer path", val)
					}
					o.stack.Lower = append(o.stack.Lower, l)
				}
			case "upperdir":
				o.stack.Upper = val
			case "workdir":
				o.stack.Work = val
			case "ro":
				o.readOnly = true
			case "allow_other":
				o.allowOther = true
			case "fsname":
				o.fsName = val
			case "volatile":
				o.stack.Volatile = true
			case "fsync":
				switch val {
				case "0":
					o.stack.Volatile = true
				case "1":
					o.stack.Volatile = false
				default:
					return o, warnings, fmt.Errorf("fsync=%s: want 0 or 1", val)
				}
			case "passthrough":
				switch val {
				case "upper":
					o.lowerPass = false
				case "all":
					o.lowerPass = true
				default:
					return o, warnings, fmt.Errorf("passthrough=%s: want upper (the default) or all", val)
				}
			case "redirect_dir":
				// The kernel's values: on makes and follows redirects;
				// follow and off (with the kernel's default
				// redirect_always_follow) follow them only; nofollow
				// neither, for lower layers that are not trusted.
				switch val {
				case "on":
					o.stack.NoRedirect, o.stack.RedirectFollowOnly = false, false
				case "follow", "off":
					o.stack.NoRedirect, o.stack.RedirectFollowOnly = false, true
				case "nofollow":
					o.stack.NoRedirect = true
				default:
					return o, warnings, fmt.Errorf("redirect_dir=%s: want on (the default), follow, off or nofollow", val)
				}
			case "metacopy":
				switch val {
				case "on":
					o.stack.NoMetacopy = false
					metacopyOn = true
				case "off":
					o.stack.NoMetacopy = true
				default:
					return o, warnings, fmt.Errorf("metacopy=%s: want on (the default) or off", val)
				}
			case "index":
				// strata keeps lower hard links joined across copy-up
				// always, in a format of its own (the links directory
				// of the work dir): index=on asks for what it does.
				switch val {
				case "on":
				case "off":
					warnings = append(warnings, "index=off has no effect: strata keeps hard links joined across copy-up")
				default:
					return o, warnings, fmt.Errorf("index=%s: want on or off", val)
				}
			case "dev":
				o.allowDevices = true
			case "nodev":
				o.allowDevices = false
			case "noxattrs":
				o.noXattrs = val != "0"
			case "debug":
				o.debug = true
			case "timeout":
				secs, err := strconv.ParseFloat(val, 64)
				if err != nil || secs < 0 {
					return o, warnings, fmt.Errorf("timeout=%s: want seconds", val)
				}
				o.timeout = time.Duration(secs * float64(time.Second))
				if o.timeout == 0 {
					o.timeout = time.Nanosecond
				}
			default:
				switch {
				case mountFlags[key]:
					o.flags = append(o.flags, key)
				case genericOptions[key] || strings.HasPrefix(key, "x-") || key == "context" || key == "fscontext" || key == "defcontext" || key == "rootcontext" || key == "subtype":
				case harmlessOptions[key]:
					warnings = append(warnings, fmt.Sprintf("option %q has no effect in strata", kv))
				case refusedOptions[key] != "":
					if hasVal && (val == "off" || val == "0" || val == "") && key != "plugins" && !strings.HasSuffix(key, "mapping") {
						continue // turning off what strata does not do
					}
					return o, warnings, fmt.Errorf("option %q needs %s, which strata does not implement", kv, refusedOptions[key])
				default:
					return o, warnings, fmt.Errorf("unknown option %q (see 'strata-fuse --help')", kv)
				}
			}
		}
	}
	if len(o.stack.Lower) == 0 {
		return o, warnings, fmt.Errorf("no lowerdir given: use -o lowerdir=DIR[:DIR...]")
	}
	if o.stack.NoRedirect {
		// A metacopy file's data is found by redirects: as the kernel,
		// refuse the two together, and turn metacopy off with nofollow.
		if metacopyOn {
			return o, warnings, fmt.Errorf("conflicting options metacopy=on and redirect_dir=nofollow: metacopy files need redirects followed (use metacopy=off)")
		}
		o.stack.NoMetacopy = true
	}
	// nodev unless "dev" is given, as fuse-overlayfs (libfuse) does. A
	// mount program cannot be told otherwise: containers-storage turns
	// "nodev" of its mountopt into a mount(2) flag for kernel overlayfs
	// and drops it from the options it passes to a mount program.
	if !o.allowDevices {
		o.flags = append(o.flags, "nodev")
	}
	if o.stack.Upper != "" && o.stack.Work == "" {
		return o, warnings, fmt.Errorf("upperdir %s needs a workdir on the same filesystem: add -o workdir=DIR", o.stack.Upper)
	}
	if o.stack.Work != "" && o.stack.Upper == "" {
		return o, warnings, fmt.Errorf("workdir %s given without upperdir", o.stack.Work)
	}
	// The daemon changes directory to /; relative paths would break.
	for i, l := range o.stack.Lower {
		o.stack.Lower[i] = absPath(l)
	}
	if o.stack.Upper != "" {
		o.stack.Upper, o.stack.Work = absPath(o.stack.Upper), absPath(o.stack.Work)
	}
	return o, warnings, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
