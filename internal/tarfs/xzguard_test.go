package tarfs_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"hash/crc32"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/tarfs"
	"github.com/osguard/osguard/internal/testutil"
)

// The guard must let every stream xz writes through: presets, checks,
// several blocks, BCJ filters, incompressible data (uncompressed chunks),
// concatenated streams and stream padding.
func TestGuardXZPassesXZOutput(t *testing.T) {
	xzTool := testutil.NeedTool(t, "xz")[0]
	text := bytes.Repeat([]byte("osguard hardened image\n"), 50000)
	noise := make([]byte, 300000)
	rand.Read(noise)
	mixed := append(append(append([]byte{}, text[:200000]...), noise...), text...)
	xzOut := func(in []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(xzTool, append([]string{"-c"}, args...)...)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		return out
	}
	type tc struct {
		name string
		in   []byte
		xz   []byte
	}
	var cases []tc
	for _, args := range [][]string{{"-0"}, {"-6"}, {"-9e"}, {"-C", "none"}, {"-C", "crc32"}, {"-C", "sha256"},
		{"-T2", "--block-size=65536"}, {"--x86", "--lzma2=preset=6"}, {"--delta=dist=4", "--lzma2=preset=1"},
		{"--block-size=100000", "-C", "sha256"}} {
		for name, in := range map[string][]byte{"text": text, "mixed": mixed, "empty": nil, "noise": noise} {
			cases = append(cases, tc{name + fmtArgs(args), in, xzOut(in, args...)})
		}
	}
	a, b := xzOut(text, "-1"), xzOut(noise, "-C", "crc32")
	cases = append(cases, tc{"concatenated", append(append([]byte{}, text...), noise...), append(append([]byte{}, a...), b...)})
	padded := append(append(append([]byte{}, a...), make([]byte, 8)...), b...)
	padded = append(padded, make([]byte, 4)...)
	cases = append(cases, tc{"padded", append(append([]byte{}, text...), noise...), padded})
	for _, c := range cases {
		var got bytes.Buffer
		// One byte at a time and all at once: the guard keeps state across reads.
		for _, r := range []io.Reader{bytes.NewReader(c.xz), &oneByte{c.xz}} {
			got.Reset()
			n, err := io.Copy(&got, tarfs.GuardXZ(r, tarfs.MaxXZDict))
			if err != nil || !bytes.Equal(got.Bytes(), c.xz) {
				t.Fatalf("%s: passed %d of %d bytes: %v", c.name, n, len(c.xz), err)
			}
		}
		if strings.Contains(c.name, "--x86") || strings.Contains(c.name, "--delta") {
			continue // github.com/ulikunitz/xz decodes LZMA2 only
		}
		dr, comp, release, err := tarfs.Decompress(bytes.NewReader(c.xz))
		if err != nil || comp != tarfs.Xz {
			t.Fatalf("%s: %v %v", c.name, comp, err)
		}
		got.Reset()
		_, err = io.Copy(&got, dr)
		release()
		if err != nil || !bytes.Equal(got.Bytes(), c.in) {
			t.Fatalf("%s: decompressed %d of %d bytes: %v", c.name, got.Len(), len(c.in), err)
		}
	}
}

func fmtArgs(a []string) string {
	s := ""
	for _, x := range a {
		s += " " + x
	}
	return s
}

type oneByte struct{ b []byte }

func (o *oneByte) Read(p []byte) (int, error) {
	if len(o.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = o.b[0]
	o.b = o.b[1:]
	return 1, nil
}

// An 80-byte xz stream whose block header declares a 4 GiB dictionary made
// the decoder allocate 4 GiB; it is now refused before the decoder sees it.
func TestGuardXZRefusesHugeDictionary(t *testing.T) {
	// xz -c of "hello world" x10 with a 1 MiB dictionary, its dictionary
	// byte then set to 40 (4 GiB - 1) and the block header CRC32 fixed.
	small := []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4, 0xe6, 0xd6, 0xb4, 0x46}
	hdr := []byte{0x02, 0x00, 0x21, 0x01, 40, 0x00, 0x00, 0x00, 0, 0, 0, 0}
	putCRC := func(h []byte) {
		c := crc32.ChecksumIEEE(h[:len(h)-4])
		h[len(h)-4], h[len(h)-3], h[len(h)-2], h[len(h)-1] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	}
	putCRC(hdr)
	in := append(append(small, hdr...), 0x01, 0x00, 0x04, 'h', 'e', 'l', 'l', 'o', 0x00)
	_, err := io.Copy(io.Discard, tarfs.GuardXZ(bytes.NewReader(in), tarfs.MaxXZDict))
	if !errors.Is(err, tarfs.ErrXZDict) {
		t.Fatalf("err = %v", err)
	}
	dr, _, release, err := tarfs.Decompress(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := io.Copy(io.Discard, dr); !errors.Is(err, tarfs.ErrXZDict) {
		t.Fatalf("Decompress: err = %v", err)
	}
	// The same stream with a 1 MiB dictionary decodes.
	hdr[4] = 16
	putCRC(hdr)
	in = append(append(small, hdr...), 0x01, 0x00, 0x04, 'h', 'e', 'l', 'l', 'o', 0x00)
	if _, err := io.Copy(io.Discard, tarfs.GuardXZ(bytes.NewReader(in), tarfs.MaxXZDict)); err != nil {
		t.Fatalf("1 MiB dictionary: %v", err)
	}
}
