//go:build linux

package layer

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// WriteOptions are the options of Write.
type WriteOptions struct {
	// Compression of the layer: Uncompressed, Gzip (the CLI's default)
	// or Zstd.
	Compression Compression
	// SourceDateEpoch, if non-nil, clamps every time later than it to it
	// (reproducible-builds.org, SOURCE_DATE_EPOCH).
	SourceDateEpoch *time.Time
	// Lowers are the layer directories beneath upper, top first (the
	// parent snapshot's layers). They are read where the upper refers to
	// them: a redirected directory (renamed through the mount), whose
	// contents are theirs, and a metacopy file (chmod, chown, utimes or
	// setxattr without a copy of the data), whose data is theirs. An
	// upper that refers to them fails to write without them.
	Lowers []string
}

// Compression settings, chosen with BenchmarkWrite's numbers (64 MiB of mixed
// data in the page cache, 2 vCPUs; MB/s of tar in, size out/in):
//
//	none                 ~680 MB/s (sha256 of the tar is most of it)
//	gzip BestSpeed       ~160-190 MB/s  0.424
//	gzip Default (= 5)   ~90-120 MB/s   0.403
//	zstd SpeedDefault    ~95-130 MB/s   0.401 (~92 MB/s on one goroutine)
//	zstd SpeedFastest    ~175-180 MB/s  0.414
//
// Writing a layer is on the user's path (every commit), so gzip, the
// compatible choice, uses BestSpeed: about 1.7 times as fast as the default
// level for output about 5% larger (about 13% on compressible data alone);
// zstd is the choice for small layers. zstd's stream is the same for any
// encoder concurrency (TestWriteZstdConcurrency), so it uses every CPU.
const (
	writeGzipLevel = gzip.BestSpeed
	writeZstdLevel = zstd.SpeedDefault
)

// Write encodes the changes held in the upper directory upper as an OCI
// layer tar (image-spec layer.md), compressed per opts, to w. It reads
// upper once and streams: the diff ID (sha256 of the tar), and the digest
// and size of the bytes written to w, are computed on the way.
//
// The tar is reproducible: the same changes, with the same metadata, give
// the same bytes, wherever and whenever they are written. So:
//   - Entries are depth-first, a directory's header before its contents;
//     in each directory the opaque marker ".wh..wh..opq" comes first (if
//     the directory is opaque), then the ".wh.<name>" whiteouts, then the
//     other entries, each group sorted by name bytes. Directories are
//     named "dir/"; the root is "./", first.
//   - Headers are PAX: mtimes keep their nanoseconds; atime and ctime,
//     which reads and copies change, are left out; user and group names
//     are left out (the numeric IDs are what the upper holds).
//   - A whiteout, of any dialect in the upper, is written as an empty
//     regular file ".wh.<name>", mode 0, owner 0:0, mtime 0 (1970), and so
//     is the opaque marker: a whiteout is a fact about a name, and a
//     layer applied and written again keeps its digest, which a whiteout
//     inode's own time (the moment of Apply) would change.
//   - opts.SourceDateEpoch clamps every other mtime.
//   - A file with several links in upper is written in full at the first
//     of its paths, and as hard links to that path at the others.
//   - xattrs are kept as "SCHILY.xattr.<name>" records, except the
//     overlay's own (ovl.IsHiddenXattr): a layer never carries a
//     redirect, metacopy, opaque or origin xattr.
//   - A directory with a redirect (a directory of the lowers renamed
//     through the mount) is written as OCI means it: opaque, with its
//     full merged contents, those of the lower directories at the
//     redirect (nested redirects and metacopy files of the lowers
//     followed) under the upper's own entries and whiteouts. The
//     whiteout at its old path is in the upper already. A lower file
//     with several names written there has its names outside that the
//     upper does not hold written too, as hard links (splitlinks.go).
//   - A metacopy file is written in full: the upper file's metadata
//     (mode, owner, mtime, xattrs) with the data of the first lower
//     file beneath it (at its redirect, if it has one) that is no
//     metacopy file.
//   - gzip carries no name or time in its header. (A compressed blob
//     still depends on the klauspost/compress version; the diff ID does
//     not.)
//
// Sockets are left out: a tar cannot hold them, and they are useless
// without the process that listened on them.
//
// A file that shrinks or is replaced while Write reads it makes Write fail:
// it never writes a tar whose headers disagree with its contents.
func Write(ctx context.Context, w io.Writer, upper string, opts WriteOptions) (Descriptor, error) {
	return writeLayer(ctx, w, upper, opts, writeTuning{
		gzipLevel: writeGzipLevel,
		zstdLevel: writeZstdLevel,
	})
}

