package ocitest

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/internal/testutil"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
const BusyboxPath = "/bin/busybox"

// BusyboxApplets are the symlinks the base layer gets in /bin.
var BusyboxApplets = []string{"cat", "echo", "false", "id", "ls", "mkdir", "rm", "sh", "sleep", "stat", "true", "cp", "chmod", "touch", "wc"}

// BaseLayer returns the base layer: /bin/busybox from the host (Debian's
// busybox-static; the test stops via Missing without it), applet
// symlinks, /etc/motd, /opt/old/{a,b} and a 1777 /tmp.
func BaseLayer(t testing.TB) []Entry {
	t.Helper()
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		testutil.Missing(t, "busybox-static (%s): %v", BusyboxPath, err)
	}
	ents := []Entry{
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/busybox", Body: bb, Mode: 0o755},
	}
	for _, a := range BusyboxApplets {
		ents = append(ents, Entry{Name: "bin/" + a, Type: tar.TypeSymlink, Link: "busybox", Mode: 0o777})
	}
	return append(ents,
		Entry{Name: "etc/", Type: tar.TypeDir},
		Entry{Name: "etc/motd", Body: []byte("base layer\n")},
		Entry{Name: "etc/passwd", Body: []byte("root:x:0:0:root:/:/bin/sh\n")},
		Entry{Name: "opt/", Type: tar.TypeDir},
		Entry{Name: "opt/old/", Type: tar.TypeDir},
		Entry{Name: "opt/old/a", Body: []byte("a\n")},
		Entry{Name: "opt/old/b", Body: []byte("b\n")},
		Entry{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
	)
}

// TopLayer is the default second layer: it whites out /etc/motd, makes
// /opt/old opaque (a and b vanish, "new" appears) and adds /hello.txt.
func TopLayer() []Entry {
	return []Entry{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/.wh.motd"},
		{Name: "opt/", Type: tar.TypeDir},
		{Name: "opt/old/", Type: tar.TypeDir},
		{Name: "opt/old/.wh..wh..opq"},
		{Name: "opt/old/new", Body: []byte("new\n")},
		{Name: "hello.txt", Body: []byte("hello from a signed layer\n")},
	}
}

// LayoutOptions say what SampleLayout makes.
type LayoutOptions struct {
	Compression Compression // of every layer blob; Plain when empty
	Ref         string      // org.opencontainers.image.ref.name; "latest" when empty
	// Layers replace the default layers (BaseLayer, TopLayer) when not nil.
	Layers [][]Entry
	// Index wraps the manifest in an image index (linux/amd64); the ref
	// names the index.
	Index bool
	// Cmd is the config's Cmd (["/bin/sh"] when nil).
	Cmd []string
}

// Sample describes what SampleLayout made.
type Sample struct {
	Dir      string
	Ref      string
	Image    ocispec.Descriptor // what Ref names: the manifest, or the index
	Manifest ocispec.Descriptor // the image manifest
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
	Tars     [][]byte // the uncompressed layer tars
}

// SampleLayout writes an image into the OCI layout dir, creating the
// layout or adding to the one there (another ref), and returns what it
// wrote. The bytes depend only on the options and the host's busybox.
func SampleLayout(t testing.TB, dir string, opts LayoutOptions) *Sample {
	t.Helper()
	s, err := sampleLayout(t, dir, opts)
	if err != nil {
		t.Fatalf("ocitest: layout %s: %v", dir, err)
	}
	return s
}

func sampleLayout(t testing.TB, dir string, opts LayoutOptions) (*Sample, error) {
	if opts.Compression == "" {
		opts.Compression = Plain
	}
	if opts.Ref == "" {
		opts.Ref = "latest"
	}
	if opts.Cmd == nil {
		opts.Cmd = []string{"/bin/sh"}
	}
	layers := opts.Layers
	if layers == nil {
		layers = [][]Entry{BaseLayer(t), TopLayer()}
	}
	s := &Sample{Dir: dir, Ref: opts.Ref}
	for _, ents := range layers {
		tb, err := TarBytes(ents)
		if err != nil {
			return nil, err
		}
		blob, err := CompressBytes(tb, opts.Compression)
		if err != nil {
			return nil, err
		}
		d, err := PutBlob(dir, opts.Compression.MediaType(), blob)
		if err != nil {
			return nil, err
		}
		s.Layers = append(s.Layers, d)
		sum := sha256.Sum256(tb)
		s.DiffIDs = append(s.DiffIDs, digest.NewDigestFromBytes(digest.SHA256, sum[:]))
		s.Tars = append(s.Tars, tb)
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Cmd: opts.Cmd, Env: []string{"PATH=/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: s.DiffIDs},
	}
	cd, err := PutJSON(dir, ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		return nil, err
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: s.Layers}
	m.SchemaVersion = 2
	if s.Manifest, err = PutJSON(dir, ocispec.MediaTypeImageManifest, m); err != nil {
		return nil, err
	}
	s.Image = s.Manifest
	if opts.Index {
		md := s.Manifest
		md.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
		ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
		ix.SchemaVersion = 2
		if s.Image, err = PutJSON(dir, ocispec.MediaTypeImageIndex, ix); err != nil {
			return nil, err
		}
	}
	entry := s.Image
	entry.Annotations = map[string]string{ocispec.AnnotationRefName: opts.Ref}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}
	var ix ocispec.Index
	if b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile)); err == nil {
		if err := json.Unmarshal(b, &ix); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ix.SchemaVersion, ix.MediaType = 2, ocispec.MediaTypeImageIndex
	kept := ix.Manifests[:0]
	for _, d := range ix.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] != opts.Ref {
			kept = append(kept, d)
		}
	}
	ix.Manifests = append(kept, entry)
	b, err := json.Marshal(ix)
	if err != nil {
		return nil, err
	}
	return s, os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), b, 0o644)
}

// PutBlob writes b into the layout dir's blobs and returns its descriptor.
func PutBlob(dir, mediaType string, b []byte) (ocispec.Descriptor, error) {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	p := filepath.Join(dir, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return d, err
	}
	return d, os.WriteFile(p, b, 0o644)
}

// PutJSON marshals v and writes it as a blob.
func PutJSON(dir, mediaType string, v any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return PutBlob(dir, mediaType, b)
}

// Archive writes a tar of the layout dir (an OCI archive, members in name
// order, "./"-less names) to path.
func Archive(t testing.TB, dir, path string) {
	t.Helper()
	if err := archive(dir, path); err != nil {
		t.Fatalf("ocitest: archive %s: %v", dir, err)
	}
}

func archive(dir, path string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range names {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.ModTime, h.Uname, h.Gname, h.Uid, h.Gid = Epoch, "", "", 0, 0
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
