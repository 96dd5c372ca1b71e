//go:build linux

package layer

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Lowers are the layer directories under the one being written, top
	// first (the parent snapshot's layers). They are only read, to give
	// an implicit parent directory (an entry "a/b/c" with no "a/b" entry
	// in the tar) the metadata (mode, owner, times, xattrs except
	// overlay's own) that the merged lower view has for it; where no
	// lower has it, the implicit parent gets mode 0755.
	Lowers []string
	// Warn, if set, is told of entries skipped by policy (a device node
	// when not root, etc.).
	Warn func(msg string)
	// MaxApparentSize bounds the sizes of the layer's files added up,
	// holes of sparse files included; 0 means DefaultMaxApparentSize.
	MaxApparentSize int64
}

// DefaultMaxApparentSize is the default bound on the apparent size of
// a layer (ApplyOptions.MaxApparentSize): 1 TiB, the largest single
// entry Apply takes. Sparse files cost no time or room to apply, but
// what reads the layer later (an export, a copy-up of the file, a
// backup) may walk their holes; real layers hold tens of GiB at most,
// and a sparse file of 1 TiB is rare but does occur.
const DefaultMaxApparentSize = 1 << 40

// ErrApparentSize is the error of a layer whose files add up to more
// than ApplyOptions.MaxApparentSize.
var ErrApparentSize = errors.New("apparent size of the layer over the limit")

// MaxApparentSizeEnv names the environment variable that, when set to a
// number of bytes, replaces DefaultMaxApparentSize.
const MaxApparentSizeEnv = "STRATA_MAX_LAYER_SIZE"

func envMaxApparentSize() int64 {
	n, err := strconv.ParseInt(os.Getenv(MaxApparentSizeEnv), 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// ApplyResult describes the layer Apply read.
type ApplyResult struct {
	DiffID      digest.Digest // sha256 of the uncompressed tar stream
	Size        int64         // uncompressed tar bytes
	Digest      digest.Digest // sha256 of the bytes read from r (the blob as given)
	BlobSize    int64
	Compression Compression
}

// Limits on a layer's entries, beyond which it is refused as hostile
// (compress.go has those of the stream).
const (
	applyMaxPath       = 4096     // PATH_MAX
	applyMaxName       = 255      // NAME_MAX
	applyMaxXattrName  = 255      // XATTR_NAME_MAX
	applyMaxXattrValue = 64 << 10 // XATTR_SIZE_MAX
	applyMaxID         = 1<<32 - 2
	// Device numbers as mknod(2) takes them (new_decode_dev): 12 bits
	// of major and 20 of minor. Larger ones would be cut silently.
	applyMaxMajor = 1<<12 - 1
	applyMaxMinor = 1<<20 - 1
)

// applyAufsPrefix marks aufs bookkeeping (".wh..wh.plnk" and the like),
// which old docker layers carry and nothing reads.
const applyAufsPrefix = ovl.WhiteoutPrefix + ovl.WhiteoutPrefix

// applyXattrPrefix is the PAX record prefix of extended attributes.
const applyXattrPrefix = "SCHILY.xattr."

// Reasons an entry is refused; Apply's errors name the entry before them.
var (
	errApplyEscape   = errors.New("path escapes the layer")
	errApplyAbsolute = errors.New("absolute path")
	errApplyNotDir   = errors.New("not a directory")
	errApplyWhiteout = errors.New("invalid whiteout")
)

// Apply extracts the OCI layer read from r into dir, an existing empty
// directory that becomes an upper (layer) directory in the union
// filesystem's format. r may be gzip- or zstd-compressed or a plain tar;
// it is read to its end.
//
// OCI whiteouts become the upper's: ".wh.NAME" a character device 0/0 at
// NAME (a ".wh.NAME" file where mknod is not allowed), and
// "DIR/.wh..wh..opq" the xattr trusted.overlay.opaque=y on DIR (else
// user.overlay.opaque=y, else the marker file). A whiteout applies only
// to the lowers (image-spec layer.md): the layer's own entry of the same
// name wins, in either order, and a directory of the layer over a
// whiteout of the layer becomes opaque. Implicit parents take the
// metadata of the merged lower view (ApplyOptions.Lowers).
//
// A name the layer gives twice takes the last entry, as docker and
// containerd apply it: an earlier entry of the layer is removed (with
// what it held, for a directory), unless both are directories, when the
// directory stays and takes the later entry's metadata. A directory that
// replaces another entry of the layer is opaque. A hard link is to what
// its target name holds when the link entry comes.
//
// Hostile input is refused with an error naming the entry: names that
// are absolute or escape with "..", entries beneath a non-directory of
// the layer, hard links to anything but an earlier non-directory entry,
// invalid whiteouts, absurd sizes and counts, and truncated streams. Every change is made relative to a directory fd of
// dir, through parents opened with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS), so nothing is written outside dir even where
// the checks on names would miss something. On error dir holds part of
// the layer: the caller removes it.
func Apply(ctx context.Context, dir string, r io.Reader, opts ApplyOptions) (res ApplyResult, err error) {
	x, err := newExtractor(dir, opts)
	if err != nil {
		return res, fmt.Errorf("apply layer: %w", err)
	}
	defer func() { err = errors.Join(err, x.close()) }()
	s, err := openExtractStream(r)
	if err != nil {
		return res, fmt.Errorf("apply layer: %w", err)
	}
	defer func() { err = errors.Join(err, s.close()) }()
	maxSize := cmp.Or(opts.MaxApparentSize, envMaxApparentSize(), DefaultMaxApparentSize)
	var apparent int64
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("apply layer: %w", err)
		}
		hdr, err := s.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("apply layer: %w", err)
		}
		if applyHasData(hdr) {
			apparent += hdr.Size // each at most extractMaxSize: no overflow
			if apparent > maxSize {
				return res, fmt.Errorf("apply layer: entry %q: the layer's files add up to %d bytes (holes of sparse files included), more than the limit of %d: %w (if the layer is genuine, raise the limit with %s=BYTES)",
					hdr.Name, apparent, maxSize, ErrApparentSize, MaxApparentSizeEnv)
			}
		}
		data, frags, sparse := s.data()
		if err := x.apply(hdr, applyData{data, frags, sparse}); err != nil {
			return res, fmt.Errorf("apply layer: entry %q: %w", hdr.Name, err)
		}
	}
	if err := s.finish(); err != nil {
		return res, fmt.Errorf("apply layer: %w", err)
	}
	if err := x.finishDirs(ctx); err != nil {
		return res, fmt.Errorf("apply layer: %w", err)
	}
	return ApplyResult{
		DiffID:      s.diffID(),
		Size:        s.tar.n,
		Digest:      s.blobDigest(),
		BlobSize:    s.blob.n,
		Compression: s.comp,
	}, nil
}

