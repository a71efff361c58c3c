package registrytest

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/testutil"
)

func TestStartServesV2AndStops(t *testing.T) {
	bin := testutil.NeedTool(t, Binary)[0]
	reg, err := Launch(context.Background(), Options{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(reg.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr = %q, want 127.0.0.1:PORT", reg.Addr)
	}
	resp, err := http.Get(reg.URL("/v2/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: %s, API version header %q", resp.Status, resp.Header.Get("Docker-Distribution-Api-Version"))
	}
	dir := reg.dir
	if err := reg.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", reg.Addr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after Stop", reg.Addr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stop left its temporary directory %s (%v)", dir, err)
	}
}

func TestLaunchRefuses(t *testing.T) {
	bin := testutil.NeedTool(t, Binary)[0]
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"not loopback", "0.0.0.0:5000", "only 127.0.0.1"},
		{"port taken", busy.Addr().String(), "exited before serving"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := Launch(context.Background(), Options{Dir: t.TempDir(), Addr: tc.addr, Binary: bin, Timeout: 10 * time.Second})
			if err == nil {
				reg.Stop()
				t.Fatalf("Launch(%s) succeeded", tc.addr)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Launch(%s): %v, want %q", tc.addr, err, tc.want)
			}
		})
	}
}

func TestStartInTest(t *testing.T) {
	reg := Start(t)
	if _, err := os.Stat(reg.Storage); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(reg.URL("v2/_catalog"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/_catalog: %s", resp.Status)
	}
}
