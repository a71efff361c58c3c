package verity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrCorrupted is matched (errors.Is) by every *CorruptionError.
var ErrCorrupted = errors.New("verity: corrupted")

// ErrRootHashMismatch marks a tree that is sound but whose top does not
// hash to the root hash given (a wrong root hash, or a corrupted top block).
var ErrRootHashMismatch = errors.New("verity: root hash mismatch")

// Area says which device a corrupted block is on.
type Area int

// The areas.
const (
	DataArea Area = iota
	HashArea
)

func (a Area) String() string {
	if a == DataArea {
		return "data"
	}
	return "hash"
}

// CorruptionError names the first block found bad. Verify checks the tree
// from the root down before the data, so a bad hash block is reported
// before any bad data block.
type CorruptionError struct {
	Area Area
	// Block is the data block number, or for the hash area the block
	// number on the hash device in hash blocks (as the kernel's
	// "metadata block" messages count).
	Block uint64
	// Offset is the block's byte offset on its device.
	Offset int64
	// Level is the tree level of a hash block (0 = lowest), -1 for data.
	Level  int
	Reason string
	root   bool // the block was checked against the root hash itself
}

func (e *CorruptionError) Error() string {
	if e.Area == DataArea {
		return fmt.Sprintf("verity: data block %d (offset %d) is corrupted: %s", e.Block, e.Offset, e.Reason)
	}
	return fmt.Sprintf("verity: hash block %d (level %d, offset %d) is corrupted: %s", e.Block, e.Level, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupted) true.
// A block checked directly against the root hash also matches ErrRootHashMismatch.
func (e *CorruptionError) Is(target error) bool {
	return target == ErrCorrupted || (e.root && target == ErrRootHashMismatch)
}

// Resolve returns the parameters to open a hash device with: p itself with
// NoSuperblock, otherwise the superblock's, read at p.HashOffset. Fields
// of p that are set must agree with the superblock.
func Resolve(hash io.ReaderAt, p Params) (Params, error) {
	if p.NoSuperblock {
		p = p.withDefaults()
		return p, p.check()
	}
	sb, err := ReadSuperblock(hash, int64(p.HashOffset))
	if err != nil {
		return p, err
	}
	q := sb.Params(p.HashOffset)
	conflict := func(name string, given, stored any) error {
		return fmt.Errorf("verity: %s %v differs from the superblock's %v", name, given, stored)
	}
	switch {
	case p.HashAlgorithm != "" && p.HashAlgorithm != q.HashAlgorithm:
		return p, conflict("hash algorithm", p.HashAlgorithm, q.HashAlgorithm)
	case p.DataBlockSize != 0 && p.DataBlockSize != q.DataBlockSize:
		return p, conflict("data block size", p.DataBlockSize, q.DataBlockSize)
	case p.HashBlockSize != 0 && p.HashBlockSize != q.HashBlockSize:
		return p, conflict("hash block size", p.HashBlockSize, q.HashBlockSize)
	case p.DataBlocks != 0 && p.DataBlocks != q.DataBlocks:
		return p, conflict("data block count", p.DataBlocks, q.DataBlocks)
	case p.HashFormat != 0 && p.HashFormat != q.HashFormat:
		return p, conflict("hash format", p.HashFormat, q.HashFormat)
	case p.Salt != nil && !bytes.Equal(p.Salt, q.Salt):
		return p, conflict("salt", fmt.Sprintf("%x", p.Salt), fmt.Sprintf("%x", q.Salt))
	case p.UUID != [16]byte{} && p.UUID != q.UUID:
		return p, conflict("UUID", FormatUUID(p.UUID), FormatUUID(q.UUID))
	}
	q = q.withDefaults()
	return q, q.check()
}

// Verify checks data against the tree on hash and rootHash. Without
// p.NoSuperblock the parameters come from the superblock (see Resolve).
// It returns nil when everything matches, a *CorruptionError naming the
// first bad block, or another error when the devices cannot be read or
// are too small.
func Verify(data io.ReaderAt, hash io.ReaderAt, rootHash []byte, p Params) error {
	p, err := Resolve(hash, p)
	if err != nil {
		return err
	}
	if p.DataBlocks == 0 {
		if p.DataBlocks, err = dataBlocksOf(data, p.DataBlockSize); err != nil {
			return err
		}
	}
	l, err := newLayout(&p)
	if err != nil {
		return err
	}
	if len(rootHash) != l.digestSize {
		return fmt.Errorf("verity: root hash is %d bytes, %s needs %d", len(rootHash), p.HashAlgorithm, l.digestSize)
	}
	one := make([]byte, 1)
	if _, err := readFull(data, one, int64(p.DataBlocks)*int64(l.dbs)-1); err != nil {
		return dataReadError(err, int64(p.DataBlocks)*int64(l.dbs)-1, &p)
	}
	if l.levels == 0 {
		root, err := singleBlockRoot(data, &p)
		if err != nil {
			return err
		}
		if !bytes.Equal(root, rootHash) {
			return &CorruptionError{Area: DataArea, Block: 0, Level: -1, Reason: "does not match the root hash", root: true}
		}
		return nil
	}
	if _, err := readFull(hash, one, int64(l.end)*int64(l.hbs)-1); err != nil {
		return hashReadError(err, l)
	}
	v := &verifier{l: l, p: &p, hash: hash, bh: newBlockHasher(&p), dig: make([]byte, l.digestSize)}
	if err := v.top(rootHash); err != nil {
		return err
	}
	for i := l.levels - 1; i >= 1; i-- {
		if err := v.level(i - 1); err != nil {
			return err
		}
	}
	return v.data(data)
}

func hashReadError(err error, l *layout) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("verity: hash device too small: the tree ends at %d: %w", int64(l.end)*int64(l.hbs), err)
	}
	return fmt.Errorf("verity: read hash device: %w", err)
}

