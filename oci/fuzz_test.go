package oci_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/osguard/osguard/internal/ocitest"
	"github.com/osguard/osguard/oci"
)

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

const seedIndex = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":7,"annotations":{"org.opencontainers.image.ref.name":"latest"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":9,"artifactType":"application/vnd.osguard.layer-signatures.v1+json"}]}`

const seedManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.osguard.layer-signatures.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{"mediaType":"application/vnd.osguard.layer-signatures.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":100}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":7}}`

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(seedIndex))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := oci.ParseIndex(b)
		if err != nil {
			return
		}
		// What parses survives a round trip.
		if _, err := oci.ParseIndex([]byte(mustJSON(ix))); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(seedManifest))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := oci.ParseManifest(b)
		if err != nil {
			return
		}
		if _, err := oci.ParseManifest([]byte(mustJSON(m))); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

// FuzzOpenArchive feeds archives to OpenArchive and, when one opens,
// walks everything it resolves to. The seed is a small real layout (one
// image, one layer) as a tar.
func FuzzOpenArchive(f *testing.F) {
	dir := f.TempDir()
	ocitest.SampleLayout(f, dir, ocitest.LayoutOptions{Layers: [][]ocitest.Entry{{{Name: "a", Body: []byte("x")}}}})
	p := filepath.Join(f.TempDir(), "a.tar")
	ocitest.Archive(f, dir, p)
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	// The members without the tar's trailing padding: a smaller seed.
	f.Add(bytes.TrimRight(b, "\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		walkArchive(b)
	})
}

func walkArchive(b []byte) {
	l, err := oci.OpenArchive(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return
	}
	for _, r := range l.Refs() {
		d, err := l.Resolve(r.Name)
		if err != nil {
			continue
		}
		imgs, err := l.Images(d)
		if err != nil {
			continue
		}
		for _, img := range imgs {
			l.Referrers(img.Descriptor.Digest, "")
			for _, ld := range img.Manifest.Layers {
				l.ReadBlob(ld, 1<<20)
			}
		}
	}
}