// writeTuning holds the compressor settings, for the benchmark to vary.
type writeTuning struct {
	gzipLevel       int
	zstdLevel       zstd.EncoderLevel
	zstdConcurrency int // 0: GOMAXPROCS; the output is the same for any
}

// writeDigester passes writes on to w, hashing and counting them.
type writeDigester struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (d *writeDigester) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	return n, err
}

func (d *writeDigester) digest() digest.Digest { return digest.NewDigest(digest.SHA256, d.h) }

func writeLayer(ctx context.Context, w io.Writer, upper string, opts WriteOptions, tune writeTuning) (desc Descriptor, err error) {
	lowers, err := openLowers(opts.Lowers)
	if err != nil {
		return desc, fmt.Errorf("write layer %s: %w", upper, err)
	}
	defer lowers.close()
	out := &writeDigester{w: w, h: sha256.New()}
	diff := out // the tar, as it is before compression
	var comp io.WriteCloser
	switch opts.Compression {
	case Uncompressed:
	case Gzip:
		gz, err := gzip.NewWriterLevel(out, tune.gzipLevel)
		if err != nil {
			return desc, fmt.Errorf("write layer: %w", err)
		}
		comp = gz
	case Zstd:
		zw, err := zstd.NewWriter(out,
			zstd.WithEncoderLevel(tune.zstdLevel),
			zstd.WithEncoderConcurrency(tune.zstdConcurrency))
		if err != nil {
			return desc, fmt.Errorf("write layer: %w", err)
		}
		comp = zw
	default:
		return desc, fmt.Errorf("write layer: unknown compression %d", opts.Compression)
	}
	if comp != nil {
		diff = &writeDigester{w: comp, h: sha256.New()}
	}
	// tar writes headers in 512-byte blocks: gather them for the hashes
	// and the compressor. Large writes of file data pass straight through.
	bw := bufio.NewWriterSize(diff, 64<<10)
	lw := &writeWalker{
		ctx:    ctx,
		tw:     tar.NewWriter(bw),
		clamp:  opts.SourceDateEpoch,
		links:  make(map[writeInode]string),
		buf:    make([]byte, 128<<10),
		lowers: lowers,
	}
	err = lw.writeRoot(upper)
	if err == nil {
		err = lw.tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if comp != nil {
		// Always closed: the zstd encoder holds goroutines until then.
		err = errors.Join(err, comp.Close())
	}
	if err != nil {
		return desc, fmt.Errorf("write layer %s: %w", upper, err)
	}
	return Descriptor{
		MediaType:        opts.Compression.MediaType(),
		Digest:           out.digest(),
		Size:             out.n,
		DiffID:           diff.digest(),
		UncompressedSize: diff.n,
	}, nil
}

// writeInode identifies a file with several links.
type writeInode struct{ dev, ino uint64 }

// writeWalker writes the entries of an upper as tar.
type writeWalker struct {
	ctx   context.Context
	tw    *tar.Writer
	clamp *time.Time
	links map[writeInode]string // first path written of each multiply-linked inode
	buf   []byte
	// split holds, by the tar name of their directory, the names of
	// lower hard links split by a directory rename that the upper does
	// not hold (findSplitLinks), sorted.
	split map[string][]string

	lowers *lowerView
}

// writeAt is where a directory being written stands in the layers
// beneath the upper.
type writeAt struct {
	// lower is its path in the lower layers (redirects rewrite it);
	// lowerOK is false where the lowers hold nothing beneath it (an
	// opaque directory above).
	lower   string
	lowerOK bool
	// full: the directory is beneath a redirect, and written with its
	// merged contents, lowers' entries included.
	full bool
}

// beneath is where the entries of the directory d (nil for one only the
// lowers hold), standing at at, stand: nowhere in the lowers beneath an
// opaque one.
func (at writeAt) beneath(d *changedDir) writeAt {
	at.lowerOK = at.lowerOK && (d == nil || !d.opaque)
	return at
}

// errChangedDuringWrite reports an entry that changed while Write was reading it.
var errChangedDuringWrite = errors.New("changed while the layer was being written")

func (lw *writeWalker) writeRoot(upper string) error {
	fd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	// The root's own entry: a chmod, chown or xattr of "/" in the stack
	// is a change too, and the merged root is the upper's root.
	hdr := &tar.Header{
		Typeflag: tar.TypeDir,
		Name:     "./",
		Mode:     int64(st.Mode & 0o7777),
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  lw.time(st.Mtim),
		Format:   tar.FormatPAX,
	}
	if hdr.PAXRecords, _, err = writeXattrs(fd); err != nil {
		return fmt.Errorf("read xattrs of the root: %w", err)
	}
	if err := lw.findSplitLinks(fd); err != nil {
		return err
	}
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write the root: %w", err)
	}
	return lw.writeDir(fd, "", writeAt{lowerOK: true})
}

