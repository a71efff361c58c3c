package verity_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/verity"
)

// oracleCase is one veritysetup parameter combination. sameFile puts the
// tree after the data in one file at hashOffset; otherwise hashOffset is
// an offset in a separate hash file.
type oracleCase struct {
	alg        string
	dbs, hbs   uint32
	salt       []byte
	format     uint32
	blocks     uint64
	noSB       bool
	hashOffset uint64
	sameFile   bool
	flip       bool // also check that a flipped byte is caught by both
}

func (c oracleCase) name() string {
	n := fmt.Sprintf("%s_%d_%d_f%d_n%d_salt%d", c.alg, c.dbs, c.hbs, c.format, c.blocks, len(c.salt))
	if c.noSB {
		n += "_nosb"
	}
	if c.hashOffset > 0 {
		n += fmt.Sprintf("_off%d", c.hashOffset)
	}
	if c.sameFile {
		n += "_same"
	}
	return n
}

func saltOf(n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = byte(i*7 + 3)
	}
	return s
}

func oracleCases() []oracleCase {
	var cs []oracleCase
	salt32 := saltOf(32)
	// Every algorithm, both formats, a three-level tree for the small-digest ones.
	for _, alg := range verity.Algorithms() {
		for _, f := range []uint32{1, 0} {
			cs = append(cs, oracleCase{alg: alg, dbs: 4096, hbs: 4096, salt: salt32, format: f, blocks: 129, flip: true})
			cs = append(cs, oracleCase{alg: alg, dbs: 512, hbs: 512, salt: salt32, format: f, blocks: 300})
		}
	}
	// Every block size pair.
	sizes := []uint32{512, 1024, 2048, 4096}
	for i, d := range sizes {
		for j, h := range sizes {
			cs = append(cs, oracleCase{alg: "sha256", dbs: d, hbs: h, salt: salt32, format: 1, blocks: uint64(97 + 37*i + 11*j), flip: i == j})
		}
	}
	// Odd block counts around level boundaries (128 digests per 4096 block, 16 per 512).
	for _, n := range []uint64{1, 2, 127, 128, 129, 16383, 16384, 16385} {
		cs = append(cs, oracleCase{alg: "sha256", dbs: 512, hbs: 4096, salt: salt32, format: 1, blocks: n, flip: true})
	}
	for _, n := range []uint64{1, 2, 15, 16, 17, 255, 256, 257, 4097} {
		cs = append(cs, oracleCase{alg: "sha256", dbs: 512, hbs: 512, salt: salt32, format: 1, blocks: n, flip: n > 2})
	}
	// Salts: none, one byte, odd, the maximum.
	for _, s := range []int{0, 1, 63, 255, 256} {
		cs = append(cs, oracleCase{alg: "sha256", dbs: 4096, hbs: 4096, salt: saltOf(s), format: 1, blocks: 130})
		cs = append(cs, oracleCase{alg: "sha1", dbs: 1024, hbs: 512, salt: saltOf(s), format: 0, blocks: 130})
	}
	// No superblock; hash offsets, separate and in the data file.
	cs = append(cs,
		oracleCase{alg: "sha256", dbs: 4096, hbs: 4096, salt: salt32, format: 1, blocks: 200, noSB: true, flip: true},
		oracleCase{alg: "sha512", dbs: 1024, hbs: 2048, salt: nil, format: 0, blocks: 1, noSB: true},
		oracleCase{alg: "sha256", dbs: 4096, hbs: 4096, salt: salt32, format: 1, blocks: 200, noSB: true, hashOffset: 8192},
		oracleCase{alg: "sha256", dbs: 4096, hbs: 4096, salt: salt32, format: 1, blocks: 200, hashOffset: 512},
		oracleCase{alg: "sha256", dbs: 4096, hbs: 1024, salt: salt32, format: 1, blocks: 200, hashOffset: 3584},
		oracleCase{alg: "sha256", dbs: 4096, hbs: 4096, salt: salt32, format: 1, blocks: 200, hashOffset: 200 * 4096, sameFile: true, flip: true},
		oracleCase{alg: "sha1", dbs: 512, hbs: 1024, salt: salt32, format: 0, blocks: 333, hashOffset: 333*512 + 512, sameFile: true, flip: true},
		oracleCase{alg: "sha256", dbs: 4096, hbs: 4096, salt: salt32, format: 1, blocks: 200, noSB: true, hashOffset: 201 * 4096, sameFile: true, flip: true},
		oracleCase{alg: "sha512", dbs: 4096, hbs: 4096, salt: nil, format: 1, blocks: 1, hashOffset: 4096, sameFile: true},
	)
	return cs
}

