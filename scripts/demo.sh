#!/usr/bin/env bash
# demo.sh: a tour of strata. Part 1 (strata-fuse): three small layers in a
# fresh temporary directory, mounted read-write with an upper directory:
# reads, a copy-up, whiteouts and an opaque directory. Part 2 (strata): a
# layer store, two stacks sharing one base layer, a program run in a
# container (runc), a commit, the committed layer's changes, and a push to
# and a pull from a registry (Debian's docker-registry) on loopback. Part 3:
# a web site image built from a Dockerfile, run with a published port,
# fetched from the host, tagged and pushed.
#
# Usage: sudo ./scripts/demo.sh [BINDIR]   (BINDIR holds strata and strata-fuse; default bin)
# Needs root (FUSE mount, whiteout device nodes, trusted.* xattrs),
# /dev/fuse and the attr package (setfattr, getfattr): 'sudo make demo'
# installs what is missing and builds strata-fuse first.
set -euo pipefail
export LC_ALL=C

die() {
	echo "demo.sh: $*" >&2
	exit 1
}

bindir=${1:-bin}
[ "$(id -u)" -eq 0 ] || die "needs root (it mounts a FUSE filesystem and creates whiteout device nodes): run 'sudo make demo'"
[ -c /dev/fuse ] || die "needs /dev/fuse: load the fuse module ('modprobe fuse') or give the container the device"
[ -x "$bindir/strata-fuse" ] || die "$bindir/strata-fuse not found: run 'make build' first"
[ -x "$bindir/strata" ] || die "$bindir/strata not found: run 'make build' first"
strata=$(cd "$bindir" && pwd)/strata-fuse
strata_cli=$(cd "$bindir" && pwd)/strata
for tool in setfattr getfattr mknod findmnt mountpoint; do
	command -v "$tool" >/dev/null || die "needs $tool: run 'sudo make deps' (Debian packages attr, util-linux)"
done
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || busybox=/bin/busybox
[ -x "$busybox" ] || die "needs a static busybox: run 'sudo make deps' (Debian package busybox-static)"
command -v runc >/dev/null || die "needs runc to run a container: run 'sudo make deps' (Debian package runc)"
command -v docker-registry >/dev/null || die "needs docker-registry to push and pull: run 'sudo make deps' (Debian package docker-registry)"

demo=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo.XXXXXX")
mnt=$demo/merged
export STRATA_ROOT=$demo/store

