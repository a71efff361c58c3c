package registry

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseRef(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in       string
		want     Ref
		loopback bool
		err      string
	}{
		{in: "127.0.0.1:5000/osguard/sample:v1", want: Ref{Registry: "127.0.0.1:5000", Repository: "osguard/sample", Tag: "v1"}, loopback: true},
		{in: "localhost:5000/a:latest", want: Ref{Registry: "localhost:5000", Repository: "a", Tag: "latest"}, loopback: true},
		{in: "[::1]:5000/a:b", want: Ref{Registry: "[::1]:5000", Repository: "a", Tag: "b"}, loopback: true},
		{in: "127.0.0.1:5000/a@" + d, want: Ref{Registry: "127.0.0.1:5000", Repository: "a", Digest: d}, loopback: true},
		{in: "127.0.0.1:5000/a:t@" + d, want: Ref{Registry: "127.0.0.1:5000", Repository: "a", Tag: "t", Digest: d}, loopback: true},
		{in: "10.0.2.100:5000/a:t", want: Ref{Registry: "10.0.2.100:5000", Repository: "a", Tag: "t"}},
		{in: "registry.example:443/a/b/c:t", want: Ref{Registry: "registry.example:443", Repository: "a/b/c", Tag: "t"}},
		{in: "127.0.0.1:5000/a", err: "no tag or digest"},
		{in: "a/b:t", err: "not a registry host"},
		{in: "sample:v1", err: "want HOST[:PORT]/REPO:TAG"},
		{in: "127.0.0.1:5000/A:t", err: "invalid"},
		{in: "127.0.0.1:5000/a:-t", err: "invalid"},
		{in: "127.0.0.1:5000/a@sha256:12", err: "invalid"},
		{in: "127.0.0.1:5000/a@sha512:" + strings.Repeat("ab", 64), err: "only sha256"},
		{in: "", err: "want HOST"},
		{in: strings.Repeat("a", maxRefLen+1), err: "longer than"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRef(tc.in)
			if errCase(t, err, tc.err) {
				return
			}
			if got != tc.want || got.Loopback() != tc.loopback || got.String() != tc.in {
				t.Fatalf("ParseRef(%q) = %+v (loopback %v, %q); want %+v (loopback %v)", tc.in, got, got.Loopback(), got.String(), tc.want, tc.loopback)
			}
		})
	}
}

// errCase checks err against want: an error containing want when want is
// set (and reports true, the case is done), none otherwise.
func errCase(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one with %q", err, want)
	}
	return true
}

func desc(mt string, n byte, ann map[string]string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.Digest("sha256:" + strings.Repeat(string([]byte{n}), 64)), Size: 100, Annotations: ann}
}

func TestSelectPlatform(t *testing.T) {
	man := ocispec.MediaTypeImageManifest
	withP := func(n byte, os, arch, variant string) ocispec.Descriptor {
		d := desc(man, n, nil)
		d.Platform = &ocispec.Platform{OS: os, Architecture: arch, Variant: variant}
		return d
	}
	arm := withP('a', "linux", "arm64", "v8")
	amd := withP('b', "linux", "amd64", "")
	amd2 := withP('c', "linux", "amd64", "")
	win := withP('d', "windows", "amd64", "")
	attest := withP('e', "unknown", "unknown", "")
	nested := desc(ocispec.MediaTypeImageIndex, 'f', nil)
	nested.Platform = &ocispec.Platform{OS: "linux", Architecture: "riscv64"}
	for _, tc := range []struct {
		name    string
		entries []ocispec.Descriptor
		p       string
		want    digest.Digest
		err     string
	}{
		{"amd64 among others", []ocispec.Descriptor{arm, win, amd, attest}, "linux/amd64", amd.Digest, ""},
		{"first match wins", []ocispec.Descriptor{amd, amd2}, "linux/amd64", amd.Digest, ""},
		{"variant given", []ocispec.Descriptor{amd, arm}, "linux/arm64/v8", arm.Digest, ""},
		{"variant not asked", []ocispec.Descriptor{amd, arm}, "linux/arm64", arm.Digest, ""},
		{"variant mismatch", []ocispec.Descriptor{arm}, "linux/arm64/v7", "", "no image for linux/arm64/v7"},
		{"missing", []ocispec.Descriptor{arm, win}, "linux/amd64", "", "it has: linux/arm64/v8, windows/amd64"},
		{"nested index is not an image", []ocispec.Descriptor{nested}, "linux/riscv64", "", "no image"},
		{"no platforms", []ocispec.Descriptor{desc(man, 'g', nil)}, "linux/amd64", "", "it has: none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePlatform(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := selectPlatform(&ocispec.Index{Manifests: tc.entries}, p)
			if errCase(t, err, tc.err) {
				return
			}
			if got.Digest != tc.want {
				t.Fatalf("got %v, %v; want %v", got.Digest, err, tc.want)
			}
		})
	}
}

