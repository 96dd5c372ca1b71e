//go:build linux

package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Sparse files in a tar (GNU's formats: the old GNU header, and the PAX
// ones 0.0, 0.1 and 1.0, see GNU tar's manual, "Storing Sparse Files").
//
// archive/tar reads a sparse entry as its whole apparent size, holes
// filled with zeros, and keeps the sparse map to itself: a 3 KiB tar of a
// 1 TiB sparse file costs a minute and a half of CPU to read through it.
// So the map is read here, from the raw header blocks archive/tar read
// for the entry, and the data fragments are read from the stream beneath
// archive/tar and written at their offsets; the holes are never walked.
// archive/tar then skips the entry's data by seeking extractHashReader,
// which answers from what was read here already (its credit).

// sparseFrag is a data fragment of a sparse file: length bytes at off.
type sparseFrag struct{ off, length int64 }

// extractMaxRecord bounds the raw header bytes kept for one entry:
// archive/tar bounds each extended header and sparse map to 1 MiB.
const extractMaxRecord = 8 << 20

// Offsets in a tar header block (POSIX ustar, and GNU's sparse fields).
const (
	tarBlock         = 512
	tarSizeOff       = 124
	tarTypeOff       = 156
	gnuSparseOff     = 386 // 4 entries of offset and length, 12 bytes each
	gnuIsExtended    = 482
	gnuExtIsExtended = 504 // 21 entries in an extension block
)

// isSparseHeader reports whether archive/tar reads hdr as a sparse file
// (the tests of its reader's handleSparseFile).
func isSparseHeader(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	major, minor := hdr.PAXRecords["GNU.sparse.major"], hdr.PAXRecords["GNU.sparse.minor"]
	switch {
	case major == "0" && (minor == "0" || minor == "1"), major == "1" && minor == "0":
		return true
	case major != "" || minor != "":
		return false // an unknown version: archive/tar reads it as a plain file
	}
	return hdr.PAXRecords["GNU.sparse.map"] != ""
}

// parseSparse returns the data fragments of the sparse entry hdr and the
// bytes of data the tar holds for them. raw is what archive/tar read for
// the header, starting at offset start of the tar.
func parseSparse(hdr *tar.Header, raw []byte, start int64) ([]sparseFrag, error) {
	// The header blocks start on a block boundary: skip the padding of
	// the entry before.
	if pad := (tarBlock - start%tarBlock) % tarBlock; pad <= int64(len(raw)) {
		raw = raw[pad:]
	} else {
		raw = nil
	}
	// The extended headers (PAX, GNU long names) come first.
	for {
		if len(raw) < tarBlock {
			return nil, errors.New("sparse file: header not found")
		}
		typ := raw[tarTypeOff]
		if typ != tar.TypeXHeader && typ != tar.TypeGNULongName && typ != tar.TypeGNULongLink {
			break
		}
		n, err := tarNumber(raw[tarSizeOff : tarSizeOff+12])
		if err != nil {
			return nil, fmt.Errorf("sparse file: extended header size: %w", err)
		}
		if n < 0 || n > extractMaxRecord {
			return nil, fmt.Errorf("sparse file: extended header of %d bytes, out of range", n)
		}
		skip := 1 + (n+tarBlock-1)/tarBlock
		if skip > int64(len(raw)/tarBlock) {
			return nil, errors.New("sparse file: extended header cut short")
		}
		raw = raw[skip*tarBlock:]
	}
	blk, rest := raw[:tarBlock], raw[tarBlock:]
	physical, err := tarNumber(blk[tarSizeOff : tarSizeOff+12])
	if err != nil {
		return nil, fmt.Errorf("sparse file: size: %w", err)
	}
	if s, ok := hdr.PAXRecords["size"]; ok {
		if physical, err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, fmt.Errorf("sparse file: size %q: %w", s, err)
		}
	}
	var frags []sparseFrag
	switch {
	case hdr.Typeflag == tar.TypeGNUSparse:
		frags, err = parseOldGNUSparse(blk, rest)
	case hdr.PAXRecords["GNU.sparse.major"] == "1":
		// 1.0: the map opens the entry's data, in whole blocks.
		frags, err = parseSparseText(rest)
		physical -= int64(len(rest))
	default:
		frags, err = parseSparse0x(hdr.PAXRecords)
	}
	if err != nil {
		return nil, fmt.Errorf("sparse file: map: %w", err)
	}
	var sum, end int64
	for _, f := range frags {
		if f.off < end || f.length < 0 || f.off > hdr.Size-f.length {
			return nil, fmt.Errorf("sparse file: fragment of %d bytes at %d out of order or past the size %d", f.length, f.off, hdr.Size)
		}
		end = f.off + f.length
		sum += f.length
	}
	if sum != physical {
		return nil, fmt.Errorf("sparse file: the map holds %d bytes of data, the entry %d", sum, physical)
	}
	return frags, nil
}

