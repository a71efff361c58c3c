package oci

import (
	"bytes"
	_ "crypto/sha256" // go-digest needs the hashes linked in
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Bounds on the JSON documents of a layout.
const (
	MaxIndexSize    = 4 << 20  // index.json and image indexes
	MaxManifestSize = 4 << 20  // as registries allow
	MaxConfigSize   = 16 << 20 // image configs (history can be long)
	MaxIndexEntries = 10000
	maxIndexDepth   = 4
)

// Docker media types that OCI layouts may still carry (skopeo keeps them
// with --preserve-digests); their JSON has the OCI shape.
const (
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// ErrNotFound is matched (errors.Is) when a reference or blob is missing.
var ErrNotFound = errors.New("oci: not found")

// Layout is an opened OCI image layout.
type Layout struct {
	src   source
	dir   string // "" for an archive
	root  *os.Root
	index ocispec.Index
}

// RefDescriptor is an index.json entry with a reference name.
type RefDescriptor struct {
	Name       string
	Descriptor ocispec.Descriptor
}

// Image is one image manifest with its config.
type Image struct {
	Descriptor ocispec.Descriptor
	Manifest   ocispec.Manifest
	Config     ocispec.Image
	Platform   *ocispec.Platform // from the index entry, else from the config
}

// Open opens the OCI image layout in directory dir.
func Open(dir string) (*Layout, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	l := &Layout{src: dirSource{root}, dir: dir, root: root}
	if err := l.load(); err != nil {
		root.Close()
		return nil, fmt.Errorf("oci: layout %s: %w", dir, err)
	}
	return l, nil
}

// OpenArchive opens a tar of an OCI image layout (what `skopeo copy
// oci-archive:` or `tar -C LAYOUT -cf - .` make) of size bytes. Anything
// after the tar's end marker (zeros on a block device) is ignored.
func OpenArchive(r io.ReaderAt, size int64) (*Layout, error) {
	a, err := newArchiveSource(r, size)
	if err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	l := &Layout{src: a}
	if err := l.load(); err != nil {
		return nil, fmt.Errorf("oci: archive: %w", err)
	}
	return l, nil
}

// Close releases the layout directory.
func (l *Layout) Close() error {
	if l.root != nil {
		return l.root.Close()
	}
	return nil
}

// Dir returns the layout directory ("" for an archive).
func (l *Layout) Dir() string { return l.dir }

// Index returns a copy of the parsed index.json.
func (l *Layout) Index() ocispec.Index {
	ix := l.index
	ix.Manifests = append([]ocispec.Descriptor(nil), l.index.Manifests...)
	return ix
}

func (l *Layout) readFile(name string, limit int64) ([]byte, error) {
	rc, size, err := l.src.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > limit {
		return nil, fmt.Errorf("%s is %d bytes, at most %d allowed", name, size, limit)
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

func (l *Layout) load() error {
	b, err := l.readFile(ocispec.ImageLayoutFile, 4096)
	if err != nil {
		return fmt.Errorf("not an OCI image layout: %w", err)
	}
	var hdr ocispec.ImageLayout
	if err := json.Unmarshal(b, &hdr); err != nil {
		return fmt.Errorf("%s: %w", ocispec.ImageLayoutFile, err)
	}
	if hdr.Version != ocispec.ImageLayoutVersion {
		return fmt.Errorf("%s: imageLayoutVersion %q, want %q", ocispec.ImageLayoutFile, hdr.Version, ocispec.ImageLayoutVersion)
	}
	b, err = l.readFile(ocispec.ImageIndexFile, MaxIndexSize)
	if err != nil {
		return err
	}
	ix, err := ParseIndex(b)
	if err != nil {
		return fmt.Errorf("%s: %w", ocispec.ImageIndexFile, err)
	}
	l.index = *ix
	return nil
}

// ParseIndex parses and checks an image index (index.json or an index blob).
func ParseIndex(b []byte) (*ocispec.Index, error) {
	if len(b) > MaxIndexSize {
		return nil, fmt.Errorf("index larger than %d bytes", MaxIndexSize)
	}
	var ix ocispec.Index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("parse index: %w", err)
	}
	if ix.SchemaVersion != 2 {
		return nil, fmt.Errorf("index schemaVersion %d, want 2", ix.SchemaVersion)
	}
	if ix.MediaType != "" && ix.MediaType != ocispec.MediaTypeImageIndex && ix.MediaType != dockerManifestList {
		return nil, fmt.Errorf("index mediaType %q", ix.MediaType)
	}
	if len(ix.Manifests) > MaxIndexEntries {
		return nil, fmt.Errorf("index has %d entries, at most %d", len(ix.Manifests), MaxIndexEntries)
	}
	for i, d := range ix.Manifests {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("index entry %d: %w", i, err)
		}
	}
	return &ix, nil
}

// ParseManifest parses and checks an image manifest.
func ParseManifest(b []byte) (*ocispec.Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("manifest larger than %d bytes", MaxManifestSize)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest schemaVersion %d, want 2", m.SchemaVersion)
	}
	if m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest && m.MediaType != dockerManifest {
		return nil, fmt.Errorf("manifest mediaType %q", m.MediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("manifest config: %w", err)
	}
	if len(m.Layers) > MaxIndexEntries {
		return nil, fmt.Errorf("manifest has %d layers", len(m.Layers))
	}
	for i, d := range m.Layers {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("manifest layer %d: %w", i, err)
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(*m.Subject); err != nil {
			return nil, fmt.Errorf("manifest subject: %w", err)
		}
	}
	return &m, nil
}

func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %.100q: %w", d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: negative size %d", d.Digest, d.Size)
	}
	if d.MediaType == "" {
		return fmt.Errorf("%s: no mediaType", d.Digest)
	}
	return nil
}

