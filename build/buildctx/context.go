// Package buildctx is the build context of `strata build` and the engine
// of its COPY and ADD instructions.
//
// A Context is a directory on the host: the one the user names, or a
// private temporary directory that a context tar read from stdin
// (`strata build -`) was unpacked into. Its .dockerignore patterns
// (docker's rules, through github.com/moby/patternmatcher) hide files from
// COPY and ADD exactly as if they had not been sent.
//
// Resolve turns the sources of one instruction into a fixed list of
// entries (walked once, ignore rules applied), Digest hashes that list for
// the build cache, and Copy writes it into the root filesystem of the
// container being built. Every write into that root goes through
// directory file descriptors opened with openat2(RESOLVE_IN_ROOT), so a
// symlink of the image is followed as the container would see it and
// never leads out of the root.
package buildctx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// IgnoreFile is the name of the ignore file at the context root.
const IgnoreFile = ".dockerignore"

// maxIgnoreSize bounds what is read of an ignore file or Dockerfile of an
// untrusted context.
const maxIgnoreSize = 16 << 20

// Context is a build context.
type Context struct {
	root string // absolute, symlinks of the path itself resolved
	tmp  string // removed by Close; "" for FromDir
	pm   *patternmatcher.PatternMatcher
}

// FromDir returns the context rooted at the directory dir. Nothing is
// read yet; call LoadIgnore or SetIgnore to apply ignore rules.
func FromDir(dir string) (*Context, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	abs, err = filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s: not a directory (give a directory, or - to read a tar from stdin)", dir)
	}
	return &Context{root: abs}, nil
}

// FromTar unpacks the context tar read from r (plain, gzip, bzip2, xz or
// zstd) into a new private directory under tmpDir. The tar is not
// trusted: an entry that would land outside the directory (an absolute
// name, "..", a path beneath a symlink), a device node or a hard link to
// something outside is refused. The caller calls Close to remove the
// directory.
func FromTar(r io.Reader, tmpDir string) (*Context, error) {
	dir, err := os.MkdirTemp(tmpDir, "buildctx-")
	if err != nil {
		return nil, fmt.Errorf("build context from tar: %w", err)
	}
	c := &Context{root: dir, tmp: dir}
	if err := extractStream(dir, r, extractContext); err != nil {
		return nil, errors.Join(fmt.Errorf("build context from tar: %w", err), c.Close())
	}
	return c, nil
}

// Root is the host directory of the context.
func (c *Context) Root() string { return c.root }

// Close removes the directory FromTar made. It is a no-op for FromDir.
func (c *Context) Close() error {
	if c.tmp == "" {
		return nil
	}
	dir := c.tmp
	c.tmp = ""
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove build context: %w", err)
	}
	return nil
}

// ReadIgnore parses an ignore file with docker's rules: one pattern a
// line, "#" comments, blank lines skipped, surrounding space trimmed,
// paths cleaned, a leading "/" dropped, "!" for an exception.
func ReadIgnore(r io.Reader) ([]string, error) {
	p, err := ignorefile.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", IgnoreFile, err)
	}
	return p, nil
}

// SetIgnore sets the ignore patterns (as ReadIgnore returns them); a nil
// or empty list ignores nothing.
func (c *Context) SetIgnore(patterns []string) error {
	if len(patterns) == 0 {
		c.pm = nil
		return nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return fmt.Errorf("%s: %w", IgnoreFile, err)
	}
	c.pm = pm
	return nil
}

// LoadIgnore reads the ignore rules of a build with the Dockerfile
// dockerfile (a path relative to the context root, "" for the default):
// <dockerfile>.dockerignore beside the Dockerfile if it exists, as
// buildkit does, else .dockerignore at the context root, else none.
// The files are read inside the context; a symlink cannot lead out.
func (c *Context) LoadIgnore(dockerfile string) error {
	var names []string
	if dockerfile != "" {
		names = append(names, dockerfile+IgnoreFile)
	}
	names = append(names, IgnoreFile)
	for _, name := range names {
		b, err := c.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		p, err := ReadIgnore(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := c.SetIgnore(p); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	return c.SetIgnore(nil)
}

// ReadFile reads the file name (relative to the context root) whether or
// not the ignore rules exclude it: the builder still reads the
// Dockerfile and .dockerignore, as docker does, though COPY does not see
// them once excluded. Symlinks are followed inside the context only.
func (c *Context) ReadFile(name string) ([]byte, error) {
	// O_NONBLOCK: a FIFO in the context must not hang the open.
	f, err := openInRoot(c.root, name, os.O_RDONLY|syscall.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("read %s from the build context: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s from the build context: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s from the build context: not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxIgnoreSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s from the build context: %w", name, err)
	}
	if len(b) > maxIgnoreSize {
		return nil, fmt.Errorf("read %s from the build context: larger than %d bytes", name, maxIgnoreSize)
	}
	return b, nil
}

// excluded reports whether rel (slash-separated, relative to the
// context root) is hidden by the ignore rules.
func (c *Context) excluded(rel string) (bool, error) {
	if c.pm == nil || rel == "." || rel == "" {
		return false, nil
	}
	ok, err := c.pm.MatchesOrParentMatches(filepath.FromSlash(rel))
	if err != nil {
		return false, fmt.Errorf("%s: match %s: %w", IgnoreFile, rel, err)
	}
	return ok, nil
}
