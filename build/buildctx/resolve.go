package buildctx

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// urlMessage is the error for an ADD (or COPY) source that is a URL.
const urlMessage = "ADD of a URL needs the network, which strata build does not use: download it into the context and COPY it"

// maxLinks bounds the symlinks followed resolving one source path, as
// the kernel's MAXSYMLINKS (40) does, generously.
const maxLinks = 255

// Source is one resolved COPY or ADD source: a file, or a directory whose
// contents are copied. Its entries are fixed when Resolve walks the
// context, with the ignore rules applied; Digest and Copy use the same
// list.
type Source struct {
	// Name is the source as written (after wildcard expansion), relative
	// to the context root and cleaned.
	Name string
	// Base is the name a file source gets in a directory destination:
	// the last element of Name.
	Base string
	// Dir is true for a directory source.
	Dir bool
	// Entries are the files to copy. Entries[0] is the source itself
	// (Rel ""); for a directory the others follow, parents first, in
	// lexical order.
	Entries []Entry
}

// Entry is one file of a Source.
type Entry struct {
	// Rel is the slash-separated path below the source; "" is the source.
	Rel string
	// Path is the file on the host.
	Path string
	// Info is what lstat says of Path (a symlink named as a source is
	// followed, inside the context, so Entries[0] is never a symlink).
	Info fs.FileInfo
}

// IsURL reports whether a source is a URL (or a git remote) rather than
// a path in the context.
func IsURL(src string) bool {
	for _, p := range []string{"http://", "https://", "git://", "git@", "ssh://"} {
		if strings.HasPrefix(src, p) {
			return true
		}
	}
	return false
}

// NotFoundError is the error of a source that does not exist in the
// context, or that .dockerignore excludes.
type NotFoundError struct {
	Instr  string // COPY or ADD
	Source string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s failed: file not found in build context or excluded by .dockerignore: stat %s: file does not exist", e.Instr, e.Source)
}

// Resolve expands the sources of a COPY with docker's rules: paths are
// relative to the context root (a leading "/" too), ".." may not leave it
// ("forbidden path outside the build context"), "." is the whole
// context, wildcards match one path element each with filepath.Match
// semantics, a symlink named as a source is followed inside the context,
// and excluded files do not exist.
func (c *Context) Resolve(srcs []string) ([]Source, error) {
	return c.ResolveFor("COPY", srcs)
}

// ResolveFor is Resolve with the instruction (COPY or ADD) named in its
// errors.
func (c *Context) ResolveFor(instr string, srcs []string) ([]Source, error) {
	if len(srcs) == 0 {
		return nil, fmt.Errorf("%s: no source files were specified", instr)
	}
	var out []Source
	for _, src := range srcs {
		if IsURL(src) {
			return nil, fmt.Errorf("%s %s: %s", instr, src, urlMessage)
		}
		name, err := cleanSource(src)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", instr, src, err)
		}
		names := []string{name}
		if hasWildcard(name) {
			names, err = c.glob(name)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", instr, src, err)
			}
			if len(names) == 0 {
				return nil, &NotFoundError{Instr: instr, Source: src}
			}
		}
		for _, n := range names {
			s, err := c.source(n)
			if os.IsNotExist(err) {
				return nil, &NotFoundError{Instr: instr, Source: src}
			}
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", instr, src, err)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// cleanSource makes src a slash-separated path relative to the context
// root ("." for the root), refusing one that climbs out of it.
func cleanSource(src string) (string, error) {
	s := filepath.ToSlash(src)
	s = strings.TrimLeft(s, "/")
	if s == "" {
		return ".", nil
	}
	s = path.Clean(s)
	if s == ".." || strings.HasPrefix(s, "../") {
		return "", fmt.Errorf("forbidden path outside the build context: %s", src)
	}
	return s, nil
}

// hasWildcard reports whether name has an unescaped filepath.Match
// metacharacter.
func hasWildcard(name string) bool {
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '\\':
			i++
		case '*', '?', '[':
			return true
		}
	}
	return false
}