// writeDir writes the contents of the directory whose tar name is
// prefix ("" for the root, else "dir/"): the upper directory dfd
// (O_RDONLY; -1 for a directory that only the lowers hold, beneath a
// redirect), standing at at in the lowers.
func (lw *writeWalker) writeDir(dfd int, prefix string, at writeAt) error {
	var d *changedDir
	if dfd >= 0 {
		var err error
		if d, err = readChangedDir(dfd); err != nil {
			return fmt.Errorf("%s: %w", writeDisplay(prefix), err)
		}
	}
	inner := at.beneath(d)
	if at.full {
		// Opaque already (where the redirect started): the merged
		// contents, and no whiteouts, which hide nothing here.
		ents, dirs, err := lw.lowers.fullDir(dfd, d, inner)
		if err != nil {
			return fmt.Errorf("%s: %w", writeDisplay(prefix), err)
		}
		defer lw.lowers.closeHits(dirs)
		for _, e := range ents {
			if err := lw.writeEntry(e.dfd, prefix, e.changedEntry, e.upper, inner); err != nil {
				return err
			}
		}
		return nil
	}
	var entries []changedEntry
	if d != nil { // else a directory of the lowers, written for split links
		if d.opaque {
			if err := lw.writeWhiteout(prefix + ovl.OpaqueMarker); err != nil {
				return err
			}
		}
		for _, wh := range d.whiteouts {
			if err := lw.writeWhiteout(prefix + ovl.WhiteoutPrefix + wh.name); err != nil {
				return err
			}
		}
		entries = d.entries
	}
	// The upper's entries, and the names of split links that the upper
	// does not hold, in one order by name.
	split := lw.split[prefix]
	for len(entries) > 0 || len(split) > 0 {
		if len(split) == 0 || len(entries) > 0 && entries[0].name < split[0] {
			if err := lw.writeEntry(dfd, prefix, entries[0], true, inner); err != nil {
				return err
			}
			entries = entries[1:]
			continue
		}
		if err := lw.writeSplit(prefix, split[0], inner); err != nil {
			return err
		}
		split = split[1:]
	}
	return nil
}

// errNoLowers is an upper that refers to its lowers, written without them.
var errNoLowers = errors.New("the upper refers to its lower layers (a redirected directory or a metacopy file), and none were given")