// applyHasData reports whether hdr is a file whose size counts.
func applyHasData(hdr *tar.Header) bool {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return true
	}
	return false
}

// applyData is the data of an entry: r's bytes, or for a sparse file
// the bytes of frags one after the other.
type applyData struct {
	r      io.Reader
	frags  []sparseFrag
	sparse bool
}

// What a name of the layer is, as far as the layer has written it.
type applyKind uint8

const (
	applyDir      applyKind = iota + 1
	applyNonDir             // regular file, symlink, device, fifo
	applySkipped            // an entry skipped by policy: nothing on disk
	applyWhiteout           // a whiteout of a lower's entry
)

// applyNode is the extractor's record of one name of the layer. The
// directory starts empty, so these records are all it holds; they decide
// what an entry may do, and the fd-relative calls enforce it.
type applyNode struct {
	kind applyKind
	// explicit: a directory named by an entry (else created as a parent).
	explicit bool
	// whiteoutFile: the whiteout is a ".wh." file, not a device 0/0.
	whiteoutFile bool
	// whiteoutSeen: the layer holds a whiteout entry of this name.
	whiteoutSeen bool
	// opaqueSeen: the layer holds this directory's opaque marker.
	opaqueSeen bool
	// opaque: the directory is marked opaque on disk.
	opaque bool
	// deleted: the layer whites out the lowers' entry of this directory
	// name; it is opaque, and an implicit one does not take the lowers'
	// metadata.
	deleted bool
	// meta of an explicit directory, set in the last pass.
	meta *applyMeta
}

// applyMeta is what an entry sets beside its contents.
type applyMeta struct {
	uid, gid     int
	mode         uint32 // permission and set-ID bits
	atime, mtime unix.Timespec
	times        bool // set atime and mtime
	xattrs       []applyXattr
}

type applyXattr struct {
	name  string
	value []byte
}

