package verity

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// TreeWriter computes a hash tree while the data is being produced: it is
// an io.WriterAt for the data device that takes writes at any offsets and
// in any order, hashes each data block as soon as it is complete, and
// keeps only the level-0 digests (a digest per data block, 0.8% of the data
// for sha256 and 4 KiB blocks), never the data. A producer such as an
// EROFS writer can thus have its output's root hash without storing the
// output, or store it and hash it in the same pass.
//
// Large aligned writes are hashed on other goroutines (GOMAXPROCS at a
// time) while the producer goes on; Finish waits for them.
//
// Every byte may be written once; a write over a block that is already
// complete is an error, because its digest was taken. Bytes never written
// read as zero, as in a sparse file.
type TreeWriter struct {
	p       Params
	bh      *blockHasher
	dbs     uint64
	hbs     int
	stride  int
	hpbBits uint
	pages   [][]byte         // level 0 in hash-block layout, in pages that never move
	full    []uint64         // bitset: data blocks hashed
	partial map[uint64]*pblk // data blocks being filled
	maxBlk  uint64           // 1 + the highest data block touched
	err     error            // sticky
	scratch []byte           // a zero block for holes
	dig     []byte           // one digest
	free    []*pblk          // recycled partial blocks
	wg      sync.WaitGroup   // async hashing
	sem     chan struct{}    // bounds it
}

// pageBytes is the size of one page of level-0 digests.
const pageBytes = 1 << 20

// asyncMin is the smallest run of whole blocks hashed on another goroutine.
const asyncMin = 16

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

type pblk struct {
	buf  []byte
	have []uint64 // bitset of bytes written
	n    int
}

// NewTreeWriter returns a TreeWriter for parameters p (defaults filled in;
// DataBlocks and HashOffset are set by Finish).
func NewTreeWriter(p Params) (*TreeWriter, error) {
	p = p.withDefaults()
	if err := p.check(); err != nil {
		return nil, err
	}
	q := p
	q.DataBlocks = 1
	l, err := newLayout(&q)
	if err != nil {
		return nil, err
	}
	return &TreeWriter{
		p: p, bh: newBlockHasher(&p), dbs: uint64(p.DataBlockSize), hbs: l.hbs, stride: l.stride,
		hpbBits: l.hpbBits, partial: map[uint64]*pblk{}, dig: make([]byte, l.digestSize),
		sem: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}, nil
}

// maxTreeWriterBlocks bounds the data a TreeWriter accepts (16 TiB of
// 4 KiB blocks), so a wild offset cannot make it allocate without end.
const maxTreeWriterBlocks = 1 << 32

func (w *TreeWriter) isFull(blk uint64) bool {
	i := blk / 64
	return i < uint64(len(w.full)) && w.full[i]&(1<<(blk%64)) != 0
}

// slot returns where the digest of data block blk goes, adding pages
// as needed, and marks the block hashed.
func (w *TreeWriter) slot(blk uint64) []byte {
	pos := int(blk>>w.hpbBits)*w.hbs + int(blk&(1<<w.hpbBits-1))*w.stride
	for pos/pageBytes >= len(w.pages) {
		w.pages = append(w.pages, make([]byte, pageBytes))
	}
	for blk/64 >= uint64(len(w.full)) {
		w.full = append(w.full, make([]uint64, len(w.full)+16)...)
	}
	w.full[blk/64] |= 1 << (blk % 64)
	off := pos % pageBytes
	return w.pages[pos/pageBytes][off : off+len(w.dig)]
}

// done records the digest of a complete data block.
func (w *TreeWriter) done(blk uint64, data []byte) {
	w.bh.sum(w.slot(blk), data)
}

// doneAsync hashes whole blocks from blk on in the background.
func (w *TreeWriter) doneAsync(blk uint64, data []byte) {
	n := uint64(len(data)) / w.dbs
	dsts := make([][]byte, n)
	for i := range n {
		dsts[i] = w.slot(blk + i)
	}
	bp := bufPool.Get().(*[]byte)
	buf := append((*bp)[:0], data...)
	w.sem <- struct{}{}
	w.wg.Go(func() {
		bh := newBlockHasher(&w.p)
		for i, d := range dsts {
			bh.sum(d, buf[uint64(i)*w.dbs:uint64(i+1)*w.dbs])
		}
		*bp = buf
		bufPool.Put(bp)
		<-w.sem
	})
}

