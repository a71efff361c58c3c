package layer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/tarfs"
	"github.com/osguard/osguard/verity"
)

// BlockSize is the EROFS block size and the dm-verity data and hash block size.
const BlockSize = 4096

// HashAlgorithm is the dm-verity hash of every layer.
const HashAlgorithm = "sha256"

// Options control a conversion.
type Options struct {
	// TempDir is where the uncompressed file contents of a streamed layer
	// are spooled while the image is laid out (os.TempDir() when empty).
	TempDir string
	// DiffID, when set, is the DiffID the layer must have (from the image
	// config). The conversion fails with ErrDiffID when it has another. It
	// also lets an uncompressed layer file be hashed while the image is
	// written, since salt and UUID are known from the start.
	DiffID string
}

// ErrDiffID is returned when a layer's DiffID is not Options.DiffID.
var ErrDiffID = errors.New("layer: DiffID mismatch")

// Result describes a converted layer.
type Result struct {
	DiffID     string // "sha256:<hex>" of the uncompressed tar
	ImageSize  int64  // EROFS bytes, a multiple of 4096
	HashOffset int64  // where the hash tree starts in out (== ImageSize)
	Verity     Verity
}

// Verity holds the dm-verity parameters of a layer: what a verity table
// for it needs besides the devices (no superblock is written).
type Verity struct {
	HashAlgorithm string // "sha256"
	DataBlockSize uint32 // 4096
	HashBlockSize uint32 // 4096
	DataBlocks    uint64
	Salt          []byte
	RootHash      []byte
}

// HashSize returns the bytes of the hash tree that follow the image.
func (r *Result) HashSize() int64 {
	return verity.HashDeviceSize(r.params()) - r.HashOffset
}

// Size returns the bytes Convert writes: image and hash tree.
func (r *Result) Size() int64 { return r.HashOffset + r.HashSize() }

func (r *Result) params() verity.Params {
	return verity.Params{
		HashAlgorithm: r.Verity.HashAlgorithm, DataBlockSize: r.Verity.DataBlockSize,
		HashBlockSize: r.Verity.HashBlockSize, Salt: r.Verity.Salt, HashFormat: 1,
		DataBlocks: r.Verity.DataBlocks, HashOffset: uint64(r.HashOffset), NoSuperblock: true,
	}
}

// Salt returns the dm-verity salt of the layer with this DiffID.
func Salt(diffID string) []byte { return verity.DeriveSalt([]byte("osguard layer\x00" + diffID)) }

// UUID returns the EROFS volume UUID of the layer with this DiffID.
func UUID(diffID string) [16]byte {
	return verity.DeriveUUID([]byte("osguard layer erofs\x00" + diffID))
}

// Convert reads one layer blob (plain tar, gzip or zstd, detected from its
// first bytes), and writes to out (truncated first) the EROFS image
// followed at HashOffset by the dm-verity hash tree (no verity
// superblock). The image is hashed while it is written, so out is never
// read back. On error out's content is undefined; the caller removes it.
func Convert(blob io.Reader, out *os.File, opts Options) (*Result, error) {
	if out == nil {
		return nil, errors.New("layer: no output file")
	}
	if err := out.Truncate(0); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	res, err := convert(blob, out, opts)
	if err != nil {
		return nil, err
	}
	if err := out.Truncate(res.Size()); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return res, nil
}

// Measure is Convert without the output: it computes the Result (root
// hash included) of the image Convert would write, writing nothing but
// the spool of file contents in opts.TempDir. Signing uses it.
func Measure(blob io.Reader, opts Options) (*Result, error) {
	return convert(blob, nil, opts)
}

func convert(blob io.Reader, out *os.File, opts Options) (*Result, error) {
	if f, ok := blob.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			start, err := f.Seek(0, io.SeekCurrent)
			head := make([]byte, 6)
			n, _ := f.ReadAt(head, start)
			if err == nil && tarfs.Detect(head[:n]) == tarfs.None {
				return convertFile(f, start, fi.Size(), out, opts)
			}
		}
	}
	dr, _, release, err := tarfs.Decompress(blob)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	defer release()
	h := sha256.New()
	tee := io.TeeReader(dr, h)
	tree, err := erofs.TreeFromPlainTar(tee, opts.TempDir)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	defer tree.Close()
	if err := convertWhiteouts(tree); err != nil {
		return nil, err
	}
	// The DiffID covers the whole stream, including the padding after the
	// tar's end marker, which the tar reader does not read.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, fmt.Errorf("layer: read layer: %w", err)
	}
	diffID := digestString(h)
	if err := checkDiffID(diffID, opts.DiffID); err != nil {
		return nil, err
	}
	return writeImage(tree, diffID, out)
}

