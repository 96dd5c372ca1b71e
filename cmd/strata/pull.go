package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/image/remote"
)

// registryFlags are the flags of the commands that talk to registries,
// spelled as podman spells them.
type registryFlags struct {
	tlsVerify bool
	certDir   string
	authFile  string
	creds     string
	insecure  []string
}

func addRegistryFlags(fs *pflag.FlagSet) *registryFlags {
	f := &registryFlags{}
	fs.BoolVar(&f.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates (false also allows plain HTTP)")
	fs.StringVar(&f.certDir, "cert-dir", "", "use the certificates in `DIR` (*.crt, *.cert, *.key) instead of /etc/containers/certs.d/HOST")
	fs.StringVar(&f.authFile, "authfile", "", "credentials `FILE` (default: $REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json)")
	fs.StringSliceVar(&f.insecure, "insecure-registry", nil, "`HOST[:PORT]` to use without TLS verification, or over plain HTTP (repeatable; also $STRATA_INSECURE_REGISTRIES, comma-separated)")
	return f
}

func (f *registryFlags) client(e *env, withCreds bool) (*remote.Client, error) {
	opts := remote.Options{
		TLSVerify: f.tlsVerify,
		Insecure:  f.insecure,
		CertDir:   f.certDir,
		AuthFile:  f.authFile,
	}
	if v := os.Getenv("STRATA_INSECURE_REGISTRIES"); v != "" {
		opts.Insecure = append(opts.Insecure, strings.Split(v, ",")...)
	}
	if e.debug {
		opts.Log = e.log
	}
	if withCreds && f.creds != "" {
		user, pass, ok := strings.Cut(f.creds, ":")
		if !ok {
			p, err := readPassword(e, "Password: ")
			if err != nil {
				return nil, err
			}
			pass = p
		}
		opts.Credential = &auth.Credential{Username: user, Password: pass}
	}
	return remote.New(opts)
}

// parseRemote parses a registry reference, with or without docker://.
func parseRemote(s string) (reference.Reference, error) {
	return reference.Parse(strings.TrimPrefix(s, "docker://"))
}

var pullCmd = &command{
	name:    "pull",
	args:    "[-a] [-q] [--platform OS/ARCH] NAME[:TAG|@DIGEST]",
	summary: "Pull an image from a registry",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		all := fs.BoolP("all-tags", "a", false, "pull every tagged image of the repository")
		quiet := fs.BoolP("quiet", "q", false, "print only the image's reference")
		platform := fs.String("platform", "", "pick `OS/ARCH[/VARIANT]` from a multi-platform image (default: this machine's)")
		conc := fs.Int("max-concurrent-downloads", 3, "download at most `N` layers at once")
		rf := addRegistryFlags(fs)
		fs.StringVar(&rf.creds, "creds", "", "`USER[:PASSWORD]` for the registry, instead of stored credentials")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name one image to pull")
			}
			if *conc < 1 {
				return usagef("--max-concurrent-downloads must be at least 1")
			}
			ref, err := parseRemote(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			opts := image.PullOptions{MaxConcurrent: *conc, Warn: func(m string) { fmt.Fprintf(e.stderr, "strata pull: warning: %s\n", m) }}
			if *platform != "" {
				p, err := parsePlatform(*platform)
				if err != nil {
					return err
				}
				opts.Platform = &p
			}
			c, err := rf.client(e, true)
			if err != nil {
				return err
			}
			return pull(ctx, e, c, args[0], ref, *all, *quiet, opts)
		}
	},
}

