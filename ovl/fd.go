//go:build linux

package ovl

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProcPath names an O_PATH fd for the *xattr calls, which do not take
// O_PATH fds directly. The magic link resolves to the file itself, even a
// symlink, and never further.
func ProcPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// sizedRead calls an xattr call that fills buf (nil asks for the size)
// until the value fits: it may grow between the two calls.
func sizedRead(initial int, call func(buf []byte) (int, error)) ([]byte, error) {
	buf := make([]byte, initial)
	for {
		n, err := call(buf)
		if err == unix.ERANGE {
			sz, err := call(nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// GetxattrFd reads the xattr attr of fd, which may be an O_PATH fd: it
// goes through ProcPath, which names the file itself, never following it.
func GetxattrFd(fd int, attr string) ([]byte, error) {
	p := ProcPath(fd)
	return sizedRead(256, func(buf []byte) (int, error) { return unix.Getxattr(p, attr, buf) })
}

// ListxattrFd lists the xattr names of fd, which may be an O_PATH fd.
func ListxattrFd(fd int) ([]string, error) {
	p := ProcPath(fd)
	b, err := sizedRead(1024, func(buf []byte) (int, error) { return unix.Listxattr(p, buf) })
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(b), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// Dirent is one entry of a directory as getdents gives it.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8 // DT_*
}

// ReadDirFd reads every entry of the open directory fd (O_RDONLY), "."
// and ".." excluded.
func ReadDirFd(fd int) ([]Dirent, error) {
	var out []Dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return out, err
		}
		if n <= 0 {
			return out, nil
		}
		b := buf[:n]
		for len(b) > 0 {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
			if len(b) < 19 {
				return out, errors.New("getdents: short record")
			}
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return out, errors.New("getdents: bad record length")
			}
			ino := binary.NativeEndian.Uint64(b[0:8])
			typ := b[18]
			nb := b[19:reclen]
			for i, c := range nb {
				if c == 0 {
					nb = nb[:i]
					break
				}
			}
			name := unsafe.String(unsafe.SliceData(nb), len(nb))
			if name != "." && name != ".." {
				out = append(out, Dirent{Name: strings.Clone(name), Ino: ino, Type: typ})
			}
			b = b[reclen:]
		}
	}
}

// GetxattrFdAt reads the xattr attr of the entry name of the directory
// dirfd, not following it.
func GetxattrFdAt(dirfd int, name, attr string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return GetxattrFd(fd, attr)
}

// Walk calls fn for every entry beneath the directory dirfd (O_PATH or
// O_RDONLY), depth first, with its path relative to dirfd, until fn
// returns false. Directories are opened one name at a time with
// O_NOFOLLOW: a symlink is an entry, never a way out of the tree.
func Walk(dirfd int, fn func(p string, de Dirent) bool) error {
	var walk func(fd int, dir string) (bool, error)
	walk = func(fd int, dir string) (bool, error) {
		ents, err := ReadDirFd(fd)
		if err != nil {
			return true, err
		}
		for _, de := range ents {
			p := de.Name
			if dir != "" {
				p = dir + "/" + de.Name
			}
			if !fn(p, de) {
				return false, nil
			}
			if de.Type != unix.DT_DIR {
				continue
			}
			sub, err := unix.Openat(fd, de.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return true, err
			}
			more, err := walk(sub, p)
			unix.Close(sub)
			if err != nil || !more {
				return more, err
			}
		}
		return true, nil
	}
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = walk(fd, "")
	return err
}