func checkDiffID(got, want string) error {
	if want != "" && got != want {
		return fmt.Errorf("%w: the layer's uncompressed content is %s, expected %s", ErrDiffID, got, want)
	}
	return nil
}

// convertFile converts an uncompressed tar file from offset start: file
// contents are read in place (no spool), and the DiffID is hashed on
// another goroutine, while the tree is read and, when opts.DiffID is
// given, while the image is written.
func convertFile(f *os.File, start, size int64, out *os.File, opts Options) (*Result, error) {
	type sum struct {
		id  string
		err error
	}
	ch := make(chan sum, 1)
	go func() {
		h := sha256.New()
		_, err := io.CopyBuffer(h, io.NewSectionReader(f, start, size-start), make([]byte, 1<<20))
		ch <- sum{digestString(h), err}
	}()
	var got *sum
	wait := func() sum {
		if got == nil {
			s := <-ch
			got = &s
		}
		return *got
	}
	// Never return while the hash still reads f.
	defer wait()
	tree, err := erofs.TreeFromPlainTar(f, opts.TempDir)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	defer tree.Close()
	if err := convertWhiteouts(tree); err != nil {
		return nil, err
	}
	diffID := opts.DiffID
	if diffID == "" {
		s := wait()
		if s.err != nil {
			return nil, fmt.Errorf("layer: read layer: %w", s.err)
		}
		diffID = s.id
	}
	res, err := writeImage(tree, diffID, out)
	if s := wait(); s.err != nil {
		return nil, fmt.Errorf("layer: read layer: %w", s.err)
	} else if err == nil {
		err = checkDiffID(s.id, diffID)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func digestString(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// writeImage lays out the tree, hashing every block as it is produced, and
// writes image and tree to out when it is not nil.
func writeImage(tree *erofs.Tree, diffID string, out *os.File) (*Result, error) {
	salt := Salt(diffID)
	tw, err := verity.NewTreeWriter(verity.Params{
		HashAlgorithm: HashAlgorithm, DataBlockSize: BlockSize, HashBlockSize: BlockSize,
		HashFormat: 1, Salt: salt, NoSuperblock: true,
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	var w io.WriterAt = tw
	if out != nil {
		w = teeWriterAt{out, tw}
	}
	size, err := tree.WriteImage(w, erofs.Options{UUID: UUID(diffID), BuildTime: 0})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if size%BlockSize != 0 || size == 0 {
		return nil, fmt.Errorf("layer: internal error: image size %d", size)
	}
	tw2, err := finishTree(tw, size, out)
	if err != nil {
		return nil, err
	}
	return &Result{
		DiffID: diffID, ImageSize: size, HashOffset: size,
		Verity: Verity{
			HashAlgorithm: HashAlgorithm, DataBlockSize: BlockSize, HashBlockSize: BlockSize,
			DataBlocks: uint64(size / BlockSize), Salt: salt, RootHash: tw2.RootHash,
		},
	}, nil
}

func finishTree(tw *verity.TreeWriter, size int64, out *os.File) (*verity.Result, error) {
	var hw io.WriterAt
	if out != nil {
		hw = out
	}
	// The tree starts right after the image: Finish writes at HashOffset.
	res, err := tw.Finish(uint64(size/BlockSize), uint64(size), hw)
	if err != nil {
		return nil, fmt.Errorf("layer: verity: %w", err)
	}
	return res, nil
}

// teeWriterAt writes to a file and to the tree writer.
type teeWriterAt struct {
	f  *os.File
	tw *verity.TreeWriter
}

func (t teeWriterAt) WriteAt(b []byte, off int64) (int, error) {
	if n, err := t.f.WriteAt(b, off); err != nil {
		return n, err
	}
	return t.tw.WriteAt(b, off)
}
