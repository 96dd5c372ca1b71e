package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image/oci"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/image/remote"
	"github.com/strata-fs/strata/snapshot"
)

// LayerState is where one layer of a pull or push stands, in docker's
// words.
type LayerState int

const (
	Waiting LayerState = iota
	Downloading
	Verifying
	DownloadComplete
	Extracting
	PullComplete
	AlreadyExists
	Preparing
	Pushing
	Pushed
	Mounted
	LayerExists // push: the registry has it
	Loading     // import: the layer is read into the store
	Loaded
	Exporting // export: the layer is written out
	Exported
	Committing // commit: the layer's tar is written
	Committed
)

func (s LayerState) String() string {
	return [...]string{"Waiting", "Downloading", "Verifying", "Download complete", "Extracting", "Pull complete",
		"Already exists", "Preparing", "Pushing", "Pushed", "Mounted from", "Layer already exists",
		"Loading layer", "Loaded", "Exporting", "Exported", "Committing", "Committed"}[s]
}

// Done reports whether the layer needs nothing more.
func (s LayerState) Done() bool {
	switch s {
	case PullComplete, AlreadyExists, Pushed, Mounted, LayerExists, Loaded, Exported, Committed:
		return true
	}
	return false
}

// LayerProgress is one report of a pull or push: layer Index of Count.
type LayerProgress struct {
	Index, Count int
	Digest       digest.Digest
	State        LayerState
	Done, Total  int64  // bytes
	From         string // Mounted: the repository
}

// PullOptions tune Pull.
type PullOptions struct {
	// Platform picks the image of a multi-platform index (nil: the host's).
	Platform *v1.Platform
	// MaxConcurrent bounds the layers downloading at once (0: 3).
	MaxConcurrent int
	// Progress, if set, is told of every layer's progress, from one
	// goroutine at a time.
	Progress func(LayerProgress)
	// Warn is told of entries skipped while applying layers.
	Warn func(string)
}

// PullResult describes a pulled image.
type PullResult struct {
	Image
	Ref reference.Reference
	// Digest is what the registry names the image by: its index's
	// digest for a multi-platform image, else its manifest's.
	Digest          digest.Digest
	Applied, Reused int
}

// Pull pulls ref (a tag or a digest) from repo into the store and tags
// it with ref (by tag only; a digest reference sets no tag, as docker
// does). Only layers not stored are downloaded: at most
// opts.MaxConcurrent at once, each applied as soon as its parent is,
// each verified against its digest before use. A download broken off
// stays in the store's downloads directory and resumes on the next
// pull. On error no image is recorded and the layers this pull applied
// are removed.
func (s *Store) Pull(ctx context.Context, repo *remote.Repository, ref reference.Reference, opts PullOptions) (res PullResult, err error) {
	res.Ref = ref
	want := ref.Tag
	if ref.Digest != "" {
		want = ref.Digest.String()
	}
	desc, mb, err := repo.Manifest(ctx, want)
	if err != nil {
		return res, err
	}
	res.Digest = desc.Digest
	platform := oci.HostPlatform()
	if opts.Platform != nil {
		platform = *opts.Platform
	}
	for depth := 0; oci.IsIndexType(desc.MediaType); depth++ {
		if depth == 8 {
			return res, fmt.Errorf("%s: indexes nested more than 8 deep", ref)
		}
		idx, err := oci.ParseIndex(mb, desc.MediaType)
		if err != nil {
			return res, fmt.Errorf("%s: index %s: %w", ref, desc.Digest, err)
		}
		i, err := oci.SelectPlatform(idx.Manifests, platform)
		if err != nil {
			return res, fmt.Errorf("%s: %w (choose one with --platform)", ref, err)
		}
		if desc, mb, err = repo.Manifest(ctx, idx.Manifests[i].Digest.String()); err != nil {
			return res, err
		}
		if desc.MediaType == "" {
			desc.MediaType = idx.Manifests[i].MediaType
		}
	}
	if !oci.IsManifestType(desc.MediaType) {
		return res, fmt.Errorf("%s: %s is a %q, not an image", ref, desc.Digest, desc.MediaType)
	}
	man, err := oci.ParseManifest(mb, desc.MediaType)
	if err != nil {
		return res, fmt.Errorf("%s: manifest %s: %w", ref, desc.Digest, err)
	}
	if man.Config.Size > configMaxSize {
		return res, fmt.Errorf("%s: config %s is %d bytes, more than %d", ref, man.Config.Digest, man.Config.Size, configMaxSize)
	}
	cb, err := s.fetchSmall(ctx, repo, man.Config)
	if err != nil {
		return res, err
	}
	cfg, err := oci.ParseConfig(cb, len(man.Layers))
	if err != nil {
		return res, fmt.Errorf("%s: config %s: %w", ref, man.Config.Digest, err)
	}
	if cfg.OS != "" && opts.Platform != nil && cfg.OS != platform.OS {
		return res, fmt.Errorf("%s: the image is for %s, not %s", ref, cfg.OS, platform.OS)
	}
	var tags []reference.Reference
	if ref.Digest == "" {
		tags = []reference.Reference{ref}
	}
	im := pulled{name: ref.Name(), man: man, manBytes: mb, manDigest: desc.Digest, config: cfg, configBytes: cb, configDigest: man.Config.Digest}
	res.Image, res.Applied, res.Reused, err = s.pullLayers(ctx, repo, im, tags, opts)
	return res, err
}

