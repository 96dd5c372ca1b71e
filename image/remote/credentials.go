package remote

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// AuthFiles lists the credential files strata reads, first one first,
// and writes the first: $REGISTRY_AUTH_FILE, podman's
// ${XDG_RUNTIME_DIR}/containers/auth.json, and docker's
// $DOCKER_CONFIG/config.json or ~/.docker/config.json. Each may name
// docker credential helpers (credsStore, credHelpers) instead of
// holding the secret.
func AuthFiles() []string {
	var files []string
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		files = append(files, f)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		files = append(files, filepath.Join(d, "containers", "auth.json"))
	}
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		files = append(files, filepath.Join(d, "config.json"))
	} else if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".docker", "config.json"))
	}
	return files
}

// credentialFiles is the files for authFile ("" for AuthFiles()).
func credentialFiles(authFile string) []string {
	if authFile != "" {
		return []string{authFile}
	}
	return AuthFiles()
}

type fileStore struct {
	path  string
	store credentials.Store
}

func openStores(authFile string) ([]fileStore, error) {
	var stores []fileStore
	for _, f := range credentialFiles(authFile) {
		st, err := credentials.NewStore(f, credentials.StoreOptions{AllowPlaintextPut: true})
		if err != nil {
			return nil, fmt.Errorf("credentials file %s: %w (fix or remove it)", f, err)
		}
		stores = append(stores, fileStore{f, st})
	}
	if len(stores) == 0 {
		return nil, errors.New("no credentials file: set $REGISTRY_AUTH_FILE or $HOME, or give --authfile")
	}
	return stores, nil
}

func openCredentials(authFile string) (credentials.Store, error) {
	stores, err := openStores(authFile)
	if err != nil {
		return nil, err
	}
	var rest []credentials.Store
	for _, s := range stores[1:] {
		rest = append(rest, s.store)
	}
	return credentials.NewStoreWithFallbacks(stores[0].store, rest...), nil
}

// serverAddress is the key under which domain's credentials are kept,
// as docker keys them.
func serverAddress(domain string) string {
	return credentials.ServerAddressFromRegistry(APIHost(domain))
}

// Login checks user and password against the registry domain and, if
// the registry takes them, saves them in the first credentials file
// (or authFile) and returns its path.
func (c *Client) Login(ctx context.Context, domain, user, password string) (string, error) {
	host := APIHost(domain)
	hc, err := c.host(ctx, host)
	if err != nil {
		return "", err
	}
	cred := auth.Credential{Username: user, Password: password}
	ac := *hc.auth
	ac.Cache = nil
	ac.Credential = auth.StaticCredential(host, cred)
	if err := ping(ctx, &ac, hc.plain, host); err != nil {
		return "", err
	}
	stores, err := openStores(c.opts.AuthFile)
	if err != nil {
		return "", err
	}
	if err := stores[0].store.Put(ctx, serverAddress(domain), cred); err != nil {
		return "", fmt.Errorf("save credentials in %s: %w", stores[0].path, err)
	}
	return stores[0].path, nil
}

// Logout removes domain's credentials from every credentials file that
// holds them, and returns those files; none is not an error of its
// own, the caller says so.
func Logout(ctx context.Context, authFile, domain string) ([]string, error) {
	stores, err := openStores(authFile)
	if err != nil {
		return nil, err
	}
	key := serverAddress(domain)
	var removed []string
	for _, s := range stores {
		cred, err := s.store.Get(ctx, key)
		if err != nil {
			return removed, fmt.Errorf("credentials file %s: %w", s.path, err)
		}
		if cred == auth.EmptyCredential {
			continue
		}
		if err := s.store.Delete(ctx, key); err != nil {
			return removed, fmt.Errorf("remove credentials from %s: %w", s.path, err)
		}
		removed = append(removed, s.path)
	}
	return removed, nil
}
