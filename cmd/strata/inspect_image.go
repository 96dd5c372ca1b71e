package main

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image"
)

// imageInspect is `strata inspect IMAGE`, in docker's shape.
type imageInspect struct {
	Id           string
	RepoTags     []string
	RepoDigests  []string
	Created      *time.Time
	Author       string
	Comment      string
	Config       inspectConfig
	Architecture string
	Variant      string `json:",omitempty"`
	Os           string
	Size         int64
	RootFS       struct {
		Type   string
		Layers []string
	}
	History []v1.History
	// Layers says where each layer lives: its chain ID in the store and
	// its directory, bottom first, as docker's GraphDriver data does.
	GraphDriver struct {
		Name string
		Data struct {
			Layers   []string
			LowerDir string
		}
	}
	Manifest struct {
		Digest    string
		MediaType string
		Layers    []v1.Descriptor
	}
}

// inspectConfig is the image's config as docker inspect shows it: the
// OCI fields, and docker's HEALTHCHECK, ONBUILD and SHELL.
type inspectConfig struct {
	v1.ImageConfig
	image.DockerExtras
}

func inspectImage(ctx context.Context, e *env, im image.Image) (imageInspect, error) {
	var o imageInspect
	o.Id = im.ID.String()
	o.RepoTags = make([]string, 0, len(im.RepoTags))
	for _, t := range im.RepoTags {
		o.RepoTags = append(o.RepoTags, familiarRef(t))
	}
	o.RepoDigests = append([]string{}, im.RepoDigests...)
	o.Created = im.Config.Created
	o.Author = im.Config.Author
	if n := len(im.Config.History); n > 0 {
		o.Comment = im.Config.History[n-1].Comment
	}
	ex, err := e.images.Extras(im)
	if err != nil {
		return o, err
	}
	o.Config = inspectConfig{im.Config.Config, ex}
	o.Architecture, o.Variant, o.Os = im.Config.Architecture, im.Config.Variant, im.Config.OS
	o.RootFS.Type = im.Config.RootFS.Type
	for _, d := range im.Config.RootFS.DiffIDs {
		o.RootFS.Layers = append(o.RootFS.Layers, d.String())
	}
	o.History = im.Config.History
	o.GraphDriver.Name = "strata"
	var dirs []string
	for _, id := range im.ChainIDs() {
		o.GraphDriver.Data.Layers = append(o.GraphDriver.Data.Layers, id.String())
		u, err := e.store.Usage(ctx, id.String())
		if err != nil {
			return o, err
		}
		o.Size += u.Size
	}
	if top := im.Top(); top != "" {
		m, err := e.store.Mounts(ctx, top)
		if err != nil {
			return o, err
		}
		for _, l := range m.Lowers {
			if filepath.Base(l) != "empty" {
				dirs = append(dirs, l)
			}
		}
	}
	o.GraphDriver.Data.LowerDir = strings.Join(dirs, ":")
	o.Manifest.Digest = im.ManifestDigest.String()
	o.Manifest.MediaType = im.Manifest.MediaType
	if o.Manifest.MediaType == "" {
		o.Manifest.MediaType = v1.MediaTypeImageManifest // implied by schemaVersion 2
	}
	o.Manifest.Layers = im.Manifest.Layers
	return o, nil
}