# cleanup unmounts only our own mount point, then removes the directory,
# but never while something is still mounted there.
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	cd /
	if [ -n "${registry_pid:-}" ]; then
		kill "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
	fi
	if mountpoint -q "$mnt" 2>/dev/null; then
		umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
	fi
	for m in "$STRATA_ROOT"/mounts/*; do
		[ -d "$m" ] && mountpoint -q "$m" && { "$strata_cli" unmount --lazy "$m" || umount -l "$m" || true; }
	done
	if mountpoint -q "$mnt" 2>/dev/null || grep -qF " $demo/" /proc/self/mountinfo; then
		echo "demo.sh: $mnt is still mounted; left $demo in place" >&2
	else
		rm -rf "$demo"
	fi
	[ "$rc" -eq 0 ] || echo "demo.sh: failed (exit $rc)" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$demo"

# Output helpers: a section header, a note, and a command shown as typed.
section() { printf '\n=== %s ===\n' "$*"; }
note() { printf '# %s\n' "$*"; }
run() {
	printf '$ %s\n' "$1"
	eval "$1"
}

# --- The layers -----------------------------------------------------------
mkdir -p base/etc base/bin base/app/plugins middle/bin middle/app top/etc top/app upper work merged

printf 'NAME="Strata Demo OS"\nVERSION="1 (from the base layer)"\n' >base/etc/os-release
printf '#!/bin/sh\necho hello\n' >base/bin/hello
printf '#!/bin/sh\necho greetings\n' >base/bin/greet
chmod 755 base/bin/hello base/bin/greet
echo 'version = 1 (base)' >base/app/config.ini
echo 'line 1, written in the base layer' >base/app/notes.txt
echo 'obsolete (base)' >base/app/legacy.txt
echo 'plugin a (base)' >base/app/plugins/old-a.so
echo 'plugin b (base)' >base/app/plugins/old-b.so

echo 'version = 2 (changed by the middle layer)' >middle/app/config.ini
echo 'added by the middle layer' >middle/app/new-feature.txt
printf '#!/bin/sh\necho tool\n' >middle/bin/tool
chmod 755 middle/bin/tool
mknod middle/app/legacy.txt c 0 0 # kernel whiteout: deletes base's legacy.txt
mkdir middle/app/plugins          # opaque: replaces base's plugins/ entirely
setfattr -n trusted.overlay.opaque -v y middle/app/plugins
echo 'plugin v2 (middle)' >middle/app/plugins/plugin-v2.so

echo '3.0 (from the top layer)' >top/app/VERSION
echo 'strata-demo' >top/etc/hostname

# listing prints a tree as "TYPE PATH" (f file, d directory, c character
# device, i.e. a whiteout), sorted by path.
listing() {
	find "$1" -mindepth 1 -printf '%y %P\n' | sort -k2
}

# fingerprint summarizes the lower layers, to check they stay unchanged.
fingerprint() {
	{
		listing base && listing middle && listing top
		find base middle top -type f -print0 | sort -z | xargs -0 md5sum
	} | md5sum
}
before=$(fingerprint)

echo "strata demo: three layers in a temporary directory, merged by strata-fuse"

section "Three layers, bottom to top (f file, d directory, c whiteout)"
for layer in base middle top; do
	echo "$layer:"
	listing "$layer" | sed 's/^/  /'
done
note "middle/app/plugins is opaque:"
run "getfattr --absolute-names -n trusted.overlay.opaque middle/app/plugins | grep opaque"

# --- Mount ----------------------------------------------------------------
section "Mount them with strata-fuse (top layer first; changes go to upper/)"
printf '$ strata-fuse -o lowerdir=top:middle:base,upperdir=upper,workdir=work merged\n'
"$strata" -o lowerdir=top:middle:base,upperdir=upper,workdir=work merged
run "findmnt -n -o FSTYPE merged"

section "Reads: each file comes from the highest layer that has it"
run "cat merged/etc/os-release"
run "cat merged/app/config.ini"
run "cat merged/app/VERSION"

# --- Copy-up --------------------------------------------------------------
section "Copy-up: writing a lower file copies it into upper/ first"
run "echo 'line 2, appended through the mount' >>merged/app/notes.txt"
run "cat merged/app/notes.txt"
note "the base layer is unchanged:"
run "cat base/app/notes.txt"
note "upper/ now holds the whole file:"
run "cat upper/app/notes.txt"

# --- Whiteouts ------------------------------------------------------------
section "Whiteouts: deleted files"
note "base has app/legacy.txt, but the middle layer's whiteout hides it:"
run "ls -1 merged/app"
note "rm through the mount leaves a whiteout (character device 0,0) in upper/:"
run "rm merged/bin/greet"
run "ls -1 merged/bin"
run "ls -l upper/bin"
run "ls -1 base/bin"

# --- Opaque directory -----------------------------------------------------
section "Opaque directories: a directory that hides the ones below it"
note "middle's app/plugins is opaque, so base's plugins do not show:"
run "ls -1 base/app/plugins"
run "ls -1 merged/app/plugins"
note "replacing a lower directory through the mount makes it opaque in upper/:"
run "rm -r merged/etc && mkdir merged/etc && echo 'new (upper)' >merged/etc/hostname"
run "ls -1 merged/etc"
run "getfattr --absolute-names -n trusted.overlay.opaque upper/etc | grep opaque"

# --- The upper directory --------------------------------------------------
section "upper/ holds only the changes, in kernel overlayfs format"
run "find upper -mindepth 1 -printf '%y %P\n' | sort -k2"

# --- Unmount --------------------------------------------------------------
section "Unmount"
run "umount merged"
[ "$(fingerprint)" = "$before" ] || die "a lower layer changed"
echo
echo "Part 1 done: base, middle and top are unchanged; every change is in upper/."

# --- Part 2: images, containers and layers ----------------------------------
strata() { "$strata_cli" "$@"; }
echo
echo "strata demo, part 2: images and containers in a store under \$STRATA_ROOT (a temporary directory)"

section "A base image, made offline from Debian's busybox-static"
mkdir -p rootfs/bin rootfs/etc rootfs/tmp rootfs/srv/www
cp "$busybox" rootfs/bin/busybox
for applet in sh ls cat echo httpd; do ln -s busybox "rootfs/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >rootfs/etc/passwd
echo '<h1>welcome</h1>' >rootfs/srv/www/index.html
run "tar -C rootfs -cf busybox-rootfs.tar . && ls -l busybox-rootfs.tar | awk '{print \$5, \$9}'"
note "like docker import: a root filesystem tarball becomes a one-layer image"
run "strata import busybox-rootfs.tar busybox:demo"
run "strata images"

section "Two containers share the image's one layer"
run "strata create --name web busybox:demo"
run "strata create --name api busybox:demo"
run "strata mount web && strata mount api"
web=$STRATA_ROOT/mounts/web
api=$STRATA_ROOT/mounts/api
run "echo '<h1>web edition</h1>' >$web/srv/www/index.html"
run "rm $web/bin/echo"
run "mkdir $web/srv/cache && echo cached >$web/srv/cache/page"
run "echo 'api: listening' >$api/etc/motd"
note "each container sees its own changes over the shared layer; the layer is unchanged:"
run "cat $web/srv/www/index.html $api/srv/www/index.html"
run "strata ps"
run "strata diff web"
note "the store holds the base once; each container holds only its changes:"
run "strata ls"

section "Run a program in a container: runc on the container's own strata mount"
note "it reads a file of the base image and writes one; the image's layer is untouched"
run "strata run --name job busybox:demo sh -c 'cat /srv/www/index.html && echo written by job >/srv/www/note.txt && ls /srv/www'"
run "strata ps -a"
note "what the program changed is the container's, as docker diff shows it:"
run "strata diff job"
run "strata rm job"

section "Commit the mounted container web as a new tagged image"
run "strata commit -m 'web content' -c 'CMD [\"httpd\", \"-f\", \"-h\", \"/srv/www\"]' web webapp:v1"
run "strata images"
run "strata history webapp:v1"
layer=$(strata ls -q | sed -n '3p')
note "its new layer holds exactly web's changes:"
run "strata diff $layer"
note "webapp:v1 shares busybox:demo's layer: its unique size is its own layer only"
run "strata system df -v | sed -n '1,6p'"

section "Export it as an OCI archive (skopeo, umoci and podman read it)"
run "strata export webapp:v1 webapp.tar && tar -tf webapp.tar | sort"

section "Push it to a registry, and pull it into another store"
note "Debian's docker-registry, on a free loopback port, for this demo only"
registry_port=
for p in $(seq 5100 5199); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		registry_port=$p
		break
	fi
done
[ -n "$registry_port" ] || die "no free port in 5100-5199 for the demo's registry"
registry=127.0.0.1:$registry_port
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' "$demo/registry" "$registry" >registry.yml
docker-registry serve registry.yml >registry.log 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null && break
	sleep 0.1
done
run "strata push --tls-verify=false webapp:v1 $registry/demo/webapp:v1"
note "a second store, empty: the pull brings both layers, and the image runs there"
run "strata --root store2 pull --tls-verify=false $registry/demo/webapp:v1"
run "strata --root store2 run --rm $registry/demo/webapp:v1 cat /srv/www/index.html"
note "the digest is the one the push printed: nothing was rewritten on the way"
run "strata --root store2 inspect --format '{{index .RepoDigests 0}}' $registry/demo/webapp:v1"
run "strata --root store2 check"

section "Prune: removing the last reference frees a layer"
run "strata unmount web && strata unmount api"
run "strata rm web api"
run "strata rmi webapp:v1"
run "strata image prune -a -f"
run "strata system df"
run "strata check"
echo
echo "Done: two containers shared one image, a commit made a new image on it, a registry carried it to another store, and prune freed what no one needed."

# --- Part 3: build a web site image, run it, push it -------------------------
echo
echo "strata demo, part 3: a small web site, built from a Dockerfile, run with a published port, and pushed"

section "The site and its Dockerfile"
mkdir -p site
echo '<h1>hello from a strata-built site</h1>' >site/index.html
cat >site/Dockerfile <<'DOCKERFILE'
FROM busybox:demo
WORKDIR /www
COPY index.html index.html
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
DOCKERFILE
run "cat site/Dockerfile"
run "strata import busybox-rootfs.tar busybox:demo"

section "Build it: one step a line; the second build is all cached"
run "strata image build -t site site"
run "strata image build -t site site | grep -c CACHED"

section "Run it with a published port, and fetch the page from the host"
web_port=
for p in $(seq 8080 8179); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		web_port=$p
		break
	fi
done
[ -n "$web_port" ] || die "no free port in 8080-8179 for the demo's site"
run "strata container run -d -p $web_port:80 --rm --name site-web site"
for _ in $(seq 50); do
	"$busybox" wget -q -O /dev/null "http://127.0.0.1:$web_port/" 2>/dev/null && break
	sleep 0.1
done
run "busybox wget -q -O - http://127.0.0.1:$web_port/"
run "strata container stop -t 1 site-web"

section "Tag it and push it to the registry"
run "strata image tag site $registry/me/site:latest"
run "strata image push --tls-verify=false $registry/me/site:latest"

section "What it is made of, and what it takes"
run "strata image history site"
run "strata system df"
run "strata image prune -a -f"
run "strata builder prune -f | tail -1"
run "strata check"
echo
echo "Done: a Dockerfile built an image a layer a step, the site ran with a published port, and the registry holds it."
