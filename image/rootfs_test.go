package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/osguard/osguard/erofs"
)

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func makeTar(t *testing.T, gz bool, ents []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

func writeBlob(t *testing.T, layout string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	p := filepath.Join(layout, "blobs", "sha256", hex.EncodeToString(sum[:]))
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestOCILayoutFlattening applies two layers with a whiteout and an opaque
// directory, as container runtimes do.
func TestOCILayoutFlattening(t *testing.T) {
	layout := t.TempDir()
	base := makeTar(t, true, []tarEntry{
		{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/bin/tool", body: "v1", mode: 0o755},
		{name: "usr/bin/gone", body: "x", mode: 0o755},
		{name: "usr/share/doc/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/share/doc/old", body: "old", mode: 0o644},
		{name: "usr/bin/hard", typ: tar.TypeLink, link: "usr/bin/tool"},
		{name: "etc/hostname", body: "base\n", mode: 0o644},
	})
	top := makeTar(t, false, []tarEntry{
		{name: "usr/bin/tool", body: "v2", mode: 0o755},
		{name: "usr/bin/.wh.gone", mode: 0o644},
		{name: "usr/share/doc/.wh..wh..opq", mode: 0o644},
		{name: "usr/share/doc/new", body: "new", mode: 0o644},
	})
	man := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"layers": []map[string]any{
			{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": writeBlob(t, layout, base), "size": len(base)},
			{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": writeBlob(t, layout, top), "size": len(top)},
		}}
	mb, _ := json.Marshal(man)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": writeBlob(t, layout, mb), "size": len(mb)}}})
	os.WriteFile(filepath.Join(layout, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)

	root, err := readRootfs(layout, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	usr, err := usrTree(root)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		ino := usr.Get(p)
		if ino == nil {
			return "<missing>"
		}
		rc, err := ino.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return string(b)
	}
	for p, want := range map[string]string{
		"/bin/tool": "v2", "/bin/gone": "<missing>", "/share/doc/old": "<missing>", "/share/doc/new": "new",
		"/bin/hard": "v1", "/share/factory/etc/hostname": "base\n",
	} {
		if got := read(p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
}

func TestRootfsErrors(t *testing.T) {
	dir := t.TempDir()
	// A rootfs without /usr cannot become a /usr image.
	tarPath := filepath.Join(dir, "nousr.tar")
	os.WriteFile(tarPath, makeTar(t, false, []tarEntry{{name: "etc/x", body: "1", mode: 0o644}}), 0o644)
	root, err := readRootfs(tarPath, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := usrTree(root); err == nil {
		t.Error("a rootfs without /usr was accepted")
	}
	// Hostile names are refused by the tar reader.
	bad := filepath.Join(dir, "bad.tar")
	os.WriteFile(bad, makeTar(t, false, []tarEntry{{name: "../../etc/passwd", body: "x", mode: 0o644}}), 0o644)
	if r, err := readRootfs(bad, dir); err == nil && r.Get("/etc/passwd") != nil {
		if _, err := usrTree(r); err == nil {
			t.Log("'../' entries were cleaned into the image root (safe)")
		}
	}
	// An OCI layout with a malformed digest.
	oci := filepath.Join(dir, "oci")
	os.MkdirAll(oci, 0o755)
	os.WriteFile(filepath.Join(oci, "oci-layout"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(oci, "index.json"), []byte(`{"manifests":[{"digest":"sha256:../../etc"}]}`), 0o644)
	if _, err := readRootfs(oci, dir); err == nil {
		t.Error("an OCI digest with a path in it was accepted")
	}
	if err := checkStatic("/bin/sh"); err == nil {
		t.Error("/bin/sh (dynamically linked) passed checkStatic")
	}
	_ = erofs.S_IFREG
}