// entryLower returns where the entry name of a directory standing at
// parent is in the lowers: beneath it, or at the redirect of fd (an
// upper directory or metacopy file). redirected reports a redirect.
func entryLower(fd int, name string, parent writeAt, upper bool) (at writeAt, redirected bool, err error) {
	if !upper {
		// lookup follows the lowers' own redirects
		return writeAt{lower: joinRel(parent.lower, name), lowerOK: parent.lowerOK, full: parent.full}, false, nil
	}
	v, ok, err := ovl.Redirect(fd)
	if err != nil {
		return at, false, err
	}
	return redirectAt(v, ok, name, parent)
}

// redirectAt is entryLower for an upper entry whose redirect xattr reads
// v (ok: it has one).
func redirectAt(v string, ok bool, name string, parent writeAt) (at writeAt, redirected bool, err error) {
	at = writeAt{lower: joinRel(parent.lower, name), lowerOK: parent.lowerOK, full: parent.full}
	if !ok {
		return at, false, nil
	}
	if v != "" && v[0] != '/' && !parent.lowerOK {
		// A name beside the entry, in a directory the lowers do not
		// hold: nothing to find.
		return writeAt{full: parent.full}, true, nil
	}
	to, err := ovl.ResolveRedirect([]byte(v), parent.lower)
	if err != nil {
		return at, false, err
	}
	return writeAt{lower: to, lowerOK: true, full: parent.full}, true, nil
}

func writeDisplay(prefix string) string {
	if prefix == "" {
		return "."
	}
	return prefix
}

func (lw *writeWalker) writeWhiteout(name string) error {
	return lw.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		ModTime:  time.Unix(0, 0).UTC(),
		Format:   tar.FormatPAX,
	})
}

func (lw *writeWalker) time(ts unix.Timespec) time.Time {
	t := time.Unix(ts.Sec, ts.Nsec).UTC()
	if lw.clamp != nil && t.After(*lw.clamp) {
		return lw.clamp.UTC()
	}
	return t
}