// extractor writes the entries of one layer into its directory.
type extractor struct {
	root    int // O_RDONLY|O_DIRECTORY fd of the layer directory
	dialect ovl.Dialect
	euid    int
	warn    func(string)
	nodes   map[string]*applyNode // by clean relative name; "" is the root
	buf     []byte                // copyData's, made on first use
	zero    []byte                // applyBlock zeros, likewise

	lowerDirs []string
	lower     *lowerView // the lowers' merged view, opened on first use
}

func newExtractor(dir string, opts ApplyOptions) (*extractor, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	empty, err := applyDirEmpty(fd)
	if err == nil && !empty {
		err = fmt.Errorf("%s is not empty", dir)
	}
	var d ovl.Dialect
	if err == nil {
		// Once for the layer: every whiteout and opaque mark of it
		// takes the same form.
		d, err = ovl.Probe(fd)
	}
	if err != nil {
		return nil, errors.Join(err, unix.Close(fd))
	}
	return &extractor{
		root:      fd,
		dialect:   d,
		euid:      os.Geteuid(),
		warn:      opts.Warn,
		nodes:     map[string]*applyNode{"": {kind: applyDir}},
		lowerDirs: opts.Lowers,
	}, nil
}

func applyDirEmpty(fd int) (bool, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	names, err := f.Readdirnames(1)
	if err == io.EOF {
		err = nil
	}
	return len(names) == 0, errors.Join(err, f.Close())
}

func (x *extractor) close() error {
	err := unix.Close(x.root)
	if x.lower != nil {
		x.lower.close()
	}
	return err
}

// warnf tells opts.Warn of something skipped in the entry name.
func (x *extractor) warnf(name, format string, args ...any) {
	if x.warn != nil {
		x.warn(fmt.Sprintf("apply layer: entry %q: ", name) + fmt.Sprintf(format, args...))
	}
}

// apply writes one entry; data is its contents.
func (x *extractor) apply(hdr *tar.Header, data applyData) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // archive-wide PAX defaults: nothing strata reads
	}
	name, err := applyCleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := applySplit(name)
	for _, c := range strings.Split(dir, "/") {
		switch {
		case strings.HasPrefix(c, applyAufsPrefix) && c != ovl.OpaqueMarker:
			x.warnf(hdr.Name, "aufs metadata skipped")
			return nil
		case strings.HasPrefix(c, ovl.WhiteoutPrefix):
			return fmt.Errorf("parent %q: %w", c, errApplyWhiteout)
		}
	}
	switch {
	case base == ovl.OpaqueMarker:
		return x.applyOpaque(dir)
	case strings.HasPrefix(base, applyAufsPrefix):
		x.warnf(hdr.Name, "aufs metadata skipped")
		return nil
	case strings.HasPrefix(base, ovl.WhiteoutPrefix):
		return x.applyWhiteout(dir, base[len(ovl.WhiteoutPrefix):])
	}
	return x.applyEntry(name, dir, base, hdr, data)
}

// applyCleanName returns the entry name raw relative to the layer root,
// clean, "" for the root itself. It is the first line of defence; the
// fd-relative calls are the real one.
func applyCleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New("empty name")
	case len(raw) > applyMaxPath:
		return "", fmt.Errorf("name longer than %d bytes", applyMaxPath)
	case strings.IndexByte(raw, 0) >= 0:
		return "", errors.New("NUL byte in name")
	case raw[0] == '/':
		return "", errApplyAbsolute
	}
	p := path.Clean(raw)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", errApplyEscape
	}
	if p == "." {
		return "", nil
	}
	for c := range strings.SplitSeq(p, "/") {
		if len(c) > applyMaxName {
			return "", fmt.Errorf("name component longer than %d bytes", applyMaxName)
		}
	}
	return p, nil
}