const testUUID = "0f1e2d3c-4b5a-4978-8a9b-acbdcedf0011"

func (c oracleCase) params() verity.Params {
	u, _ := verity.ParseUUID(testUUID)
	return verity.Params{HashAlgorithm: c.alg, DataBlockSize: c.dbs, HashBlockSize: c.hbs, Salt: c.salt,
		UUID: u, HashFormat: c.format, DataBlocks: c.blocks, HashOffset: c.hashOffset, NoSuperblock: c.noSB}
}

// args are the veritysetup options for the case.
func (c oracleCase) args() []string {
	salt := "-"
	if len(c.salt) > 0 {
		salt = hex.EncodeToString(c.salt)
	}
	a := []string{"--hash", c.alg, "--data-block-size", strconv.Itoa(int(c.dbs)), "--hash-block-size", strconv.Itoa(int(c.hbs)),
		"--salt", salt, "--format", strconv.Itoa(int(c.format)), "--data-blocks", strconv.FormatUint(c.blocks, 10)}
	if c.noSB {
		a = append(a, "--no-superblock")
	} else {
		a = append(a, "--uuid", testUUID)
	}
	if c.hashOffset > 0 {
		a = append(a, "--hash-offset", strconv.FormatUint(c.hashOffset, 10))
	}
	return a
}