// pull pulls ref (every tag of its repository with all), printing what
// docker pull prints.
func pull(ctx context.Context, e *env, c *remote.Client, arg string, ref reference.Reference, all, quiet bool, opts image.PullOptions) error {
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return err
	}
	refs := []reference.Reference{ref}
	if all {
		if ref.Digest != "" || hasTag(arg) {
			return usagef("--all-tags takes a repository name without a tag or digest")
		}
		tags, err := repo.Tags(ctx)
		if err != nil {
			return err
		}
		if len(tags) == 0 {
			return fmt.Errorf("%s has no tags", ref.Name())
		}
		refs = nil
		for _, t := range tags {
			r := ref
			r.Tag = t
			refs = append(refs, r)
		}
	} else if ref.Digest == "" && !hasTag(arg) && !quiet {
		fmt.Fprintf(e.stdout, "Using default tag: %s\n", reference.DefaultTag)
	}
	tty := isTerminal(os.Stdout)
	for _, r := range refs {
		b := newBoard(e.stdout, tty, quiet)
		o := opts
		o.Progress = b.update
		if !quiet {
			what := r.Tag
			if r.Digest != "" {
				what = r.Digest.String()
			}
			fmt.Fprintf(e.stdout, "%s: Pulling from %s\n", what, familiarPath(r))
		}
		res, err := e.images.Pull(ctx, repo, r, o)
		b.finish()
		if err != nil {
			return err
		}
		if quiet {
			fmt.Fprintln(e.stdout, r.String())
			continue
		}
		fmt.Fprintf(e.stdout, "Digest: %s\n", res.Digest)
		if res.Applied == 0 {
			fmt.Fprintf(e.stdout, "Status: Image is up to date for %s\n", r.Familiar())
		} else {
			fmt.Fprintf(e.stdout, "Status: Downloaded newer image for %s\n", r.Familiar())
		}
		fmt.Fprintln(e.stdout, r.String())
	}
	return nil
}

// hasTag reports whether the reference the user typed names a tag.
func hasTag(s string) bool {
	s = strings.TrimPrefix(s, "docker://")
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	return strings.Contains(s, ":")
}

// familiarPath is the repository as docker prints it in "Pulling from":
// library/busybox for docker.io, else HOST/PATH.
func familiarPath(r reference.Reference) string {
	if r.Domain == reference.DefaultDomain {
		return r.Path
	}
	return r.Name()
}

var pushCmd = &command{
	name:    "push",
	args:    "[-q] IMAGE [DEST]",
	summary: "Push an image to a registry (DEST: NAME[:TAG], default IMAGE's name)",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		quiet := fs.BoolP("quiet", "q", false, "print only the pushed reference's digest")
		conc := fs.Int("max-concurrent-uploads", 5, "upload at most `N` layers at once")
		rf := addRegistryFlags(fs)
		fs.StringVar(&rf.creds, "creds", "", "`USER[:PASSWORD]` for the registry, instead of stored credentials")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("name the image to push, and optionally where to")
			}
			if *conc < 1 {
				return usagef("--max-concurrent-uploads must be at least 1")
			}
			dest := args[len(args)-1]
			if reference.IsDigestID(dest) || looksLikeID(dest) && len(args) == 1 {
				return usagef("%s is an image ID: name where to push it, as in 'strata push %s HOST/NAME:TAG'", dest, dest)
			}
			dst, err := parseRemote(dest)
			if err != nil {
				return usagef("%v", err)
			}
			c, err := rf.client(e, true)
			if err != nil {
				return err
			}
			return push(ctx, e, c, args[0], dst, *quiet, *conc)
		}
	},
}

func looksLikeID(s string) bool {
	s = strings.TrimPrefix(s, "sha256:")
	return len(s) >= 12 && strings.Trim(s, "0123456789abcdef") == ""
}

func push(ctx context.Context, e *env, c *remote.Client, src string, dst reference.Reference, quiet bool, conc int) error {
	repo, err := c.Repository(ctx, dst)
	if err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintf(e.stdout, "The push refers to repository [%s]\n", dst.Name())
	}
	b := newBoard(e.stdout, isTerminal(os.Stdout), quiet)
	res, err := e.images.Push(ctx, repo, strings.TrimPrefix(src, "docker://"), dst, image.PushOptions{MaxConcurrent: conc, Progress: b.update})
	b.finish()
	if err != nil {
		return notFoundHint(err)
	}
	if quiet {
		fmt.Fprintln(e.stdout, res.Digest)
		return nil
	}
	tag := dst.Tag
	if tag == "" {
		tag = dst.Digest.String()
	}
	fmt.Fprintf(e.stdout, "%s: digest: %s size: %d\n", tag, res.Digest, res.Size)
	return nil
}