// applySplit splits a clean name into its parent ("" at the root) and
// last component.
func applySplit(name string) (dir, base string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

// applyShow names a clean name in messages.
func applyShow(name string) string {
	if name == "" {
		return "."
	}
	return name
}

// applyOpaque marks the directory dir opaque, for its marker entry. The
// marker hides the lowers only: entries of the layer in dir stay, in
// whatever order they come.
func (x *extractor) applyOpaque(dir string) error {
	fd, n, err := x.ensureDir(dir)
	if err != nil {
		return err
	}
	defer x.closeDir(fd)
	if n.opaqueSeen {
		return nil // given twice: once is enough
	}
	n.opaqueSeen = true
	return x.markOpaque(fd, n)
}

// applyWhiteout writes the whiteout of target in dir.
func (x *extractor) applyWhiteout(dir, target string) error {
	if target == "" || target == "." || target == ".." {
		named := "/" // of the layer root
		switch {
		case dir != "":
			named = dir + "/" + target
		case target != "":
			named = target
		}
		return fmt.Errorf("%w: it names %q", errApplyWhiteout, named)
	}
	rel := path.Join(dir, target)
	if n := x.nodes[rel]; n != nil {
		if n.whiteoutSeen {
			return nil // given twice: once is enough
		}
		n.whiteoutSeen = true
		if n.kind != applyDir {
			return nil // the layer's own entry wins
		}
		// The lowers' directory goes, the layer's stays: opaque.
		n.deleted = true
		fd, err := x.openDir(rel)
		if err != nil {
			return err
		}
		defer x.closeDir(fd)
		return x.markOpaque(fd, n)
	}
	pfd, _, err := x.ensureDir(dir)
	if err != nil {
		return err
	}
	defer x.closeDir(pfd)
	file, err := x.makeWhiteout(pfd, target)
	if err != nil {
		return err
	}
	x.nodes[rel] = &applyNode{kind: applyWhiteout, whiteoutSeen: true, whiteoutFile: file}
	return nil
}

// makeWhiteout creates a whiteout of name in the directory pfd in the
// layer's dialect: the kernel's, or the OCI file without CAP_MKNOD. It
// reports which.
func (x *extractor) makeWhiteout(pfd int, name string) (file bool, err error) {
	return !x.dialect.KernelWhiteouts, x.dialect.Whiteout(pfd, name)
}

// removeWhiteout removes the whiteout n of name from the directory pfd,
// for an entry of the layer that takes the name.
func (x *extractor) removeWhiteout(pfd int, name string, n *applyNode) error {
	victim := name
	if n.whiteoutFile {
		victim = ovl.WhiteoutPrefix + name
	}
	if err := unix.Unlinkat(pfd, victim, 0); err != nil {
		return fmt.Errorf("remove whiteout: %w", err)
	}
	return nil
}

// removeEntry removes the earlier entry n of the layer at name, named
// base in pfd, for a later entry of the same name: a directory with all
// it holds. The records of what it held go too, so that nothing (a hard
// link, an entry beneath) finds them.
func (x *extractor) removeEntry(pfd int, name, base string, n *applyNode) error {
	delete(x.nodes, name)
	switch n.kind {
	case applySkipped:
		return nil // nothing on disk
	case applyDir:
		if err := x.removeTree(pfd, base, name); err != nil {
			return fmt.Errorf("replace directory: %w", err)
		}
		return nil
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	return nil
}

// removeTree removes the directory base in pfd, the layer's rel, and
// everything beneath it, with the records of its entries. Only the
// layer's own entries are there, written by this extractor, so nothing
// else changes the tree meanwhile.
func (x *extractor) removeTree(pfd int, base, rel string) error {
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), base)
	defer d.Close()
	// All names first: removing while reading may skip some.
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, c := range names {
		crel := rel + "/" + c
		delete(x.nodes, crel)
		if w, ok := strings.CutPrefix(c, ovl.WhiteoutPrefix); ok {
			delete(x.nodes, rel+"/"+w) // a whiteout file's record
		}
		err := unix.Unlinkat(fd, c, 0)
		if errors.Is(err, unix.EISDIR) {
			err = x.removeTree(fd, c, crel)
		}
		if err != nil {
			return fmt.Errorf("remove %q: %w", crel, err)
		}
	}
	return unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
}

// markOpaque marks the directory fd, recorded as n, opaque in the
// layer's dialect: the kernel's xattr, else the userxattr one, else the
// OCI marker file.
func (x *extractor) markOpaque(fd int, n *applyNode) error {
	if n.opaque {
		return nil
	}
	if err := x.dialect.SetOpaque(fd); err != nil {
		return fmt.Errorf("mark opaque: %w", err)
	}
	n.opaque = true
	return nil
}

// applyNotAllowed reports an error of an xattr the filesystem or our
// privileges do not allow.
func applyNotAllowed(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES)
}

