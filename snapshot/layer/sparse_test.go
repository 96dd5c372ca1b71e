//go:build linux

package layer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spFrag is a data fragment of a sparse fixture.
type spFrag struct {
	off  int64
	data string
}

const tib = int64(1) << 40

// spFrags are the fragments of the 1 TiB fixtures: more than the four
// an old GNU header holds, so an extension block is needed; the last
// ends the file, the others are surrounded by holes.
var spFrags = []spFrag{
	{0, "head"}, {1 << 20, "one MiB"}, {1 << 30, strings.Repeat("g", 5000)},
	{1 << 35, "32 GiB"}, {1 << 39, "512 GiB"}, {tib - 4, "tail"},
}

// spBlock is a tar header block: name, type, size and the rest set by
// fill, checksummed.
func spBlock(name string, typ byte, size int64, gnu bool, fill func(b []byte)) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	spNumber(b[124:136], size)
	copy(b[136:], fmt.Sprintf("%011o\x00", 1600000000))
	b[156] = typ
	if gnu {
		copy(b[257:], "ustar  \x00")
	} else {
		copy(b[257:], "ustar\x0000")
	}
	if fill != nil {
		fill(b)
	}
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// spNumber writes v in a 12-byte numeric field: octal where it fits,
// else GNU base-256.
func spNumber(f []byte, v int64) {
	if v < 1<<33 {
		copy(f, fmt.Sprintf("%011o\x00", v))
		return
	}
	clear(f)
	for i := len(f) - 1; i > 0; i-- {
		f[i] = byte(v)
		v >>= 8
	}
	f[0] = 0x80
}

func spPad(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// spEnd ends an archive.
func spEnd(b []byte) []byte { return append(b, make([]byte, 1024)...) }

// spOldGNU is an old GNU sparse entry (type 'S') of name, realsize bytes
// with frags, its map in the header and extension blocks.
func spOldGNU(name string, realsize int64, frags []spFrag) []byte {
	var physical int64
	var data []byte
	for _, f := range frags {
		physical += int64(len(f.data))
		data = append(data, f.data...)
	}
	entry := func(b []byte, f spFrag) {
		spNumber(b[:12], f.off)
		spNumber(b[12:24], int64(len(f.data)))
	}
	head := frags[:min(4, len(frags))]
	rest := frags[len(head):]
	out := spBlock(name, 'S', physical, true, func(b []byte) {
		for i, f := range head {
			entry(b[386+24*i:], f)
		}
		if len(rest) > 0 {
			b[482] = 1
		}
		spNumber(b[483:495], realsize)
	})
	for len(rest) > 0 {
		ext := make([]byte, 512)
		n := min(21, len(rest))
		for i, f := range rest[:n] {
			entry(ext[24*i:], f)
		}
		rest = rest[n:]
		if len(rest) > 0 {
			ext[504] = 1
		}
		out = append(out, ext...)
	}
	return append(out, spPad(data)...)
}

// spPAX10 is a PAX 1.0 sparse entry: a PAX header, then a ustar header
// whose data opens with the map in text. mapData overrides the data
// count of the map (hostile fixtures).
func spPAX10(name string, realsize int64, frags []spFrag, mapData int64) []byte {
	pax := atPAXRecord("GNU.sparse.major", "1") + atPAXRecord("GNU.sparse.minor", "0") +
		atPAXRecord("GNU.sparse.name", name) + atPAXRecord("GNU.sparse.realsize", strconv.FormatInt(realsize, 10))
	m := fmt.Sprintf("%d\n", len(frags))
	var data []byte
	for i, f := range frags {
		n := int64(len(f.data))
		if i == 0 && mapData >= 0 {
			n = mapData
		}
		m += fmt.Sprintf("%d\n%d\n", f.off, n)
		data = append(data, f.data...)
	}
	body := append(spPad([]byte(m)), data...)
	out := append(spBlock("PaxHeaders/"+name, 'x', int64(len(pax)), false, nil), spPad([]byte(pax))...)
	out = append(out, spBlock("GNUSparseFile.0/"+name, '0', int64(len(body)), false, nil)...)
	return append(out, spPad(body)...)
}

// spRegular is a plain ustar file entry.
func spRegular(name, data string) []byte {
	return append(spBlock(name, '0', int64(len(data)), false, nil), spPad([]byte(data))...)
}

// spCheck checks the file p: its size, its data at each fragment, zeros
// in a hole, and that it takes little room.
func spCheck(t *testing.T, p string, size int64, frags []spFrag) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 > 1<<20 {
		t.Errorf("%s: size %d, %d bytes allocated; want size %d, mostly holes", p, st.Size, st.Blocks*512, size)
	}
	for _, fr := range frags {
		got := make([]byte, len(fr.data))
		if _, err := f.ReadAt(got, fr.off); err != nil && err != io.EOF || string(got) != fr.data {
			t.Errorf("%s at %d: %.20q, %v; want %.20q", p, fr.off, got, err, fr.data)
		}
	}
	hole, at := make([]byte, 64), frags[0].off+int64(len(frags[0].data))+100
	if _, err := f.ReadAt(hole, at); err != nil || !bytes.Equal(hole, make([]byte, 64)) {
		t.Errorf("%s: hole at %d reads %q, %v; want zeros", p, at, hole, err)
	}
}

