//go:build linux

package fs

import (
	"errors"
	"log"
	"syscall"

	"github.com/strata-fs/strata/cow"
)

// toErrno maps an engine error to the errno FUSE returns. Unknown errors
// become EIO and are logged: go-fuse's own mapping would make them
// ENOTSUP and hide the bug.
func toErrno(logger *log.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, cow.ErrReservedName) {
		return syscall.EINVAL
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if logger != nil {
		logger.Printf("%s: %v", op, err)
	}
	return syscall.EIO
}
