// Package registrytest runs a throwaway OCI registry on 127.0.0.1: Debian's
// docker-registry (the distribution 2.8 reference registry), with its
// storage in a temporary directory and deletes enabled (the OCI 1.1
// referrers tag fallback replaces and deletes old referrers indexes).
//
// Start is for tests: it stops the registry and removes its storage when
// the test ends, and under CI a missing docker-registry fails the test.
// Launch does the same outside tests (a VM test that needs the port before
// the VM starts, or the demo through cmd/osguard-testregistry); the caller
// calls Stop.
//
// The registry listens on 127.0.0.1 only, speaks plain HTTP and has no
// authentication: it is a test fixture, never a service.
package registrytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/testutil"
)

// Binary is Debian's docker-registry (package docker-registry).
const Binary = "docker-registry"

// Registry is a running docker-registry.
type Registry struct {
	Addr    string // "127.0.0.1:PORT"
	Storage string // the filesystem driver's root directory (docker/registry/v2/... below it)
	Log     string // the registry's own log file

	dir      string // temporary directory holding config, storage and log (removed by Stop when owned)
	ownDir   bool
	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	stopOnce bool
}

// Options configures Launch.
type Options struct {
	// Dir holds the config, the storage and the log. Empty: a new temporary
	// directory, removed by Stop.
	Dir string
	// Addr is the listen address. Empty: a free port on 127.0.0.1. A host
	// other than 127.0.0.1 is refused.
	Addr string
	// Binary overrides the docker-registry path (default: found on PATH).
	Binary string
	// Timeout bounds the wait until /v2/ answers (default 30s).
	Timeout time.Duration
}

// Start launches a registry for the test and stops it at cleanup. It
// returns the running registry; reg.Addr is "127.0.0.1:PORT".
func Start(t testing.TB) *Registry {
	t.Helper()
	bin := testutil.NeedTool(t, Binary)[0]
	reg, err := Launch(context.Background(), Options{Dir: t.TempDir(), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := reg.Stop(); err != nil {
			t.Errorf("registrytest: %v", err)
		}
	})
	return reg
}

// Launch starts docker-registry and waits until GET /v2/ answers 200.
func Launch(ctx context.Context, opts Options) (*Registry, error) {
	bin := opts.Binary
	if bin == "" {
		p, err := exec.LookPath(Binary)
		if err != nil {
			return nil, fmt.Errorf("registrytest: %s not found (Debian package docker-registry): %w", Binary, err)
		}
		bin = p
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	reg := &Registry{dir: opts.Dir}
	if reg.dir == "" {
		d, err := os.MkdirTemp("", "osguard-registry-")
		if err != nil {
			return nil, fmt.Errorf("registrytest: %w", err)
		}
		reg.dir, reg.ownDir = d, true
	}
	// A port picked by listen-and-close can be taken by someone else before
	// the registry binds it; try a few times when no address was given.
	tries := 1
	if opts.Addr == "" {
		tries = 5
	}
	var err error
	for i := 0; i < tries; i++ {
		addr := opts.Addr
		if addr == "" {
			if addr, err = freePort(); err != nil {
				break
			}
		}
		if err = reg.start(ctx, bin, addr, timeout); err == nil {
			return reg, nil
		}
	}
	if reg.ownDir {
		os.RemoveAll(reg.dir)
	}
	return nil, err
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("registrytest: finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// config is the registry's configuration: filesystem storage, deletes on,
// no background upload purging, no health checks, no access log.
func config(addr, storage string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: osguard-registrytest
`, storage, addr)
}

func (reg *Registry) start(ctx context.Context, bin, addr string, timeout time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("registrytest: address %q: %w", addr, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("registrytest: address %q: only 127.0.0.1 is allowed", addr)
	}
	reg.Addr = addr
	reg.Storage = filepath.Join(reg.dir, "storage")
	reg.Log = filepath.Join(reg.dir, "registry.log")
	if err := os.MkdirAll(reg.Storage, 0o700); err != nil {
		return fmt.Errorf("registrytest: %w", err)
	}
	cfg := filepath.Join(reg.dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(config(addr, reg.Storage)), 0o600); err != nil {
		return fmt.Errorf("registrytest: %w", err)
	}
	logf, err := os.OpenFile(reg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("registrytest: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = reg.dir
	// Its own process group, so that Ctrl-C on a demo does not race Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("registrytest: starting %s: %w", bin, err)
	}
	reg.cmd = cmd
	reg.exited = make(chan struct{})
	go func() { reg.exitErr = cmd.Wait(); close(reg.exited) }()

	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-reg.exited:
			return fmt.Errorf("registrytest: %s exited before serving on %s (%v):\n%s", bin, addr, reg.exitErr, reg.logTail())
		case <-wctx.Done():
			reg.kill()
			return fmt.Errorf("registrytest: %s did not answer on http://%s/v2/ within %v:\n%s", bin, addr, timeout, reg.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logTail returns the end of the registry's log, for error messages.
func (reg *Registry) logTail() string {
	b, _ := os.ReadFile(reg.Log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(bytes.TrimSpace(b))
}

func (reg *Registry) kill() {
	if reg.cmd == nil || reg.cmd.Process == nil {
		return
	}
	reg.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-reg.exited:
	case <-time.After(5 * time.Second):
		reg.cmd.Process.Kill()
		<-reg.exited
	}
}

// Stop stops the registry and, when Launch made the directory, removes it.
// It reports a registry that died on its own before Stop.
func (reg *Registry) Stop() error {
	if reg.stopOnce {
		return nil
	}
	reg.stopOnce = true
	var err error
	select {
	case <-reg.exited:
		err = fmt.Errorf("docker-registry on %s exited early (%v):\n%s", reg.Addr, reg.exitErr, reg.logTail())
	default:
		reg.kill()
	}
	if reg.ownDir {
		if rerr := os.RemoveAll(reg.dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// URL returns "http://ADDR" + path.
func (reg *Registry) URL(path string) string {
	return "http://" + reg.Addr + "/" + strings.TrimPrefix(path, "/")
}

// BlobPath returns where the filesystem driver keeps the blob with digest
// "sha256:<hex>" (for tests that corrupt the registry's storage).
func (reg *Registry) BlobPath(dgst string) string {
	alg, hex, _ := strings.Cut(dgst, ":")
	if len(hex) < 2 {
		return ""
	}
	return filepath.Join(reg.Storage, "docker", "registry", "v2", "blobs", alg, hex[:2], hex, "data")
}