var rootLine = regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]+)$`)

func veritysetup(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(tool, args...).CombinedOutput()
	return string(out), err
}

// paths writes the case's data and returns the data and hash paths for
// one tool (in dir).
func (c oracleCase) files(t *testing.T, dir string, data []byte) (dataPath, hashPath string) {
	t.Helper()
	dataPath = filepath.Join(dir, "data.img")
	if err := os.WriteFile(dataPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if c.sameFile {
		return dataPath, dataPath
	}
	hashPath = filepath.Join(dir, "hash.img")
	if c.hashOffset > 0 {
		// Something before the offset that both tools must leave alone.
		if err := os.WriteFile(hashPath, bytes.Repeat([]byte{0xa5}, int(c.hashOffset)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dataPath, hashPath
}

func TestOracleVeritysetup(t *testing.T) {
	tool := testutil.NeedTool(t, "veritysetup")[0]
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	for _, c := range oracleCases() {
		t.Run(c.name(), func(t *testing.T) {
			data := make([]byte, c.blocks*uint64(c.dbs))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			vsDir, ourDir := t.TempDir(), t.TempDir()
			vsData, vsHash := c.files(t, vsDir, data)
			ourData, ourHash := c.files(t, ourDir, data)

			out, err := veritysetup(t, tool, append([]string{"format", vsData, vsHash}, c.args()...)...)
			if err != nil {
				t.Fatalf("veritysetup format: %v\n%s", err, out)
			}
			m := rootLine.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no root hash in veritysetup output:\n%s", out)
			}
			vsRoot := m[1]

			res, err := verity.FormatFile(ourData, ourHash, c.params())
			if err != nil {
				t.Fatalf("FormatFile: %v", err)
			}
			if got := hex.EncodeToString(res.RootHash); got != vsRoot {
				t.Fatalf("root hash %s, veritysetup %s", got, vsRoot)
			}
			vsBytes := readFile(t, vsHash)
			ourBytes := readFile(t, ourHash)
			if !bytes.Equal(vsBytes, ourBytes) {
				t.Fatalf("hash device differs from veritysetup's (%d vs %d bytes, first difference at %d)",
					len(ourBytes), len(vsBytes), firstDiff(ourBytes, vsBytes))
			}
			if want := int64(len(vsBytes)); !c.sameFile && res.HashDeviceSize != want && !(c.noSB && res.Levels == 0) {
				t.Errorf("HashDeviceSize %d, file is %d", res.HashDeviceSize, want)
			}
			if hs := verity.HashDeviceSize(res.Params); hs != res.HashDeviceSize {
				t.Errorf("HashDeviceSize(params) %d, Result says %d", hs, res.HashDeviceSize)
			}

			// Mutual verification.
			root := res.RootHash
			verifyArgs := func(d, h string) []string {
				a := []string{"verify", d, h, vsRoot}
				if c.noSB {
					return append(a, c.args()...)
				}
				if c.hashOffset > 0 {
					a = append(a, "--hash-offset", strconv.FormatUint(c.hashOffset, 10))
				}
				return a
			}
			if out, err := veritysetup(t, tool, verifyArgs(ourData, ourHash)...); err != nil {
				t.Fatalf("veritysetup verify of our tree: %v\n%s", err, out)
			}
			vp := verity.Params{HashOffset: c.hashOffset}
			if c.noSB {
				vp = c.params()
			}
			if err := verifyFile(vsData, vsHash, root, vp); err != nil {
				t.Fatalf("Verify of veritysetup's tree: %v", err)
			}
			if !c.flip {
				return
			}

			// A flipped byte in data: both refuse, we name the block.
			bad := c.blocks / 2
			flipByte(t, ourData, int64(bad)*int64(c.dbs)+int64(c.dbs)/3)
			if out, err := veritysetup(t, tool, verifyArgs(ourData, ourHash)...); err == nil {
				t.Errorf("veritysetup verify accepted flipped data:\n%s", out)
			}
			var ce *verity.CorruptionError
			err = verifyFile(ourData, ourHash, root, vp)
			if !errors.As(err, &ce) || ce.Area != verity.DataArea || ce.Block != bad {
				t.Errorf("flipped data block %d: Verify = %v", bad, err)
			}
			flipByte(t, ourData, int64(bad)*int64(c.dbs)+int64(c.dbs)/3)

			// A flipped byte in the tree (the first level-0 digest).
			if res.Levels == 0 {
				return
			}
			treeByte := int64(res.HashDeviceSize) - int64(res.HashBlocks)*int64(c.hbs)
			treeByte += (int64(res.HashBlocks) - levelSize0(c)) * int64(c.hbs) // skip the upper levels
			flipByte(t, ourHash, treeByte+1)
			if out, err := veritysetup(t, tool, verifyArgs(ourData, ourHash)...); err == nil {
				t.Errorf("veritysetup verify accepted a flipped tree:\n%s", out)
			}
			err = verifyFile(ourData, ourHash, root, vp)
			if !errors.As(err, &ce) || ce.Area != verity.HashArea || ce.Level != 0 || ce.Offset != treeByte {
				t.Errorf("flipped hash byte at %d: Verify = %v", treeByte+1, err)
			}
		})
	}
}

// levelSize0 is the number of level-0 hash blocks of a case.
func levelSize0(c oracleCase) int64 {
	d := verity.DigestSize(c.alg)
	hpb := uint64(1)
	for hpb*2 <= uint64(int(c.hbs)/d) {
		hpb *= 2
	}
	return int64((c.blocks + hpb - 1) / hpb)
}

func verifyFile(dataPath, hashPath string, root []byte, p verity.Params) error {
	d, err := os.Open(dataPath)
	if err != nil {
		return err
	}
	defer d.Close()
	h, err := os.Open(hashPath)
	if err != nil {
		return err
	}
	defer h.Close()
	return verity.Verify(d, h, root, p)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
