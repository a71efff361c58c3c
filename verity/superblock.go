package verity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// superblockMagic is verity_sb.signature in cryptsetup's lib/verity/verity.c.
var superblockMagic = [8]byte{'v', 'e', 'r', 'i', 't', 'y', 0, 0}

// ErrBadSuperblock marks a superblock that cannot be used.
var ErrBadSuperblock = errors.New("verity: bad superblock")

// rawSuperblock is the on-disk struct verity_sb (little endian, 512 bytes),
// see cryptsetup lib/verity/verity.c.
type rawSuperblock struct {
	Signature     [8]byte
	Version       uint32
	HashType      uint32
	UUID          [16]byte
	Algorithm     [32]byte
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	SaltSize      uint16
	Pad1          [6]byte
	Salt          [256]byte
	Pad2          [168]byte
}

// Superblock is the veritysetup v1 superblock: the parameters needed to
// open the tree, minus the root hash.
type Superblock struct {
	Version       uint32 // always 1
	HashType      uint32 // the hash format, 0 or 1
	UUID          [16]byte
	Algorithm     string
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// MarshalBinary encodes the superblock into its 512 bytes.
func (sb *Superblock) MarshalBinary() ([]byte, error) {
	if len(sb.Algorithm) >= 32 {
		return nil, fmt.Errorf("%w: algorithm name %q too long", ErrBadSuperblock, sb.Algorithm)
	}
	if len(sb.Salt) > MaxSaltSize {
		return nil, fmt.Errorf("%w: salt is %d bytes", ErrBadSuperblock, len(sb.Salt))
	}
	r := rawSuperblock{
		Signature:     superblockMagic,
		Version:       sb.Version,
		HashType:      sb.HashType,
		UUID:          sb.UUID,
		DataBlockSize: sb.DataBlockSize,
		HashBlockSize: sb.HashBlockSize,
		DataBlocks:    sb.DataBlocks,
		SaltSize:      uint16(len(sb.Salt)),
	}
	copy(r.Algorithm[:], sb.Algorithm)
	copy(r.Salt[:], sb.Salt)
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, &r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadSuperblock reads and checks the superblock at byte off of r.
func ReadSuperblock(r io.ReaderAt, off int64) (*Superblock, error) {
	if off < 0 {
		return nil, fmt.Errorf("verity: read superblock: negative offset %d", off)
	}
	b := make([]byte, SuperblockSize)
	if _, err := readFull(r, b, off); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("verity: read superblock at %d: hash device too small: %w", off, err)
		}
		return nil, fmt.Errorf("verity: read superblock: %w", err)
	}
	return ParseSuperblock(b)
}

// ParseSuperblock decodes and checks a superblock, as cryptsetup's
// VERITY_read_sb does, plus a known algorithm and a nonzero block count.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < SuperblockSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadSuperblock, len(b), SuperblockSize)
	}
	var r rawSuperblock
	if err := binary.Read(bytes.NewReader(b[:SuperblockSize]), binary.LittleEndian, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSuperblock, err)
	}
	if r.Signature != superblockMagic {
		return nil, fmt.Errorf("%w: wrong magic %q", ErrBadSuperblock, r.Signature[:])
	}
	if r.Version != 1 {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrBadSuperblock, r.Version)
	}
	if r.HashType > 1 {
		return nil, fmt.Errorf("%w: unsupported hash type %d", ErrBadSuperblock, r.HashType)
	}
	alg, _, found := bytes.Cut(r.Algorithm[:], []byte{0})
	if !found {
		return nil, fmt.Errorf("%w: algorithm name not terminated", ErrBadSuperblock)
	}
	if DigestSize(string(alg)) == 0 {
		return nil, fmt.Errorf("%w: unknown hash algorithm %q", ErrBadSuperblock, alg)
	}
	if !validBlockSize(r.DataBlockSize) || !validBlockSize(r.HashBlockSize) {
		return nil, fmt.Errorf("%w: unsupported block sizes %d/%d", ErrBadSuperblock, r.DataBlockSize, r.HashBlockSize)
	}
	if r.SaltSize > MaxSaltSize {
		return nil, fmt.Errorf("%w: salt size %d exceeds %d", ErrBadSuperblock, r.SaltSize, MaxSaltSize)
	}
	if r.DataBlocks == 0 {
		return nil, fmt.Errorf("%w: zero data blocks", ErrBadSuperblock)
	}
	sb := &Superblock{
		Version:       r.Version,
		HashType:      r.HashType,
		UUID:          r.UUID,
		Algorithm:     string(alg),
		DataBlockSize: r.DataBlockSize,
		HashBlockSize: r.HashBlockSize,
		DataBlocks:    r.DataBlocks,
	}
	if r.SaltSize > 0 {
		sb.Salt = append([]byte(nil), r.Salt[:r.SaltSize]...)
	}
	return sb, nil
}

// Params returns the tree parameters the superblock at hashOffset describes.
func (sb *Superblock) Params(hashOffset uint64) Params {
	return Params{
		HashAlgorithm: sb.Algorithm,
		DataBlockSize: sb.DataBlockSize,
		HashBlockSize: sb.HashBlockSize,
		Salt:          append([]byte(nil), sb.Salt...),
		UUID:          sb.UUID,
		HashFormat:    sb.HashType,
		DataBlocks:    sb.DataBlocks,
		HashOffset:    hashOffset,
	}
}

func superblockFor(p *Params) *Superblock {
	return &Superblock{
		Version:       1,
		HashType:      p.HashFormat,
		UUID:          p.UUID,
		Algorithm:     p.HashAlgorithm,
		DataBlockSize: p.DataBlockSize,
		HashBlockSize: p.HashBlockSize,
		DataBlocks:    p.DataBlocks,
		Salt:          p.Salt,
	}
}

// FormatUUID prints a UUID the way veritysetup does (lowercase, dashed).
func FormatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// ParseUUID parses a dashed (or undashed) hex UUID.
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] == '-' && (len(h) == 8 || len(h) == 12 || len(h) == 16 || len(h) == 20) {
			continue
		}
		h = append(h, s[i])
	}
	if len(h) != 32 {
		return u, fmt.Errorf("verity: bad UUID %q", s)
	}
	for i := range 16 {
		hi, ok1 := unhex(h[2*i])
		lo, ok2 := unhex(h[2*i+1])
		if !ok1 || !ok2 {
			return u, fmt.Errorf("verity: bad UUID %q", s)
		}
		u[i] = hi<<4 | lo
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// readFull reads len(b) bytes at off; a short read is io.ErrUnexpectedEOF
// (or io.EOF when nothing was read).
func readFull(r io.ReaderAt, b []byte, off int64) (int, error) {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return n, nil
	}
	if err == nil || (errors.Is(err, io.EOF) && n > 0) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