// configMaxSize bounds an image config read into memory.
const configMaxSize = 16 << 20

type pulled struct {
	name         string // the repository, for the repo digest
	man          v1.Manifest
	manBytes     []byte
	manDigest    digest.Digest
	config       v1.Image
	configBytes  []byte
	configDigest digest.Digest
}

// fetchSmall reads the blob d (a config) into memory, verified.
func (s *Store) fetchSmall(ctx context.Context, repo *remote.Repository, d v1.Descriptor) ([]byte, error) {
	rc, _, err := repo.Blob(ctx, d, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", repo.Name, d.Digest, err)
	}
	if int64(len(b)) != d.Size || digest.FromBytes(b) != d.Digest {
		return nil, fmt.Errorf("%s: blob %s: the registry sent %d bytes of digest %s: %w: it sent corrupt data; nothing was stored", repo.Name, d.Digest, len(b), digest.FromBytes(b), oci.ErrDigestMismatch)
	}
	return b, nil
}

// pullLayers downloads and applies the layers of im that the store
// lacks, then records im.
func (s *Store) pullLayers(ctx context.Context, repo *remote.Repository, im pulled, tags []reference.Reference, opts PullOptions) (_ Image, applied, reused int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lease, err := s.snaps.BeginLease()
	if err != nil {
		return Image{}, 0, 0, err
	}
	var created []string
	defer func() {
		err = errors.Join(err, lease.End())
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				_, _ = s.snaps.RemoveIf(context.Background(), created[i], func(tx *snapshot.Tx) (bool, error) {
					return s.layerNeeded(tx, created[i])
				})
			}
		}
	}()
	layers := im.man.Layers
	n := len(layers)
	var mu sync.Mutex // serializes Progress
	report := func(p LayerProgress) {
		if opts.Progress == nil {
			return
		}
		p.Count = n
		mu.Lock()
		defer mu.Unlock()
		opts.Progress(p)
	}
	chains := make([]string, n)
	for i := range layers {
		parent := ""
		if i > 0 {
			parent = chains[i-1]
		}
		chains[i] = chainAfter(parent, im.config.RootFS.DiffIDs[i])
	}
	// stored tells whether layer i is in the store, with its blob (a
	// layer stored from another compression of it still needs this one,
	// so that a push gives back these digests).
	stored := func(i int) bool {
		if _, err := s.snaps.Stat(ctx, chains[i]); err != nil {
			return false
		}
		p, _ := s.snaps.BlobPath(layers[i].Digest)
		return exists(p)
	}
	// blobKept tells whether the blob of layer i is in the store (for
	// another chain, or from an earlier layer of this image): it is
	// applied from there, not downloaded.
	blobKept := func(i int) bool {
		p, _ := s.snaps.BlobPath(layers[i].Digest)
		return exists(p)
	}
	type result struct {
		dl  *download // nil: the layer is stored, or its blob is
		err error
	}
	ready := make([]chan result, n)
	max := opts.MaxConcurrent
	if max <= 0 {
		max = 3
	}
	sem := make(chan struct{}, max)
	var wg sync.WaitGroup
	first := map[digest.Digest]int{} // the first layer of each blob
	for i, d := range layers {
		ready[i] = make(chan result, 1)
		if _, dup := first[d.Digest]; dup || stored(i) || blobKept(i) {
			// A blob given twice is downloaded once: by the time its
			// second layer is applied, the first has put it in the store.
			ready[i] <- result{}
			continue
		}
		first[d.Digest] = i
		report(LayerProgress{Index: i, Digest: d.Digest, State: Waiting, Total: d.Size})
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ready[i] <- result{err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			dl, err := s.fetch(ctx, d,
				func() bool { return stored(i) || blobKept(i) },
				func() { report(LayerProgress{Index: i, Digest: d.Digest, State: Waiting, Total: d.Size}) })
			if err != nil || dl == nil {
				if err != nil {
					err = fmt.Errorf("layer %d of %d (%s): %w", i+1, n, d.Digest, err)
				}
				ready[i] <- result{err: err}
				return
			}
			// The layer may be applied as it comes, once its parent is.
			dctx, cancel := context.WithCancel(ctx)
			defer cancel()
			dl.cancel = cancel
			ready[i] <- result{dl: dl}
			err = dl.run(dctx, repo, d, func(done int64) {
				st := Downloading
				if done == d.Size {
					st = Verifying // the digest of what came
				}
				report(LayerProgress{Index: i, Digest: d.Digest, State: st, Done: done, Total: d.Size})
			})
			if err == nil {
				st := DownloadComplete
				dl.mu.Lock()
				if dl.applying {
					st = Extracting
				}
				dl.mu.Unlock()
				report(LayerProgress{Index: i, Digest: d.Digest, State: st, Done: d.Size, Total: d.Size})
			}
		}()
	}
	var held []*download // released once the image is recorded
	defer func() {
		cancel()
		wg.Wait()
		for _, c := range ready {
			select {
			case r := <-c:
				if r.dl != nil {
					r.dl.release()
				}
			default:
			}
		}
		for _, dl := range held {
			dl.release()
		}
	}()
	var extra []blobFile
	parent := ""
	for i, d := range layers {
		r := <-ready[i]
		if r.err != nil {
			return Image{}, applied, reused, r.err
		}
		diffID := im.config.RootFS.DiffIDs[i]
		_, statErr := s.snaps.Stat(ctx, chains[i])
		layerErr := func(err error) error {
			if errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "free some space") {
				err = fmt.Errorf("%w: free some space under the store, then pull again: what was downloaded is kept, and the download resumes", err)
			}
			return fmt.Errorf("layer %d of %d (%s): %w", i+1, n, d.Digest, err)
		}
		var info snapshot.Info
		switch {
		case statErr == nil:
			// Stored already, or by another process meanwhile.
			if r.dl != nil {
				if err := r.dl.wait(); err != nil {
					r.dl.release()
					return Image{}, applied, reused, layerErr(err)
				}
			}
			info, err = s.snaps.Apply(ctx, eofReader{}, parent, snapshot.ApplyOptions{DiffID: diffID, Lease: lease})
			if err != nil {
				if r.dl != nil {
					r.dl.release()
				}
				return Image{}, applied, reused, layerErr(err)
			}
			reused++
			if r.dl != nil && !blobKept(i) {
				// The layer is stored from another blob: keep this one too,
				// so that a push gives back these digests.
				extra = append(extra, blobFile{r.dl.path, d.Digest})
				held = append(held, r.dl)
			} else if r.dl != nil {
				r.dl.release()
			}
			report(LayerProgress{Index: i, Digest: d.Digest, State: AlreadyExists, Total: d.Size})
		case r.dl != nil:
			r.dl.mu.Lock()
			r.dl.applying = true
			downloaded := r.dl.done
			r.dl.mu.Unlock()
			if downloaded {
				report(LayerProgress{Index: i, Digest: d.Digest, State: Extracting, Done: d.Size, Total: d.Size})
			}
			// Applied as it downloads: the reader ends in the download's
			// error unless the whole blob has its digest, and the layer
			// is published only after that end.
			info, err = s.snaps.ApplyFileFrom(ctx, r.dl.path, r.dl.reader(), parent, snapshot.ApplyOptions{
				DiffID: diffID, Labels: map[string]string{LabelGC: "image"}, Warn: opts.Warn, Lease: lease,
			})
			if err != nil {
				// The rest of the blob is not needed.
				r.dl.cancel()
			}
			if derr := r.dl.wait(); derr != nil && !errors.Is(derr, context.Canceled) {
				// What went wrong is the download's.
				err = derr
			}
			if err != nil {
				r.dl.release()
				return Image{}, applied, reused, layerErr(err)
			}
			if !blobKept(i) {
				// Another process stored the layer first, from another
				// blob: this one is kept too, so that a push gives back
				// these digests.
				extra = append(extra, blobFile{r.dl.path, d.Digest})
				held = append(held, r.dl)
			} else {
				r.dl.release()
			}
			applied++
			created = append(created, info.Name)
			report(LayerProgress{Index: i, Digest: d.Digest, State: PullComplete, Done: d.Size, Total: d.Size})
		default:
			// The blob is in the store, for another chain or an earlier
			// layer of this image: applied from there.
			report(LayerProgress{Index: i, Digest: d.Digest, State: Extracting, Done: d.Size, Total: d.Size})
			info, err = s.applyStored(ctx, d, parent, snapshot.ApplyOptions{
				DiffID: diffID, Labels: map[string]string{LabelGC: "image"}, Warn: opts.Warn, Lease: lease,
			})
			if err != nil {
				return Image{}, applied, reused, layerErr(err)
			}
			applied++
			created = append(created, info.Name)
			report(LayerProgress{Index: i, Digest: d.Digest, State: PullComplete, Done: d.Size, Total: d.Size})
		}
		parent = info.Name
	}
	img, err := s.record(ctx, lease, im, extra, tags)
	return img, applied, reused, err
}