type verifier struct {
	l    *layout
	p    *Params
	hash io.ReaderAt
	bh   *blockHasher
	dig  []byte
}

func (v *verifier) hashBlockError(abs uint64, level int, reason string) error {
	return &CorruptionError{Area: HashArea, Block: abs, Offset: int64(abs) * int64(v.l.hbs), Level: level, Reason: reason}
}

func (v *verifier) readHash(b []byte, block uint64) error {
	if _, err := readFull(v.hash, b, int64(block)*int64(v.l.hbs)); err != nil {
		return hashReadError(err, v.l)
	}
	return nil
}

// top checks the single top block against the root hash.
func (v *verifier) top(root []byte) error {
	top := v.l.levels - 1
	b := make([]byte, v.l.hbs)
	if err := v.readHash(b, v.l.levelStart[top]); err != nil {
		return err
	}
	v.bh.sum(v.dig, b)
	if !bytes.Equal(v.dig, root) {
		err := v.hashBlockError(v.l.levelStart[top], top, "does not match the root hash")
		err.(*CorruptionError).root = true
		return err
	}
	return nil
}

// spareIsZero checks the bytes of a hash block that hold no digest of its
// count children, which cryptsetup requires to be zero.
func (v *verifier) spareIsZero(b []byte, count uint64) bool {
	l := v.l
	for i := uint64(0); i < count; i++ {
		pos := int(i) * l.stride
		for _, c := range b[pos+l.digestSize : pos+l.stride] {
			if c != 0 {
				return false
			}
		}
	}
	for _, c := range b[int(count)*l.stride:] {
		if c != 0 {
			return false
		}
	}
	return true
}

// level checks every block of level c against the (already checked)
// digests in level c+1.
func (v *verifier) level(c int) error {
	l := v.l
	parent := make([]byte, l.hbs)
	var cur uint64 = ^uint64(0)
	batch := make([]byte, max(l.hbs, 1<<20/l.hbs*l.hbs))
	per := uint64(len(batch) / l.hbs)
	for j0 := uint64(0); j0 < l.levelSize[c]; j0 += per {
		cnt := min(per, l.levelSize[c]-j0)
		b := batch[:int(cnt)*l.hbs]
		if err := v.readHash(b, l.levelStart[c]+j0); err != nil {
			return err
		}
		for k := uint64(0); k < cnt; k++ {
			j := j0 + k
			if pj := j >> l.hpbBits; pj != cur {
				abs := l.levelStart[c+1] + pj
				if err := v.readHash(parent, abs); err != nil {
					return err
				}
				if !v.spareIsZero(parent, min(l.hpb, l.levelSize[c]-pj*l.hpb)) {
					return v.hashBlockError(abs, c+1, "spare area is not zeroed")
				}
				cur = pj
			}
			v.bh.sum(v.dig, b[int(k)*l.hbs:int(k+1)*l.hbs])
			pos := int(j&(l.hpb-1)) * l.stride
			if !bytes.Equal(v.dig, parent[pos:pos+l.digestSize]) {
				abs := l.levelStart[c] + j
				return v.hashBlockError(abs, c, fmt.Sprintf("does not match its digest in hash block %d", l.levelStart[c+1]+cur))
			}
		}
	}
	return nil
}

// data recomputes level 0 from the data and compares it with the stored,
// already checked level 0.
func (v *verifier) data(data io.ReaderAt) error {
	l := v.l
	var stored []byte
	return level0(data, v.p, l, func(first uint64, computed []byte) error {
		if cap(stored) < len(computed) {
			stored = make([]byte, len(computed))
		}
		s := stored[:len(computed)]
		if err := v.readHash(s, l.levelStart[0]+first); err != nil {
			return err
		}
		if bytes.Equal(s, computed) {
			return nil
		}
		k := 0
		for s[k] == computed[k] {
			k++
		}
		hb := first + uint64(k/l.hbs)
		o := k % l.hbs
		entry := uint64(o / l.stride)
		db := hb*l.hpb + entry
		if o%l.stride < l.digestSize && entry < l.hpb && db < v.p.DataBlocks {
			return &CorruptionError{Area: DataArea, Block: db, Offset: int64(db) * int64(l.dbs), Level: -1,
				Reason: fmt.Sprintf("does not match its digest in hash block %d", l.levelStart[0]+hb)}
		}
		return v.hashBlockError(l.levelStart[0]+hb, 0, "spare area is not zeroed")
	})
}