// SplitRef splits "LAYOUT[:REF]" at the first colon, as skopeo's oci:
// transport does.
func SplitRef(arg string) (layout, ref string) {
	layout, ref, _ = strings.Cut(arg, ":")
	return layout, ref
}

// Refs lists the index.json entries that carry org.opencontainers.image.ref.name.
func (l *Layout) Refs() []RefDescriptor {
	var out []RefDescriptor
	for _, d := range l.index.Manifests {
		if n, ok := d.Annotations[ocispec.AnnotationRefName]; ok {
			out = append(out, RefDescriptor{Name: n, Descriptor: d})
		}
	}
	return out
}

func isManifest(mt string) bool { return mt == ocispec.MediaTypeImageManifest || mt == dockerManifest }
func isIndex(mt string) bool    { return mt == ocispec.MediaTypeImageIndex || mt == dockerManifestList }

// Resolve finds the image (manifest or index) that ref names: an
// org.opencontainers.image.ref.name, or a digest of an index.json entry.
// The empty ref means the only image of the layout; referrer entries
// (those with an artifactType) do not count.
func (l *Layout) Resolve(ref string) (ocispec.Descriptor, error) {
	var found []ocispec.Descriptor
	for _, d := range l.index.Manifests {
		switch {
		case ref == "":
			if d.ArtifactType == "" && (isManifest(d.MediaType) || isIndex(d.MediaType)) {
				found = append(found, d)
			}
		case d.Annotations[ocispec.AnnotationRefName] == ref || string(d.Digest) == ref:
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0 && ref == "":
		return ocispec.Descriptor{}, fmt.Errorf("%w: the layout holds no image", ErrNotFound)
	case len(found) == 0:
		return ocispec.Descriptor{}, fmt.Errorf("%w: no image %q in the layout", ErrNotFound, ref)
	}
	for _, d := range found[1:] {
		if d.Digest != found[0].Digest {
			if ref == "" {
				return ocispec.Descriptor{}, fmt.Errorf("oci: the layout holds %d images: name one (LAYOUT:REF)", len(found))
			}
			return ocispec.Descriptor{}, fmt.Errorf("oci: %q names %d different images", ref, len(found))
		}
	}
	d := found[0]
	if !isManifest(d.MediaType) && !isIndex(d.MediaType) {
		return ocispec.Descriptor{}, fmt.Errorf("oci: %q is a %s, not an image", ref, d.MediaType)
	}
	return d, nil
}

// Images returns the image manifests d stands for: d itself for a
// manifest; for an index, each manifest it lists (nested indexes
// followed), except attestation and other artifact manifests and
// platforms with os "unknown".
func (l *Layout) Images(d ocispec.Descriptor) ([]Image, error) {
	var out []Image
	w := &walk{seen: map[digest.Digest]bool{}}
	if err := l.images(d, nil, 0, w, &out); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("oci: %s lists no image manifest", d.Digest)
	}
	return out, nil
}

