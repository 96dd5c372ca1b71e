//go:build linux

package cow_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-fs/strata/cow"
)

// BenchmarkLookup resolves names that live in the bottom layer of a stack
// of n layers, each holding the directory: the engine's share of a cold
// lstat through the mount.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("layers=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			var lowers []string
			for i := 0; i < n; i++ {
				l := filepath.Join(dir, fmt.Sprint("l", i))
				if err := os.MkdirAll(filepath.Join(l, "d"), 0o755); err != nil {
					b.Fatal(err)
				}
				lowers = append(lowers, l)
			}
			const files = 1000
			for i := 0; i < files; i++ {
				if err := os.WriteFile(filepath.Join(lowers[n-1], "d", fmt.Sprint(i)), nil, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			for _, d := range []string{"u", "w"} {
				if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
					b.Fatal(err)
				}
			}
			s, err := cow.New(cow.Options{Lower: lowers, Upper: filepath.Join(dir, "u"), Work: filepath.Join(dir, "w")})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			root, err := s.Root()
			if err != nil {
				b.Fatal(err)
			}
			d, err := s.Lookup("", &root, "d")
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Lookup("d", &d, fmt.Sprint(i%files)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
