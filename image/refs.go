package image

import "github.com/strata-fs/strata/image/reference"

// parseRef returns the full form of a reference, as tags are kept.
func parseRef(s string) (string, error) {
	r, err := reference.Parse(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// familiar returns docker's short form of a reference ("nginx:latest").
func familiar(s string) string {
	r, err := reference.Parse(s)
	if err != nil {
		return s
	}
	return r.Familiar()
}
