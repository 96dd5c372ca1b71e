#!/usr/bin/env bash
# Runs unionmount-testsuite's directory rename tests against strata-fuse.
#
#   scripts/unionmount.sh SUITE_DIR [TEST...]
#
# SUITE_DIR is a checkout of github.com/amir73il/unionmount-testsuite. The
# suite mounts through mount(8) as `mount -t fuse.strata-fuse ...`, so it
# needs root, mount.fuse3 (Debian: fuse3) and python3. The suite's --fuse=
# takes the program as the fuse subtype, here an absolute path, since
# mount.fuse3 runs it with the system's PATH. strata-fuse is built
# from this tree unless STRATA_FUSE names a binary. Without TESTS it runs
# rename-dir, rename-empty-dir, rename-pop-dir and rename-move-dir with one
# lower (--ov), then those and hard-link-dir, rename-new-dir,
# rename-new-pop-dir and rename-mass-dir with up to three layers (--ov=3:
# the upper is rotated into the lower stack during the tests), never with
# --xdev: directory renames must work. Named TESTS run with --ov, or with
# $OV (e.g. OV=--ov=3). Each test runs on its own; the
# summary lists which passed. Scratch space is a temporary directory
# (UNIONMOUNT_BASEDIR), removed at the end. For measurement, not CI.
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1/run" ]]; then
	echo "usage: $0 SUITE_DIR [TEST...]   (SUITE_DIR: a checkout of unionmount-testsuite, with its ./run)" >&2
	exit 2
fi
suite=$(cd "$1" && pwd)
shift
if [[ $(id -u) -ne 0 ]]; then
	echo "$0: the suite mounts and unmounts: run as root" >&2
	exit 2
fi
for tool in python3 mount.fuse3; do
	if ! command -v "$tool" >/dev/null; then
		echo "$0: needs $tool (apt-get install python3 fuse3)" >&2
		exit 2
	fi
done

repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d /tmp/strata-unionmount-XXXXXX)
unmount_scratch() {
	local m
	{ grep -o " $scratch/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" || true
	done
}
cleanup() {
	# Unmount what the suite may have left mounted below our scratch dir,
	# deepest first, then remove it.
	unmount_scratch
	rm -rf "$scratch"
}
trap cleanup EXIT

# mount -t fuse.PROG runs "PROG SOURCE MOUNTPOINT -o OPTS" through
# mount.fuse3, with PATH reset to the system's: PROG is an absolute path.
mkdir -p "$scratch/bin" "$scratch/base"
if [[ -n "${STRATA_FUSE:-}" ]]; then
	ln -s "$(realpath "$STRATA_FUSE")" "$scratch/bin/strata-fuse"
else
	(cd "$repo" && go build -o "$scratch/bin/strata-fuse" ./cmd/strata-fuse)
fi
prog="$scratch/bin/strata-fuse"
export UNIONMOUNT_BASEDIR="$scratch/base"

passes=()
if [[ $# -gt 0 ]]; then
	passes+=("${OV:---ov}:$*")
else
	passes+=("--ov:rename-dir rename-empty-dir rename-pop-dir rename-move-dir")
	passes+=("--ov=3:rename-dir rename-empty-dir rename-pop-dir rename-move-dir hard-link-dir rename-new-dir rename-new-pop-dir rename-mass-dir")
fi

summary=()
failed=0
for pass in "${passes[@]}"; do
	layers=${pass%%:*}
	for t in ${pass#*:}; do
		echo "=== ./run $layers --fuse=strata-fuse $t"
		rm -rf "${UNIONMOUNT_BASEDIR:?}"/*
		if (cd "$suite" && ./run "$layers" --fuse="$prog" "$t"); then
			summary+=("PASS $layers $t")
		else
			summary+=("FAIL $layers $t")
			failed=$((failed + 1))
		fi
		# A failed test leaves its mount behind; the next one needs a clean base.
		unmount_scratch
	done
done
echo
echo "unionmount-testsuite against strata-fuse:"
printf '  %s\n' "${summary[@]}"
exit $((failed > 0))
