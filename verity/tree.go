package verity

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"runtime"
	"sync"
)

// chunkTarget is the data read by one ReadAt: large enough that the
// read and the per-chunk bookkeeping vanish next to hashing, small enough
// that memory stays a few MiB per core whatever the data size.
const chunkTarget = 512 << 10

// blockHasher digests one block the way cryptsetup's verify_hash_block does.
type blockHasher struct {
	h      hash.Hash
	salt   []byte
	format uint32
}

func newBlockHasher(p *Params) *blockHasher {
	return &blockHasher{h: newHash(p.HashAlgorithm), salt: p.Salt, format: p.HashFormat}
}

// sum writes the digest of block into dst (which needs the digest's length).
func (b *blockHasher) sum(dst, block []byte) {
	b.h.Reset()
	if b.format == 1 {
		b.h.Write(b.salt)
	}
	b.h.Write(block)
	if b.format == 0 {
		b.h.Write(b.salt)
	}
	b.h.Sum(dst[:0])
}

// level0 hashes data blocks 0..n-1 of data in parallel chunks and calls
// emit in order, each time with the level-0 hash blocks of one chunk: the
// index of the first one within level 0 and their bytes (spare areas and
// the tail of the last block zeroed). It returns the first error in data
// order; emit runs on the calling goroutine.
func level0(data io.ReaderAt, p *Params, l *layout, emit func(first uint64, blocks []byte) error) error {
	n := p.DataBlocks
	perChunk := uint64(chunkTarget/l.dbs) / l.hpb // hash blocks per chunk
	if perChunk == 0 {
		perChunk = 1
	}
	chunkBlocks := perChunk * l.hpb // data blocks per chunk
	chunks := (n + chunkBlocks - 1) / chunkBlocks
	if chunkBlocks > n {
		chunkBlocks = n
		perChunk = (n + l.hpb - 1) / l.hpb
	}
	if chunks == 1 {
		// Small data: no goroutines, which also keeps fuzzing deterministic.
		out, err := hashChunk(data, p, l, newBlockHasher(p), make([]byte, int(n)*l.dbs), make([]byte, int(perChunk)*l.hbs), 0)
		if err != nil {
			return err
		}
		return emit(0, out)
	}
	workers := runtime.GOMAXPROCS(0)
	if uint64(workers) > chunks {
		workers = int(chunks)
	}
	inflight := 2*workers + 2

	type job struct {
		idx uint64
		out []byte
	}
	type result struct {
		job
		err error
	}
	jobs := make(chan job)
	results := make(chan result, inflight)
	pool := make(chan []byte, inflight)
	for range inflight {
		pool <- make([]byte, int(perChunk)*l.hbs)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup

	wg.Go(func() {
		defer close(jobs)
		for i := uint64(0); i < chunks; i++ {
			select {
			case out := <-pool:
				select {
				case jobs <- job{i, out}:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	})
	for range workers {
		wg.Go(func() {
			bh := newBlockHasher(p)
			buf := make([]byte, int(chunkBlocks)*l.dbs)
			for jb := range jobs {
				var err error
				jb.out, err = hashChunk(data, p, l, bh, buf, jb.out, jb.idx*chunkBlocks)
				results <- result{jb, err}
			}
		})
	}

	pending := make(map[uint64]result)
	var err error
	for next := uint64(0); next < chunks && err == nil; {
		r := <-results
		pending[r.idx] = r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			if r.err != nil {
				err = r.err
				break
			}
			if err = emit(next*perChunk, r.out); err != nil {
				break
			}
			pool <- r.out[:cap(r.out)]
			next++
		}
	}
	close(done)
	wg.Wait()
	return err
}

// hashChunk reads the data blocks from first on that fit buf (or up to
// the end) and writes their level-0 hash blocks into out, returning the
// part of out used.
func hashChunk(data io.ReaderAt, p *Params, l *layout, bh *blockHasher, buf, out []byte, first uint64) ([]byte, error) {
	cnt := min(uint64(len(buf)/l.dbs), p.DataBlocks-first)
	b := buf[:int(cnt)*l.dbs]
	off := int64(first) * int64(l.dbs)
	if _, err := readFull(data, b, off); err != nil {
		return nil, dataReadError(err, off, p)
	}
	out = out[:int((cnt+l.hpb-1)/l.hpb)*l.hbs]
	clear(out)
	for i := 0; i < int(cnt); i++ {
		pos := (i>>l.hpbBits)*l.hbs + (i&int(l.hpb-1))*l.stride
		bh.sum(out[pos:pos+l.digestSize], b[i*l.dbs:(i+1)*l.dbs])
	}
	return out, nil
}

func dataReadError(err error, off int64, p *Params) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("verity: data device too small for %d blocks of %d bytes (read at %d): %w",
			p.DataBlocks, p.DataBlockSize, off, err)
	}
	return fmt.Errorf("verity: read data at %d: %w", off, err)
}

// upperLevels builds levels 1 and up while level 0 streams in, holding one
// partial block per level.
type upperLevels struct {
	l    *layout
	bh   *blockHasher
	w    io.WriterAt
	buf  [][]byte
	n    []uint64 // digests in buf[i]
	idx  []uint64 // blocks written in level i
	root []byte
	dig  []byte
}

func newUpperLevels(l *layout, p *Params, w io.WriterAt) *upperLevels {
	u := &upperLevels{l: l, bh: newBlockHasher(p), w: w, buf: make([][]byte, l.levels),
		n: make([]uint64, l.levels), idx: make([]uint64, l.levels), dig: make([]byte, l.digestSize)}
	for i := 1; i < l.levels; i++ {
		u.buf[i] = make([]byte, l.hbs)
	}
	return u
}

// level0Blocks takes finished level-0 blocks, writes them and feeds level 1.
func (u *upperLevels) level0Blocks(first uint64, blocks []byte) error {
	if _, err := u.w.WriteAt(blocks, int64(u.l.levelStart[0]+first)*int64(u.l.hbs)); err != nil {
		return fmt.Errorf("verity: write hash level 0: %w", err)
	}
	u.idx[0] += uint64(len(blocks) / u.l.hbs)
	for off := 0; off < len(blocks); off += u.l.hbs {
		if err := u.blockDone(0, blocks[off:off+u.l.hbs]); err != nil {
			return err
		}
	}
	return nil
}

// blockDone passes the digest of a finished block of level i up.
func (u *upperLevels) blockDone(i int, block []byte) error {
	u.bh.sum(u.dig, block)
	if i == u.l.levels-1 {
		u.root = append([]byte(nil), u.dig...)
		return nil
	}
	j := i + 1
	copy(u.buf[j][u.n[j]*uint64(u.l.stride):], u.dig)
	u.n[j]++
	if u.n[j] == u.l.hpb {
		return u.flush(j)
	}
	return nil
}

func (u *upperLevels) flush(i int) error {
	b := u.buf[i]
	if _, err := u.w.WriteAt(b, int64(u.l.levelStart[i]+u.idx[i])*int64(u.l.hbs)); err != nil {
		return fmt.Errorf("verity: write hash level %d: %w", i, err)
	}
	u.idx[i]++
	u.n[i] = 0
	err := u.blockDone(i, b)
	clear(b)
	return err
}

func (u *upperLevels) finish() ([]byte, error) {
	for i := 1; i < u.l.levels; i++ {
		if u.n[i] > 0 {
			if err := u.flush(i); err != nil {
				return nil, err
			}
		}
	}
	for i := range u.l.levels {
		if u.idx[i] != u.l.levelSize[i] {
			return nil, fmt.Errorf("verity: internal error: level %d has %d blocks, want %d", i, u.idx[i], u.l.levelSize[i])
		}
	}
	return u.root, nil
}

// sizeOf finds the size of a ReaderAt that can tell: something with
// Size() (io.SectionReader, bytes.Reader), a file (regular or device), or a
// Seeker.
func sizeOf(r io.ReaderAt) (int64, error) {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size(), nil
	case *os.File:
		fi, err := v.Stat()
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			return fi.Size(), nil
		}
		if fi.Mode()&fs.ModeDevice != 0 {
			return v.Seek(0, io.SeekEnd)
		}
		return 0, fmt.Errorf("%s is neither a regular file nor a block device", v.Name())
	case io.Seeker:
		return v.Seek(0, io.SeekEnd)
	}
	return 0, errors.New("size unknown")
}