// openDir opens the directory rel of the layer (O_PATH). It cannot leave
// the layer: a symlink or ".." on the way fails. The caller uses
// closeDir.
func (x *extractor) openDir(rel string) (int, error) {
	if rel == "" {
		return x.root, nil
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 64 {
		fd, err := unix.Openat2(x.root, rel, &how)
		switch err {
		case nil:
			return fd, nil
		case unix.EINTR, unix.EAGAIN:
			continue // a concurrent rename somewhere on the filesystem
		case unix.ELOOP, unix.ENOTDIR:
			return -1, fmt.Errorf("parent %q: %w", rel, errApplyNotDir)
		case unix.EXDEV:
			return -1, fmt.Errorf("parent %q: %w", rel, errApplyEscape)
		}
		return -1, fmt.Errorf("open %q: %w", rel, err)
	}
	return -1, fmt.Errorf("open %q: %w", rel, unix.EAGAIN)
}

func (x *extractor) closeDir(fd int) {
	if fd >= 0 && fd != x.root {
		unix.Close(fd)
	}
}

// ensureDir opens the directory rel (O_PATH), creating the missing parts
// as implicit directories, and returns it with its record. The caller
// uses closeDir.
func (x *extractor) ensureDir(rel string) (int, *applyNode, error) {
	have, rest, n := "", rel, x.nodes[""]
	for rest != "" {
		c, r, _ := strings.Cut(rest, "/")
		p := path.Join(have, c)
		m := x.nodes[p]
		if m == nil || m.kind == applyWhiteout {
			break
		}
		if m.kind != applyDir {
			return -1, nil, fmt.Errorf("parent %q: %w", p, errApplyNotDir)
		}
		have, rest, n = p, r, m
	}
	fd, err := x.openDir(have)
	if err != nil {
		return -1, nil, err
	}
	for rest != "" {
		c, r, _ := strings.Cut(rest, "/")
		p := path.Join(have, c)
		nfd, m, err := x.mkdirImplicit(fd, p, c)
		x.closeDir(fd)
		if err != nil {
			return -1, nil, err
		}
		fd, have, rest, n = nfd, p, r, m
	}
	return fd, n, nil
}

// mkdirImplicit creates the implicit directory rel, named name in pfd,
// over a whiteout of the layer if there is one (which makes it opaque),
// and returns it open (O_PATH).
func (x *extractor) mkdirImplicit(pfd int, rel, name string) (int, *applyNode, error) {
	n := &applyNode{kind: applyDir}
	if old := x.nodes[rel]; old != nil {
		if err := x.removeWhiteout(pfd, name, old); err != nil {
			return -1, nil, fmt.Errorf("parent %q: %w", rel, err)
		}
		n.whiteoutSeen, n.deleted = true, true
	}
	// 0700 until the last pass: a parent's own mode must not stop the
	// entries beneath it.
	if err := unix.Mkdirat(pfd, name, 0o700); err != nil {
		return -1, nil, fmt.Errorf("parent %q: mkdir: %w", rel, err)
	}
	fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("parent %q: %w", rel, err)
	}
	x.nodes[rel] = n
	if n.deleted {
		if err := x.markOpaque(fd, n); err != nil {
			unix.Close(fd)
			return -1, nil, fmt.Errorf("parent %q: %w", rel, err)
		}
	}
	return fd, n, nil
}

