package tarfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxXZDict bounds the LZMA2 dictionary an xz block may ask for. The
// decoder (github.com/ulikunitz/xz) allocates the dictionary a block
// header declares, up to 4 GiB, before it has decoded a byte: 80 bytes of
// hostile input could make it allocate 4 GiB, block after block. xz -9
// uses 64 MiB; this leaves room for custom presets.
const MaxXZDict = 1 << 27

// ErrXZDict is returned for an xz block whose dictionary exceeds MaxXZDict.
var ErrXZDict = errors.New("tarfs: xz: dictionary too large")

var errXZFormat = errors.New("tarfs: xz: malformed stream")

// GuardXZ returns a reader that passes r through unchanged while it walks
// the structure of the xz stream(s) in it (xz file format 1.2.1: stream
// header, blocks with their LZMA2 chunks, index, footer, stream padding),
// and fails with ErrXZDict before a block header that declares a
// dictionary larger than maxDict reaches the decoder. It does not
// decompress; chunk sizes are in the chunk headers. A stream it cannot
// follow is an error too, so that no block header escapes the check.
func GuardXZ(r io.Reader, maxDict uint32) io.Reader {
	return &xzGuard{r: r, max: maxDict, st: xzStreamHeader, need: 12}
}

type xzState int

const (
	xzStreamHeader xzState = iota // collecting 12 bytes
	xzBlockOrIndex                // first byte of a block header, or 0 for the index
	xzBlockHeader                 // collecting the rest of a block header
	xzChunkCtrl                   // an LZMA2 control byte
	xzChunkHeader                 // collecting the rest of a chunk header
	xzSkip                        // skipping need bytes, then next
	xzIndexVarint                 // index: count or record fields
	xzStreamFooter                // collecting 12 bytes
	xzStreamPad                   // zero bytes, or the next stream's magic
)

type xzGuard struct {
	r   io.Reader
	max uint32
	err error

	st   xzState
	next xzState // after xzSkip
	need int64   // bytes to collect or skip
	buf  []byte

	check    int64  // size of the block check of the current stream
	blockLen int64  // header and data bytes of the current block
	idxLen   int64  // bytes of the index so far
	varints  uint64 // index varints still to read (2 per record), after the count
	haveCnt  bool   // the index record count was read
	vlen     int    // bytes of the current varint
	vval     uint64 // its value
	padLen   int64  // stream padding bytes so far
}

func (g *xzGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if n > 0 {
		if e := g.process(p[:n]); e != nil {
			g.err = e
			return 0, e
		}
	}
	// A truncated stream is the decoder's to report, in its own words.
	return n, err
}

func (g *xzGuard) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errXZFormat, fmt.Sprintf(format, args...))
}

func xzCheckSize(id byte) int64 {
	if id == 0 {
		return 0
	}
	return 4 << ((id - 1) / 3)
}

func (g *xzGuard) skip(n int64, then xzState) {
	g.st, g.need, g.next = xzSkip, n, then
}

// collect appends up to g.need bytes of b to g.buf and returns how many it
// took and whether the buffer is complete.
func (g *xzGuard) collect(b []byte) (int, bool) {
	k := int(min(int64(len(b)), g.need))
	g.buf = append(g.buf, b[:k]...)
	g.need -= int64(k)
	return k, g.need == 0
}