// writeEntry writes the entry e of the directory dfd, and, for a
// directory, what it holds. upper: dfd is an upper directory, else a
// lower one (beneath a redirect); parent is where dfd stands.
func (lw *writeWalker) writeEntry(dfd int, prefix string, e changedEntry, upper bool, parent writeAt) error {
	if err := lw.ctx.Err(); err != nil {
		return err
	}
	name := prefix + e.name
	typ := e.st.Mode & unix.S_IFMT
	if typ == unix.S_IFSOCK {
		return nil
	}
	// Opened for I/O where it is read, else O_PATH: opening a device or
	// a fifo for I/O would act on it. O_NONBLOCK: should a fifo have
	// taken the file's place, the open must not wait for a writer.
	flags := unix.O_PATH
	switch typ {
	case unix.S_IFREG:
		flags = unix.O_RDONLY | unix.O_NONBLOCK
	case unix.S_IFDIR:
		flags = unix.O_RDONLY | unix.O_DIRECTORY
	}
	fd, err := unix.Openat(dfd, e.name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Ino != e.st.Ino || st.Dev != e.st.Dev || st.Mode&unix.S_IFMT != typ {
		return fmt.Errorf("%s: %w", name, errChangedDuringWrite)
	}

	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: lw.time(st.Mtim),
		Format:  tar.FormatPAX,
	}
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		key := writeInode{dev: st.Dev, ino: st.Ino}
		if first, ok := lw.links[key]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			if err := lw.tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			return nil
		}
		lw.links[key] = name
	}
	var rec writeRecords
	if hdr.PAXRecords, rec, err = writeXattrs(fd); err != nil {
		return fmt.Errorf("read xattrs of %s: %w", name, err)
	}
	// Where the entry stands in the lowers; only an upper's own
	// redirect moves it (lookup follows the lowers' own).
	at := writeAt{lower: joinRel(parent.lower, e.name), lowerOK: parent.lowerOK, full: parent.full}
	redirected := false
	if upper && rec.redirect && (typ == unix.S_IFREG || typ == unix.S_IFDIR) {
		if at, redirected, err = entryLower(fd, e.name, parent, upper); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	data := fd // where a regular file's data is
	if typ == unix.S_IFREG && rec.metacopy {
		// A metacopy file of the upper or (beneath a redirect) of a
		// lower: lookup at its path reaches the data beneath it.
		dataFd, err := lw.openData(at)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer unix.Close(dataFd)
		data = dataFd
	}
	if typ == unix.S_IFDIR && redirected && len(lw.lowers.roots) == 0 {
		return fmt.Errorf("%s: %w", name, errNoLowers)
	}

	switch typ {
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		if hdr.Linkname, err = writeReadlink(fd); err != nil {
			return fmt.Errorf("read link %s: %w", name, err)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if typ == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return fmt.Errorf("%s: unknown file type %#o", name, typ)
	}
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	switch typ {
	case unix.S_IFREG:
		return lw.writeData(data, name, st.Size)
	case unix.S_IFDIR:
		if redirected && !parent.full {
			// Where the redirect starts: nothing of a lower directory
			// at the new name shows through.
			if err := lw.writeWhiteout(hdr.Name + ovl.OpaqueMarker); err != nil {
				return err
			}
			at.full = true
		}
		if !upper {
			fd = -1 // its contents are the lowers' at at
		}
		return lw.writeDir(fd, hdr.Name, at)
	}
	return nil
}

// openData opens, for reading, the data of a metacopy file standing at
// at in the lowers: the first regular file beneath it that is no
// metacopy file.
func (lw *writeWalker) openData(at writeAt) (int, error) {
	if len(lw.lowers.roots) == 0 {
		return -1, errNoLowers
	}
	if !at.lowerOK {
		return -1, errNoLowerData
	}
	hits, err := lw.lowers.lookup(at.lower)
	if err != nil {
		return -1, err
	}
	defer lw.lowers.closeHits(hits)
	h, err := dataHit(hits)
	if err != nil {
		return -1, err
	}
	// Reopened through the magic link, which resolves to the file
	// itself; checked to be the file found.
	fd, err := unix.Open(ovl.ProcPath(h.fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open lower data: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != h.st.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("lower data: %w", errChangedDuringWrite)
	}
	return fd, nil
}

// writeData copies exactly size bytes of the file fd to the tar: the
// size its header announced. A file that has grown since is cut there; one
// that has shrunk is an error, as no bytes would be right to pad it with.
func (lw *writeWalker) writeData(fd int, name string, size int64) error {
	for size > 0 {
		if err := lw.ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Read(fd, lw.buf[:min(int64(len(lw.buf)), size)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if n == 0 {
			return fmt.Errorf("read %s: %w: %d bytes short", name, errChangedDuringWrite, size)
		}
		if _, err := lw.tw.Write(lw.buf[:n]); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		size -= int64(n)
	}
	return nil
}

// writeRecords are the overlay records an entry carries that Write
// resolves.
type writeRecords struct{ redirect, metacopy bool }

// writeXattrs returns the PAX records of the xattrs of fd (O_PATH or
// not), less the overlay's own, and which of those refer to the lowers.
func writeXattrs(fd int) (map[string]string, writeRecords, error) {
	var rec writeRecords
	names, err := ovl.ListxattrFd(fd)
	if ovl.NoXattr(err) {
		return nil, rec, nil
	}
	if err != nil {
		return nil, rec, err
	}
	var recs map[string]string
	for _, n := range names {
		switch n {
		case ovl.XattrRedirect, ovl.XattrUserRedirect:
			rec.redirect = true
		case ovl.XattrMetacopy, ovl.XattrUserMetacopy:
			rec.metacopy = true
		}
		if ovl.IsHiddenXattr(n) {
			continue
		}
		v, err := ovl.GetxattrFd(fd, n)
		if err == unix.ENODATA {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, rec, fmt.Errorf("%s: %w", n, err)
		}
		if recs == nil {
			recs = make(map[string]string)
		}
		recs["SCHILY.xattr."+n] = string(v)
	}
	return recs, rec, nil
}

// writeReadlink reads the target of the symlink fd (O_PATH|O_NOFOLLOW).
func writeReadlink(fd int) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}