// glob expands a wildcard source element by element, as docker does;
// excluded names do not match. The result is sorted.
func (c *Context) glob(pattern string) ([]string, error) {
	cands := []string{"."}
	for _, elem := range strings.Split(pattern, "/") {
		var next []string
		for _, cand := range cands {
			if !hasWildcard(elem) {
				next = append(next, path.Join(cand, unescape(elem)))
				continue
			}
			if _, err := path.Match(elem, ""); err != nil {
				return nil, fmt.Errorf("bad wildcard %q: %w", pattern, err)
			}
			real, err := c.resolvePath(cand)
			if err != nil {
				continue
			}
			ents, err := os.ReadDir(filepath.Join(c.root, real))
			if err != nil {
				continue
			}
			for _, e := range ents {
				if ok, _ := path.Match(elem, e.Name()); ok {
					next = append(next, path.Join(cand, e.Name()))
				}
			}
		}
		cands = next
	}
	var out []string
	for _, cand := range cands {
		real, err := c.resolvePath(cand)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(c.root, real)); err != nil {
			continue
		}
		if ex, err := c.excluded(real); err != nil {
			return nil, err
		} else if ex {
			continue
		}
		out = append(out, cand)
	}
	sort.Strings(out)
	return out, nil
}

func unescape(elem string) string {
	if !strings.Contains(elem, `\`) {
		return elem
	}
	var b strings.Builder
	for i := 0; i < len(elem); i++ {
		if elem[i] == '\\' && i+1 < len(elem) {
			i++
		}
		b.WriteByte(elem[i])
	}
	return b.String()
}

// resolvePath follows the symlinks of name (relative, slash-separated)
// inside the context, as docker's FollowSymlinkInScope: absolute targets
// and ".." stay in the context. It returns the real relative path ("."
// for the root).
func (c *Context) resolvePath(name string) (string, error) {
	var done []string
	todo := strings.Split(name, "/")
	links := 0
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := filepath.Join(c.root, filepath.FromSlash(path.Join(append(done, p)...)))
		fi, err := os.Lstat(cur)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, p)
			continue
		}
		if links++; links > maxLinks {
			return "", &os.PathError{Op: "resolve", Path: name, Err: syscall.ELOOP}
		}
		t, err := os.Readlink(cur)
		if err != nil {
			return "", err
		}
		if path.IsAbs(t) {
			done = nil
		}
		todo = append(strings.Split(t, "/"), todo...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

// source resolves one source name (no wildcards) and walks it.
func (c *Context) source(name string) (Source, error) {
	real, err := c.resolvePath(name)
	if err != nil {
		return Source{}, err
	}
	if ex, err := c.excluded(real); err != nil {
		return Source{}, err
	} else if ex {
		return Source{}, os.ErrNotExist
	}
	top := filepath.Join(c.root, filepath.FromSlash(real))
	fi, err := os.Lstat(top)
	if err != nil {
		return Source{}, err
	}
	s := Source{Name: name, Base: path.Base(name), Dir: fi.IsDir()}
	if name == "." {
		s.Base = "."
	}
	s.Entries = []Entry{{Rel: "", Path: top, Info: fi}}
	if !s.Dir {
		return s, nil
	}
	// Directories excluded themselves but holding an included file (a
	// "!" exception) are kept, so the file has its parent, as docker
	// sends them.
	pending := map[string]Entry{}
	kept := map[string]bool{"": true}
	var keep func(rel string)
	keep = func(rel string) {
		if kept[rel] {
			return
		}
		parent, _ := splitRel(rel)
		keep(parent)
		if e, ok := pending[rel]; ok {
			s.Entries = append(s.Entries, e)
			delete(pending, rel)
		}
		kept[rel] = true
	}
	err = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == top {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, top+string(filepath.Separator)))
		ex, err := c.excluded(path.Join(real, rel))
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := Entry{Rel: rel, Path: p, Info: info}
		if ex {
			if d.IsDir() {
				if c.pm == nil || !c.pm.Exclusions() {
					return filepath.SkipDir
				}
				pending[rel] = e
			}
			return nil
		}
		parent, _ := splitRel(rel)
		keep(parent)
		s.Entries = append(s.Entries, e)
		kept[rel] = true
		return nil
	})
	if err != nil {
		return Source{}, fmt.Errorf("walk %s: %w", name, err)
	}
	return s, nil
}
