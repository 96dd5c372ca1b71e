package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors of LookPath, which docker reports with exit codes 127 and 126.
var (
	ErrCommandNotFound      = errors.New("executable file not found")
	ErrCommandNotExecutable = errors.New("permission denied")
)

// openInRoot opens name, a path in the container, inside rootfs as the
// container would resolve it: symlinks, absolute ones included, resolve
// inside rootfs, and ".." stops at its top (openat2 RESOLVE_IN_ROOT).
func openInRoot(rootfs, name string, flags int) (*os.File, error) {
	dir, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rootfs, Err: err}
	}
	defer unix.Close(dir)
	how := &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(dir, name, how)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// ReadFile reads the file name of the container whose root is rootfs.
// A missing file is (nil, nil).
func ReadFile(rootfs, name string) ([]byte, error) {
	f, err := openInRoot(rootfs, name, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b, rerr := io.ReadAll(f)
	return b, errors.Join(rerr, f.Close())
}

// LookPath finds the program a container's process runs, as runc will
// find it: a name with a slash is a path (relative to cwd), else the
// first executable file of that name in env's PATH. A missing file is
// ErrCommandNotFound, a directory or a file without execute permission
// ErrCommandNotExecutable. It returns the path found.
func LookPath(rootfs, cwd string, env []string, name string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !path.IsAbs(p) {
			p = path.Join(cwd, p)
		}
		ok, err := executable(rootfs, p)
		switch {
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			return "", fmt.Errorf("exec: %q: %w", name, ErrCommandNotFound)
		case err != nil:
			return "", err
		case !ok:
			return "", fmt.Errorf("exec: %q: %w", name, ErrCommandNotExecutable)
		}
		return p, nil
	}
	pathVar := strings.TrimPrefix(DefaultPath, "PATH=")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if dir == "" {
			dir = "."
		}
		if !path.IsAbs(dir) {
			dir = path.Join(cwd, dir)
		}
		p := path.Join(dir, name)
		if ok, err := executable(rootfs, p); err == nil && ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: %w in $PATH", name, ErrCommandNotFound)
}

// executable tells whether p is a regular file with an execute bit.
func executable(rootfs, p string) (bool, error) {
	f, err := openInRoot(rootfs, p, unix.O_PATH)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0, nil
}

// ProcessStart returns the start time of process pid (field 22 of
// /proc/PID/stat, in clock ticks since boot), which tells a process
// from a later one that reuses its pid.
func ProcessStart(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, unix.ESRCH)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("pid %d: %w (zombie)", pid, unix.ESRCH)
	}
	var start uint64
	if _, err := fmt.Sscan(f[19], &start); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return start, nil
}

// ProcessAlive tells whether pid is still the process that started at
// start. It is an Alive.
func ProcessAlive(pid int, start uint64) bool {
	got, err := ProcessStart(pid)
	return err == nil && got == start
}

// MissingPaths returns those of the container paths, and of their
// parents, that do not exist in rootfs, deepest first: the mountpoints
// runc will create there for the spec's mounts.
func MissingPaths(rootfs string, paths []string) ([]string, error) {
	seen := map[string]bool{}
	var missing []string
	for _, p := range paths {
		for q := path.Clean(p); q != "/" && !seen[q]; q = path.Dir(q) {
			seen[q] = true
			f, err := openInRoot(rootfs, q, unix.O_PATH)
			if err == nil {
				f.Close()
				continue
			}
			if !errors.Is(err, unix.ENOENT) {
				return nil, err
			}
			missing = append(missing, q)
		}
	}
	sort.Slice(missing, func(i, j int) bool {
		di, dj := strings.Count(missing[i], "/"), strings.Count(missing[j], "/")
		if di != dj {
			return di > dj
		}
		return missing[i] < missing[j]
	})
	return missing, nil
}

// RemoveEmpty removes each of paths (container paths, deepest first, as
// MissingPaths returns them) from rootfs if it is an empty directory or
// an empty regular file: what runc created as a mountpoint and nothing
// wrote to. Anything else is left.
func RemoveEmpty(rootfs string, paths []string) error {
	var errs []error
	for _, p := range paths {
		dir, err := openInRoot(rootfs, path.Dir(p), unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := path.Base(p)
		var st unix.Stat_t
		err = unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err != nil:
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			err = unix.Unlinkat(int(dir.Fd()), name, unix.AT_REMOVEDIR)
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
				err = nil
			}
		case st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0:
			err = unix.Unlinkat(int(dir.Fd()), name, 0)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove mountpoint %s: %w", p, err))
		}
		dir.Close()
	}
	return errors.Join(errs...)
}
