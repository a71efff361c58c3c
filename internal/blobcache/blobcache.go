// Package blobcache keeps the results of pure computations in a directory,
// each under a key that the caller derives from everything that decides the
// result: a digest of the inputs and, when osguard's own code decides the
// bytes, CodeID. A warm build takes them from there instead of computing
// them again; a cold one computes them and puts them there.
//
// An entry is written whole or not at all (atomicfile) and carries the
// SHA-256 of its content. An entry that does not match it, damaged on disk
// or cut short, is removed and reported as missing, never returned: the
// caller computes the result again.
package blobcache

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/osguard/osguard/internal/atomicfile"
)

// DefaultMaxEntries is how many entries a Dir keeps when MaxEntries is 0.
const DefaultMaxEntries = 64

// Dir is a cache directory. The zero value of MaxEntries means
// DefaultMaxEntries. A nil *Dir caches nothing.
type Dir struct {
	Path string
	// MaxEntries bounds the entries: a Put that goes beyond removes the
	// least recently used ones (a Get counts as a use).
	MaxEntries int
}

// validKey reports whether key can name a file of the directory: letters,
// digits, '-', '_' and '.', not starting with a dot.
func validKey(key string) bool {
	if key == "" || key[0] == '.' || len(key) > 200 {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Get returns the content kept under key. A missing, unreadable or damaged
// entry is a miss; a damaged one is removed.
func (d *Dir) Get(key string) ([]byte, bool) {
	if d == nil || !validKey(key) {
		return nil, false
	}
	p := filepath.Join(d.Path, key)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	if len(b) < sha256.Size {
		os.Remove(p)
		return nil, false
	}
	sum, data := b[:sha256.Size], b[sha256.Size:]
	if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
		os.Remove(p)
		return nil, false
	}
	now := time.Now()
	os.Chtimes(p, now, now) // least recently used goes first; a failure only makes it go sooner
	return data, true
}

// Put keeps data under key, then removes the least recently used entries
// beyond MaxEntries.
func (d *Dir) Put(key string, data []byte) error {
	if d == nil {
		return nil
	}
	if !validKey(key) {
		return fmt.Errorf("blobcache: invalid key %q", key)
	}
	if err := os.MkdirAll(d.Path, 0o755); err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	f, err := atomicfile.Create(filepath.Join(d.Path, key), 0o644)
	if err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	defer f.Abort()
	sum := sha256.Sum256(data)
	if _, err := f.Write(sum[:]); err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	return d.prune()
}

// prune removes the least recently used entries beyond MaxEntries.
// Temporary files of unfinished Puts start with a dot and are left alone.
func (d *Dir) prune() error {
	limit := d.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	ents, err := os.ReadDir(d.Path)
	if err != nil {
		return fmt.Errorf("blobcache: %w", err)
	}
	type entry struct {
		name string
		used time.Time
	}
	var list []entry
	for _, e := range ents {
		if !validKey(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		list = append(list, entry{e.Name(), info.ModTime()})
	}
	if len(list) <= limit {
		return nil
	}
	sort.Slice(list, func(i, j int) bool { return list[i].used.Before(list[j].used) })
	for _, e := range list[:len(list)-limit] {
		if err := os.Remove(filepath.Join(d.Path, e.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("blobcache: %w", err)
		}
	}
	return nil
}

var codeID struct {
	once sync.Once
	id   string
	err  error
}

// CodeID names the running executable: the SHA-256, in hex, of its Go
// build ID, whose last part the go command derives from the whole binary,
// or of the binary itself when it has none. A key that includes it names
// the code that computed the result, so that no change to osguard, or to a
// library it is built with, can reuse a result that the new code would
// compute differently. It is found once per process.
func CodeID() (string, error) {
	codeID.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			codeID.err = fmt.Errorf("blobcache: code id: %w", err)
			return
		}
		h := sha256.New()
		if id := goBuildID(exe); id != "" {
			fmt.Fprintf(h, "go build ID %s", id)
		} else if err := hashFile(h, exe); err != nil {
			codeID.err = fmt.Errorf("blobcache: code id: %w", err)
			return
		}
		codeID.id = hex.EncodeToString(h.Sum(nil))
	})
	return codeID.id, codeID.err
}

// goBuildID returns the Go build ID of the ELF executable at path, from
// its .note.go.buildid section (an ELF note of name "Go" and type 4), or
// "" when it has none.
func goBuildID(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sec := f.Section(".note.go.buildid")
	if sec == nil {
		return ""
	}
	note, err := sec.Data()
	if err != nil || len(note) < 16 {
		return ""
	}
	nameSize, descSize, typ := binary.LittleEndian.Uint32(note), binary.LittleEndian.Uint32(note[4:]), binary.LittleEndian.Uint32(note[8:])
	if nameSize != 4 || typ != 4 || string(note[12:16]) != "Go\x00\x00" || uint64(descSize) > uint64(len(note)-16) {
		return ""
	}
	return string(note[16 : 16+descSize])
}

func hashFile(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}