// spCPU is the CPU time this process has used.
func spCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestApplySparseHoles applies 1 TiB sparse files in the old GNU format
// and PAX 1.0, hand-made: the holes must cost neither CPU (archive/tar
// read through would take over a minute) nor room, the data must be at
// its offsets, and the diff ID must be over the tar as given.
func TestApplySparseHoles(t *testing.T) {
	tests := []struct {
		name string
		blob []byte
	}{
		{"old GNU", spEnd(append(spOldGNU("big", tib, spFrags), spRegular("after", "after")...))},
		{"PAX 1.0", spEnd(append(spPAX10("big", tib, spFrags, -1), spRegular("after", "after")...))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := atTempDir(t)
			cpu := spCPU(t)
			res, err := Apply(context.Background(), dir, bytes.NewReader(tc.blob), ApplyOptions{MaxApparentSize: 2 * tib})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			id, size, err := DiffID(bytes.NewReader(tc.blob))
			if used := spCPU(t) - cpu; used > 5*time.Second {
				t.Errorf("Apply and DiffID used %v of CPU; want holes not walked", used)
			}
			if want := atSHA256(tc.blob); err != nil || res.DiffID != want || id != want || size != int64(len(tc.blob)) {
				t.Errorf("Apply DiffID %s, DiffID() %s, %d, %v; want %s, %d", res.DiffID, id, size, err, want, len(tc.blob))
			}
			spCheck(t, filepath.Join(dir, "big"), tib, spFrags)
			if b, err := os.ReadFile(filepath.Join(dir, "after")); err != nil || string(b) != "after" {
				t.Errorf("after: %q, %v; want the entry after the sparse one", b, err)
			}
		})
	}
}

// TestApplySparseGNUTar applies what GNU tar writes for a sparse file
// in each of its sparse formats, and compares with the source file.
func TestApplySparseGNUTar(t *testing.T) {
	out, err := exec.Command("tar", "--version").Output()
	if err != nil || !strings.Contains(string(out), "GNU tar") {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs GNU tar (apt-get install tar): %v", err)
		}
		t.Skip("needs GNU tar (apt-get install tar)")
	}
	src := t.TempDir()
	big := filepath.Join(src, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	var frags []spFrag
	for i := range 40 { // more than one extension block of the old format
		fr := spFrag{int64(i)*(3<<19) + int64(i)*333, strings.Repeat(strconv.Itoa(i), 600)}
		frags = append(frags, fr)
		if _, err := f.WriteAt([]byte(fr.data), fr.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(f.Truncate(size), f.Close()); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(big)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"gnu", "0.0", "0.1", "1.0"} {
		t.Run(format, func(t *testing.T) {
			args := []string{"--sparse", "--format=posix", "--sparse-version=" + format}
			if format == "gnu" {
				args = []string{"--sparse", "--format=gnu"}
			}
			blob, err := exec.Command("tar", append(args, "-cf", "-", "-C", src, "big")...).Output()
			if err != nil {
				t.Fatalf("tar: %v", err)
			}
			if len(blob) > 1<<20 {
				t.Fatalf("tar of %d bytes: GNU tar did not store the file sparse", len(blob))
			}
			dir := atTempDir(t)
			res, err := Apply(context.Background(), dir, bytes.NewReader(blob), ApplyOptions{})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if res.DiffID != atSHA256(blob) {
				t.Errorf("DiffID %s, want %s", res.DiffID, atSHA256(blob))
			}
			got, err := os.ReadFile(filepath.Join(dir, "big"))
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(want) {
				t.Errorf("big differs from the file GNU tar read")
			}
			spCheck(t, filepath.Join(dir, "big"), size, frags)
		})
	}
}

// TestApplyApparentSize checks the bound on a layer's files added up.
func TestApplyApparentSize(t *testing.T) {
	two := spEnd(append(spOldGNU("a", tib, spFrags), spPAX10("b", 1<<20, []spFrag{{0, "x"}}, -1)...))
	tests := []struct {
		name string
		blob []byte
		max  int64
		want string // "" if applied
	}{
		{"1 TiB by default", spEnd(spOldGNU("a", tib, spFrags)), 0, ""},
		{"over 1 TiB by default", two, 0, `entry "b": the layer's files add up to 1099512676352 bytes (holes of sparse files included), more than the limit of 1099511627776`},
		{"raised", two, 2 * tib, ""},
		{"at the limit", spEnd(append(spRegular("f", "12345"), spRegular("g", "67890")...)), 10, ""},
		{"over the limit", spEnd(append(spRegular("f", "12345"), spRegular("g", "678901")...)), 10, `entry "g": the layer's files add up to 11 bytes`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := atTempDir(t)
			_, err := Apply(context.Background(), dir, bytes.NewReader(tc.blob), ApplyOptions{MaxApparentSize: tc.max})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Apply: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrApparentSize)):
				t.Fatalf("Apply error = %v; want ErrApparentSize containing %s", err, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), "raise the limit with "+MaxApparentSizeEnv+"=BYTES"):
				t.Errorf("Apply error = %v; want it to say how to raise the limit", err)
			}
		})
	}
}

