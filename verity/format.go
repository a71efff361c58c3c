package verity

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Result describes a tree that Format wrote.
type Result struct {
	RootHash []byte
	// Params are the resolved parameters: defaults filled in, DataBlocks set.
	Params Params
	// Levels is the height of the tree; 0 when there is a single data block.
	Levels int
	// HashBlocks counts the blocks of the tree (veritysetup's "Hash blocks").
	HashBlocks uint64
	// HashStartBlock is where the tree starts on the hash device, in hash
	// blocks: the <hash_start_block> of the kernel's verity table.
	HashStartBlock uint64
	// HashSize is the bytes written from HashOffset on: the superblock, its
	// padding to a hash block, and the tree.
	HashSize int64
	// HashDeviceSize is HashOffset + HashSize (see HashDeviceSize).
	HashDeviceSize int64
}

// Format computes the hash tree of data and writes it, with the superblock
// unless p.NoSuperblock, to hash at p.HashOffset, in veritysetup's layout.
//
// When p.DataBlocks is 0 the whole data device is used; its size is taken
// from data if it can tell (a Size method, *os.File, io.Seeker) and must be
// a nonzero multiple of the data block size. Format does not know whether
// data and hash are the same file: FormatFile checks that the areas do not
// overlap.
func Format(data io.ReaderAt, hash io.WriterAt, p Params) (*Result, error) {
	p = p.withDefaults()
	if err := p.check(); err != nil {
		return nil, err
	}
	if p.DataBlocks == 0 {
		n, err := dataBlocksOf(data, p.DataBlockSize)
		if err != nil {
			return nil, err
		}
		p.DataBlocks = n
	}
	l, err := newLayout(&p)
	if err != nil {
		return nil, err
	}
	if err := writeSuperblock(hash, l, &p); err != nil {
		return nil, err
	}
	var root []byte
	if l.levels == 0 {
		root, err = singleBlockRoot(data, &p)
	} else {
		u := newUpperLevels(l, &p, hash)
		if err = level0(data, &p, l, u.level0Blocks); err == nil {
			root, err = u.finish()
		}
	}
	if err != nil {
		return nil, err
	}
	res := resultOf(l, &p)
	res.RootHash = root
	return res, nil
}

// writeSuperblock writes the superblock unless p.NoSuperblock.
func writeSuperblock(hash io.WriterAt, l *layout, p *Params) error {
	if p.NoSuperblock {
		return nil
	}
	sb, err := superblockFor(p).MarshalBinary()
	if err != nil {
		return err
	}
	// Zero the rest of the superblock's hash block, as a fresh
	// veritysetup hash file reads.
	b := make([]byte, l.treeStart*uint64(l.hbs)-p.HashOffset)
	copy(b, sb)
	if _, err := hash.WriteAt(b, int64(p.HashOffset)); err != nil {
		return fmt.Errorf("verity: write superblock: %w", err)
	}
	return nil
}

// Layout returns where a tree with parameters p (DataBlocks set) lives,
// without computing it: a Result without RootHash.
func Layout(p Params) (*Result, error) {
	p = p.withDefaults()
	l, err := newLayout(&p)
	if err != nil {
		return nil, err
	}
	return resultOf(l, &p), nil
}

func resultOf(l *layout, p *Params) *Result {
	dev := l.deviceSize(p)
	return &Result{
		Params:         *p,
		Levels:         l.levels,
		HashBlocks:     l.hashBlocks(),
		HashStartBlock: l.treeStart,
		HashSize:       dev - int64(p.HashOffset),
		HashDeviceSize: dev,
	}
}

// singleBlockRoot is the root of a one-block device: the block's digest,
// with no tree (cryptsetup's levels == 0 case).
func singleBlockRoot(data io.ReaderAt, p *Params) ([]byte, error) {
	b := make([]byte, p.DataBlockSize)
	if _, err := readFull(data, b, 0); err != nil {
		return nil, dataReadError(err, 0, p)
	}
	root := make([]byte, DigestSize(p.HashAlgorithm))
	newBlockHasher(p).sum(root, b)
	return root, nil
}

func dataBlocksOf(data io.ReaderAt, bs uint32) (uint64, error) {
	size, err := sizeOf(data)
	if err != nil {
		return 0, fmt.Errorf("verity: data size: %w (give the number of data blocks)", err)
	}
	if size == 0 {
		return 0, invalid("data device is empty")
	}
	if size%int64(bs) != 0 {
		return 0, invalid("data size %d is not a multiple of the data block size %d (give the number of data blocks)", size, bs)
	}
	return uint64(size) / uint64(bs), nil
}

// FormatFile formats dataPath into hashPath, which may be the same file
// when p.HashOffset places the tree after the data. A new or regular hash
// file without an offset is written to a temporary file and renamed, so
// it is never left half-written; block devices, a file shared with the
// data and an existing file with an offset are written in place.
func FormatFile(dataPath, hashPath string, p Params) (res *Result, err error) {
	p = p.withDefaults()
	if err := p.check(); err != nil {
		return nil, err
	}
	df, err := os.Open(dataPath)
	if err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	defer df.Close()
	dfi, err := df.Stat()
	if err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	hfi, statErr := os.Stat(hashPath)
	if statErr != nil && !errors.Is(statErr, os.ErrNotExist) {
		return nil, fmt.Errorf("verity: %w", statErr)
	}
	if statErr == nil && os.SameFile(dfi, hfi) {
		f, err := os.OpenFile(dataPath, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("verity: %w", err)
		}
		defer f.Close()
		if p.DataBlocks == 0 {
			if p.DataBlocks, err = dataBlocksOf(f, p.DataBlockSize); err != nil {
				return nil, err
			}
		}
		if p.DataBlocks*uint64(p.DataBlockSize) > p.HashOffset {
			return nil, invalid("data area (%d blocks of %d bytes) overlaps with hash area at offset %d",
				p.DataBlocks, p.DataBlockSize, p.HashOffset)
		}
		res, err := Format(f, f, p)
		if err != nil {
			return nil, err
		}
		return res, syncClose(f)
	}
	if statErr == nil && (!hfi.Mode().IsRegular() || p.HashOffset > 0) {
		f, err := os.OpenFile(hashPath, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("verity: %w", err)
		}
		defer f.Close()
		res, err := Format(df, f, p)
		if err != nil {
			return nil, err
		}
		return res, syncClose(f)
	}
	tmp, err := os.CreateTemp(filepath.Dir(hashPath), "."+filepath.Base(hashPath)+".*")
	if err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if res, err = Format(df, tmp, p); err != nil {
		return nil, err
	}
	// Format writes only what the tree covers; make the size exact even
	// when nothing follows the last written byte.
	if err = tmp.Truncate(res.HashDeviceSize); err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	if err = syncClose(tmp); err != nil {
		return nil, err
	}
	if err = os.Rename(tmp.Name(), hashPath); err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	return res, nil
}

func syncClose(f *os.File) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("verity: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("verity: %w", err)
	}
	return nil
}