// WriteAt implements io.WriterAt.
func (w *TreeWriter) WriteAt(b []byte, off int64) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if off < 0 {
		return 0, errors.New("verity: tree writer: negative offset")
	}
	n := len(b)
	pos := uint64(off)
	if (pos+uint64(n)+w.dbs-1)/w.dbs > maxTreeWriterBlocks {
		return 0, fmt.Errorf("verity: tree writer: write at %d beyond %d blocks", off, maxTreeWriterBlocks)
	}
	for len(b) > 0 {
		blk, in := pos/w.dbs, pos%w.dbs
		c := min(uint64(len(b)), w.dbs-in)
		if w.isFull(blk) {
			w.err = fmt.Errorf("verity: tree writer: data block %d written twice", blk)
			return n - len(b), w.err
		}
		w.maxBlk = max(w.maxBlk, blk+1)
		if in == 0 && c == w.dbs && w.partial[blk] == nil {
			// A run of whole blocks, none of them started.
			run := uint64(1)
			for run < uint64(len(b))/w.dbs && w.partial[blk+run] == nil && !w.isFull(blk+run) {
				run++
			}
			if run >= asyncMin {
				w.doneAsync(blk, b[:run*w.dbs])
			} else {
				for i := range run {
					w.done(blk+i, b[i*w.dbs:(i+1)*w.dbs])
				}
			}
			w.maxBlk = max(w.maxBlk, blk+run)
			b, pos = b[run*w.dbs:], pos+run*w.dbs
			continue
		} else if err := w.part(blk, in, b[:c]); err != nil {
			w.err = err
			return n - len(b), err
		}
		b, pos = b[c:], pos+c
	}
	return n, nil
}

// part adds bytes to a block that is not written whole at once.
func (w *TreeWriter) part(blk, in uint64, b []byte) error {
	p := w.partial[blk]
	if p == nil {
		if k := len(w.free); k > 0 {
			p, w.free = w.free[k-1], w.free[:k-1]
		} else {
			p = &pblk{buf: make([]byte, w.dbs), have: make([]uint64, (w.dbs+63)/64)}
		}
		w.partial[blk] = p
	}
	for i := range uint64(len(b)) {
		j := in + i
		if p.have[j/64]&(1<<(j%64)) != 0 {
			return fmt.Errorf("verity: tree writer: byte %d of data block %d written twice", j, blk)
		}
		p.have[j/64] |= 1 << (j % 64)
	}
	copy(p.buf[in:], b)
	p.n += len(b)
	if uint64(p.n) == w.dbs {
		w.done(blk, p.buf)
		w.release(blk, p)
	}
	return nil
}

func (w *TreeWriter) release(blk uint64, p *pblk) {
	delete(w.partial, blk)
	clear(p.buf)
	clear(p.have)
	p.n = 0
	w.free = append(w.free, p)
}

// Blocks returns 1 + the highest data block written so far.
func (w *TreeWriter) Blocks() uint64 { return w.maxBlk }

// Finish completes the tree for dataBlocks data blocks (0: as many as were
// written): blocks partly or never written are hashed with zeros in the
// gaps. When hash is not nil the tree (and, unless p.NoSuperblock, the
// superblock) is written to it at hashOffset, in veritysetup's layout,
// exactly as Format would write it with p.HashOffset = hashOffset. The
// TreeWriter cannot be used after.
func (w *TreeWriter) Finish(dataBlocks, hashOffset uint64, hash io.WriterAt) (*Result, error) {
	if w.err != nil {
		return nil, w.err
	}
	w.err = errors.New("verity: tree writer: already finished")
	w.wg.Wait()
	if dataBlocks == 0 {
		dataBlocks = w.maxBlk
	}
	if w.maxBlk > dataBlocks {
		return nil, fmt.Errorf("verity: tree writer: data written up to block %d, beyond the %d data blocks", w.maxBlk-1, dataBlocks)
	}
	for blk, p := range w.partial {
		w.done(blk, p.buf)
		w.release(blk, p)
	}
	for blk := range dataBlocks {
		if !w.isFull(blk) {
			if w.scratch == nil {
				w.scratch = make([]byte, w.dbs)
			}
			w.done(blk, w.scratch)
		}
	}
	p := w.p
	p.DataBlocks, p.HashOffset = dataBlocks, hashOffset
	l, err := newLayout(&p)
	if err != nil {
		return nil, err
	}
	if hash == nil {
		hash = discardAt{}
	}
	if err := writeSuperblock(hash, l, &p); err != nil {
		return nil, err
	}
	var root []byte
	if l.levels == 0 {
		root = append([]byte(nil), w.pages[0][:len(w.dig)]...)
	} else {
		u := newUpperLevels(l, &p, hash)
		// Digests of blocks past the last one (none were taken) are zero,
		// as the spare area of the last level-0 block must be.
		lvl0 := make([]byte, 0, l.levelSize[0]*uint64(l.hbs))
		for _, pg := range w.pages {
			lvl0 = append(lvl0, pg[:min(len(pg), cap(lvl0)-len(lvl0))]...)
		}
		lvl0 = lvl0[:cap(lvl0)] // make zeroed the rest
		if err := u.level0Blocks(0, lvl0); err != nil {
			return nil, err
		}
		if root, err = u.finish(); err != nil {
			return nil, err
		}
	}
	w.pages = nil
	res := resultOf(l, &p)
	res.RootHash = root
	return res, nil
}

type discardAt struct{}

func (discardAt) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }
