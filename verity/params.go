package verity

import (
	"crypto"
	"crypto/sha1" //nolint:gosec // dm-verity supports sha1 trees; it is the user's choice.
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"math/bits"
)

// Limits, from cryptsetup's lib/verity (verity.c, verity_hash.c) and the
// issue: block sizes are powers of two from 512 to the page size, the salt
// fits the superblock's 256-byte field, and the tree has at most 63 levels.
const (
	MinBlockSize   = 512
	MaxBlockSize   = 4096
	MaxSaltSize    = 256
	SuperblockSize = 512
	maxLevels      = 63
)

// Defaults are veritysetup's.
const (
	DefaultHashAlgorithm = "sha256"
	DefaultBlockSize     = 4096
	DefaultHashFormat    = 1
)

// ErrInvalidParams marks parameters that no valid tree can have.
var ErrInvalidParams = errors.New("verity: invalid parameters")

// Params describes a hash tree, as the veritysetup options do.
//
// A zero HashAlgorithm, DataBlockSize or HashBlockSize means the default
// (sha256, 4096). HashFormat has no "unset" value: 0 is the Chrome OS
// format, so start from DefaultParams to get format 1. A nil or empty Salt
// means no salt; the package never invents a salt or UUID (see DeriveSalt,
// DeriveUUID). DataBlocks 0 means "all of the data device"; its size must
// then be known (see Format) and a multiple of DataBlockSize.
//
// HashOffset is the byte offset of the superblock (or, with NoSuperblock, of
// the tree) in the hash device; it lets the tree follow the data in one file.
type Params struct {
	HashAlgorithm string
	DataBlockSize uint32
	HashBlockSize uint32
	Salt          []byte
	UUID          [16]byte
	HashFormat    uint32 // 1 = normal (default), 0 = Chrome OS
	DataBlocks    uint64
	HashOffset    uint64
	NoSuperblock  bool
}

// DefaultParams returns veritysetup's defaults: sha256, 4096-byte blocks,
// hash format 1, with a superblock, no salt and a zero UUID.
func DefaultParams() Params {
	return Params{
		HashAlgorithm: DefaultHashAlgorithm,
		DataBlockSize: DefaultBlockSize,
		HashBlockSize: DefaultBlockSize,
		HashFormat:    DefaultHashFormat,
	}
}

var algorithms = map[string]crypto.Hash{
	"sha1":   crypto.SHA1,
	"sha224": crypto.SHA224,
	"sha256": crypto.SHA256,
	"sha384": crypto.SHA384,
	"sha512": crypto.SHA512,
}

// Algorithms lists the supported hash algorithm names.
func Algorithms() []string { return []string{"sha1", "sha224", "sha256", "sha384", "sha512"} }

func newHash(alg string) hash.Hash {
	switch algorithms[alg] {
	case crypto.SHA1:
		return sha1.New() //nolint:gosec
	case crypto.SHA224:
		return sha256.New224()
	case crypto.SHA256:
		return sha256.New()
	case crypto.SHA384:
		return sha512.New384()
	case crypto.SHA512:
		return sha512.New()
	}
	return nil
}

// DigestSize returns the digest length of a supported algorithm, or 0.
func DigestSize(alg string) int {
	if h, ok := algorithms[alg]; ok {
		return h.Size()
	}
	return 0
}

// withDefaults fills the zero fields that have a default.
func (p Params) withDefaults() Params {
	if p.HashAlgorithm == "" {
		p.HashAlgorithm = DefaultHashAlgorithm
	}
	if p.DataBlockSize == 0 {
		p.DataBlockSize = DefaultBlockSize
	}
	if p.HashBlockSize == 0 {
		p.HashBlockSize = DefaultBlockSize
	}
	if len(p.Salt) == 0 {
		p.Salt = nil
	}
	return p
}

func validBlockSize(n uint32) bool {
	return n >= MinBlockSize && n <= MaxBlockSize && n&(n-1) == 0
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidParams, fmt.Sprintf(format, args...))
}

// check validates everything but DataBlocks.
func (p *Params) check() error {
	if DigestSize(p.HashAlgorithm) == 0 {
		return invalid("unknown hash algorithm %q", p.HashAlgorithm)
	}
	if !validBlockSize(p.DataBlockSize) {
		return invalid("data block size %d is not a power of two from %d to %d", p.DataBlockSize, MinBlockSize, MaxBlockSize)
	}
	if !validBlockSize(p.HashBlockSize) {
		return invalid("hash block size %d is not a power of two from %d to %d", p.HashBlockSize, MinBlockSize, MaxBlockSize)
	}
	if len(p.Salt) > MaxSaltSize {
		return invalid("salt is %d bytes, at most %d allowed", len(p.Salt), MaxSaltSize)
	}
	if p.HashFormat > 1 {
		return invalid("hash format %d, want 0 or 1", p.HashFormat)
	}
	if p.HashOffset%512 != 0 {
		// veritysetup: "Unsupported VERITY hash offset."
		return invalid("hash offset %d is not a multiple of 512", p.HashOffset)
	}
	if p.NoSuperblock && p.HashOffset%uint64(p.HashBlockSize) != 0 {
		// Without a superblock cryptsetup rounds the offset down and the
		// tree would start before it; refuse rather than overwrite.
		return invalid("hash offset %d is not a multiple of the hash block size %d", p.HashOffset, p.HashBlockSize)
	}
	if p.HashOffset > 1<<62 {
		return invalid("hash offset %d too large", p.HashOffset)
	}
	return nil
}

// layout is where each level of the tree lives, as cryptsetup's hash_levels.
type layout struct {
	digestSize int
	stride     int    // bytes per digest in a hash block: padded in format 1
	hpbBits    uint   // log2 of digests per hash block
	hpb        uint64 // digests per hash block
	hbs, dbs   int
	levels     int
	levelStart []uint64 // first hash block of each level, level 0 = lowest
	levelSize  []uint64 // hash blocks in each level
	treeStart  uint64   // first hash block of the tree (hash_start_block in the dm table)
	end        uint64   // hash block after the tree
}

// newLayout resolves p (with defaults, validated, DataBlocks > 0).
func newLayout(p *Params) (*layout, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if p.DataBlocks == 0 {
		return nil, invalid("no data blocks")
	}
	if p.DataBlocks > (1<<62)/uint64(p.DataBlockSize) {
		return nil, invalid("%d data blocks is too many", p.DataBlocks)
	}
	l := &layout{digestSize: DigestSize(p.HashAlgorithm), hbs: int(p.HashBlockSize), dbs: int(p.DataBlockSize)}
	l.hpbBits = uint(bits.Len(uint(l.hbs/l.digestSize))) - 1
	l.hpb = 1 << l.hpbBits
	l.stride = l.digestSize
	if p.HashFormat == 1 {
		l.stride = 1 << bits.Len(uint(l.digestSize-1))
	}
	if p.NoSuperblock {
		l.treeStart = p.HashOffset / uint64(l.hbs)
	} else {
		l.treeStart = (p.HashOffset + SuperblockSize + uint64(l.hbs) - 1) / uint64(l.hbs)
	}
	n := p.DataBlocks
	for uint(l.levels)*l.hpbBits < 64 && (n-1)>>(uint(l.levels)*l.hpbBits) != 0 {
		l.levels++
	}
	if l.levels > maxLevels {
		return nil, invalid("tree would have %d levels", l.levels)
	}
	l.levelStart = make([]uint64, l.levels)
	l.levelSize = make([]uint64, l.levels)
	pos := l.treeStart
	for i := l.levels - 1; i >= 0; i-- {
		shift := uint(i+1) * l.hpbBits
		var s uint64
		if shift >= 64 {
			s = 1
		} else {
			s = (n-1)>>shift + 1 // ceil(n / 2^shift) without overflow
		}
		l.levelStart[i] = pos
		l.levelSize[i] = s
		pos += s
	}
	l.end = pos
	if l.end > (1<<62)/uint64(l.hbs) {
		return nil, invalid("hash tree too large")
	}
	return l, nil
}

// hashBlocks is the number of hash blocks in the tree (veritysetup's "Hash blocks").
func (l *layout) hashBlocks() uint64 { return l.end - l.treeStart }

// HashDeviceSize returns the bytes from the start of the hash device to the
// end of the tree, HashOffset and superblock included: the smallest hash
// device (or partition) that holds the tree. p.DataBlocks must be set. It
// returns 0 when p is invalid.
func HashDeviceSize(p Params) int64 {
	p = p.withDefaults()
	l, err := newLayout(&p)
	if err != nil {
		return 0
	}
	return l.deviceSize(&p)
}

func (l *layout) deviceSize(*Params) int64 { return int64(l.end) * int64(l.hbs) }
