package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/build/dockerfile"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

// CommitOptions tune Commit.
type CommitOptions struct {
	Tag     string   // the new image's tag; "" leaves it untagged
	Message string   // the history entry's comment
	Author  string   // the config's author
	Changes []string // Dockerfile instructions (CMD, ENV, ...), as docker commit -c
	// CreatedBy, if set, is the history entry's created_by (a build
	// step's instruction); otherwise it says what commit did.
	CreatedBy string
	// Layer options: compression, SOURCE_DATE_EPOCH, freezing a mounted
	// stack.
	Compression     layer.Compression
	SourceDateEpoch *time.Time
	Freeze          func() (func() error, error)
	// Progress, if set, is told of the new layer, as layer 0 of 1:
	// Committing with the bytes of its blob written so far, then
	// Committed with its digest.
	Progress func(LayerProgress)
}

// Commit writes the container's changes as a new image whose config and
// history extend its image's and whose layers are its image's plus one
// (or none, when only metadata changes): `docker commit`.
func (s *Store) Commit(ctx context.Context, container string, opts CommitOptions) (Image, error) {
	info, err := s.snaps.Stat(ctx, container)
	if err != nil {
		return Image{}, err
	}
	if info.Kind != snapshot.KindActive {
		return Image{}, fmt.Errorf("%q is a %s, not a container", container, info.Kind)
	}
	var tags []reference.Reference
	if opts.Tag != "" {
		r, err := reference.Parse(opts.Tag)
		if err != nil {
			return Image{}, err
		}
		if r.Digest != "" {
			return Image{}, fmt.Errorf("tag %q: a tag cannot hold a digest", opts.Tag)
		}
		tags = append(tags, r)
	}
	// The base: the container's image, or nothing for a plain stack.
	var base Image
	if id := info.Labels[LabelImage]; id != "" {
		if base, err = s.Get(ctx, id); err != nil {
			return Image{}, fmt.Errorf("the container's image: %w", err)
		}
	} else if info.Parent != "" {
		return Image{}, fmt.Errorf("%q was not created from an image: commit it as a layer ('strata commit %s' without a tag)", container, container)
	} else {
		base.Config = v1.Image{Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, RootFS: v1.RootFS{Type: "layers"}}
		base.Manifest = v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest}
	}
	cfg := base.Config
	cfg.RootFS.DiffIDs = append([]digest.Digest(nil), base.Config.RootFS.DiffIDs...)
	cfg.History = append([]v1.History(nil), base.Config.History...)
	if err := applyChanges(&cfg.Config, opts.Changes); err != nil {
		return Image{}, err
	}
	now := time.Now().UTC()
	if opts.SourceDateEpoch != nil {
		now = *opts.SourceDateEpoch
	}
	cfg.Created = &now
	if opts.Author != "" {
		cfg.Author = opts.Author
	}

	lease, err := s.snaps.BeginLease()
	if err != nil {
		return Image{}, err
	}
	defer lease.End()
	m, err := s.snaps.Mounts(ctx, container)
	if err != nil {
		return Image{}, err
	}
	changes, err := layer.Changes(m.Upper, m.Lowers)
	if err != nil {
		return Image{}, err
	}
	layers := append([]v1.Descriptor(nil), base.Manifest.Layers...)
	hist := v1.History{Created: &now, Author: opts.Author, Comment: opts.Message, CreatedBy: createdBy(container, opts)}
	if len(changes) == 0 {
		hist.EmptyLayer = true
	} else {
		lo := snapshot.LayerOptions{
			Compression:     opts.Compression,
			SourceDateEpoch: opts.SourceDateEpoch,
			Freeze:          opts.Freeze,
			Lease:           lease,
			Labels:          map[string]string{LabelGC: "image"},
		}
		if opts.Progress != nil {
			opts.Progress(LayerProgress{Count: 1, State: Committing})
			lo.Progress = func(n int64) { opts.Progress(LayerProgress{Count: 1, State: Committing, Done: n}) }
		}
		l, err := s.snaps.CommitLayer(ctx, container, lo)
		if err != nil {
			return Image{}, err
		}
		if opts.Progress != nil {
			opts.Progress(LayerProgress{Count: 1, Digest: l.Layer.Digest, State: Committed, Done: l.Layer.Size, Total: l.Layer.Size})
		}
		layers = append(layers, v1.Descriptor{MediaType: l.Layer.MediaType, Digest: l.Layer.Digest, Size: l.Layer.Size})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.Layer.DiffID)
	}
	cfg.History = append(cfg.History, hist)
	// Docker's fields of the base go on, as docker commit keeps them.
	ex, err := s.Extras(base)
	if err != nil {
		return Image{}, err
	}
	return s.storeWith(ctx, lease, cfg, ex, layers, tags)
}

