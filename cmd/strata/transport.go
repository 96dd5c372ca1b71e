package main

import "github.com/strata-fs/strata/image/oci"

// isRegistryRef reports whether s names an image in a registry
// ("docker://REF"): import of it is a pull, export to it a push.
func isRegistryRef(s string) bool {
	return oci.IsRegistry(s)
}

// parseLocation parses an import source or export destination other
// than docker://REF (see oci.ParseLocation).
func parseLocation(s string) (oci.Location, error) {
	loc, err := oci.ParseLocation(s)
	if err != nil {
		return loc, usagef("%v", err)
	}
	return loc, nil
}
