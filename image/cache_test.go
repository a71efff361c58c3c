package image_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/osguard/osguard/image"
)

// TestBuildCaches: the warm-build caches (BuildOptions.CacheDir) change no
// byte of the outputs. A build with an empty cache directory (cold), one
// that finds every entry (warm), and one over entries that are all damaged
// give the same files.
func TestBuildCaches(t *testing.T) {
	f := getFixture(t)
	profiles := []string{"default", "containerhost"}
	if testing.Short() {
		profiles = profiles[:1]
	}
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			cfg, err := image.LoadProfile(profile)
			if err != nil {
				t.Fatal(err)
			}
			cache := t.TempDir()
			build := func(name string) string {
				t.Helper()
				out := filepath.Join(t.TempDir(), name)
				if _, err := image.Build(image.BuildOptions{
					Config: cfg, OutDir: out, KeysDir: f.keys, Epoch: testEpoch, ToolVersion: "test", CacheDir: cache,
					InitBinary: filepath.Join(f.bins, "osguard-init"), OsguardBinary: filepath.Join(f.bins, "osguard"),
				}); err != nil {
					t.Fatal(err)
				}
				return out
			}
			cold := build("cold")
			entries := cacheFiles(t, cache)
			if len(entries) == 0 {
				t.Fatal("the cold build kept nothing in the cache directory")
			}
			warm := build("warm")
			for _, p := range entries {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)-1] ^= 0xff
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			damaged := build("damaged")
			for _, name := range []string{image.DiskFile, image.UKIFile, image.MeasurementsFile, image.SPDXFile, image.CycloneDXFile, image.SignedPolicyFile, image.VarsFile} {
				want := fileSum(t, filepath.Join(cold, name))
				if fileSum(t, filepath.Join(warm, name)) != want {
					t.Errorf("%s: the warm build differs from the cold one", name)
				}
				if fileSum(t, filepath.Join(damaged, name)) != want {
					t.Errorf("%s: the build over damaged cache entries differs from the cold one", name)
				}
			}
		})
	}
}

// cacheFiles lists the entries under a cache directory.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
