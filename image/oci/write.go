package oci

import (
	"archive/tar"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// tempPrefix starts the names of files being written in a layout; they
// are renamed into place when complete, and WriteArchive leaves them out.
const tempPrefix = ".tmp-"

// LayoutWriter writes an OCI image layout directory (image-spec
// image-layout.md), adding to an existing one. Blobs are written whole
// or not at all (temporary file, then rename); index.json is written by
// Close. Its methods may be called concurrently.
type LayoutWriter struct {
	root *os.Root

	mu     sync.Mutex
	index  v1.Index
	closed bool
}

// NewLayout opens the layout in dir, creating dir, its oci-layout file
// and blobs/sha256 as needed, and reads its index.json, if any, to add
// to it.
func NewLayout(dir string) (_ *LayoutWriter, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create layout: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open layout: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("layout %q: %w", dir, err), root.Close())
		}
	}()
	w := &LayoutWriter{
		root: root,
		index: v1.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: v1.MediaTypeImageIndex,
			Manifests: []v1.Descriptor{},
		},
	}
	b, err := readSmallFile(root, v1.ImageLayoutFile, layoutFileMaxSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b, err := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
		if err != nil {
			return nil, err
		}
		if err := w.writeFile(v1.ImageLayoutFile, b); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		var l v1.ImageLayout
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("%s: %w", v1.ImageLayoutFile, err)
		}
		if l.Version != v1.ImageLayoutVersion {
			return nil, fmt.Errorf("%s: imageLayoutVersion %q, want %q", v1.ImageLayoutFile, l.Version, v1.ImageLayoutVersion)
		}
	}
	if err := root.MkdirAll(v1.ImageBlobsDir+"/"+digest.SHA256.String(), 0o755); err != nil {
		return nil, err
	}
	b, err = readSmallFile(root, v1.ImageIndexFile, metaMaxSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		index, err := parseIndex(b, "")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v1.ImageIndexFile, err)
		}
		if index.MediaType == "" {
			index.MediaType = v1.MediaTypeImageIndex
		}
		if index.Manifests == nil {
			index.Manifests = []v1.Descriptor{}
		}
		w.index = index
	}
	return w, nil
}

// readSmallFile reads the file name in root, refusing one larger than
// limit.
func readSmallFile(root *os.Root, name string, limit int64) ([]byte, error) {
	f, _, err := openRegular(root, name)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s: more than the %d bytes allowed", name, limit)
	}
	return b, errors.Join(err, f.Close())
}

// WriteBlob writes the blob d describes, read from r, as
// blobs/<alg>/<hex>. The content is verified while it is written (size,
// then digest) and renamed into place only if it matches. If the blob is
// already there with d's size, r is not read.
func (w *LayoutWriter) WriteBlob(d v1.Descriptor, r io.Reader) error {
	if err := w.checkOpen(); err != nil {
		return err
	}
	name, err := blobPath(d)
	if err != nil {
		return fmt.Errorf("write blob: %w", err)
	}
	if fi, err := w.root.Stat(name); err == nil && fi.Mode().IsRegular() && fi.Size() == d.Size {
		return nil
	}
	dir := path.Dir(name)
	if err := w.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write blob %s: %w", d.Digest, err)
	}
	err = w.writeAtomic(dir, name, func(f io.Writer) error {
		v := newVerifiedReader(io.NopCloser(r), d, "")
		_, err := io.Copy(f, v)
		return err
	})
	if err != nil {
		return fmt.Errorf("write blob %s: %w", d.Digest, err)
	}
	return nil
}

// AddManifest adds d, the descriptor of a manifest or index whose blob
// is in the layout, to index.json, with the annotation
// org.opencontainers.image.ref.name=refName; an entry with the same ref
// name is replaced. With refName "", d is added unnamed (once).
func (w *LayoutWriter) AddManifest(d v1.Descriptor, refName string) error {
	if err := checkDescriptor(d); err != nil {
		return fmt.Errorf("add manifest: %w", err)
	}
	if !isManifestType(d.MediaType) && !isIndexType(d.MediaType) {
		return fmt.Errorf("add manifest %s: media type %q is not a manifest or an index", d.Digest, d.MediaType)
	}
	if refName != "" && !validRefName(refName) {
		return fmt.Errorf("add manifest %s: invalid ref name %q (image-spec image-layout.md: components of [A-Za-z0-9] joined by one of -._:@+ or --, separated by /)", d.Digest, refName)
	}
	name, _ := blobPath(d)
	fi, err := w.root.Stat(name)
	if err != nil {
		return fmt.Errorf("add manifest %s: %w", d.Digest, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != d.Size {
		return fmt.Errorf("add manifest %s: %w: blob has %d bytes, descriptor says %d", d.Digest, ErrSizeMismatch, fi.Size(), d.Size)
	}
	annotations := make(map[string]string, len(d.Annotations)+1)
	for k, v := range d.Annotations {
		annotations[k] = v
	}
	delete(annotations, v1.AnnotationRefName)
	if refName != "" {
		annotations[v1.AnnotationRefName] = refName
	}
	if len(annotations) == 0 {
		annotations = nil
	}
	d.Annotations = annotations

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("add manifest %s: %w", d.Digest, fs.ErrClosed)
	}
	w.index.Manifests = slices.DeleteFunc(w.index.Manifests, func(m v1.Descriptor) bool {
		ref := m.Annotations[v1.AnnotationRefName]
		if refName == "" {
			return ref == "" && m.Digest == d.Digest
		}
		return ref == refName
	})
	w.index.Manifests = append(w.index.Manifests, d)
	return nil
}

// Close writes index.json (temporary file, then rename) and releases the
// layout.
func (w *LayoutWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	b, err := json.Marshal(w.index)
	if err == nil {
		err = w.writeFile(v1.ImageIndexFile, b)
	}
	if err != nil {
		err = fmt.Errorf("write %s: %w", v1.ImageIndexFile, err)
	}
	return errors.Join(err, w.root.Close())
}

func (w *LayoutWriter) checkOpen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fs.ErrClosed
	}
	return nil
}

