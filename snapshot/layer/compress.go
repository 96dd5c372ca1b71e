//go:build linux

package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Magic numbers of the compressions a layer may have (RFC 1952 section
// 2.3.1; RFC 8878 section 3.1.1).
var (
	extractMagicGzip = []byte{0x1f, 0x8b}
	extractMagicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Decompress detects the compression of r by its magic bytes (gzip 1f 8b,
// zstd 28 b5 2f fd, else plain tar) and returns a reader of the
// uncompressed tar. Closing it does not close r.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(len(extractMagicZstd))
	if err != nil && err != io.EOF {
		return nil, Uncompressed, fmt.Errorf("detect compression: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, extractMagicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, Gzip, fmt.Errorf("gzip: %w", err)
		}
		return zr, Gzip, nil
	case bytes.HasPrefix(magic, extractMagicZstd):
		// One decoder goroutine-free stream: a layer is read once, in
		// order, and nothing must outlive an early return.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, Zstd, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), Zstd, nil
	}
	return io.NopCloser(br), Uncompressed, nil
}

// DiffID reads a layer (any compression) to its end and returns the
// digest and size of the uncompressed tar, without extracting; it
// validates that the stream is a complete tar (clear error for a
// truncated one).
func DiffID(r io.Reader) (digest.Digest, int64, error) {
	s, err := openExtractStream(r)
	if err != nil {
		return "", 0, fmt.Errorf("layer diff id: %w", err)
	}
	for {
		_, err := s.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, errors.Join(fmt.Errorf("layer diff id: %w", err), s.close())
		}
	}
	if err := s.finish(); err != nil {
		return "", 0, fmt.Errorf("layer diff id: %w", err)
	}
	return s.diffID(), s.tar.n, nil
}

// Limits of the tar stream itself; apply.go has those of its entries.
const (
	// extractMaxEntries bounds the headers of one layer.
	extractMaxEntries = 1 << 22
	// extractMaxSize bounds the size of one entry (1 TiB).
	extractMaxSize = 1 << 40
	// extractMaxTrailing bounds the data after the end of the archive:
	// writers pad to a record (10 KiB by default), and an unbounded
	// tail would be a free decompression bomb.
	extractMaxTrailing = 1 << 20
)

// extractEndSize is the end-of-archive marker: two zero blocks.
const extractEndSize = 2 * 512

// extractStream reads the tar of a layer and checks its structure,
// hashing both the blob as given and the uncompressed tar.
type extractStream struct {
	blob extractHashReader // r as given
	dec  io.ReadCloser     // decompressed blob
	tar  extractHashReader // dec, as the tar reader reads it
	tr   *tar.Reader
	comp Compression

	maxEntries int // extractMaxEntries; tests lower it
	entries    int
	last       string // name of the last header read, for messages
	mark       int64  // tar.n once the last entry's data was read
	closed     bool

	// The last entry is a sparse file (sparse.go): frags are its data
	// fragments, read beneath archive/tar.
	sparse bool
	frags  []sparseFrag
	// sparseLeft is how much of the sparse entry's data is not read yet.
	sparseLeft int64
}

func openExtractStream(r io.Reader) (*extractStream, error) {
	s := &extractStream{
		blob:       extractHashReader{r: r, h: sha256.New()},
		maxEntries: extractMaxEntries,
	}
	dec, comp, err := Decompress(&s.blob)
	if err != nil {
		return nil, err
	}
	s.dec, s.comp = dec, comp
	s.tar = extractHashReader{r: dec, h: sha256.New(), keepTail: true}
	s.tr = tar.NewReader(&s.tar)
	return s, nil
}

// where names the position of the last header, for messages.
func (s *extractStream) where() string {
	if s.entries == 0 {
		return "before the first entry"
	}
	return fmt.Sprintf("after entry %q", s.last)
}

// next returns the next header, io.EOF at a complete end of archive. The
// data of the previous entry that was not read is read and discarded
// first.
func (s *extractStream) next() (*tar.Header, error) {
	// A sparse file's data is not read through archive/tar, which would
	// walk its holes: its Next seeks over it.
	if s.entries > 0 && !s.sparse {
		if _, err := io.Copy(io.Discard, s.tr); err != nil {
			return nil, fmt.Errorf("entry %q: %w", s.last, extractDataErr(err))
		}
	}
	if s.sparse && s.sparseLeft > 0 {
		// Data of a sparse entry that was not read (a skipped entry, or
		// one the caller stopped reading) is read beneath archive/tar
		// too, so that the stream's credit is the entry's whole data and
		// the next header is recorded from its first byte.
		if _, err := io.Copy(io.Discard, &sparseReader{s: &s.tar, left: &s.sparseLeft}); err != nil {
			return nil, fmt.Errorf("entry %q: %w", s.last, extractDataErr(err))
		}
	}
	s.sparse, s.frags, s.sparseLeft = false, nil, 0
	s.mark = s.tar.n
	s.tar.record(true)
	hdr, err := s.tr.Next()
	s.tar.record(false)
	switch {
	case err == io.EOF:
		// archive/tar also reports io.EOF when the stream stops on a
		// block boundary, or after one zero block: only two zero blocks
		// read after the last entry's data and padding (less than a
		// block) end an archive.
		if s.tar.n-s.mark < extractEndSize || !s.tar.tailZero() {
			return nil, fmt.Errorf("truncated tar %s: %w", s.where(), io.ErrUnexpectedEOF)
		}
		return nil, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("truncated tar %s: %w", s.where(), err)
	case err != nil:
		return nil, fmt.Errorf("tar header %s: %w", s.where(), err)
	}
	s.entries++
	s.last = hdr.Name
	if s.entries > s.maxEntries {
		return nil, fmt.Errorf("entry %q: more than %d entries in the layer", hdr.Name, s.maxEntries)
	}
	if hdr.Size < 0 || hdr.Size > extractMaxSize {
		return nil, fmt.Errorf("entry %q: size %d out of range (at most %d)", hdr.Name, hdr.Size, int64(extractMaxSize))
	}
	if isSparseHeader(hdr) {
		if s.tar.recOver {
			return nil, fmt.Errorf("entry %q: sparse file: headers of more than %d bytes", hdr.Name, extractMaxRecord)
		}
		frags, err := parseSparse(hdr, s.tar.rec, s.tar.recStart)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		s.sparse, s.frags = true, frags
		for _, f := range frags {
			s.sparseLeft += f.length
		}
	}
	return hdr, nil
}

// data returns the reader of the last entry's data and, for a sparse
// file, its fragments (sparse is set even when there are none): the
// reader then gives the fragments' bytes one after the other.
func (s *extractStream) data() (r io.Reader, frags []sparseFrag, sparse bool) {
	if !s.sparse {
		return s.tr, nil, false
	}
	return &sparseReader{s: &s.tar, left: &s.sparseLeft}, s.frags, true
}

// extractDataErr names a short read of entry data as a truncation.
func extractDataErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("truncated data: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// finish reads what follows the end of the archive, so that the digests
// cover the whole blob, and releases the decompressor.
func (s *extractStream) finish() error {
	n, err := io.Copy(io.Discard, io.LimitReader(&s.tar, extractMaxTrailing+1))
	if err == nil && n > extractMaxTrailing {
		err = fmt.Errorf("more than %d bytes after the end of the tar", extractMaxTrailing)
	}
	if err == nil {
		// Whatever the decompressor left unread is part of the blob
		// too.
		_, err = io.Copy(io.Discard, &s.blob)
	}
	if err != nil {
		err = fmt.Errorf("read after the end of the tar: %w", err)
	}
	return errors.Join(err, s.close())
}

func (s *extractStream) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.dec.Close()
}

// diffID is the digest of the uncompressed tar read so far.
func (s *extractStream) diffID() digest.Digest {
	return digest.NewDigest(digest.SHA256, s.tar.h)
}

// blobDigest is the digest of the blob read so far.
func (s *extractStream) blobDigest() digest.Digest {
	return digest.NewDigest(digest.SHA256, s.blob.h)
}

// extractHashReader hashes and counts what is read through it, and
// keeps the last extractEndSize bytes when keepTail is set.
//
// Beneath archive/tar it also keeps the raw header bytes of an entry
// (record), and answers archive/tar's skip of a sparse entry's data
// (Seek, then a Read of the last byte) from its credit: the bytes of the
// entry that sparseReader read already.
type extractHashReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	keepTail bool
	tail     []byte

	credit    int64
	recording bool
	recOver   bool   // rec would have grown past extractMaxRecord
	rec       []byte // read while recording, since the last Seek
	recStart  int64  // n where rec starts
}

