// Package imagetest builds osguard images for VM tests outside package
// image: the static osguard and osguard-init binaries, a key hierarchy, and
// images built from the default profile with a test's edits, each made once
// per test binary and shared.
package imagetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/secureboot"
)

// Epoch is the build time of every test image.
const Epoch = 1700000000

// Builder builds images with one key hierarchy.
type Builder struct {
	Dir  string // scratch directory, removed by Cleanup
	Bins string // static osguard and osguard-init
	Keys string

	mu     sync.Mutex
	images map[string]string
}

var (
	once    sync.Once
	shared  *Builder
	initErr error
)

// Get returns the shared builder, making the binaries and keys the first
// time. Prerequisites missing stop the test (testutil.Missing).
func Get(t testing.TB) *Builder {
	t.Helper()
	testutil.Artifacts(t)
	testutil.NeedFile(t, vm.OVMFVars)
	testutil.NeedTool(t, "mkfs.ext4", "go")
	once.Do(func() {
		dir, err := os.MkdirTemp("", "osguard-imagetest-")
		if err != nil {
			initErr = err
			return
		}
		b := &Builder{Dir: dir, Bins: filepath.Join(dir, "bin"), Keys: filepath.Join(dir, "keys"), images: map[string]string{}}
		if err := os.MkdirAll(b.Bins, 0o755); err != nil {
			initErr = err
			return
		}
		for _, c := range []string{"osguard", "osguard-init"} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(b.Bins, c), "github.com/osguard/osguard/cmd/"+c)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				initErr = fmt.Errorf("build %s: %v\n%s", c, err, out)
				return
			}
		}
		initErr = secureboot.GenerateKeys(b.Keys, secureboot.KeygenOptions{SubjectPrefix: "imagetest", Time: time.Unix(Epoch, 0)})
		shared = b
	})
	if initErr != nil {
		t.Fatalf("imagetest: %v", initErr)
	}
	return shared
}

// Image returns the output directory of the image named name, built from
// the default profile changed by edit (nil: unchanged) the first time it is
// asked for.
func (b *Builder) Image(t testing.TB, name string, edit func(*image.Config)) string {
	t.Helper()
	return b.build(t, name, func() (*image.Config, error) {
		cfg, err := image.LoadConfig("")
		if err == nil && edit != nil {
			edit(cfg)
		}
		return cfg, err
	})
}

// Profile builds the named profile (image.LoadProfile) with overrides ov,
// once per name.
func (b *Builder) Profile(t testing.TB, name, profile string, ov image.Overrides) string {
	t.Helper()
	return b.build(t, name, func() (*image.Config, error) {
		cfg, err := image.LoadProfile(profile)
		if err == nil {
			err = cfg.Apply(ov)
		}
		return cfg, err
	})
}

// build builds the config that load returns into img-NAME, once per name.
func (b *Builder) build(t testing.TB, name string, load func() (*image.Config, error)) string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if out, ok := b.images[name]; ok {
		return out
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(b.Dir, "img-"+name)
	start := time.Now()
	if _, err := image.Build(image.BuildOptions{
		Config: cfg, OutDir: out, KeysDir: b.Keys, Epoch: Epoch, ToolVersion: "test",
		InitBinary: filepath.Join(b.Bins, "osguard-init"), OsguardBinary: filepath.Join(b.Bins, "osguard"),
	}); err != nil {
		t.Fatalf("build image %s: %v", name, err)
	}
	t.Logf("built image %s in %v", name, time.Since(start).Round(time.Millisecond))
	b.images[name] = out
	return out
}

// Partitions reads the GPT of a disk image file.
func Partitions(t testing.TB, diskPath string) []bootinit.GPTEntry {
	t.Helper()
	fh, err := os.Open(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	ents, err := bootinit.ReadGPT(fh, 512)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// Hierarchy loads the builder's keys.
func (b *Builder) Hierarchy(t testing.TB) *secureboot.Hierarchy {
	t.Helper()
	h, err := secureboot.LoadHierarchy(b.Keys)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Cleanup removes the shared builder's files; call it from TestMain after m.Run.
func Cleanup() {
	if shared != nil {
		os.RemoveAll(shared.Dir)
	}
}

// Main runs a test binary's tests and removes the shared builder's files:
// func TestMain(m *testing.M) { imagetest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}
