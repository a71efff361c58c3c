package verity_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/osguard/osguard/verity"
)

// TestTreeWriterMatchesFormat feeds data to a TreeWriter in shuffled
// pieces, small and unaligned or large runs of whole blocks (hashed in the
// background), and checks that tree and root hash are Format's bytes.
func TestTreeWriterMatchesFormat(t *testing.T) {
	salt := bytes.Repeat([]byte{0xab}, 32)
	cases := []struct {
		name   string
		blocks int
		p      verity.Params
	}{
		{"one-block", 1, verity.Params{HashFormat: 1, Salt: salt, NoSuperblock: true}},
		{"small", 7, verity.Params{HashFormat: 1, Salt: salt, NoSuperblock: true}},
		{"two-levels", 300, verity.Params{HashFormat: 1, Salt: salt, NoSuperblock: true, HashOffset: 300 * 4096}},
		{"superblock", 129, verity.Params{HashFormat: 1, Salt: salt}},
		{"sha1-format0", 200, verity.Params{HashFormat: 0, HashAlgorithm: "sha1", Salt: salt[:7], NoSuperblock: true}},
		{"small-blocks", 1100, verity.Params{HashFormat: 1, DataBlockSize: 512, HashBlockSize: 1024, NoSuperblock: true}},
		{"many-pages", 40000, verity.Params{HashFormat: 1, Salt: salt, NoSuperblock: true}},
	}
	for _, c := range cases {
		for _, big := range []bool{false, true} {
			name := c.name
			if big {
				name += "-big-writes"
			}
			t.Run(name, func(t *testing.T) { treeWriterCase(t, c.blocks, c.p, big) })
		}
	}
}

func treeWriterCase(t *testing.T, blocks int, p verity.Params, big bool) {
	bs := int(p.DataBlockSize)
	if bs == 0 {
		bs = 4096
	}
	data := randomData(3, blocks*bs)
	// Leave a hole: those bytes stay zero in data as well.
	hole, holeLen := len(data)/3, 0
	if blocks >= 3 {
		holeLen = bs + 17
	}
	clear(data[hole : hole+holeLen])
	want, wantRes := formatMem(t, data, p)

	w, err := verity.NewTreeWriter(p)
	if err != nil {
		t.Fatal(err)
	}
	type piece struct{ off, end int }
	var pieces []piece
	rng := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < len(data); {
		end := min(len(data), off+1+rng.IntN(3*bs))
		if big {
			end = min(len(data), off+bs*(1+rng.IntN(80)))
		}
		if holeLen > 0 && off < hole+holeLen && end > hole {
			if off < hole {
				pieces = append(pieces, piece{off, hole})
			}
			off = hole + holeLen
			continue
		}
		pieces = append(pieces, piece{off, end})
		off = end
	}
	rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	buf := make([]byte, 80*bs)
	for _, pc := range pieces {
		// The caller reuses its buffer at once, as the EROFS writer does.
		b := buf[:pc.end-pc.off]
		copy(b, data[pc.off:pc.end])
		if _, err := w.WriteAt(b, int64(pc.off)); err != nil {
			t.Fatalf("WriteAt(%d..%d): %v", pc.off, pc.end, err)
		}
		clear(b)
	}
	got := &memDev{}
	res, err := w.Finish(uint64(blocks), p.HashOffset, got)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if !bytes.Equal(res.RootHash, wantRes.RootHash) {
		t.Errorf("root hash %x, Format gives %x", res.RootHash, wantRes.RootHash)
	}
	if !bytes.Equal(got.b, want.b) {
		t.Errorf("hash device differs from Format's (%d vs %d bytes)", len(got.b), len(want.b))
	}
	if res.HashDeviceSize != wantRes.HashDeviceSize || res.HashBlocks != wantRes.HashBlocks {
		t.Errorf("result %+v, want %+v", res, wantRes)
	}
}

func TestTreeWriterErrors(t *testing.T) {
	p := verity.Params{HashFormat: 1, NoSuperblock: true}
	cases := []struct {
		name string
		run  func(w *verity.TreeWriter) error
		want string
	}{
		{"block-twice", func(w *verity.TreeWriter) error {
			w.WriteAt(make([]byte, 4096), 0)
			_, err := w.WriteAt([]byte{1}, 10)
			return err
		}, "written twice"},
		{"byte-twice", func(w *verity.TreeWriter) error {
			w.WriteAt(make([]byte, 100), 0)
			_, err := w.WriteAt([]byte{1}, 99)
			return err
		}, "written twice"},
		{"negative", func(w *verity.TreeWriter) error {
			_, err := w.WriteAt([]byte{1}, -1)
			return err
		}, "negative"},
		{"too-far", func(w *verity.TreeWriter) error {
			_, err := w.WriteAt([]byte{1}, 1<<62)
			return err
		}, "beyond"},
		{"past-end", func(w *verity.TreeWriter) error {
			w.WriteAt(make([]byte, 3*4096), 0)
			_, err := w.Finish(2, 0, nil)
			return err
		}, "beyond the 2 data blocks"},
		{"empty", func(w *verity.TreeWriter) error {
			_, err := w.Finish(0, 0, nil)
			return err
		}, "no data blocks"},
		{"finish-twice", func(w *verity.TreeWriter) error {
			w.WriteAt(make([]byte, 4096), 0)
			if _, err := w.Finish(0, 0, nil); err != nil {
				return err
			}
			_, err := w.Finish(0, 0, nil)
			return err
		}, "already finished"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := verity.NewTreeWriter(p)
			if err != nil {
				t.Fatal(err)
			}
			err = c.run(w)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
