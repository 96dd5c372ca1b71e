package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// DownloadsDir is the directory of the store where blobs being
// downloaded are kept, so that ApplyFileFrom can move them into blobs/
// without a copy, and a broken download can resume.
func (s *Store) DownloadsDir() string { return filepath.Join(s.root, downloadsDir) }

const downloadsDir = "downloads"

// ApplyFileFrom is Apply of the layer blob kept in the file at path, a
// file under DownloadsDir that the caller has verified and synced, read
// from r (nil: the file at path). r may read the file as another
// goroutine writes it: the layer is published only once r has returned
// io.EOF, and nothing is if r fails. On success the file becomes the
// stored blob (moved, never copied), or is left in place when that blob
// is kept already; the caller removes what is left. On error the file is
// left as it was.
func (s *Store) ApplyFileFrom(ctx context.Context, path string, r io.Reader, parent string, opts ApplyOptions) (Info, error) {
	if rel, err := filepath.Rel(s.DownloadsDir(), path); err != nil || rel != filepath.Base(path) {
		return Info{}, errorf(ErrInvalid, "apply layer: %s is not in %s", path, s.DownloadsDir())
	}
	if info, found, err := s.beforeApply(ctx, parent, opts); err != nil || found {
		return info, err
	}
	if r == nil {
		f, err := os.Open(path)
		if err != nil {
			return Info{}, fmt.Errorf("apply layer: %w", err)
		}
		defer f.Close()
		r = f
	}
	o, err := s.beginOp("apply")
	if err != nil {
		return Info{}, fmt.Errorf("apply layer: %w", err)
	}
	info, err := s.extract(ctx, o, r, func() error { return nil }, path, parent, opts)
	return info, errors.Join(err, o.end())
}
