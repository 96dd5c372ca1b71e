package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/strata-fs/strata/container"
)

// makeSpec writes the container's hosts, hostname and resolv.conf into
// its bundle dir b and returns its runtime spec, with the user resolved
// in the root filesystem at rootfs.
func makeSpec(c container.Config, rootfs, b string) (*specs.Spec, error) {
	u, home, err := resolveUser(rootfs, c.User)
	if err != nil {
		return nil, err
	}
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	files := container.Files{
		Hosts:      filepath.Join(b, "hosts"),
		Hostname:   filepath.Join(b, "hostname"),
		ResolvConf: filepath.Join(b, "resolv.conf"),
	}
	for p, content := range map[string]string{
		files.Hosts:      container.HostsFile(c.HostnameOrID()),
		files.Hostname:   c.HostnameOrID() + "\n",
		files.ResolvConf: container.ResolvConf(hostResolv, c.Network),
	} {
		if err := writeFileAtomic(p, []byte(content)); err != nil {
			return nil, err
		}
	}
	return container.Spec(c, container.SpecInput{Rootfs: rootfs, User: u, Home: home, Files: files})
}

// resolveUser resolves USER[:GROUP] in the container's own files.
func resolveUser(rootfs, user string) (specs.User, string, error) {
	passwd, err := container.ReadFile(rootfs, "/etc/passwd")
	if err != nil {
		return specs.User{}, "", err
	}
	group, err := container.ReadFile(rootfs, "/etc/group")
	if err != nil {
		return specs.User{}, "", err
	}
	return container.ResolveUser(bytes.NewReader(passwd), bytes.NewReader(group), user)
}