var loginCmd = &command{
	name:    "login",
	args:    "[-u USER] [--password-stdin] [REGISTRY]",
	summary: "Log in to a registry (default docker.io), keeping the credentials where docker and podman look",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		user := fs.StringP("username", "u", "", "the `USER` name")
		pass := fs.StringP("password", "p", "", "the `PASSWORD` (visible to other users of this machine: prefer --password-stdin)")
		stdin := fs.Bool("password-stdin", false, "read the password from standard input")
		rf := addRegistryFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 1 {
				return usagef("name at most one registry")
			}
			domain := reference.DefaultDomain
			if len(args) == 1 {
				domain = registryDomain(args[0])
			}
			if *stdin && *pass != "" {
				return usagef("--password and --password-stdin are exclusive")
			}
			if *pass != "" {
				fmt.Fprintln(e.stderr, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
			}
			if *user == "" {
				if *stdin || !isTerminal(os.Stdin) {
					return usagef("give the user name with -u when the password comes from standard input")
				}
				u, err := readLine(e, "Username: ")
				if err != nil {
					return err
				}
				*user = u
			}
			switch {
			case *stdin:
				b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
				if err != nil {
					return err
				}
				*pass = strings.TrimRight(string(b), "\r\n")
			case *pass == "":
				if !isTerminal(os.Stdin) {
					return usagef("no password: pass --password-stdin and write it to standard input")
				}
				p, err := readPassword(e, "Password: ")
				if err != nil {
					return err
				}
				*pass = p
			}
			if *user == "" || *pass == "" {
				return usagef("a user name and a password are needed")
			}
			c, err := rf.client(e, false)
			if err != nil {
				return err
			}
			file, err := c.Login(ctx, domain, *user, *pass)
			if err != nil {
				return err
			}
			e.log.Printf("credentials for %s saved in %s", domain, file)
			fmt.Fprintln(e.stdout, "Login Succeeded")
			return nil
		}
	},
}

var logoutCmd = &command{
	name:    "logout",
	args:    "[REGISTRY]",
	summary: "Remove a registry's stored credentials (default docker.io)",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		authFile := fs.String("authfile", "", "credentials `FILE` (default: every file strata reads)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 1 {
				return usagef("name at most one registry")
			}
			domain := reference.DefaultDomain
			if len(args) == 1 {
				domain = registryDomain(args[0])
			}
			removed, err := remote.Logout(ctx, *authFile, domain)
			if err != nil {
				return err
			}
			if len(removed) == 0 {
				return fmt.Errorf("not logged in to %s", domain)
			}
			fmt.Fprintf(e.stdout, "Removing login credentials for %s\n", domain)
			return nil
		}
	},
}

// registryDomain takes a registry as users type it: HOST[:PORT], a URL,
// or docker's index address.
func registryDomain(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s = strings.TrimPrefix(s, "docker://")
	s, _, _ = strings.Cut(s, "/")
	if s == "index.docker.io" || s == "registry-1.docker.io" {
		return reference.DefaultDomain
	}
	return s
}

func readLine(e *env, prompt string) (string, error) {
	fmt.Fprint(e.stderr, prompt)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// readPassword reads a line from the terminal on stdin without echo.
func readPassword(e *env, prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", usagef("no terminal to ask for the password: give it on standard input with --password-stdin")
	}
	quiet := *t
	quiet.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, t)
	fmt.Fprint(e.stderr, prompt)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Fprintln(e.stderr)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
