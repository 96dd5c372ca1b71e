package buildctx

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Magic numbers of the compressions ADD and a context tar may have, as
// docker's archive.DetectCompression (RFC 1952; bzip2's "BZh"; the xz
// file format 1.0.4 section 2.1.1.1; RFC 8878).
var (
	magicGzip  = []byte{0x1f, 0x8b, 0x08}
	magicBzip2 = []byte{0x42, 0x5a, 0x68}
	magicXz    = []byte{0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress returns the uncompressed stream of r: gzip, bzip2 and zstd
// in Go; xz through the xz program, as docker does, since neither the
// standard library nor klauspost/compress reads xz. Close waits for xz.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(len(magicXz))
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, fmt.Errorf("detect compression: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, magicBzip2):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(magic, magicZstd):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case bytes.HasPrefix(magic, magicXz):
		return xzReader(br)
	}
	return io.NopCloser(br), nil
}

type xzCmd struct {
	io.ReadCloser
	cmd *exec.Cmd
}

func (x *xzCmd) Close() error {
	// Closing the pipe first lets xz end (SIGPIPE) if we stopped early.
	err := x.ReadCloser.Close()
	if werr := x.cmd.Wait(); werr != nil && err == nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			err = werr
		}
	}
	return err
}

// xzLook finds the xz program.
func xzLook() (string, error) {
	p, err := exec.LookPath("xz")
	if err != nil {
		return "", errors.New("xz: this archive is xz-compressed and reading it needs the xz program (install xz-utils), or decompress it in the context first")
	}
	return p, nil
}

func xzReader(r io.Reader) (io.ReadCloser, error) {
	p, err := xzLook()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p, "-d", "-c", "-q")
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	return &xzCmd{ReadCloser: out, cmd: cmd}, nil
}

// isArchive reports whether r holds a tar (plain or compressed), which
// ADD extracts; anything else ADD copies as a file, as docker does.
func isArchive(r io.Reader) bool {
	d, err := decompress(r)
	if err != nil {
		return false
	}
	defer d.Close()
	_, err = tar.NewReader(d).Next()
	return err == nil
}