func (g *xzGuard) process(b []byte) error {
	for len(b) > 0 {
		switch g.st {
		case xzSkip:
			k := int(min(int64(len(b)), g.need))
			b = b[k:]
			if g.need -= int64(k); g.need == 0 {
				g.st = g.next
			}
		case xzStreamHeader, xzStreamFooter:
			k, done := g.collect(b)
			b = b[k:]
			if !done {
				continue
			}
			h := g.buf
			g.buf = g.buf[:0]
			if g.st == xzStreamHeader {
				if string(h[:6]) != "\xfd7zXZ\x00" || h[6] != 0 || h[7] > 0x0f {
					return g.fail("bad stream header")
				}
				g.check = xzCheckSize(h[7])
				g.st = xzBlockOrIndex
			} else {
				if string(h[10:12]) != "YZ" {
					return g.fail("bad stream footer")
				}
				g.st, g.padLen = xzStreamPad, 0
			}
		case xzStreamPad:
			switch b[0] {
			case 0:
				g.padLen++
				b = b[1:]
			case 0xfd:
				if g.padLen%4 != 0 {
					return g.fail("stream padding of %d bytes", g.padLen)
				}
				g.st, g.need = xzStreamHeader, 12
			default:
				return g.fail("data after the stream")
			}
		case xzBlockOrIndex:
			if b[0] == 0 {
				g.st, g.idxLen, g.haveCnt, g.varints, g.vlen, g.vval = xzIndexVarint, 1, false, 0, 0, 0
				b = b[1:]
				continue
			}
			g.st, g.need = xzBlockHeader, (int64(b[0])+1)*4
		case xzBlockHeader:
			k, done := g.collect(b)
			b = b[k:]
			if !done {
				continue
			}
			if err := g.blockHeader(g.buf); err != nil {
				return err
			}
			g.blockLen = int64(len(g.buf))
			g.buf = g.buf[:0]
			g.st = xzChunkCtrl
		case xzChunkCtrl:
			c := b[0]
			b = b[1:]
			g.blockLen++
			switch {
			case c == 0:
				pad := (4 - g.blockLen%4) % 4
				g.skip(pad+g.check, xzBlockOrIndex)
				if g.need == 0 {
					g.st = xzBlockOrIndex
				}
			case c == 1 || c == 2:
				g.buf = append(g.buf[:0], c)
				g.st, g.need = xzChunkHeader, 2
			case c >= 0x80:
				g.buf = append(g.buf[:0], c)
				g.st, g.need = xzChunkHeader, 4
				if c >= 0xc0 {
					g.need = 5
				}
			default:
				return g.fail("LZMA2 control byte %#x", c)
			}
		case xzChunkHeader:
			k, done := g.collect(b)
			b = b[k:]
			g.blockLen += int64(k)
			if !done {
				continue
			}
			var size int64
			if g.buf[0] < 0x80 {
				size = int64(binary.BigEndian.Uint16(g.buf[1:])) + 1
			} else {
				size = int64(binary.BigEndian.Uint16(g.buf[3:])) + 1
				if g.buf[0] >= 0xc0 && g.buf[5] >= 9*5*5 {
					return g.fail("LZMA2 properties %#x", g.buf[5])
				}
			}
			g.buf = g.buf[:0]
			g.blockLen += size
			g.skip(size, xzChunkCtrl)
		case xzIndexVarint:
			c := b[0]
			b = b[1:]
			g.idxLen++
			if g.vlen == 9 {
				return g.fail("index: varint too long")
			}
			g.vval |= uint64(c&0x7f) << (7 * g.vlen)
			g.vlen++
			if c&0x80 != 0 {
				continue
			}
			v := g.vval
			g.vlen, g.vval = 0, 0
			if !g.haveCnt {
				if v > 1<<62 {
					return g.fail("index: %d records", v)
				}
				g.haveCnt, g.varints = true, 2*v
			} else {
				g.varints--
			}
			if g.varints == 0 {
				pad := (4 - g.idxLen%4) % 4
				g.skip(pad+4, xzStreamFooter) // padding, CRC32
			}
		}
		if g.st == xzStreamFooter && g.need == 0 {
			g.need = 12
		}
	}
	return nil
}

// blockHeader checks the filter flags of a complete block header: the
// last filter is LZMA2, and its dictionary is within the bound.
func (g *xzGuard) blockHeader(h []byte) error {
	if len(h) < 8 {
		return g.fail("block header of %d bytes", len(h))
	}
	flags := h[1]
	if flags&0x3c != 0 {
		return g.fail("block flags %#x", flags)
	}
	i := 2
	varint := func() (uint64, bool) {
		var v uint64
		for k := 0; k < 9 && i < len(h)-4; k++ {
			c := h[i]
			i++
			v |= uint64(c&0x7f) << (7 * k)
			if c&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	if flags&0x40 != 0 {
		if _, ok := varint(); !ok {
			return g.fail("block header: compressed size")
		}
	}
	if flags&0x80 != 0 {
		if _, ok := varint(); !ok {
			return g.fail("block header: uncompressed size")
		}
	}
	nf := int(flags&3) + 1
	for f := 0; f < nf; f++ {
		id, ok1 := varint()
		psize, ok2 := varint()
		if !ok1 || !ok2 || psize > uint64(len(h)-4-i) {
			return g.fail("block header: filter flags")
		}
		props := h[i : i+int(psize)]
		i += int(psize)
		if f < nf-1 {
			continue
		}
		if id != 0x21 || len(props) != 1 {
			return g.fail("block header: last filter %#x is not LZMA2", id)
		}
		d := props[0]
		if d > 40 {
			return g.fail("LZMA2 dictionary size byte %d", d)
		}
		size := uint64(0xffffffff)
		if d < 40 {
			size = uint64(2|d&1) << (d/2 + 11)
		}
		if size > uint64(g.max) {
			return fmt.Errorf("%w: a block asks for %d bytes, at most %d", ErrXZDict, size, g.max)
		}
	}
	return nil
}