// store writes the config and manifest of a new image whose layers are
// in the store, and records and tags it.
func (s *Store) store(ctx context.Context, lease *snapshot.Lease, cfg v1.Image, layers []v1.Descriptor, tags []reference.Reference) (Image, error) {
	return s.storeWith(ctx, lease, cfg, DockerExtras{}, layers, tags)
}

// storeWith is store of a config with docker's extra fields.
func (s *Store) storeWith(ctx context.Context, lease *snapshot.Lease, cfg v1.Image, ex DockerExtras, layers []v1.Descriptor, tags []reference.Reference) (Image, error) {
	cb, err := marshalConfig(cfg, ex)
	if err != nil {
		return Image{}, err
	}
	man := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(cb), Size: int64(len(cb))},
		Layers:    layers,
	}
	if man.Layers == nil {
		man.Layers = []v1.Descriptor{}
	}
	mb, err := json.Marshal(man)
	if err != nil {
		return Image{}, err
	}
	md := digest.FromBytes(mb)
	cpath, err := writeTemp(lease.Dir(), "config", cb)
	if err != nil {
		return Image{}, err
	}
	mpath, err := writeTemp(lease.Dir(), "manifest", mb)
	if err != nil {
		return Image{}, err
	}
	var im Image
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		if !imageExists(tx, man.Config.Digest) {
			if err := tx.PutBlob(cpath, man.Config.Digest); err != nil {
				return err
			}
			if err := tx.PutBlob(mpath, md); err != nil {
				return err
			}
		}
		if err := putImage(tx, man, md, nil, tags); err != nil {
			return err
		}
		im, err = s.load(tx, man.Config.Digest)
		return err
	})
	for _, t := range tags {
		im.RepoTags = append(im.RepoTags, t.String())
	}
	return im, err
}

// writeTemp writes data to a synced file in dir.
func writeTemp(dir, name string, data []byte) (string, error) {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return p, errors.Join(err, f.Close())
}

func createdBy(container string, opts CommitOptions) string {
	switch {
	case opts.CreatedBy != "":
		return opts.CreatedBy
	case opts.Message != "" && len(opts.Changes) == 0:
		return opts.Message
	case len(opts.Changes) > 0:
		return "strata commit -c " + strings.Join(opts.Changes, " -c ")
	}
	return "strata commit " + container
}

// applyChanges applies Dockerfile instructions to an image config, as
// `docker commit --change` takes them: parsed by the Dockerfile front
// end, with variables expanded against the config's environment as
// docker does.
func applyChanges(c *v1.ImageConfig, changes []string) error {
	for _, ch := range changes {
		bad := func(why string) error {
			return fmt.Errorf("change %q: %s", ch, why)
		}
		if _, arg, _ := strings.Cut(strings.TrimSpace(ch), " "); strings.TrimSpace(arg) == "" {
			return bad("missing argument")
		}
		cmd, err := dockerfile.ParseChange(ch)
		if err != nil {
			return bad(err.Error())
		}
		expand := func(word string) (string, error) {
			return dockerfile.Expand(word, c.Env, dockerfile.DefaultEscape)
		}
		// The arguments of the instructions docker substitutes in.
		args := cmd.Args
		if cmd.Expands() {
			args = make([]string, len(cmd.Args))
			for i, a := range cmd.Args {
				if args[i], err = expand(a); err != nil {
					return bad(err.Error())
				}
			}
		}
		switch cmd.Name {
		case "cmd":
			c.Cmd = execForm(cmd)
		case "entrypoint":
			c.Entrypoint = execForm(cmd)
		case "env", "label":
			for _, kv := range cmd.KeyValues {
				k, err := expand(kv[0])
				if err != nil {
					return bad(err.Error())
				}
				v, err := expand(kv[1])
				if err != nil {
					return bad(err.Error())
				}
				if cmd.Name == "env" {
					c.Env = setEnv(c.Env, k, v)
					continue
				}
				if c.Labels == nil {
					c.Labels = map[string]string{}
				}
				c.Labels[k] = v
			}
		case "expose":
			if c.ExposedPorts == nil {
				c.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range args {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				c.ExposedPorts[p] = struct{}{}
			}
		case "volume":
			if c.Volumes == nil {
				c.Volumes = map[string]struct{}{}
			}
			for _, v := range args {
				c.Volumes[v] = struct{}{}
			}
		case "user":
			c.User = args[0]
		case "workdir":
			c.WorkingDir = args[0]
		case "stopsignal":
			c.StopSignal = args[0]
		default:
			return bad("unknown instruction: want CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR")
		}
	}
	return nil
}

// execForm is a CMD or ENTRYPOINT's exec form; a shell form becomes
// ["/bin/sh", "-c", arg] as docker makes it.
func execForm(cmd dockerfile.Command) []string {
	if cmd.JSON {
		return cmd.Args
	}
	return []string{"/bin/sh", "-c", cmd.Args[0]}
}

func setEnv(env []string, k, v string) []string {
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}
