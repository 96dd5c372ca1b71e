package buildctx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxIDFile bounds what is read of an image's /etc/passwd or /etc/group.
const maxIDFile = 16 << 20

// LookupOwner resolves a --chown spec, user[:group], names or numbers,
// against the image root filesystem rootfs, as buildkit does: a user
// without a group gets the user's primary group from /etc/passwd (a
// numeric user not listed there gets the same number as group). The
// image is untrusted: /etc/passwd and /etc/group are opened inside
// rootfs (openat2 RESOLVE_IN_ROOT), so a symlink cannot make the host's
// files be read.
func LookupOwner(rootfs, spec string) (uid, gid int, err error) {
	user, group, hasGroup := strings.Cut(spec, ":")
	if user == "" || (hasGroup && group == "") {
		return 0, 0, fmt.Errorf("--chown %q: want user, user:group, uid or uid:gid", spec)
	}
	primary := -1
	if n, ok := parseID(user); ok {
		uid = n
	} else {
		uid, primary, err = lookupPasswd(rootfs, user)
		if err != nil {
			return 0, 0, fmt.Errorf("--chown %s: %w", spec, err)
		}
	}
	switch {
	case hasGroup:
		if n, ok := parseID(group); ok {
			return uid, n, nil
		}
		gid, err = lookupGroup(rootfs, group)
		if err != nil {
			return 0, 0, fmt.Errorf("--chown %s: %w", spec, err)
		}
		return uid, gid, nil
	case primary >= 0:
		return uid, primary, nil
	}
	// A numeric user without a group: the same number, as docker's
	// documentation of --chown says.
	return uid, uid, nil
}

// parseID parses a numeric uid or gid (0 to 2^32-2; -1 is "no change"
// to chown, so it is no owner).
func parseID(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return int(n), true
}

// readIDFile reads /etc/passwd or /etc/group of rootfs; a missing file
// is no entries.
func readIDFile(rootfs, name string) ([]byte, error) {
	f, err := openInRoot(rootfs, name, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("read the image's %s: its symlinks loop when resolved inside the image (a link to the host's file is resolved in the image, not on the host): %w", name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read the image's %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read the image's %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read the image's %s: not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxIDFile+1))
	if err != nil {
		return nil, fmt.Errorf("read the image's %s: %w", name, err)
	}
	if len(b) > maxIDFile {
		return nil, fmt.Errorf("read the image's %s: larger than %d bytes", name, maxIDFile)
	}
	return b, nil
}

// idLines calls fn with the colon-separated fields of each entry line.
func idLines(b []byte, fn func(fields []string) bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxIDFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return
		}
	}
}

func lookupPasswd(rootfs, name string) (uid, gid int, err error) {
	b, err := readIDFile(rootfs, "/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	found := false
	idLines(b, func(f []string) bool {
		if len(f) < 4 || f[0] != name {
			return false
		}
		u, ok1 := parseID(f[2])
		g, ok2 := parseID(f[3])
		if ok1 && ok2 {
			uid, gid, found = u, g, true
		}
		return true
	})
	if !found {
		return 0, 0, fmt.Errorf("no user %q in the image's /etc/passwd (give a numeric uid, or add the user in an earlier RUN)", name)
	}
	return uid, gid, nil
}

func lookupGroup(rootfs, name string) (int, error) {
	b, err := readIDFile(rootfs, "/etc/group")
	if err != nil {
		return 0, err
	}
	gid, found := 0, false
	idLines(b, func(f []string) bool {
		if len(f) < 3 || f[0] != name {
			return false
		}
		gid, found = parseID(f[2])
		return found
	})
	if !found {
		return 0, fmt.Errorf("no group %q in the image's /etc/group (give a numeric gid, or add the group in an earlier RUN)", name)
	}
	return gid, nil
}
