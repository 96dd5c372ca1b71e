package container

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ResolveUser finds the user and group that USER[:GROUP] names in a
// container's /etc/passwd and /etc/group (either may be nil: the file
// is missing), as runc's libcontainer/user does for docker: a name must
// be in the file, a number need not be; the group defaults to the
// user's, or 0; supplementary groups are those of /etc/group that list
// the user. It also returns the user's home directory ("/" when
// unknown).
func ResolveUser(passwd, group io.Reader, spec string) (specs.User, string, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "0"
	}
	users, err := parseColonFile(passwd, 7)
	if err != nil {
		return specs.User{}, "", fmt.Errorf("read /etc/passwd: %w", err)
	}
	groups, err := parseColonFile(group, 4)
	if err != nil {
		return specs.User{}, "", fmt.Errorf("read /etc/group: %w", err)
	}
	u := specs.User{}
	home, name := "/", ""
	uid, numeric := parseID(userPart)
	found := false
	for _, f := range users {
		if f[0] == userPart || (numeric && f[2] == userPart) {
			id, ok1 := parseID(f[2])
			gid, ok2 := parseID(f[3])
			if !ok1 || !ok2 {
				continue
			}
			u.UID, u.GID, home, name, found = id, gid, f[5], f[0], true
			break
		}
	}
	if !found {
		if !numeric {
			return specs.User{}, "", fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
		}
		u.UID = uid
	}
	if hasGroup && groupPart != "" {
		gid, numericG := parseID(groupPart)
		foundG := false
		for _, f := range groups {
			if f[0] == groupPart || (numericG && f[2] == groupPart) {
				if id, ok := parseID(f[2]); ok {
					u.GID, foundG = id, true
					break
				}
			}
		}
		if !foundG {
			if !numericG {
				return specs.User{}, "", fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)
			}
			u.GID = gid
		}
	}
	if name != "" && !hasGroup {
		for _, f := range groups {
			gid, ok := parseID(f[2])
			if !ok || gid == u.GID {
				continue
			}
			for _, m := range strings.Split(f[3], ",") {
				if m == name {
					u.AdditionalGids = append(u.AdditionalGids, gid)
					break
				}
			}
		}
	}
	if home == "" {
		home = "/"
	}
	return u, home, nil
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// parseColonFile reads the lines of a passwd or group file as n fields
// each, skipping comments and short lines.
func parseColonFile(r io.Reader, n int) ([][]string, error) {
	if r == nil {
		return nil, nil
	}
	var out [][]string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		for len(f) < n {
			f = append(f, "")
		}
		out = append(out, f)
	}
	return out, sc.Err()
}