// applyEntry writes an entry that is not a whiteout: name is its clean
// name, dir and base its parts.
func (x *extractor) applyEntry(name, dir, base string, hdr *tar.Header, data applyData) error {
	isDir := hdr.Typeflag == tar.TypeDir
	var m *applyMeta
	if hdr.Typeflag != tar.TypeLink { // a hard link shares its target's
		var err error
		if m, err = applyHeaderMeta(hdr); err != nil {
			return err
		}
	}
	old := x.nodes[name]
	if name == "" {
		if !isDir {
			return fmt.Errorf("the layer root: type %q: %w", hdr.Typeflag, errApplyNotDir)
		}
		old.explicit, old.meta = true, m // the last entry of the root wins
		return nil
	}
	if old != nil && old.kind == applyDir && isDir {
		// A directory again: it keeps what it holds and takes the
		// last entry's metadata.
		old.explicit, old.meta = true, m
		return nil
	}
	pfd, _, err := x.ensureDir(dir)
	if err != nil {
		return err
	}
	defer x.closeDir(pfd)
	n := &applyNode{kind: applyNonDir}
	// opaque: the lowers' entry of the name is gone, deleted by a
	// whiteout of the layer or hidden by the entry replaced.
	opaque := false
	if old != nil {
		if old.kind == applyWhiteout {
			err = x.removeWhiteout(pfd, base, old)
		} else {
			err = x.removeEntry(pfd, name, base, old)
		}
		if err != nil {
			return err
		}
		n.whiteoutSeen, opaque = old.whiteoutSeen, true
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.kind, n.explicit, n.meta = applyDir, true, m
		err = x.createDir(pfd, base, n, opaque)
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		err = x.createFile(pfd, base, hdr, data, m)
	case tar.TypeSymlink:
		err = x.createSymlink(pfd, base, hdr, m)
	case tar.TypeLink:
		var skipped bool
		skipped, err = x.createLink(pfd, base, hdr)
		if skipped {
			n.kind = applySkipped
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		var skipped bool
		skipped, err = x.createSpecial(pfd, base, hdr, m)
		if skipped {
			n.kind = applySkipped
		}
	default:
		return fmt.Errorf("unsupported entry type %q", hdr.Typeflag)
	}
	if err != nil {
		return err
	}
	x.nodes[name] = n
	return nil
}

// applyHeaderMeta reads and checks the metadata of hdr. The overlay's
// own xattrs are dropped: a layer does not get to set them, whiteouts and
// opaque markers are its only say.
func applyHeaderMeta(hdr *tar.Header) (*applyMeta, error) {
	if hdr.Uid < 0 || hdr.Uid > applyMaxID || hdr.Gid < 0 || hdr.Gid > applyMaxID {
		return nil, fmt.Errorf("owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	m := &applyMeta{
		uid:   hdr.Uid,
		gid:   hdr.Gid,
		mode:  uint32(hdr.Mode & 0o7777),
		mtime: applyTimespec(hdr.ModTime),
		times: true,
	}
	m.atime = m.mtime
	if !hdr.AccessTime.IsZero() {
		m.atime = applyTimespec(hdr.AccessTime)
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, applyXattrPrefix)
		if !ok || ovl.IsHiddenXattr(name) {
			continue
		}
		if name == "" || len(name) > applyMaxXattrName || strings.IndexByte(name, 0) >= 0 {
			return nil, fmt.Errorf("xattr %q: invalid name", name)
		}
		if len(v) > applyMaxXattrValue {
			return nil, fmt.Errorf("xattr %q: value of %d bytes, more than %d", name, len(v), applyMaxXattrValue)
		}
		m.xattrs = append(m.xattrs, applyXattr{name, []byte(v)})
	}
	slices.SortFunc(m.xattrs, func(a, b applyXattr) int { return strings.Compare(a.name, b.name) })
	return m, nil
}

func applyTimespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// setMeta gives the file fd (any kind of fd, O_PATH included) the owner,
// xattrs, mode and times of m, in that order: chown clears set-ID bits
// and security.capability, which the later steps bring back. name is for
// warnings.
func (x *extractor) setMeta(fd int, m *applyMeta, isLink bool, name string) error {
	err := unix.Fchownat(fd, "", m.uid, m.gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && !(errors.Is(err, unix.EPERM) && x.euid != 0) {
		return fmt.Errorf("chown %d:%d: %w", m.uid, m.gid, err)
	}
	p := ovl.ProcPath(fd)
	for _, xa := range m.xattrs {
		if err := unix.Setxattr(p, xa.name, xa.value, 0); err != nil {
			if applyNotAllowed(err) {
				x.warnf(name, "xattr %s skipped: %v", xa.name, err)
				continue
			}
			return fmt.Errorf("xattr %s: %w", xa.name, err)
		}
	}
	if !isLink {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, m.mode, 0); err != nil {
			return fmt.Errorf("chmod %#o: %w", m.mode, err)
		}
	}
	if m.times {
		ts := []unix.Timespec{m.atime, m.mtime}
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
	}
	return nil
}

// withNode runs fn on an O_PATH fd of the entry name in pfd, just
// created with type typ (S_IFMT bits).
func (x *extractor) withNode(pfd int, name string, typ uint32, fn func(fd int) error) error {
	fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != typ {
		return fmt.Errorf("type %#o after creating type %#o", st.Mode&unix.S_IFMT, typ)
	}
	return fn(fd)
}

// createDir creates the explicit directory base in pfd; its metadata
// waits for the last pass. opaque: it takes the place of a whiteout or
// another entry of the layer, so the lowers' directory is deleted.
func (x *extractor) createDir(pfd int, base string, n *applyNode, opaque bool) error {
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	if !opaque {
		return nil
	}
	n.deleted = true
	return x.withNode(pfd, base, unix.S_IFDIR, func(fd int) error { return x.markOpaque(fd, n) })
}

// createFile creates the regular file base in pfd with the entry's data.
func (x *extractor) createFile(pfd int, base string, hdr *tar.Header, data applyData, m *applyMeta) error {
	fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), base)
	if data.sparse {
		err = x.copySparse(f, hdr.Size, data)
	} else {
		err = x.copyData(f, hdr.Size, data.r)
	}
	if err == nil {
		err = x.setMeta(fd, m, false, hdr.Name)
	}
	return errors.Join(err, f.Close())
}

