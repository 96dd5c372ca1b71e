package image

import (
	"encoding/json"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// DockerExtras are the fields of docker's image config that OCI's lacks:
// HEALTHCHECK, ONBUILD and SHELL. They are kept in the config's JSON
// beside the OCI fields (docker reads them there), through commit and
// build.
type DockerExtras struct {
	Healthcheck *Healthcheck `json:",omitempty"`
	OnBuild     []string     `json:",omitempty"`
	Shell       []string     `json:",omitempty"`
}

// Healthcheck is docker's, durations in nanoseconds as docker writes
// them.
type Healthcheck struct {
	Test          []string      `json:",omitempty"`
	Interval      time.Duration `json:",omitempty"`
	Timeout       time.Duration `json:",omitempty"`
	StartPeriod   time.Duration `json:",omitempty"`
	StartInterval time.Duration `json:",omitempty"`
	Retries       int           `json:",omitempty"`
}

// Extras reads the docker fields of im's config.
func (s *Store) Extras(im Image) (DockerExtras, error) {
	var doc struct {
		Config DockerExtras `json:"config"`
	}
	if im.ID == "" {
		return DockerExtras{}, nil
	}
	b, err := s.readBlob(im.ID)
	if err != nil {
		return DockerExtras{}, err
	}
	err = json.Unmarshal(b, &doc)
	return doc.Config, err
}

// marshalConfig is the JSON of cfg with ex in its "config" object.
func marshalConfig(cfg v1.Image, ex DockerExtras) ([]byte, error) {
	if ex.Healthcheck == nil && ex.OnBuild == nil && ex.Shell == nil {
		return json.Marshal(cfg)
	}
	type config struct {
		v1.ImageConfig
		DockerExtras
	}
	type image struct {
		v1.Image
		Config config `json:"config,omitempty"`
	}
	return json.Marshal(image{Image: cfg, Config: config{cfg.Config, ex}})
}
