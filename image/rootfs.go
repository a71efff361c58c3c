package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/initrd"
)

// readRootfs reads a rootfs from a directory, a tar file (plain, gzip, zstd
// or xz), or an OCI image layout directory, whose layers are applied in
// order with their whiteouts.
func readRootfs(src, tempDir string) (*erofs.Tree, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		// Hide the *os.File: the tree must not read from a file that is
		// closed when this function returns, so it spools the tar instead.
		return erofs.TreeFromTar(struct{ io.Reader }{f}, tempDir)
	}
	if _, err := os.Stat(filepath.Join(src, "oci-layout")); err == nil {
		return readOCILayout(src, tempDir)
	}
	return erofs.TreeFromDir(src)
}

type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type ociIndex struct {
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Layers    []ociDescriptor `json:"layers"`
}

// maxOCIJSON bounds the index and manifest files we read.
const maxOCIJSON = 4 << 20

func readBlobJSON(layout string, d ociDescriptor, v any) error {
	p, err := blobPath(layout, d.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxOCIJSON+1))
	if err != nil {
		return err
	}
	if len(b) > maxOCIJSON {
		return fmt.Errorf("%s: larger than %d bytes", d.Digest, maxOCIJSON)
	}
	return json.Unmarshal(b, v)
}

func blobPath(layout, digest string) (string, error) {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok || alg != "sha256" || len(hexd) != 64 || strings.Trim(hexd, "0123456789abcdef") != "" {
		return "", fmt.Errorf("oci: unsupported digest %q", digest)
	}
	return filepath.Join(layout, "blobs", alg, hexd), nil
}

// readOCILayout flattens the first image of an OCI image layout.
func readOCILayout(layout, tempDir string) (*erofs.Tree, error) {
	f, err := os.Open(filepath.Join(layout, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxOCIJSON+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("oci: index.json: %w", err)
	}
	if len(b) > maxOCIJSON {
		return nil, fmt.Errorf("oci: index.json: larger than %d bytes", maxOCIJSON)
	}
	var idx ociIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("oci: index.json: %w", err)
	}
	if len(idx.Manifests) == 0 {
		return nil, errors.New("oci: index.json lists no manifest")
	}
	desc := idx.Manifests[0]
	var man ociManifest
	for depth := 0; ; depth++ {
		if depth > 4 {
			return nil, errors.New("oci: nested indexes too deep")
		}
		if err := readBlobJSON(layout, desc, &man); err != nil {
			return nil, fmt.Errorf("oci: manifest: %w", err)
		}
		if len(man.Layers) > 0 || !strings.Contains(desc.MediaType, "index") {
			break
		}
		// An image index: take its first manifest.
		var sub ociIndex
		if err := readBlobJSON(layout, desc, &sub); err != nil || len(sub.Manifests) == 0 {
			return nil, fmt.Errorf("oci: nested index %s has no manifest", desc.Digest)
		}
		desc = sub.Manifests[0]
	}
	root := erofs.NewTree()
	for i, l := range man.Layers {
		p, err := blobPath(layout, l.Digest)
		if err != nil {
			return nil, err
		}
		layer, err := openLayer(p)
		if err != nil {
			return nil, fmt.Errorf("oci: layer %d: %w", i, err)
		}
		lt, err := erofs.TreeFromTar(layer, tempDir)
		layer.Close()
		if err != nil {
			return nil, fmt.Errorf("oci: layer %d (%s): %w", i, l.Digest, err)
		}
		if err := applyLayer(root, lt); err != nil {
			return nil, fmt.Errorf("oci: layer %d: %w", i, err)
		}
	}
	return root, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// openLayer opens a layer blob, uncompressing gzip and zstd.
func openLayer(p string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		z, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		return readCloser{z, f.Close}, nil
	case n == 4 && bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		// The window bound is zstd's own default for decompression; the
		// package default (512 MiB) lets a frame header claim more.
		z, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			f.Close()
			return nil, err
		}
		return readCloser{z, func() error { z.Close(); return f.Close() }}, nil
	}
	// Not an *os.File, so that the tree spools it (the file is closed soon).
	return readCloser{f, f.Close}, nil
}

// applyLayer puts the entries of layer over root, as a container runtime
// unpacks layers: ".wh.NAME" deletes NAME, ".wh..wh..opq" empties the
// directory it is in. Hard links within the layer stay links.
func applyLayer(root, layer *erofs.Tree) error {
	// Whiteouts first, so that a layer may delete and re-create a path.
	// Opaque directories are emptied with one walk of root for all of them:
	// a walk per marker made a layer of many markers over a large root
	// take hours. Removals commute, so doing them after the whiteouts
	// changes nothing.
	var files []string
	opaque := map[string]bool{}
	err := layer.Walk(func(p string, ino *erofs.Inode) error {
		base, dir := path.Base(p), path.Dir(p)
		switch {
		case base == ".wh..wh..opq":
			if d := root.Get(dir); d != nil && d.IsDir() {
				opaque[dir] = true
			}
		case strings.HasPrefix(base, ".wh."):
			name := strings.TrimPrefix(base, ".wh.")
			if name == "" || name == "." || name == ".." {
				// ".wh..." would delete the parent directory, ".wh." the
				// directory itself: a whiteout only names an entry of its own directory.
				return fmt.Errorf("oci: bad whiteout %q", p)
			}
			victim := path.Join(dir, name)
			if root.Get(victim) != nil {
				if err := root.Remove(victim); err != nil {
					return err
				}
			}
		default:
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(opaque) > 0 {
		var children []string
		root.Walk(func(q string, _ *erofs.Inode) error {
			if d := path.Dir(q); opaque[d] && q != d {
				children = append(children, q)
			}
			return nil
		})
		for _, c := range children {
			if err := root.Remove(c); err != nil {
				return err
			}
		}
	}
	for _, p := range files {
		if err := root.Add(p, layer.Get(p)); err != nil {
			return err
		}
	}
	return nil
}

// checkStatic reports whether p is a statically linked ELF executable, which
// the initramfs and the verity volume need (they hold no C library).
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}

// kernelFromFiles opens a vmlinuz and a modules directory (named after the
// kernel release) by laying them out as an unpacked kernel package.
func kernelFromFiles(vmlinuz, modules string) (*initrd.Kernel, error) {
	release := filepath.Base(filepath.Clean(modules))
	tmp, err := os.MkdirTemp("", "osguard-kernel-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	absV, err := filepath.Abs(vmlinuz)
	if err != nil {
		return nil, err
	}
	absM, err := filepath.Abs(modules)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "boot"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "usr/lib/modules"), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(absV, filepath.Join(tmp, "boot", "vmlinuz-"+release)); err != nil {
		return nil, err
	}
	if err := os.Symlink(absM, filepath.Join(tmp, "usr/lib/modules", release)); err != nil {
		return nil, err
	}
	return initrd.OpenDir(tmp)
}
