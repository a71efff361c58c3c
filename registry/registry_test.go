package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/internal/registrytest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/oci"
)

// sigArtifactType is osguard's layer signature artifact type (package
// layersig); the registry code treats it like any artifact type.
const sigArtifactType = "application/vnd.osguard.layer-signatures.v1+json"

func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// readIndex reads a layout's index.json with package oci's checks.
func readIndex(t testing.TB, layout string) *ocispec.Index {
	t.Helper()
	l, err := oci.Open(layout)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	idx := l.Index()
	return &idx
}

type skopeoInspect struct {
	Digest string
	Layers []string
	Os     string
}

func inspect(t testing.TB, args ...string) skopeoInspect {
	t.Helper()
	var out skopeoInspect
	if err := json.Unmarshal(run(t, "skopeo", append([]string{"inspect"}, args...)...), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// fallbackIndex fetches the referrers tag schema's index for subject over
// plain HTTP, as a client without oras would.
func fallbackIndex(t testing.TB, reg *registrytest.Registry, repo string, subject digest.Digest) ocispec.Index {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, reg.URL("/v2/"+repo+"/manifests/sha256-"+subject.Encoded()), nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET referrers tag of %s: %s\n%s", subject, resp.Status, b)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestPushPullWithReferrers(t *testing.T) {
	testutil.NeedTool(t, "skopeo", "umoci")
	reg := registrytest.Start(t)
	layout := registrytest.SampleLayout(t, 1<<20)
	image := registrytest.Entry(t, layout, "latest")
	sig1 := registrytest.AddReferrer(t, layout, "latest", sigArtifactType, []byte(`{"schemaVersion":1,"layers":[]}`))
	sig2 := registrytest.AddReferrer(t, layout, "latest", sigArtifactType, []byte(`{"schemaVersion":1,"layers":[],"key":"second"}`))
	// A referrer of a referrer (e.g. an attestation of the signatures).
	sub := registrytest.AddReferrer(t, layout, sig1.Digest.String(), "application/vnd.example.note.v1", []byte("note"))

	var progress bytes.Buffer
	ctx := context.Background()
	target := reg.Addr + "/osguard/sample:v1"
	pres, err := Push(ctx, layout, "latest", target, Options{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if pres.Image.Digest != image.Digest || len(pres.Referrers) != 3 {
		t.Fatalf("Push: image %s, %d referrers; want %s and 3", pres.Image.Digest, len(pres.Referrers), image.Digest)
	}
	if !strings.Contains(progress.String(), "pushed "+target) {
		t.Errorf("no summary progress line:\n%s", progress.String())
	}

	// The registry serves the image...
	if got := inspect(t, "--tls-verify=false", "docker://"+target); got.Digest != image.Digest.String() || len(got.Layers) != 1 {
		t.Fatalf("skopeo inspect docker://%s: %+v, want digest %s and 1 layer", target, got, image.Digest)
	}
	// ...and the referrers tag schema's indexes list the referrers.
	fb := fallbackIndex(t, reg, "osguard/sample", image.Digest)
	want := map[digest.Digest]bool{sig1.Digest: true, sig2.Digest: true}
	for _, d := range fb.Manifests {
		if want[d.Digest] && d.ArtifactType == sigArtifactType {
			delete(want, d.Digest)
		}
	}
	if len(want) != 0 || len(fb.Manifests) != 2 {
		t.Fatalf("referrers index of the image: %+v; missing %v", fb.Manifests, want)
	}
	if fb2 := fallbackIndex(t, reg, "osguard/sample", sig1.Digest); len(fb2.Manifests) != 1 || fb2.Manifests[0].Digest != sub.Digest {
		t.Fatalf("referrers index of the signature: %+v, want %s", fb2.Manifests, sub.Digest)
	}

	// Pushing again uploads nothing new and keeps one entry per referrer.
	pres2, err := Push(ctx, layout, "", target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pres2.Bytes != 0 {
		t.Errorf("second push uploaded %d bytes", pres2.Bytes)
	}
	if fb := fallbackIndex(t, reg, "osguard/sample", image.Digest); len(fb.Manifests) != 2 {
		t.Errorf("after a second push the referrers index has %d entries, want 2", len(fb.Manifests))
	}

	// Pull it back.
	dst := filepath.Join(t.TempDir(), "pulled")
	res, err := Pull(ctx, target, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Image.Digest != image.Digest || res.RefName != "v1" || len(res.Refs) != 1 || res.Refs[0] != target {
		t.Fatalf("Pull: %+v", res)
	}
	if len(res.Referrers) != 3 {
		t.Fatalf("Pull: %d referrers, want 3", len(res.Referrers))
	}
	if got := inspect(t, "oci:"+dst+":v1"); got.Digest != image.Digest.String() || got.Os != "linux" {
		t.Fatalf("skopeo inspect oci:%s:v1: %+v", dst, got)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	run(t, "umoci", "unpack", "--rootless", "--image", dst+":v1", bundle)
	if b, err := os.ReadFile(filepath.Join(bundle, "rootfs", "opt", "hello", "a.txt")); err != nil || string(b) != "hello from osguard\n" {
		t.Fatalf("unpacked a.txt: %q, %v", b, err)
	}
	origRand, _ := os.ReadFile(registrytest.SampleRand(layout))
	if b, err := os.ReadFile(filepath.Join(bundle, "rootfs", "opt", "hello", "rand")); err != nil || !bytes.Equal(b, origRand) {
		t.Fatalf("unpacked rand differs from the original (%v)", err)
	}
	// The referrers came back byte-identical, listed with their artifactType.
	idx := readIndex(t, dst)
	if len(idx.Manifests) != 4 {
		t.Fatalf("pulled index.json has %d entries, want 4", len(idx.Manifests))
	}
	if idx.Manifests[0].Annotations[AnnotationImageName] != target {
		t.Errorf("image entry annotations: %v", idx.Manifests[0].Annotations)
	}
	for _, r := range []ocispec.Descriptor{sig1, sig2, sub} {
		if !bytes.Equal(registrytest.BlobBytes(t, dst, r), registrytest.BlobBytes(t, layout, r)) {
			t.Errorf("referrer %s differs after the round trip", r.Digest)
		}
		var m ocispec.Manifest
		json.Unmarshal(registrytest.BlobBytes(t, dst, r), &m)
		for _, l := range m.Layers {
			if !bytes.Equal(registrytest.BlobBytes(t, dst, l), registrytest.BlobBytes(t, layout, l)) {
				t.Errorf("referrer %s: blob %s differs after the round trip", r.Digest, l.Digest)
			}
		}
		found := false
		for _, e := range idx.Manifests[1:] {
			found = found || (e.Digest == r.Digest && e.ArtifactType == r.ArtifactType)
		}
		if !found {
			t.Errorf("pulled index.json does not list referrer %s with artifactType %s", r.Digest, r.ArtifactType)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "ingest")); !os.IsNotExist(err) {
		t.Errorf("pulled layout keeps oras's ingest directory (%v)", err)
	}
	// The pulled layout pushes again (what a mirror would do).
	if _, err := Push(ctx, dst, "v1", reg.Addr+"/mirror/sample:v1", Options{}); err != nil {
		t.Fatal(err)
	}
	if fb := fallbackIndex(t, reg, "mirror/sample", image.Digest); len(fb.Manifests) != 2 {
		t.Errorf("mirror: referrers index has %d entries, want 2", len(fb.Manifests))
	}
}

// addIndex wraps the image named ref into an image index with two platform
// entries (amd64 and arm64, both pointing at the same manifest for amd64 so
// that the choice is visible only through the descriptor) and names it tag.
func addIndex(t testing.TB, layout, ref, tag string) (index ocispec.Descriptor, amd64 ocispec.Descriptor) {
	t.Helper()
	idx := registrytest.ReadIndex(t, layout)
	m := registrytest.Entry(t, layout, ref)
	amd64, arm64 := m, m
	amd64.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	// arm64 gets a manifest of its own: the same content with an annotation.
	var man ocispec.Manifest
	json.Unmarshal(registrytest.BlobBytes(t, layout, m), &man)
	man.Annotations = map[string]string{"arch": "arm64"}
	b, _ := json.Marshal(man)
	arm64 = registrytest.WriteBlob(t, layout, ocispec.MediaTypeImageManifest, b)
	arm64.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{arm64, amd64}}
	ix.SchemaVersion = 2
	b, _ = json.Marshal(ix)
	index = registrytest.WriteBlob(t, layout, ocispec.MediaTypeImageIndex, b)
	entry := index
	entry.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	idx.Manifests = append(idx.Manifests, entry)
	registrytest.WriteIndex(t, layout, idx)
	return index, amd64
}

func TestPullIndexPlatforms(t *testing.T) {
	testutil.NeedTool(t, "skopeo", "umoci")
	reg := registrytest.Start(t)
	layout := registrytest.SampleLayout(t, 4096)
	index, amd64 := addIndex(t, layout, "latest", "multi")
	sig := registrytest.AddReferrer(t, layout, amd64.Digest.String(), sigArtifactType, []byte(`{"schemaVersion":1,"layers":[]}`))
	ctx := context.Background()
	target := reg.Addr + "/osguard/multi:v1"
	pres, err := Push(ctx, layout, "multi", target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pres.Image.Digest != index.Digest || len(pres.Referrers) != 1 || pres.Referrers[0].Digest != sig.Digest {
		t.Fatalf("Push: %+v", pres)
	}
	arm := &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	for _, tc := range []struct {
		name      string
		opts      Options
		image     digest.Digest
		referrers int
		wantRef   string
	}{
		{"default linux/amd64", Options{}, amd64.Digest, 1, target + "@" + amd64.Digest.String()},
		{"linux/arm64", Options{Platform: arm}, "", 0, ""},
		{"whole index", Options{AllPlatforms: true}, index.Digest, 1, target},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "pulled")
			res, err := Pull(ctx, target, dst, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.image != "" && res.Image.Digest != tc.image {
				t.Errorf("image %s, want %s", res.Image.Digest, tc.image)
			}
			if tc.image == "" && (res.Image.Digest == amd64.Digest || res.Image.Platform == nil || res.Image.Platform.Architecture != "arm64") {
				t.Errorf("image %s (%v), want the arm64 manifest", res.Image.Digest, res.Image.Platform)
			}
			if len(res.Referrers) != tc.referrers {
				t.Errorf("%d referrers, want %d", len(res.Referrers), tc.referrers)
			}
			if tc.wantRef != "" && res.Refs[0] != tc.wantRef {
				t.Errorf("Refs %v, want %s", res.Refs, tc.wantRef)
			}
			// skopeo reads every blob of every platform (umoci refuses an
			// index with several manifests as ambiguous).
			run(t, "skopeo", "copy", "--all", "--quiet", "oci:"+dst+":v1", "oci:"+filepath.Join(t.TempDir(), "copy")+":v1")
		})
	}
}

func TestPullErrors(t *testing.T) {
	testutil.NeedTool(t, "umoci")
	reg := registrytest.Start(t)
	layout := registrytest.SampleLayout(t, 64<<10)
	registrytest.AddReferrer(t, layout, "latest", sigArtifactType, []byte(`{"schemaVersion":1,"layers":[]}`))
	ctx := context.Background()
	if _, err := Push(ctx, layout, "latest", reg.Addr+"/osguard/good:v1", Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Push(ctx, layout, "latest", reg.Addr+"/osguard/bad:v1", Options{}); err != nil {
		t.Fatal(err)
	}
	// Corrupt the layer in the registry's storage: same size, one byte off.
	image := registrytest.Entry(t, layout, "latest")
	var man ocispec.Manifest
	json.Unmarshal(registrytest.BlobBytes(t, layout, image), &man)
	p := reg.BlobPath(man.Layers[0].Digest.String())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The registry stores a blob once, so "good" shares the corrupted layer
	// too; its tag and referrers still resolve, which the cases below use.

	down, _ := net.Listen("tcp", "127.0.0.1:0")
	downAddr := down.Addr().String()
	down.Close()

	for _, tc := range []struct {
		name, source, want string
		is                 error
	}{
		{"unknown tag", reg.Addr + "/osguard/good:nope", "not found", ErrNotFound},
		{"unknown repository", reg.Addr + "/osguard/nothing:v1", "not found", ErrNotFound},
		{"unknown digest", reg.Addr + "/osguard/good@sha256:" + strings.Repeat("0", 64), "not found", ErrNotFound},
		{"registry down", downAddr + "/osguard/good:v1", "unreachable", ErrUnreachable},
		{"corrupted layer", reg.Addr + "/osguard/bad:v1", "digest mismatch", ErrDigestMismatch},
		{"no tag", reg.Addr + "/osguard/good", "no tag or digest", nil},
		{"no registry host", "osguard/good:v1", "not a registry host", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "pulled")
			_, err := Pull(ctx, tc.source, dst, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pull(%s): %v, want an error with %q", tc.source, err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Pull(%s): %v is not %v", tc.source, err, tc.is)
			}
			t.Logf("error: %v", err)
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("a failed pull left %v in %s", ents, parent)
			}
		})
	}

	t.Run("destination not empty", func(t *testing.T) {
		dst := t.TempDir()
		os.WriteFile(filepath.Join(dst, "x"), nil, 0o644)
		if _, err := Pull(ctx, reg.Addr+"/osguard/good:v1", dst, Options{}); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("Pull into a non-empty directory: %v", err)
		}
	})
}

func TestPushErrors(t *testing.T) {
	testutil.NeedTool(t, "umoci")
	reg := registrytest.Start(t)
	layout := registrytest.SampleLayout(t, 4096)
	down, _ := net.Listen("tcp", "127.0.0.1:0")
	downAddr := down.Addr().String()
	down.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name, layout, ref, target, want string
	}{
		{"unknown layout ref", layout, "nope", reg.Addr + "/osguard/x:v1", `no image "nope" in the layout`},
		{"not a layout", t.TempDir(), "", reg.Addr + "/osguard/x:v1", "not an OCI image layout"},
		{"target without tag", layout, "", reg.Addr + "/osguard/x", "no tag or digest"},
		{"target by digest", layout, "", reg.Addr + "/osguard/x@sha256:" + strings.Repeat("0", 64), "want HOST[:PORT]/REPO:TAG"},
		{"registry down", layout, "", downAddr + "/osguard/x:v1", "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Push(ctx, tc.layout, tc.ref, tc.target, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Push: %v, want an error with %q", err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
}