// walk bounds the walk of nested indexes: each index is read once, and
// at most MaxIndexEntries manifests are visited in all, so an index that
// lists itself or fans out cannot make the walk explode.
type walk struct {
	seen  map[digest.Digest]bool
	steps int
}

func (l *Layout) images(d ocispec.Descriptor, plat *ocispec.Platform, depth int, w *walk, out *[]Image) error {
	if w.steps++; w.steps > MaxIndexEntries {
		return fmt.Errorf("oci: more than %d manifests below %s", MaxIndexEntries, d.Digest)
	}
	switch {
	case isIndex(d.MediaType):
		if depth >= maxIndexDepth {
			return fmt.Errorf("oci: indexes nested deeper than %d", maxIndexDepth)
		}
		if w.seen[d.Digest] {
			return nil
		}
		w.seen[d.Digest] = true
		b, err := l.ReadBlob(d, MaxIndexSize)
		if err != nil {
			return err
		}
		ix, err := ParseIndex(b)
		if err != nil {
			return fmt.Errorf("oci: %s: %w", d.Digest, err)
		}
		for _, c := range ix.Manifests {
			if c.ArtifactType != "" || c.Annotations["vnd.docker.reference.type"] != "" ||
				c.Platform != nil && c.Platform.OS == "unknown" {
				continue
			}
			if !isManifest(c.MediaType) && !isIndex(c.MediaType) {
				continue
			}
			if err := l.images(c, c.Platform, depth+1, w, out); err != nil {
				return err
			}
		}
		return nil
	case isManifest(d.MediaType):
		img, err := l.image(d)
		if err != nil {
			return err
		}
		if plat != nil {
			p := *plat
			img.Platform = &p
		}
		*out = append(*out, *img)
		return nil
	}
	return fmt.Errorf("oci: %s: %s is not an image manifest or index", d.Digest, d.MediaType)
}

func (l *Layout) image(d ocispec.Descriptor) (*Image, error) {
	b, err := l.ReadBlob(d, MaxManifestSize)
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", d.Digest, err)
	}
	if m.Config.MediaType != ocispec.MediaTypeImageConfig && m.Config.MediaType != "application/vnd.docker.container.image.v1+json" {
		return nil, fmt.Errorf("oci: %s: config mediaType %q: not a container image", d.Digest, m.Config.MediaType)
	}
	cb, err := l.ReadBlob(m.Config, MaxConfigSize)
	if err != nil {
		return nil, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("oci: config %s: %w", m.Config.Digest, err)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("oci: config %s: rootfs has %d diff_ids (type %q) for %d layers", m.Config.Digest, len(cfg.RootFS.DiffIDs), cfg.RootFS.Type, len(m.Layers))
	}
	for i, id := range cfg.RootFS.DiffIDs {
		if err := id.Validate(); err != nil {
			return nil, fmt.Errorf("oci: config %s: diff_id %d: %w", m.Config.Digest, i, err)
		}
	}
	return &Image{Descriptor: d, Manifest: *m, Config: cfg, Platform: &ocispec.Platform{
		OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion, OSFeatures: cfg.OSFeatures,
	}}, nil
}

func blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("oci: %w", err)
	}
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded(), nil
}

// Open returns the blob d as a reader that checks, while it is read, that
// the blob has d's size and digest: the Read that reaches the end returns
// the error instead of io.EOF when they do not match. Read to the end.
func (l *Layout) Open(d ocispec.Descriptor) (io.ReadCloser, error) {
	name, err := blobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	if d.Size < 0 {
		return nil, fmt.Errorf("oci: blob %s: negative size", d.Digest)
	}
	rc, size, err := l.src.open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %s", ErrNotFound, d.Digest)
	}
	if err != nil {
		return nil, fmt.Errorf("oci: blob %s: %w", d.Digest, err)
	}
	if size != d.Size {
		rc.Close()
		return nil, fmt.Errorf("oci: blob %s is %d bytes, its descriptor says %d", d.Digest, size, d.Size)
	}
	return &verifyReader{rc: rc, r: io.LimitReader(rc, d.Size), v: d.Digest.Verifier(), d: d}, nil
}