// applyStored applies the layer d from its blob in the store.
func (s *Store) applyStored(ctx context.Context, d v1.Descriptor, parent string, opts snapshot.ApplyOptions) (snapshot.Info, error) {
	p, err := s.snaps.BlobPath(d.Digest)
	if err != nil {
		return snapshot.Info{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return snapshot.Info{}, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer f.Close()
	return s.snaps.Apply(ctx, f, parent, opts)
}

// eofReader is an empty layer reader, for Apply of a layer that is
// found by its diff ID and so never read.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// record stores im's config and manifest and the extra blobs, and the
// image with its tags, in one transaction.
func (s *Store) record(ctx context.Context, lease *snapshot.Lease, im pulled, extra []blobFile, tags []reference.Reference) (Image, error) {
	cpath, err := writeTemp(lease.Dir(), "config", im.configBytes)
	if err != nil {
		return Image{}, err
	}
	mpath, err := writeTemp(lease.Dir(), "manifest", im.manBytes)
	if err != nil {
		return Image{}, err
	}
	extra = append(extra, blobFile{cpath, im.configDigest}, blobFile{mpath, im.manDigest})
	// Pulled by tag or by digest, the image is known to be there.
	repoDigests := []string{im.name + "@" + im.manDigest.String()}
	man := im.man
	man.Config.Digest = im.configDigest
	var out Image
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		if !imageExists(tx, im.configDigest) {
			for _, b := range extra {
				if err := tx.PutBlob(b.path, b.digest); err != nil {
					return err
				}
			}
		}
		if err := putImage(tx, man, im.manDigest, repoDigests, tags); err != nil {
			return err
		}
		var err error
		out, err = s.load(tx, im.configDigest)
		return err
	})
	return out, err
}