func TestParseIndexRejects(t *testing.T) {
	ok := desc(ocispec.MediaTypeImageManifest, 'a', nil)
	mk := func(mut func(*ocispec.Index)) []byte {
		idx := ocispec.Index{Manifests: []ocispec.Descriptor{ok}}
		idx.SchemaVersion = 2
		mut(&idx)
		b, _ := json.Marshal(idx)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"valid", mk(func(*ocispec.Index) {}), ""},
		{"not json", []byte("{"), "not an OCI image index"},
		{"schema 1", mk(func(i *ocispec.Index) { i.SchemaVersion = 1 }), "schemaVersion 1"},
		{"manifest media type", mk(func(i *ocispec.Index) { i.MediaType = ocispec.MediaTypeImageManifest }), "is not an image index"},
		{"layer entry", mk(func(i *ocispec.Index) { i.Manifests[0].MediaType = ocispec.MediaTypeImageLayerGzip }), "not an image manifest or index"},
		{"bad digest", mk(func(i *ocispec.Index) { i.Manifests[0].Digest = "sha256:xyz" }), "digest"},
		{"sha512", mk(func(i *ocispec.Index) { i.Manifests[0].Digest = digest.Digest("sha512:" + strings.Repeat("a", 128)) }), "only sha256"},
		{"huge manifest", mk(func(i *ocispec.Index) { i.Manifests[0].Size = MaxManifestSize + 1 }), "out of range"},
		{"zero size", mk(func(i *ocispec.Index) { i.Manifests[0].Size = 0 }), "out of range"},
		{"too large", make([]byte, MaxManifestSize+1), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIndex(tc.in)
			errCase(t, err, tc.err)
		})
	}
}

func TestParseManifestHead(t *testing.T) {
	for _, tc := range []struct {
		name, in, artifactType, subject, err string
	}{
		{"artifact", `{"artifactType":"x/y","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"subject":{"digest":"sha256:` + strings.Repeat("a", 64) + `"}}`, "x/y", "sha256:" + strings.Repeat("a", 64), ""},
		{"config type", `{"config":{"mediaType":"c/t"}}`, "c/t", "", ""},
		{"bad subject", `{"subject":{"digest":"md5:00"}}`, "", "", "subject digest"},
		{"not json", `[`, "", "", "not a manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseManifestHead([]byte(tc.in))
			if errCase(t, err, tc.err) {
				return
			}
			sub := ""
			if h.Subject != nil {
				sub = h.Subject.Digest.String()
			}
			if h.artifactType() != tc.artifactType || sub != tc.subject {
				t.Fatalf("artifactType %q subject %q", h.artifactType(), sub)
			}
		})
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"127.0.0.1:5000/a:b", "localhost/a@sha256:" + strings.Repeat("0", 64), "[::1]:1/a/b:c@sha256:" + strings.Repeat("f", 64), "a/b", ":/:@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.Tag == "" && r.Digest == "" || r.Registry == "" || r.Repository == "" {
			t.Fatalf("ParseRef(%q) = %+v without error", s, r)
		}
		// The canonical form parses to the same thing.
		r2, err := ParseRef(r.String())
		if err != nil || r2 != r {
			t.Fatalf("ParseRef(%q) = %+v; its String %q parses to %+v, %v", s, r, r.String(), r2, err)
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":10,"platform":{"os":"linux","architecture":"amd64"},"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[null]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := parseIndex(b)
		if err != nil {
			return
		}
		for _, d := range idx.Manifests {
			if checkDescriptor(d) != nil {
				t.Fatalf("parseIndex accepted %+v", d)
			}
		}
		if d, err := selectPlatform(idx, DefaultPlatform); err == nil && (d.Platform == nil || !isManifest(d.MediaType)) {
			t.Fatalf("selectPlatform returned %+v", d)
		}
	})
}

func FuzzParseManifestHead(f *testing.F) {
	f.Add([]byte(`{"artifactType":"a","subject":{"digest":"sha256:` + strings.Repeat("a", 64) + `"}}`))
	f.Add([]byte(`{"config":null,"subject":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseManifestHead(b)
		if err != nil {
			return
		}
		if h.Subject != nil && h.Subject.Digest.Validate() != nil {
			t.Fatalf("accepted subject %q", h.Subject.Digest)
		}
		h.artifactType()
	})
}
