//go:build linux

package ovl

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStoredXattr(t *testing.T) {
	long := "trusted.overlay." + strings.Repeat("x", 255-len("trusted.overlay."))
	for _, tc := range []struct {
		name, stored string
		err          error
	}{
		{"user.a", "user.a", nil},
		{"trusted.a", "trusted.a", nil},
		{"security.selinux", "security.selinux", nil},
		{"trusted.overlay.foo", "trusted.overlay.overlay.foo", nil},
		{"trusted.overlay.opaque", "trusted.overlay.overlay.opaque", nil},
		{"trusted.overlay.overlay.x", "trusted.overlay.overlay.overlay.x", nil},
		{"user.overlay.foo", "user.overlay.overlay.foo", nil},
		{"trusted.overlay", "trusted.overlay", nil}, // no namespace of the overlay's
		{"trusted.overlayfoo", "trusted.overlayfoo", nil},
		{"trusted.overlay.", "", unix.EINVAL},
		{"user.overlay.", "", unix.EINVAL},
		{long, "", unix.EOPNOTSUPP},
		{"user.fuseoverlayfs.opaque", "", ErrPrivateXattr},
	} {
		got, err := StoredXattr(tc.name)
		if got != tc.stored || !errors.Is(err, tc.err) {
			t.Errorf("StoredXattr(%q) = %q, %v; want %q, %v", tc.name, got, err, tc.stored, tc.err)
		}
		if err != nil {
			continue
		}
		if shown, ok := ShownXattr(got); !ok || shown != tc.name {
			t.Errorf("ShownXattr(StoredXattr(%q)) = %q, %v; want it back", tc.name, shown, ok)
		}
		if IsPrivateXattr(got) {
			t.Errorf("IsPrivateXattr(%q): a user's xattr is not bookkeeping", got)
		}
	}
}

func TestShownXattrHidesBookkeeping(t *testing.T) {
	for _, n := range []string{XattrOpaque, XattrUserOpaque, XattrFuseOverlayfsOpaque, XattrWhiteout,
		XattrRedirect, XattrUserRedirect, XattrMetacopy, XattrOrigin, XattrUserOrigin,
		"trusted.overlay.overlay", "trusted.overlay.origin"} {
		if shown, ok := ShownXattr(n); ok {
			t.Errorf("ShownXattr(%q) = %q: bookkeeping must not show", n, shown)
		}
		if !IsPrivateXattr(n) {
			t.Errorf("IsPrivateXattr(%q) = false, want true", n)
		}
	}
}
