package image

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/osguard/osguard/erofs"
)

// digestTree reads a small root tar from a file, as debianRootfs does, and
// returns its tree with a digest cache at cachePath.
func digestTree(t *testing.T, tarPath, cachePath string) (*erofs.Tree, *digestCache) {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	root, err := erofs.TreeFromTar(f, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	c, err := newDigestCache(cachePath, root)
	if err != nil {
		t.Fatal(err)
	}
	return root, c
}

// TestDigestCache: digests taken from the cache are the ones hashing
// gives, a file the config replaced after reading the tar is hashed anew,
// and a damaged cache is an error, not a wrong SBOM.
func TestDigestCache(t *testing.T) {
	dir := t.TempDir()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for name, body := range map[string]string{"usr/": "", "usr/bin/": "", "usr/bin/a": "alpha", "usr/bin/b c": "bravo", "usr/empty": ""} {
		h := &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeReg, Size: int64(len(body))}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	tarPath, cachePath := filepath.Join(dir, "root.tar"), filepath.Join(dir, "root.digests")
	if err := os.WriteFile(tarPath, tb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	hashed := func(replace bool) ([]byte, any) {
		root, c := digestTree(t, tarPath, cachePath)
		if replace {
			other := filepath.Join(dir, "other")
			os.WriteFile(other, []byte("replaced"), 0o755)
			if err := addFile(root, "/usr/bin/a", other, 0); err != nil {
				t.Fatal(err)
			}
		}
		usr, err := usrTree(root)
		if err != nil {
			t.Fatal(err)
		}
		files, manifest, err := hashFiles(usr, c)
		if err != nil {
			t.Fatal(err)
		}
		plainFiles, plainManifest, err := hashFiles(usr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(files, plainFiles) || !bytes.Equal(manifest, plainManifest) {
			t.Errorf("replace=%v: digests with the cache differ from hashing:\n%v\n%v", replace, files, plainFiles)
		}
		return manifest, files
	}
	m1, _ := hashed(false) // fills the cache
	if _, err := os.Stat(cachePath); err != nil {
		t.Fatalf("no cache written: %v", err)
	}
	m2, _ := hashed(false) // reads it
	if !bytes.Equal(m1, m2) {
		t.Error("manifest changed between a cold and a warm build")
	}
	hashed(true)

	os.WriteFile(cachePath, []byte("5 zz"), 0o644)
	f, _ := os.Open(tarPath)
	defer f.Close()
	root, err := erofs.TreeFromTar(f, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := newDigestCache(cachePath, root); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged cache: err = %v", err)
	}
}