// TestApplySparseRefuses checks sparse entries whose map does not match
// their data.
func TestApplySparseRefuses(t *testing.T) {
	frags := []spFrag{{0, "hello"}, {100, "world"}}
	tests := []struct {
		name string
		blob []byte
		want string
	}{
		{"map over the data", spEnd(spPAX10("f", 1000, frags, 50)), `entry "f": sparse file: the map holds 55 bytes of data, the entry 10`},
		{"map under the data", spEnd(spPAX10("f", 1000, frags, 1)), `entry "f": sparse file: the map holds 6 bytes of data, the entry 10`},
		// archive/tar checks the map itself before Apply sees the entry.
		{"fragments out of order", spEnd(spOldGNU("f", 1000, []spFrag{{100, "a"}, {0, "b"}})), `invalid tar header`},
		{"fragment past the size", spEnd(spOldGNU("f", 10, []spFrag{{8, "abc"}})), `invalid tar header`},
		{"truncated data", spOldGNU("f", tib, spFrags)[:1024+100], `entry "f": truncated data`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := atTempDir(t)
			_, err := Apply(context.Background(), dir, bytes.NewReader(tc.blob), ApplyOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply error = %v; want one containing %s", err, tc.want)
			}
			if _, _, err := DiffID(bytes.NewReader(tc.blob)); err == nil {
				t.Errorf("DiffID took the layer")
			}
		})
	}
}

// oneByteSparse is an old GNU sparse entry of one data byte, whose 511
// bytes of padding are pad: after it, the next header starts exactly
// one block after the data byte.
func oneByteSparse(name string, pad []byte) []byte {
	h := spBlock(name, 'S', 1, true, func(b []byte) {
		spNumber(b[386:398], 0)
		spNumber(b[398:410], 1)
		spNumber(b[483:495], 1000)
	})
	d := make([]byte, 512)
	d[0] = 'z'
	copy(d[1:], pad)
	return append(h, d...)
}

// TestSparseAfterSparse: the header of a sparse entry that follows
// another sparse entry is found where it is, whether the first entry's
// data was read (a file), not read (a whiteout, skipped) or not read at
// all (DiffID); padding that looks like a header with an absurd size is
// only padding.
func TestSparseAfterSparse(t *testing.T) {
	second := spOldGNU("b", 1000, []spFrag{{0, "y"}})
	fake := make([]byte, 511) // a block that starts one byte into the padding
	fake[156-1] = 'x'
	size := fake[124-1 : 136-1]
	size[0], size[4] = 0x80, 0x7f
	for i := 5; i < 12; i++ {
		size[i] = 0xff
	}
	for _, tc := range []struct {
		name  string
		first string
		pad   []byte
	}{
		{"file first", "a", nil},
		{"whiteout first", ".wh.a", nil},
		{"file first, hostile padding", "a", fake},
		{"whiteout first, hostile padding", ".wh.a", fake},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := spEnd(append(oneByteSparse(tc.first, tc.pad), second...))
			if _, err := Apply(context.Background(), atTempDir(t), bytes.NewReader(blob), ApplyOptions{}); err != nil {
				t.Errorf("Apply: %v", err)
			}
			if _, _, err := DiffID(bytes.NewReader(blob)); err != nil {
				t.Errorf("DiffID: %v", err)
			}
		})
	}
}

// TestSparseGNUTarTwoFiles applies GNU tar's archive of two sparse
// files, the first ending in a one-byte fragment, in each format.
func TestSparseGNUTarTwoFiles(t *testing.T) {
	if out, err := exec.Command("tar", "--version").Output(); err != nil || !strings.Contains(string(out), "GNU tar") {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs GNU tar (apt-get install tar): %v", err)
		}
		t.Skip("needs GNU tar (apt-get install tar)")
	}
	src := t.TempDir()
	for _, n := range []string{"a", "b"} {
		f, err := os.Create(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(1 << 20); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("x"), 1<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for _, format := range []string{"gnu", "1.0"} {
		args := []string{"-C", src, "--sparse", "-cf", "-", "a", "b"}
		if format == "gnu" {
			args = append([]string{"--format=gnu"}, args...)
		} else {
			args = append([]string{"--format=pax", "--sparse-version=" + format}, args...)
		}
		blob, err := exec.Command("tar", args...).Output()
		if err != nil {
			t.Fatalf("tar %v: %v", args, err)
		}
		dir := atTempDir(t)
		if _, err := Apply(context.Background(), dir, bytes.NewReader(blob), ApplyOptions{}); err != nil {
			t.Errorf("%s: Apply: %v", format, err)
		}
		if _, _, err := DiffID(bytes.NewReader(blob)); err != nil {
			t.Errorf("%s: DiffID: %v", format, err)
		}
	}
}
