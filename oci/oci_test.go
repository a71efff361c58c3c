package oci_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/internal/ocitest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/oci"
)

func TestSplitRef(t *testing.T) {
	for _, c := range []struct{ in, layout, ref string }{
		{"dir", "dir", ""},
		{"dir:latest", "dir", "latest"},
		{"/a/b:v1:x", "/a/b", "v1:x"},
		{"dir:", "dir", ""},
	} {
		if l, r := oci.SplitRef(c.in); l != c.layout || r != c.ref {
			t.Errorf("SplitRef(%q) = %q, %q; want %q, %q", c.in, l, r, c.layout, c.ref)
		}
	}
}

func sample(t *testing.T, opts ocitest.LayoutOptions) (*ocitest.Sample, *oci.Layout) {
	t.Helper()
	s := ocitest.SampleLayout(t, t.TempDir(), opts)
	l, err := oci.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return s, l
}

// TestRead resolves, walks and opens the sample layout, as a directory and
// as an archive (with trailing zeros, as on a block device).
func TestRead(t *testing.T) {
	for _, index := range []bool{false, true} {
		s, dl := sample(t, ocitest.LayoutOptions{Index: index, Compression: ocitest.Gzip})
		arch := filepath.Join(t.TempDir(), "a.tar")
		ocitest.Archive(t, s.Dir, arch)
		b, _ := os.ReadFile(arch)
		b = append(b, make([]byte, 1<<16)...)
		al, err := oci.OpenArchive(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		for name, l := range map[string]*oci.Layout{"dir": dl, "archive": al} {
			t.Run(name, func(t *testing.T) {
				for _, ref := range []string{"", "latest", string(s.Image.Digest)} {
					d, err := l.Resolve(ref)
					if err != nil || d.Digest != s.Image.Digest {
						t.Fatalf("Resolve(%q) = %v, %v; want %s", ref, d.Digest, err, s.Image.Digest)
					}
				}
				if _, err := l.Resolve("nope"); !errors.Is(err, oci.ErrNotFound) {
					t.Fatalf("Resolve(nope): %v", err)
				}
				if refs := l.Refs(); len(refs) != 1 || refs[0].Name != "latest" {
					t.Fatalf("Refs: %+v", refs)
				}
				imgs, err := l.Images(s.Image)
				if err != nil || len(imgs) != 1 {
					t.Fatalf("Images: %v %v", imgs, err)
				}
				img := imgs[0]
				if img.Descriptor.Digest != s.Manifest.Digest || img.Platform.OS != "linux" || img.Platform.Architecture != "amd64" {
					t.Fatalf("image %+v", img)
				}
				if len(img.Config.RootFS.DiffIDs) != 2 || img.Config.RootFS.DiffIDs[1] != s.DiffIDs[1] {
					t.Fatalf("diff_ids %v", img.Config.RootFS.DiffIDs)
				}
				rc, err := l.Open(img.Manifest.Layers[1])
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || digest.FromBytes(got) != s.Layers[1].Digest {
					t.Fatalf("Open: %v", err)
				}
			})
		}
	}
}

// TestReferrers adds referrers and finds them; skopeo and umoci still read
// the layout.
func TestReferrers(t *testing.T) {
	s, l := sample(t, ocitest.LayoutOptions{})
	const at = "application/vnd.example+json"
	var ds []ocispec.Descriptor
	for _, content := range []string{`{"a":1}`, `{"b":2}`} {
		blob, err := l.PutBlob(at, []byte(content))
		if err != nil {
			t.Fatal(err)
		}
		d, err := l.AddReferrer(oci.Referrer{Subject: s.Manifest, ArtifactType: at, Blobs: []ocispec.Descriptor{blob},
			Annotations: map[string]string{"k": content}})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	// The same referrer again: no new entry.
	blob, _ := l.PutBlob(at, []byte(`{"a":1}`))
	if _, err := l.AddReferrer(oci.Referrer{Subject: s.Manifest, ArtifactType: at, Blobs: []ocispec.Descriptor{blob},
		Annotations: map[string]string{"k": `{"a":1}`}}); err != nil {
		t.Fatal(err)
	}
	l2, err := oci.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if n := len(l2.Index().Manifests); n != 3 {
		t.Fatalf("index has %d entries, want image + 2 referrers", n)
	}
	refs, err := l2.Referrers(s.Manifest.Digest, at)
	if err != nil || len(refs) != 2 || refs[0].Digest != ds[0].Digest || refs[1].ArtifactType != at {
		t.Fatalf("Referrers: %+v %v", refs, err)
	}
	if refs, _ := l2.Referrers(s.Manifest.Digest, "other/type"); len(refs) != 0 {
		t.Fatalf("Referrers of another type: %+v", refs)
	}
	if refs, _ := l2.Referrers(digest.FromString("x"), ""); len(refs) != 0 {
		t.Fatalf("Referrers of another subject: %+v", refs)
	}
	// Replace the first.
	blob3, _ := l2.PutBlob(at, []byte(`{"c":3}`))
	if _, err := l2.AddReferrer(oci.Referrer{Subject: s.Manifest, ArtifactType: at, Blobs: []ocispec.Descriptor{blob3},
		Replace: []digest.Digest{ds[0].Digest}}); err != nil {
		t.Fatal(err)
	}
	if refs, _ := l2.Referrers(s.Manifest.Digest, at); len(refs) != 2 || refs[0].Digest != ds[1].Digest {
		t.Fatalf("after replace: %+v", refs)
	}
	if d, err := l2.Resolve(""); err != nil || d.Digest != s.Manifest.Digest {
		t.Fatalf("Resolve(\"\") with referrers in the index: %v %v", d.Digest, err)
	}
	checkTools(t, s.Dir, "latest")
}

// checkTools runs skopeo inspect and umoci unpack on LAYOUT:REF.
func checkTools(t *testing.T, dir, ref string) {
	t.Helper()
	tools := testutil.NeedTool(t, "skopeo", "umoci")
	if out, err := exec.Command(tools[0], "inspect", "oci:"+dir+":"+ref).CombinedOutput(); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command(tools[1], "unpack", "--rootless", "--image", dir+":"+ref, bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "hello.txt")); err != nil {
		t.Fatalf("umoci unpack: %v", err)
	}
}

// TestBadLayouts: broken layouts give clear errors.
func TestBadLayouts(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, s *ocitest.Sample)
		op     func(l *oci.Layout, s *ocitest.Sample) error // nil: Open fails
		want   string
	}{
		{"no-oci-layout", func(t *testing.T, s *ocitest.Sample) { os.Remove(filepath.Join(s.Dir, "oci-layout")) }, nil, "not an OCI image layout"},
		{"bad-version", func(t *testing.T, s *ocitest.Sample) {
			os.WriteFile(filepath.Join(s.Dir, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644)
		}, nil, "imageLayoutVersion"},
		{"index-garbage", func(t *testing.T, s *ocitest.Sample) {
			os.WriteFile(filepath.Join(s.Dir, "index.json"), []byte("{"), 0o644)
		}, nil, "parse index"},
		{"index-schema", func(t *testing.T, s *ocitest.Sample) {
			os.WriteFile(filepath.Join(s.Dir, "index.json"), []byte(`{"schemaVersion":1,"manifests":[]}`), 0o644)
		}, nil, "schemaVersion 1"},
		{"index-bad-digest", func(t *testing.T, s *ocitest.Sample) {
			os.WriteFile(filepath.Join(s.Dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:../../etc","size":1}]}`), 0o644)
		}, nil, "digest"},
		{"index-huge", func(t *testing.T, s *ocitest.Sample) {
			os.WriteFile(filepath.Join(s.Dir, "index.json"), bytes.Repeat([]byte(" "), oci.MaxIndexSize+1), 0o644)
		}, nil, "at most"},
		{"index-symlink-out", func(t *testing.T, s *ocitest.Sample) {
			os.Remove(filepath.Join(s.Dir, "index.json"))
			os.Symlink("/etc/passwd", filepath.Join(s.Dir, "index.json"))
		}, nil, "escapes"},
		{"blob-tampered", func(t *testing.T, s *ocitest.Sample) {
			p := blobFile(s.Dir, s.Layers[1].Digest)
			b, _ := os.ReadFile(p)
			b[600] ^= 1
			os.WriteFile(p, b, 0o644)
		}, func(l *oci.Layout, s *ocitest.Sample) error {
			rc, err := l.Open(s.Layers[1])
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			return err
		}, "does not match its digest"},
		{"blob-size", func(t *testing.T, s *ocitest.Sample) {
			p := blobFile(s.Dir, s.Layers[1].Digest)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, append(b, 0), 0o644)
		}, func(l *oci.Layout, s *ocitest.Sample) error { _, err := l.Open(s.Layers[1]); return err }, "its descriptor says"},
		{"blob-missing", func(t *testing.T, s *ocitest.Sample) { os.Remove(blobFile(s.Dir, s.Layers[1].Digest)) },
			func(l *oci.Layout, s *ocitest.Sample) error { _, err := l.Open(s.Layers[1]); return err }, "not found"},
		{"manifest-garbage", func(t *testing.T, s *ocitest.Sample) {
			// A manifest blob with a matching digest but no manifest inside.
			d, _ := ocitest.PutBlob(s.Dir, ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"config":{}}`))
			d.Annotations = map[string]string{ocispec.AnnotationRefName: "bad"}
			ix := `{"schemaVersion":2,"manifests":[` + mustJSON(d) + `]}`
			os.WriteFile(filepath.Join(s.Dir, "index.json"), []byte(ix), 0o644)
		}, func(l *oci.Layout, s *ocitest.Sample) error {
			d, err := l.Resolve("bad")
			if err != nil {
				return err
			}
			_, err = l.Images(d)
			return err
		}, "manifest config"},
		{"ambiguous", func(t *testing.T, s *ocitest.Sample) {
			ocitest.SampleLayout(t, s.Dir, ocitest.LayoutOptions{Ref: "other", Layers: [][]ocitest.Entry{{{Name: "x"}}}})
		}, func(l *oci.Layout, s *ocitest.Sample) error { _, err := l.Resolve(""); return err }, "holds 2 images"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := ocitest.SampleLayout(t, t.TempDir(), ocitest.LayoutOptions{Layers: [][]ocitest.Entry{{{Name: "a"}}, ocitest.TopLayer()}})
			c.break_(t, s)
			l, err := oci.Open(s.Dir)
			if c.op == nil {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Open: %v, want an error containing %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := c.op(l, s); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func blobFile(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// TestIndexFanOut: an index that lists itself, or another index many
// times, is walked once per index, within bounds.
func TestIndexFanOut(t *testing.T) {
	s, _ := sample(t, ocitest.LayoutOptions{})
	// inner lists the image 3 times; outer lists inner 5000 times.
	inner := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{s.Manifest, s.Manifest, s.Manifest}}
	inner.SchemaVersion = 2
	id, _ := ocitest.PutJSON(s.Dir, ocispec.MediaTypeImageIndex, inner)
	outer := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	outer.SchemaVersion = 2
	for range 5000 {
		outer.Manifests = append(outer.Manifests, id)
	}
	od, _ := ocitest.PutJSON(s.Dir, ocispec.MediaTypeImageIndex, outer)
	l, err := oci.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	imgs, err := l.Images(od)
	if err != nil || len(imgs) != 3 {
		t.Fatalf("Images: %d images, %v; want the inner index's 3, walked once", len(imgs), err)
	}
	// Too many manifests in all.
	many := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	many.SchemaVersion = 2
	for range oci.MaxIndexEntries {
		many.Manifests = append(many.Manifests, s.Manifest)
	}
	md, _ := ocitest.PutJSON(s.Dir, ocispec.MediaTypeImageIndex, many)
	if _, err := l.Images(md); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("Images of %d manifests: %v", oci.MaxIndexEntries, err)
	}
}
