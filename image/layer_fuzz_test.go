package image

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"github.com/osguard/osguard/erofs"
)

func fuzzTar(ents ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range ents {
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(&h)
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzApplyLayer applies an arbitrary tar layer over an arbitrary base
// layer, as an OCI layout's layers are flattened: whiteouts and opaque
// directories must give a tree or an error, never a panic, and never touch
// a path outside the directory the whiteout is in.
func FuzzApplyLayer(f *testing.F) {
	base := fuzzTar(tar.Header{Name: "usr/bin/tool", Size: 2}, tar.Header{Name: "usr/share/doc/old", Size: 1},
		tar.Header{Name: "usr/bin/hard", Typeflag: tar.TypeLink, Linkname: "usr/bin/tool"})
	f.Add(base, fuzzTar(tar.Header{Name: "usr/bin/.wh.gone"}, tar.Header{Name: "usr/share/doc/.wh..wh..opq"},
		tar.Header{Name: "usr/share/doc/new", Size: 3}))
	f.Add(base, fuzzTar(tar.Header{Name: "usr/bin/.wh..."}))
	f.Add(base, fuzzTar(tar.Header{Name: ".wh.usr"}, tar.Header{Name: "usr", Typeflag: tar.TypeSymlink, Linkname: "/"}))
	f.Add(base, fuzzTar(tar.Header{Name: "usr/bin/tool/x", Size: 1}))
	f.Fuzz(func(t *testing.T, lower, upper []byte) {
		if len(lower)+len(upper) > 1<<20 {
			return
		}
		root, err := erofs.TreeFromTar(bytes.NewReader(lower), t.TempDir())
		if err != nil {
			return
		}
		defer root.Close()
		layer, err := erofs.TreeFromTar(bytes.NewReader(upper), t.TempDir())
		if err != nil {
			return
		}
		defer layer.Close()
		var added []string
		layer.Walk(func(p string, _ *erofs.Inode) error {
			if !strings.HasPrefix(p[strings.LastIndex(p, "/")+1:], ".wh.") && p != "/" {
				added = append(added, p)
			}
			return nil
		})
		if err := applyLayer(root, layer); err != nil {
			if !strings.HasPrefix(err.Error(), "erofs: ") && !strings.HasPrefix(err.Error(), "oci: ") {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if ino := root.Get("/"); ino == nil || !ino.IsDir() {
			t.Fatal("the root is gone")
		}
		// Whiteouts are applied first, so every other entry of the layer
		// is in the result.
		for _, p := range added {
			if root.Get(p) == nil {
				t.Fatalf("%s of the layer is missing after applying it", p)
			}
		}
	})
}
