package verity

import (
	"bytes"
	"fmt"
	"sync"
)

// Checker checks data blocks as they stream past, against a hash tree
// that NewChecker has already checked against its root hash. It is what a
// reader of a hash device and its data in one stream needs (an update
// bundle carries the tree before the data): the tree is held in memory
// (about 1/128 of the data with sha256 and 4 KiB blocks), the data is not.
// A Checker is safe for concurrent use, so that chunks can be checked on
// several cores.
type Checker struct {
	p    Params
	l    *layout
	hash []byte // the hash device: superblock (unless NoSuperblock) and tree
	root []byte
	bhs  sync.Pool // *blockHasher
}

// NewChecker checks the tree in hash, a whole hash device image (the
// superblock at p.HashOffset unless p.NoSuperblock), from rootHash down
// to its lowest level. Parameters come from the superblock as in Verify;
// DataBlocks must be known (from the superblock or p). It returns a
// *CorruptionError for the first bad hash block.
func NewChecker(hash []byte, rootHash []byte, p Params) (*Checker, error) {
	p, err := Resolve(bytes.NewReader(hash), p)
	if err != nil {
		return nil, err
	}
	if p.DataBlocks == 0 {
		return nil, invalid("the number of data blocks is not known")
	}
	l, err := newLayout(&p)
	if err != nil {
		return nil, err
	}
	if len(rootHash) != l.digestSize {
		return nil, fmt.Errorf("verity: root hash is %d bytes, %s needs %d", len(rootHash), p.HashAlgorithm, l.digestSize)
	}
	c := &Checker{p: p, l: l, hash: hash, root: bytes.Clone(rootHash)}
	c.bhs.New = func() any { return newBlockHasher(&c.p) }
	if l.levels == 0 {
		return c, nil // one data block: its own hash is the root hash
	}
	if end := int64(l.end) * int64(l.hbs); int64(len(hash)) < end {
		return nil, fmt.Errorf("verity: hash device too small: the tree ends at %d, the device has %d bytes", end, len(hash))
	}
	v := &verifier{l: l, p: &p, hash: bytes.NewReader(hash), bh: newBlockHasher(&p), dig: make([]byte, l.digestSize)}
	if err := v.top(rootHash); err != nil {
		return nil, err
	}
	for i := l.levels - 1; i >= 1; i-- {
		if err := v.level(i - 1); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Params returns the tree's parameters (from its superblock).
func (c *Checker) Params() Params { return c.p }

// DataSize is the length in bytes of the data the tree covers.
func (c *Checker) DataSize() int64 { return int64(c.p.DataBlocks) * int64(c.l.dbs) }

// Check checks the data blocks in b, which begins at byte off of the data
// device. off and len(b) must be multiples of the data block size, and b
// must lie within the data. It returns a *CorruptionError naming the first
// block that does not match the tree.
func (c *Checker) Check(b []byte, off int64) error {
	dbs := int64(c.l.dbs)
	if off < 0 || off%dbs != 0 || int64(len(b))%dbs != 0 || off+int64(len(b)) > c.DataSize() {
		return fmt.Errorf("verity: check of %d bytes at %d: not whole blocks within the %d bytes of data", len(b), off, c.DataSize())
	}
	bh := c.bhs.Get().(*blockHasher)
	defer c.bhs.Put(bh)
	dig := make([]byte, c.l.digestSize)
	first := uint64(off / dbs)
	for k := 0; k < len(b)/c.l.dbs; k++ {
		blk := first + uint64(k)
		bh.sum(dig, b[k*c.l.dbs:(k+1)*c.l.dbs])
		if !bytes.Equal(dig, c.stored(blk)) {
			reason := "does not match the root hash"
			if c.l.levels > 0 {
				reason = fmt.Sprintf("does not match its digest in hash block %d", c.l.levelStart[0]+blk>>c.l.hpbBits)
			}
			return &CorruptionError{Area: DataArea, Block: blk, Offset: int64(blk) * dbs, Level: -1, Reason: reason, root: c.l.levels == 0}
		}
	}
	return nil
}

// stored returns the checked digest of data block blk.
func (c *Checker) stored(blk uint64) []byte {
	l := c.l
	if l.levels == 0 {
		return c.root
	}
	pos := int64(l.levelStart[0]+blk>>l.hpbBits)*int64(l.hbs) + int64(blk&(l.hpb-1))*int64(l.stride)
	return c.hash[pos : pos+int64(l.digestSize)]
}
