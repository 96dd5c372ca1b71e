package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/image/oci"
	"github.com/strata-fs/strata/image/remote"
	"github.com/strata-fs/strata/internal/iox"
)

// downloadRetries is how many times a blob download broken off by the
// network is resumed, with a range request, within one pull.
const downloadRetries = 3

// A download is a blob being written into the store's downloads
// directory, locked against other processes until released. It can be
// read while it grows (reader): what is read is verified at the end, as
// the reader returns EOF only once the whole blob has its digest, and
// the download's error otherwise.
type download struct {
	path string
	f    *os.File

	mu   sync.Mutex
	cond *sync.Cond
	size int64 // bytes in the file
	done bool
	err  error // when done: nil for a verified blob
	// applying is set once the layer is being applied from the reader.
	applying bool
	// cancel stops the transfer (an apply that failed needs no more).
	cancel context.CancelFunc
}

func newDownload(path string, f *os.File) *download {
	d := &download{path: path, f: f}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *download) grew(n int64) {
	d.mu.Lock()
	d.size = n
	d.mu.Unlock()
	d.cond.Broadcast()
}

func (d *download) finish(err error) {
	d.mu.Lock()
	d.done, d.err = true, err
	d.mu.Unlock()
	d.cond.Broadcast()
}

// wait waits for the download to end and returns its error.
func (d *download) wait() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for !d.done {
		d.cond.Wait()
	}
	return d.err
}

// reader reads the blob from its start as it is written.
func (d *download) reader() io.Reader { return &follower{d: d} }

type follower struct {
	d   *download
	off int64
}

func (r *follower) Read(p []byte) (int, error) {
	d := r.d
	d.mu.Lock()
	for r.off >= d.size && !d.done {
		d.cond.Wait()
	}
	size, done, err := d.size, d.done, d.err
	d.mu.Unlock()
	if r.off >= size {
		if done && err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > size-r.off {
		p = p[:size-r.off]
	}
	n, rerr := d.f.ReadAt(p, r.off)
	r.off += int64(n)
	if rerr == io.EOF {
		rerr = nil // more may come: the size said so
	}
	return n, rerr
}

// release unlocks the download. Of a verified blob it removes what is
// left of the file (nothing, when ApplyFileFrom moved it into the blobs);
// a broken-off download stays, for the next pull to resume.
func (d *download) release() {
	d.mu.Lock()
	ok := d.done && d.err == nil
	d.mu.Unlock()
	if fi, err := os.Lstat(d.path); ok && err == nil {
		if own, err := d.f.Stat(); err == nil && os.SameFile(fi, own) {
			os.Remove(d.path)
		}
	}
	d.f.Close()
}

// fetch starts the download of blob d of repo into the downloads
// directory, resuming what an earlier pull left there with a range
// request. Processes pulling the same blob take turns by an flock on
// the file: the second finds the layer stored. skip, asked once the
// lock is held, returns true when the blob is no longer needed (another
// process stored it meanwhile): fetch returns nil, nil then. Otherwise
// the caller runs fill, which finishes the download; progress is told
// the bytes held so far.
func (s *Store) fetch(ctx context.Context, d v1.Descriptor, skip func() bool, waiting func()) (*download, error) {
	dir := s.snaps.DownloadsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, d.Digest.Encoded())
	f, err := lockDownload(ctx, path, waiting)
	if err != nil {
		return nil, err
	}
	if skip() {
		// Another process stored it: what this one may have created, an
		// empty file, goes.
		if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
			os.Remove(path)
		}
		f.Close()
		return nil, nil
	}
	return newDownload(path, f), nil
}

// run completes the download: see fill. A corrupt blob is removed.
func (dl *download) run(ctx context.Context, repo *remote.Repository, d v1.Descriptor, progress func(int64)) error {
	err := fill(ctx, repo, d, dl, func(n int64) { dl.grew(n); progress(n) })
	if errors.Is(err, oci.ErrDigestMismatch) || errors.Is(err, oci.ErrSizeMismatch) {
		// Nothing of a corrupt blob is kept.
		os.Remove(dl.path)
	}
	// The lock guards the transfer only: held while the layer waits for
	// its parent, it could close a cycle with a pull in another process
	// that holds this image's other blobs. The verified file stays open
	// for reading; a second process finds it complete and verifies it.
	unix.Flock(int(dl.f.Fd()), unix.LOCK_UN)
	dl.finish(err)
	return err
}

