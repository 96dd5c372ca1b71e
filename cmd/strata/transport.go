package main

import "github.com/strata-fs/strata/image/oci"

// isRegistryRef reports whether s names an image in a registry
// ("docker://REF"), which import and export leave to pull and push.
func isRegistryRef(s string) bool {
	return oci.IsRegistry(s)
}

// registryRefError is what import and export say of a docker://REF.
func registryRefError(s string) error {
	return usagef("%q: docker:// needs 'strata pull'/'strata push'", s)
}

// parseLocation parses an import source or export destination (see
// oci.ParseLocation), refusing docker://REF.
func parseLocation(s string) (oci.Location, error) {
	if isRegistryRef(s) {
		return oci.Location{}, registryRefError(s)
	}
	loc, err := oci.ParseLocation(s)
	if err != nil {
		return loc, usagef("%v", err)
	}
	return loc, nil
}