// ErrNotFile is returned by BlobFile for an archive layout.
var ErrNotFile = errors.New("oci: blobs of an archive are not files")

// BlobFile opens blob d of a directory layout as a file, for readers that
// want it whole (in-place reads, parallel hashing). Only its size is
// checked: the caller must check the digest, by reading it through
// VerifyDigest or by an equivalent check of its own.
func (l *Layout) BlobFile(d ocispec.Descriptor) (*os.File, error) {
	if l.root == nil {
		return nil, ErrNotFile
	}
	name, err := blobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	f, err := l.root.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %s", ErrNotFound, d.Digest)
	}
	if err != nil {
		return nil, fmt.Errorf("oci: blob %s: %w", d.Digest, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	} else if err == nil && fi.Size() != d.Size {
		err = fmt.Errorf("%d bytes, its descriptor says %d", fi.Size(), d.Size)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("oci: blob %s: %w", d.Digest, err)
	}
	return f, nil
}

// VerifyDigest reads r (d.Size bytes from its start) and checks them
// against d's digest.
func VerifyDigest(r io.ReaderAt, d ocispec.Descriptor) error {
	v := &verifyReader{rc: io.NopCloser(nil), r: io.NewSectionReader(r, 0, d.Size), v: d.Digest.Verifier(), d: d}
	_, err := io.CopyBuffer(io.Discard, v, make([]byte, 1<<20))
	return err
}

type verifyReader struct {
	rc   io.ReadCloser
	r    io.Reader
	v    digest.Verifier
	d    ocispec.Descriptor
	n    int64
	done error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.done != nil {
		return 0, v.done
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.v.Write(p[:n])
	if errors.Is(err, io.EOF) {
		switch {
		case v.n != v.d.Size:
			err = fmt.Errorf("oci: blob %s: %d bytes, want %d: %w", v.d.Digest, v.n, v.d.Size, io.ErrUnexpectedEOF)
		case !v.v.Verified():
			err = fmt.Errorf("oci: blob %s: content does not match its digest", v.d.Digest)
		}
		v.done = err
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }

// ReadBlob reads a whole blob of at most limit bytes, checked.
func (l *Layout) ReadBlob(d ocispec.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("oci: blob %s is %d bytes, at most %d allowed", d.Digest, d.Size, limit)
	}
	rc, err := l.Open(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Referrers returns the manifests in index.json whose subject is the
// manifest with digest subject, and whose artifactType is artifactType
// (then only index entries with that artifactType are considered), or of
// any type when artifactType is empty (then every unnamed manifest is
// read). The descriptors have ArtifactType set.
func (l *Layout) Referrers(subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	for _, d := range l.index.Manifests {
		if !isManifest(d.MediaType) {
			continue
		}
		// With a type asked for, only entries that carry it are read
		// (writers list referrers with their artifactType, as
		// AddReferrer does): a layout full of other manifests costs
		// nothing.
		if artifactType != "" && d.ArtifactType != artifactType {
			continue
		}
		if d.ArtifactType == "" && d.Annotations[ocispec.AnnotationRefName] != "" {
			continue // a named image, not a referrer
		}
		b, err := l.ReadBlob(d, MaxManifestSize)
		if err != nil {
			return nil, err
		}
		m, err := ParseManifest(b)
		if err != nil {
			return nil, fmt.Errorf("oci: referrer %s: %w", d.Digest, err)
		}
		if m.Subject == nil || m.Subject.Digest != subject {
			continue
		}
		at := m.ArtifactType
		if at == "" {
			at = m.Config.MediaType
		}
		if artifactType != "" && at != artifactType {
			continue
		}
		d.ArtifactType = at
		out = append(out, d)
	}
	return out, nil
}