// lockDownload opens path, creating it, and takes its lock; a file
// moved away while waiting (into the blobs) is opened anew.
func lockDownload(ctx context.Context, path string, waiting func()) (*os.File, error) {
	told := false
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err != syscall.EWOULDBLOCK {
				break
			}
			if !told {
				waiting()
				told = true
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		fi, err1 := os.Lstat(path)
		own, err2 := f.Stat()
		if err1 == nil && err2 == nil && os.SameFile(fi, own) {
			return f, nil
		}
		f.Close()
	}
}

// fill completes the file of dl as the blob d: it hashes what the file
// holds, asks for the rest, retries a broken transfer from where it
// stopped, and verifies the whole against d's digest and size.
func fill(ctx context.Context, repo *remote.Repository, d v1.Descriptor, dl *download, progress func(int64)) error {
	f := dl.f
	h := d.Digest.Algorithm().Hash()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	have := fi.Size()
	if have > d.Size {
		have = 0
	}
	if have > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, have)); err != nil {
			return err
		}
	}
	if err := f.Truncate(have); err != nil {
		return err
	}
	progress(have)
	var netErr error
	for attempt := 0; have < d.Size && attempt <= downloadRetries; attempt++ {
		if attempt > 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rc, ranged, err := repo.Blob(ctx, d, have)
		if err != nil {
			if errors.Is(err, remote.ErrNotFound) || ctx.Err() != nil {
				return err
			}
			var ae *remote.AuthError
			if errors.As(err, &ae) {
				return err
			}
			netErr = err
			continue
		}
		if !ranged && have > 0 {
			// The registry sent it all again: skip what the file holds
			// (a reader may have it already); the digest at the end
			// covers the file as a whole.
			if _, err := io.CopyN(io.Discard, rc, have); err != nil {
				rc.Close()
				netErr = err
				continue
			}
		}
		w := &iox.CountingWriter{W: io.MultiWriter(h, f), N: have, Progress: progress}
		if _, err := f.Seek(have, io.SeekStart); err != nil {
			rc.Close()
			return err
		}
		// One byte more than wanted shows a blob that is too long.
		_, err = io.Copy(w, io.LimitReader(rc, d.Size-have+1))
		rc.Close()
		have = w.N
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) && pe.Op == "write" {
				if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
					return fmt.Errorf("blob %s: %w: free some space under the store, then pull again: the download resumes at byte %d", d.Digest, err, have)
				}
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			netErr = err
			continue
		}
		if have < d.Size {
			netErr = io.ErrUnexpectedEOF
		}
	}
	switch {
	case have > d.Size:
		return fmt.Errorf("blob %s: the registry sent more than its %d bytes: %w; nothing was stored", d.Digest, d.Size, oci.ErrSizeMismatch)
	case have < d.Size:
		return fmt.Errorf("blob %s: download broken off at %d of %d bytes (%v); run the pull again to resume", d.Digest, have, d.Size, netErr)
	}
	if got := h.Sum(nil); fmt.Sprintf("%x", got) != d.Digest.Encoded() {
		return fmt.Errorf("blob %s from %s: the content has digest %s:%x: %w: the registry sent corrupt data; nothing was stored", d.Digest, repo.Name, d.Digest.Algorithm(), got, oci.ErrDigestMismatch)
	}
	return f.Sync()
}

// dropDownloads removes the downloads that no pull is working on (the
// broken-off ones a later pull would resume) and returns their size.
func (s *Store) dropDownloads() (int64, error) {
	dir := s.snaps.DownloadsDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, ent := range ents {
		p := filepath.Join(dir, ent.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if fi, err := f.Stat(); err == nil && os.Remove(p) == nil {
				freed += fi.Size()
			}
		}
		f.Close()
	}
	return freed, nil
}