// parseOldGNUSparse reads the map of an old GNU sparse header blk, and
// of the extension blocks in rest.
func parseOldGNUSparse(blk, rest []byte) ([]sparseFrag, error) {
	var frags []sparseFrag
	entries, ext, n := blk[gnuSparseOff:gnuIsExtended], blk[gnuIsExtended], 4
	for {
		for i := range n {
			e := entries[i*24 : i*24+24]
			if e[0] == 0 {
				break // as GNU tar and archive/tar end a list
			}
			off, err1 := tarNumber(e[:12])
			length, err2 := tarNumber(e[12:])
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
			frags = append(frags, sparseFrag{off, length})
		}
		if ext == 0 {
			break
		}
		if len(rest) < tarBlock {
			return nil, errors.New("extension block missing")
		}
		entries, ext, n, rest = rest[:gnuExtIsExtended], rest[gnuExtIsExtended], 21, rest[tarBlock:]
	}
	if len(rest) != 0 {
		return nil, errors.New("stray blocks after the map")
	}
	return frags, nil
}

// parseSparseText reads a 1.0 map: newline-ended decimal numbers, the
// count of fragments then each one's offset and length.
func parseSparseText(b []byte) ([]sparseFrag, error) {
	next := func() (int64, error) {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return 0, errors.New("cut short")
		}
		v, err := strconv.ParseInt(string(b[:i]), 10, 64)
		b = b[i+1:]
		return v, err
	}
	n, err := next()
	if err != nil || n < 0 || n > int64(len(b)) {
		return nil, fmt.Errorf("bad fragment count: %v", err)
	}
	frags := make([]sparseFrag, 0, n)
	for range n {
		off, err1 := next()
		length, err2 := next()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		frags = append(frags, sparseFrag{off, length})
	}
	return frags, nil
}

// parseSparse0x reads a 0.0 or 0.1 map from the PAX records (archive/tar
// gives 0.0's offset and numbytes records as a 0.1 map).
func parseSparse0x(recs map[string]string) ([]sparseFrag, error) {
	var fields []string
	if m := recs["GNU.sparse.map"]; m != "" {
		fields = strings.Split(m, ",")
	}
	if len(fields)%2 != 0 {
		return nil, errors.New("odd number of fields")
	}
	frags := make([]sparseFrag, 0, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		off, err1 := strconv.ParseInt(fields[i], 10, 64)
		length, err2 := strconv.ParseInt(fields[i+1], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		frags = append(frags, sparseFrag{off, length})
	}
	return frags, nil
}

// tarNumber parses a numeric header field: octal, or GNU's base-256 when
// the high bit of the first byte is set (negative numbers are refused).
func tarNumber(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 {
			return 0, errors.New("negative number")
		}
		var v int64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if v > (1<<63-1)>>8 {
				return 0, errors.New("number out of range")
			}
			v = v<<8 | int64(c)
		}
		return v, nil
	}
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, nil
	}
	if s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("number %q: a sign is not octal", s)
	}
	return strconv.ParseInt(s, 8, 64)
}

// sparseReader reads the data fragments of the current sparse entry from
// the tar stream beneath archive/tar, crediting the stream with what it
// read so that archive/tar's skip of the entry does not read it again.
type sparseReader struct {
	s *extractHashReader
	// left is the stream's count of the entry's data bytes not read yet,
	// shared by every reader of the entry.
	left *int64
}

func (r *sparseReader) Read(p []byte) (int, error) {
	if *r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > *r.left {
		p = p[:*r.left]
	}
	n, err := r.s.read(p)
	*r.left -= int64(n)
	r.s.credit += int64(n)
	if err == io.EOF && *r.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
