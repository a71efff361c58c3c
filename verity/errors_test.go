package verity_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/verity"
)

// memDev is an in-memory device: ReaderAt, WriterAt, with a size.
type memDev struct{ b []byte }

func (m *memDev) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memDev) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDev) Size() int64 { return int64(len(m.b)) }

func randomData(seed byte, n int) []byte {
	rng := rand.New(rand.NewChaCha8([32]byte{seed}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func formatMem(t *testing.T, data []byte, p verity.Params) (*memDev, *verity.Result) {
	t.Helper()
	h := &memDev{}
	res, err := verity.Format(bytes.NewReader(data), h, p)
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	return h, res
}

func TestFormatBadParams(t *testing.T) {
	data := bytes.NewReader(make([]byte, 8*4096))
	base := verity.DefaultParams()
	for _, tc := range []struct {
		name string
		mod  func(*verity.Params)
		data io.ReaderAt
		want string
	}{
		{"unknown algorithm", func(p *verity.Params) { p.HashAlgorithm = "md5" }, data, "unknown hash algorithm"},
		{"salt too long", func(p *verity.Params) { p.Salt = make([]byte, 257) }, data, "salt is 257 bytes"},
		{"data block size not power of two", func(p *verity.Params) { p.DataBlockSize = 1536 }, data, "data block size 1536"},
		{"hash block size too big", func(p *verity.Params) { p.HashBlockSize = 8192 }, data, "hash block size 8192"},
		{"block size too small", func(p *verity.Params) { p.DataBlockSize = 256 }, data, "data block size 256"},
		{"hash format 2", func(p *verity.Params) { p.HashFormat = 2 }, data, "hash format 2"},
		{"hash offset unaligned", func(p *verity.Params) { p.HashOffset = 100 }, data, "not a multiple of 512"},
		{"no superblock offset unaligned", func(p *verity.Params) { p.NoSuperblock = true; p.HashOffset = 512 }, data, "not a multiple of the hash block size"},
		{"size not a block multiple", nil, bytes.NewReader(make([]byte, 4097)), "not a multiple of the data block size"},
		{"empty data", nil, bytes.NewReader(nil), "empty"},
		{"data shorter than data blocks", func(p *verity.Params) { p.DataBlocks = 9 }, data, "data device too small"},
		{"size unknown", nil, struct{ io.ReaderAt }{data}, "give the number of data blocks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			if tc.mod != nil {
				tc.mod(&p)
			}
			_, err := verity.Format(tc.data, &memDev{}, p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "verity: ") {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestReadSuperblockErrors(t *testing.T) {
	p := verity.DefaultParams()
	p.Salt = []byte{1, 2, 3}
	h, _ := formatMem(t, randomData(1, 16*4096), p)
	good := h.b[:512]
	if sb, err := verity.ReadSuperblock(bytes.NewReader(good), 0); err != nil || sb.DataBlocks != 16 || !bytes.Equal(sb.Salt, p.Salt) {
		t.Fatalf("ReadSuperblock(good) = %+v, %v", sb, err)
	}
	patch := func(off int, v []byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"wrong magic", patch(0, []byte("verify")), "wrong magic"},
		{"version 2", patch(8, le32(2)), "unsupported version 2"},
		{"hash type 2", patch(12, le32(2)), "unsupported hash type 2"},
		{"unknown algorithm", patch(32, []byte("whirlpool\x00")), "unknown hash algorithm"},
		{"unterminated algorithm", patch(32, bytes.Repeat([]byte{'a'}, 32)), "not terminated"},
		{"block size", patch(64, le32(3000)), "unsupported block sizes"},
		{"zero data blocks", patch(72, make([]byte, 8)), "zero data blocks"},
		{"salt too long", patch(80, []byte{1, 1}), "salt size 257"},
		{"truncated", good[:300], "too small"},
		{"empty", nil, "too small"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verity.ReadSuperblock(bytes.NewReader(tc.b), 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	data := randomData(2, 300*4096)
	p := verity.DefaultParams()
	p.Salt = []byte("salt")
	h, res := formatMem(t, data, p)
	if err := verity.Verify(bytes.NewReader(data), bytes.NewReader(h.b), res.RootHash, verity.Params{}); err != nil {
		t.Fatalf("Verify(good) = %v", err)
	}
	wrongRoot := bytes.Clone(res.RootHash)
	wrongRoot[31] ^= 1
	if err := verity.Verify(bytes.NewReader(data), bytes.NewReader(h.b), wrongRoot, verity.Params{}); !errors.Is(err, verity.ErrRootHashMismatch) || !errors.Is(err, verity.ErrCorrupted) {
		t.Errorf("wrong root: %v", err)
	}
	if err := verity.Verify(bytes.NewReader(data), bytes.NewReader(h.b), res.RootHash[:20], verity.Params{}); err == nil || !strings.Contains(err.Error(), "root hash is 20 bytes") {
		t.Errorf("short root: %v", err)
	}
	if err := verity.Verify(bytes.NewReader(data), bytes.NewReader(h.b[:len(h.b)-1]), res.RootHash, verity.Params{}); err == nil || !strings.Contains(err.Error(), "hash device too small") {
		t.Errorf("truncated hash device: %v", err)
	}
	if err := verity.Verify(bytes.NewReader(data[:len(data)-4096]), bytes.NewReader(h.b), res.RootHash, verity.Params{}); err == nil || !strings.Contains(err.Error(), "data device too small") {
		t.Errorf("truncated data: %v", err)
	}
	if err := verity.Verify(bytes.NewReader(data), bytes.NewReader(h.b), res.RootHash, verity.Params{HashAlgorithm: "sha1"}); err == nil || !strings.Contains(err.Error(), "differs from the superblock") {
		t.Errorf("conflicting algorithm: %v", err)
	}
	if err := verity.Verify(bytes.NewReader(data), bytes.NewReader(h.b[4096:]), res.RootHash, verity.Params{}); !errors.Is(err, verity.ErrBadSuperblock) {
		t.Errorf("no superblock: %v", err)
	}

	// Every data block and every hash block, corrupted alone, is named.
	for db := range uint64(300) {
		d := bytes.Clone(data)
		d[db*4096+4095] ^= 0x80
		var ce *verity.CorruptionError
		err := verity.Verify(bytes.NewReader(d), bytes.NewReader(h.b), res.RootHash, verity.Params{})
		if !errors.As(err, &ce) || ce.Area != verity.DataArea || ce.Block != db || ce.Offset != int64(db)*4096 {
			t.Fatalf("data block %d flipped: %v", db, err)
		}
	}
	for hb := res.HashStartBlock; hb < uint64(len(h.b)/4096); hb++ {
		for _, off := range []int{0, 4095} { // a digest byte, a spare byte
			hc := bytes.Clone(h.b)
			hc[int(hb)*4096+off] ^= 1
			var ce *verity.CorruptionError
			err := verity.Verify(bytes.NewReader(data), bytes.NewReader(hc), res.RootHash, verity.Params{})
			if !errors.As(err, &ce) || ce.Area != verity.HashArea || ce.Block != hb {
				t.Fatalf("hash block %d byte %d flipped: %v", hb, off, err)
			}
		}
	}
}

func TestFormatFileSameFileOverlap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, randomData(3, 10*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	p := verity.DefaultParams()
	p.HashOffset = 8 * 4096
	if _, err := verity.FormatFile(path, path, p); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("whole file as data, tree inside it: %v", err)
	}
	p.DataBlocks = 8
	res, err := verity.FormatFile(path, path, p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := verity.Verify(f, f, res.RootHash, verity.Params{HashOffset: p.HashOffset}); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// TestFormatWriterAt checks that Format over plain io interfaces (as the
// image builder uses it) writes what FormatFile writes, and that the
// derived salt and UUID are stable.
func TestFormatWriterAt(t *testing.T) {
	data := randomData(4, 1000*4096)
	p := verity.DefaultParams()
	p.Salt = verity.DeriveSalt([]byte("seed"))
	p.UUID = verity.DeriveUUID([]byte("seed"))
	if !bytes.Equal(p.Salt, verity.DeriveSalt([]byte("seed"))) || bytes.Equal(p.Salt, verity.DeriveSalt([]byte("seed2"))) || len(p.Salt) != 32 {
		t.Fatal("DeriveSalt is not a function of its seed")
	}
	if u := verity.FormatUUID(p.UUID); u[14] != '4' || !strings.ContainsAny(u[19:20], "89ab") {
		t.Errorf("DeriveUUID %s lacks version/variant bits", u)
	}
	h, res := formatMem(t, data, p)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "d"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	res2, err := verity.FormatFile(filepath.Join(dir, "d"), filepath.Join(dir, "h"), p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.RootHash, res2.RootHash) || !bytes.Equal(h.b, readFile(t, filepath.Join(dir, "h"))) {
		t.Error("Format and FormatFile disagree")
	}
	if int64(len(h.b)) != res.HashDeviceSize || res.HashSize != res.HashDeviceSize || res.Params.DataBlocks != 1000 {
		t.Errorf("sizes: wrote %d, result %+v", len(h.b), res)
	}
}