// record starts (clearing what was kept) or stops keeping what is read.
func (c *extractHashReader) record(on bool) {
	c.recording = on
	if on {
		c.rec, c.recOver, c.recStart = c.rec[:0], false, c.n
	}
}

// Read reads the credit first (zeros: archive/tar reads to discard).
func (c *extractHashReader) Read(p []byte) (int, error) {
	if c.credit > 0 {
		n := int(min(int64(len(p)), c.credit))
		clear(p[:n])
		c.credit -= int64(n)
		return n, nil
	}
	return c.read(p)
}

// read reads from r, hashing.
func (c *extractHashReader) read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		if c.keepTail {
			c.addTail(p[:n])
		}
		if c.recording {
			if len(c.rec)+n > extractMaxRecord {
				c.recOver = true
			} else {
				c.rec = append(c.rec, p[:n]...)
			}
		}
	}
	return n, err
}

// Seek skips forward from the current position only: archive/tar skips
// entry data so. The credit goes first, the rest is read and hashed.
func (c *extractHashReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || off < 0 {
		return 0, errors.New("extract stream: only forward seeks")
	}
	skip := min(off, c.credit)
	c.credit -= skip
	if rest := off - skip; rest > 0 {
		_, err := io.CopyN(io.Discard, readerFunc(c.read), rest)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return c.n - c.credit, err
		}
	}
	if c.recording {
		c.record(true) // what follows is the padding and the next header
	}
	return c.n - c.credit, nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func (c *extractHashReader) addTail(b []byte) {
	if len(b) >= extractEndSize {
		c.tail = append(c.tail[:0], b[len(b)-extractEndSize:]...)
		return
	}
	if over := len(c.tail) + len(b) - extractEndSize; over > 0 {
		c.tail = c.tail[:copy(c.tail, c.tail[over:])]
	}
	c.tail = append(c.tail, b...)
}

// tailZero reports whether the last extractEndSize bytes read are zeros.
func (c *extractHashReader) tailZero() bool {
	if len(c.tail) < extractEndSize {
		return false
	}
	for _, b := range c.tail {
		if b != 0 {
			return false
		}
	}
	return true
}
