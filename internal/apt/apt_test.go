package apt

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/testutil"
)

// trixie is the private state 'make deps' prepared.
func trixie(t *testing.T) *State {
	t.Helper()
	testutil.Artifacts(t)
	p, err := artifacts.Path()
	if err != nil {
		t.Fatal(err)
	}
	s := &State{Dir: filepath.Join(filepath.Dir(p), "debian", "trixie", "apt"), Suite: "trixie"}
	if err := s.Check(); err != nil {
		testutil.Missing(t, "%v", err)
	}
	return s
}

func TestResolve(t *testing.T) {
	s := trixie(t)
	pkgs, err := s.Resolve([]string{"crun"})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pkgs {
		names[p.Name] = true
		if p.Version == "" || p.Arch == "" {
			t.Errorf("incomplete %+v", p)
		}
	}
	// crun, what it depends on, and the Essential set.
	for _, want := range []string{"crun", "libyajl2", "libc6", "base-files", "dpkg"} {
		if !names[want] {
			t.Errorf("closure of crun lacks %s", want)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	s := trixie(t)
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"no-such-package-osguard"}, "package no-such-package-osguard is not in Debian trixie"},
		{[]string{"Bad_Name"}, `"Bad_Name" is not a Debian package name`},
	} {
		_, err := s.Resolve(tc.names)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%v) = %v, want %q", tc.names, err, tc.want)
		}
	}
	empty := &State{Dir: t.TempDir(), Suite: "trixie"}
	if _, err := empty.Resolve([]string{"crun"}); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("Resolve without lists: %v", err)
	}
}

// TestDownloadBrokenMirror serves one package from a file: mirror whose
// index promises other bytes than the .deb has: apt refuses the download,
// the error names the package, and nothing is left in the target.
func TestDownloadBrokenMirror(t *testing.T) {
	testutil.NeedTool(t, "apt-get")
	mirror := t.TempDir()
	deb := []byte("!<arch>\nthis is not the package the index describes\n")
	pool := filepath.Join(mirror, "pool", "h", "hello")
	os.MkdirAll(pool, 0o755)
	os.WriteFile(filepath.Join(pool, "hello_1.0_amd64.deb"), deb, 0o644)
	wrong := sha256.Sum256([]byte("the real package"))
	packages := fmt.Sprintf("Package: hello\nVersion: 1.0\nArchitecture: amd64\nFilename: pool/h/hello/hello_1.0_amd64.deb\nSize: %d\nSHA256: %x\nDescription: test\n\n", len(deb), wrong)
	dist := filepath.Join(mirror, "dists", "trixie", "main", "binary-amd64")
	os.MkdirAll(dist, 0o755)
	os.WriteFile(filepath.Join(dist, "Packages"), []byte(packages), 0o644)
	sum := sha256.Sum256([]byte(packages))
	release := fmt.Sprintf("Suite: trixie\nCodename: trixie\nArchitectures: amd64\nComponents: main\nSHA256:\n %x %d main/binary-amd64/Packages\n", sum, len(packages))
	os.WriteFile(filepath.Join(mirror, "dists", "trixie", "Release"), []byte(release), 0o644)

	st := &State{Dir: t.TempDir(), Suite: "trixie"}
	os.MkdirAll(filepath.Join(st.Dir, "parts"), 0o755)
	os.MkdirAll(filepath.Join(st.Dir, "lists", "partial"), 0o755)
	os.MkdirAll(filepath.Join(st.Dir, "cache", "archives", "partial"), 0o755)
	os.WriteFile(filepath.Join(st.Dir, "parts", "test.sources"), []byte("Types: deb\nURIs: file:"+mirror+"\nSuites: trixie\nComponents: main\nTrusted: yes\n"), 0o644)
	cmd := exec.Command("apt-get", append(st.options(), "update", "-qq")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get update of the test mirror: %v\n%s", err, out)
	}
	pkgs, err := st.Resolve([]string{"hello"})
	if err != nil {
		t.Fatalf("resolve hello on the test mirror: %v", err)
	}
	dir := t.TempDir()
	_, err = st.Download(pkgs, dir)
	if err == nil || !strings.Contains(err.Error(), "hello") {
		t.Fatalf("download of a package with a wrong digest: %v", err)
	}
	t.Logf("apt's answer: %v", err)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a failed download left %d entries in the target", len(ents))
	}
}