// writeFile writes b as the file name at the top of the layout.
func (w *LayoutWriter) writeFile(name string, b []byte) error {
	return w.writeAtomic(".", name, func(f io.Writer) error {
		_, err := f.Write(b)
		return err
	})
}

// writeAtomic writes the file name through a temporary file in dir (the
// same directory), synced, then renamed into place, so that name is
// either absent or complete; the rename is synced too.
func (w *LayoutWriter) writeAtomic(dir, name string, write func(io.Writer) error) (err error) {
	tmp := path.Join(dir, tempPrefix+rand.Text())
	f, err := w.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, removeTempIn(w.root, tmp))
		}
	}()
	if err := write(f); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := f.Sync(); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := w.root.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(w.root, dir)
}

func removeTempIn(root *os.Root, name string) error {
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// syncDir makes the entries of dir durable.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// validRefName reports whether s is a ref name as image-layout.md
// defines it:
//
//	ref       ::= component ("/" component)*
//	component ::= alphanum (separator alphanum)*
//	alphanum  ::= [A-Za-z0-9]+
//	separator ::= [-._:@+] | "--"
func validRefName(s string) bool {
	for _, c := range strings.Split(s, "/") {
		if c == "" {
			return false
		}
		prevSep := true // a component starts with alphanum
		for i := 0; i < len(c); i++ {
			switch b := c[i]; {
			case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
				prevSep = false
			case strings.IndexByte("-._:@+", b) >= 0:
				if prevSep {
					return false
				}
				if b == '-' && i+1 < len(c) && c[i+1] == '-' {
					i++ // "--" is one separator
				}
				prevSep = true
			default:
				return false
			}
		}
		if prevSep {
			return false
		}
	}
	return true
}

// WriteArchive writes the layout in dir to w as an OCI archive: a tar of
// oci-layout, index.json and the blobs. The tar is reproducible: entries
// sorted by name, PAX headers, owner 0:0 with no names, modes 0755 and
// 0644, times 1970-01-01. Each blob's digest is checked on the way;
// files being written (".tmp-*") are left out, and anything else that is
// not part of a layout is an error.
func WriteArchive(dir string, w io.Writer) (err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("archive layout: %w", err)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("archive layout %q: %w", dir, err)
		}
		err = errors.Join(err, root.Close())
	}()
	for _, name := range []string{v1.ImageLayoutFile, v1.ImageIndexFile} {
		if _, err := root.Stat(name); err != nil {
			return fmt.Errorf("not an OCI layout: %w", err)
		}
	}
	tw := tar.NewWriter(w)
	fsys := root.FS()
	// ReadDir sorts by name, and "blobs/" < "index.json" < "oci-layout".
	if err := writeArchiveDir(tw, v1.ImageBlobsDir); err != nil {
		return err
	}
	algs, err := fs.ReadDir(fsys, v1.ImageBlobsDir)
	if err != nil {
		return err
	}
	for _, a := range algs {
		if strings.HasPrefix(a.Name(), tempPrefix) {
			continue
		}
		alg := digest.Algorithm(a.Name())
		if !a.IsDir() || !alg.Available() {
			return fmt.Errorf("%s/%s: not a digest algorithm's directory", v1.ImageBlobsDir, a.Name())
		}
		adir := v1.ImageBlobsDir + "/" + a.Name()
		if err := writeArchiveDir(tw, adir); err != nil {
			return err
		}
		blobs, err := fs.ReadDir(fsys, adir)
		if err != nil {
			return err
		}
		for _, b := range blobs {
			if strings.HasPrefix(b.Name(), tempPrefix) {
				continue
			}
			d := digest.NewDigestFromEncoded(alg, b.Name())
			if err := d.Validate(); err != nil {
				return fmt.Errorf("%s/%s: not a blob: %w", adir, b.Name(), err)
			}
			if err := writeArchiveFile(tw, root, adir+"/"+b.Name(), d); err != nil {
				return err
			}
		}
	}
	for _, name := range []string{v1.ImageIndexFile, v1.ImageLayoutFile} {
		if err := writeArchiveFile(tw, root, name, ""); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeArchiveDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir,
		Name:     name + "/",
		Mode:     0o755,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	})
}

// writeArchiveFile writes the file name of root to tw, checking that its
// content has digest d unless d is "".
func writeArchiveFile(tw *tar.Writer, root *os.Root, name string, d digest.Digest) (err error) {
	f, fi, err := openRegular(root, name)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	err = tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     fi.Size(),
		Mode:     0o644,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	})
	if err != nil {
		return err
	}
	var r io.Reader = f
	if d != "" {
		r = newVerifiedReader(io.NopCloser(f), v1.Descriptor{Digest: d, Size: fi.Size()}, name)
	}
	// Reading to EOF verifies the digest; the size is the header's.
	_, err = io.Copy(tw, r)
	return err
}