// copyData copies exactly size bytes of data to f. Blocks of zeros are
// left as holes: a sparse file in the tar stays sparse on disk, and a
// hostile one declaring a terabyte of holes costs time, not space.
func (x *extractor) copyData(f *os.File, size int64, data io.Reader) error {
	if err := x.copyAt(f, 0, size, data); err != nil {
		return err
	}
	// Holes at the end are not written: give the file its size.
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}

// copySparse writes the fragments of a sparse file at their offsets and
// gives f its size: the holes between are never read or written.
func (x *extractor) copySparse(f *os.File, size int64, data applyData) error {
	for _, fr := range data.frags {
		if err := x.copyAt(f, fr.off, fr.length, data.r); err != nil {
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}

// copyAt copies exactly size bytes of data to f at offset off, zero
// blocks left as holes.
func (x *extractor) copyAt(f *os.File, off, size int64, data io.Reader) error {
	if x.buf == nil && size > 0 {
		x.buf, x.zero = make([]byte, 128<<10), make([]byte, applyBlock)
	}
	for end := off + size; off < end; {
		b := x.buf[:min(int64(len(x.buf)), end-off)]
		n, rerr := io.ReadFull(data, b)
		if err := x.writeSparse(f, b[:n], off); err != nil {
			return err
		}
		off += int64(n)
		if rerr != nil {
			return extractDataErr(rerr)
		}
	}
	return nil
}

// applyBlock is the size of the holes copyData leaves.
const applyBlock = 4096

// writeSparse writes b at offset off of f, but for its blocks of zeros.
func (x *extractor) writeSparse(f *os.File, b []byte, off int64) error {
	zero := func(b []byte) bool { return bytes.Equal(b, x.zero[:len(b)]) }
	for len(b) > 0 {
		n := min(len(b), applyBlock)
		if zero(b[:n]) {
			b, off = b[n:], off+int64(n)
			continue
		}
		for n < len(b) {
			m := min(len(b)-n, applyBlock)
			if zero(b[n : n+m]) {
				break
			}
			n += m
		}
		if _, err := f.WriteAt(b[:n], off); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// createSymlink creates the symlink base in pfd. Its target is never
// followed, so it may point anywhere.
func (x *extractor) createSymlink(pfd int, base string, hdr *tar.Header, m *applyMeta) error {
	t := hdr.Linkname
	if t == "" || len(t) > applyMaxPath || strings.IndexByte(t, 0) >= 0 {
		return fmt.Errorf("symlink target %q: invalid", t)
	}
	if err := unix.Symlinkat(t, pfd, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	return x.withNode(pfd, base, unix.S_IFLNK, func(fd int) error { return x.setMeta(fd, m, true, hdr.Name) })
}

// createLink creates the hard link base in pfd to an earlier entry of
// the layer, which must be a non-directory. A link to an entry skipped
// by policy is skipped too.
func (x *extractor) createLink(pfd int, base string, hdr *tar.Header) (skipped bool, err error) {
	target, err := applyCleanName(hdr.Linkname)
	if err != nil {
		return false, fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	t := x.nodes[target]
	switch {
	case t == nil || t.kind == applyWhiteout:
		return false, fmt.Errorf("hard link to missing target %q", hdr.Linkname)
	case t.kind == applyDir:
		return false, fmt.Errorf("hard link to directory %q", hdr.Linkname)
	case t.kind == applySkipped:
		x.warnf(hdr.Name, "hard link to skipped entry %q skipped", hdr.Linkname)
		return true, nil
	}
	tdir, tbase := applySplit(target)
	tfd, err := x.openDir(tdir)
	if err != nil {
		return false, fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	defer x.closeDir(tfd)
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return false, fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	return false, nil
}

// createSpecial creates a device or fifo base in pfd. A device that we
// may not create (no CAP_MKNOD) is skipped with a warning.
func (x *extractor) createSpecial(pfd int, base string, hdr *tar.Header, m *applyMeta) (skipped bool, err error) {
	var typ uint32
	dev := 0
	switch hdr.Typeflag {
	case tar.TypeFifo:
		typ = unix.S_IFIFO
	case tar.TypeChar, tar.TypeBlock:
		typ = unix.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			typ = unix.S_IFBLK
		}
		if hdr.Devmajor < 0 || hdr.Devmajor > applyMaxMajor || hdr.Devminor < 0 || hdr.Devminor > applyMaxMinor {
			return false, fmt.Errorf("device %d:%d out of range", hdr.Devmajor, hdr.Devminor)
		}
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if typ == unix.S_IFCHR && dev == ovl.WhiteoutDev {
			x.warnf(hdr.Name, "character device 0/0 is a whiteout in the upper format")
		}
	}
	if err := unix.Mknodat(pfd, base, typ|0o600, dev); err != nil {
		if errors.Is(err, unix.EPERM) && typ != unix.S_IFIFO {
			x.warnf(hdr.Name, "device %d:%d skipped: %v", hdr.Devmajor, hdr.Devminor, err)
			return true, nil
		}
		return false, fmt.Errorf("mknod: %w", err)
	}
	return false, x.withNode(pfd, base, typ, func(fd int) error { return x.setMeta(fd, m, false, hdr.Name) })
}

// finishDirs sets the metadata of every directory, deepest first, once
// nothing more is created in them: an explicit one's from its entry, an
// implicit one's from the lowers' merged view, else mode 0755.
func (x *extractor) finishDirs(ctx context.Context) error {
	var dirs []string
	for name, n := range x.nodes {
		if n.kind == applyDir {
			dirs = append(dirs, name)
		}
	}
	depth := func(name string) int {
		if name == "" {
			return 0
		}
		return strings.Count(name, "/") + 1
	}
	slices.SortFunc(dirs, func(a, b string) int {
		return cmp.Or(cmp.Compare(depth(b), depth(a)), strings.Compare(a, b))
	})
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := x.finishDir(d, x.nodes[d]); err != nil {
			return fmt.Errorf("directory %q: %w", applyShow(d), err)
		}
	}
	return nil
}

func (x *extractor) finishDir(name string, n *applyNode) error {
	m := n.meta
	if m == nil && !n.deleted {
		var err error
		if m, err = x.lowerMeta(name); err != nil {
			return err
		}
	}
	if m == nil {
		m = &applyMeta{mode: 0o755} // root-owned, times of its making
	}
	fd, err := x.openDir(name)
	if err != nil {
		return err
	}
	defer x.closeDir(fd)
	return x.setMeta(fd, m, false, applyShow(name))
}

// lowerMeta returns the metadata of the directory rel in the lowers'
// merged view, as the overlay resolves it (whiteouts, opaque directories
// and redirects of the lowers count): nil where it is absent there or
// not a directory.
func (x *extractor) lowerMeta(rel string) (*applyMeta, error) {
	if len(x.lowerDirs) == 0 {
		return nil, nil
	}
	if x.lower == nil {
		v, err := openLowers(x.lowerDirs)
		if err != nil {
			return nil, err
		}
		x.lower = v
	}
	hits, err := x.lower.lookup(rel)
	if err != nil {
		return nil, fmt.Errorf("lower %q: %w", applyShow(rel), err)
	}
	defer x.lower.closeHits(hits)
	if len(hits) == 0 || !hits[0].isDir() {
		return nil, nil
	}
	h := hits[0]
	m := &applyMeta{
		uid:   int(h.st.Uid),
		gid:   int(h.st.Gid),
		mode:  h.st.Mode & 0o7777,
		atime: h.st.Atim,
		mtime: h.st.Mtim,
		times: true,
	}
	l := x.lowerDirs[h.layer]
	names, err := ovl.ListxattrFd(h.fd)
	if err != nil && !ovl.NoXattr(err) {
		return nil, fmt.Errorf("lower %s: %q: list xattrs: %w", l, applyShow(rel), err)
	}
	for _, xn := range names {
		if ovl.IsHiddenXattr(xn) {
			continue
		}
		v, err := ovl.GetxattrFd(h.fd, xn)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lower %s: %q: xattr %s: %w", l, applyShow(rel), xn, err)
		}
		m.xattrs = append(m.xattrs, applyXattr{xn, v})
	}
	slices.SortFunc(m.xattrs, func(a, b applyXattr) int { return strings.Compare(a.name, b.name) })
	return m, nil
}
