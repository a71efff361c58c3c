package registrytest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/internal/testutil"
)

// SampleLayout makes an OCI image layout with umoci: image "latest" with
// one gzip layer holding /opt/hello/a.txt ("hello from osguard\n") and
// /opt/hello/rand (size random bytes, also left at SampleRand(layout)).
func SampleLayout(t testing.TB, size int) string {
	t.Helper()
	umoci := testutil.NeedTool(t, "umoci")[0]
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello from osguard\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, size)
	rand.Read(rnd)
	if err := os.WriteFile(filepath.Join(src, "rand"), rnd, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "--layout", layout},
		{"new", "--image", layout + ":latest"},
		{"insert", "--image", layout + ":latest", src, "/opt/hello"},
	} {
		if out, err := exec.Command(umoci, args...).CombinedOutput(); err != nil {
			t.Fatalf("umoci %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return layout
}

// SampleRand is the path of the random file SampleLayout put in the image.
func SampleRand(layout string) string {
	return filepath.Join(filepath.Dir(layout), "src", "rand")
}

// WriteBlob stores b in the layout and returns its descriptor.
func WriteBlob(t testing.TB, layout, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(layout, "blobs", "sha256", h), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.Digest("sha256:" + h), Size: int64(len(b))}
}

// BlobBytes reads a blob of the layout.
func BlobBytes(t testing.TB, layout string, d ocispec.Descriptor) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(layout, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ReadIndex reads the layout's index.json.
func ReadIndex(t testing.TB, layout string) *ocispec.Index {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("%s/index.json: %v", layout, err)
	}
	return &idx
}

// WriteIndex replaces the layout's index.json.
func WriteIndex(t testing.TB, layout string, idx *ocispec.Index) {
	t.Helper()
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Entry returns the index.json entry whose ref name or digest is ref,
// without its annotations (as a subject descriptor wants it).
func Entry(t testing.TB, layout, ref string) ocispec.Descriptor {
	t.Helper()
	for _, d := range ReadIndex(t, layout).Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == ref || d.Digest.String() == ref {
			d.Annotations = nil
			return d
		}
	}
	t.Fatalf("%s: no entry %q", layout, ref)
	return ocispec.Descriptor{}
}

// AddReferrer adds an artifact manifest in the shape of osguard's
// signature referrer (empty config, one blob of payload with mediaType
// artifactType, subject = the entry named subjectRef), lists it in
// index.json with its artifactType and returns its descriptor.
func AddReferrer(t testing.TB, layout, subjectRef, artifactType string, payload []byte) ocispec.Descriptor {
	t.Helper()
	subject := Entry(t, layout, subjectRef)
	empty := WriteBlob(t, layout, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	empty.Data = []byte("{}")
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       empty,
		Layers:       []ocispec.Descriptor{WriteBlob(t, layout, artifactType, payload)},
		Subject:      &subject,
		Annotations:  map[string]string{"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
	}
	m.SchemaVersion = 2
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := WriteBlob(t, layout, ocispec.MediaTypeImageManifest, b)
	d.ArtifactType = artifactType
	idx := ReadIndex(t, layout)
	idx.Manifests = append(idx.Manifests, d)
	WriteIndex(t, layout, idx)
	return d
}

// SameBlob reports whether two layouts hold the same bytes for d.
func SameBlob(t testing.TB, a, b string, d ocispec.Descriptor) bool {
	t.Helper()
	return bytes.Equal(BlobBytes(t, a, d), BlobBytes(t, b, d))
}
