package server_test

import (
	"context"
	"encoding/base64"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/internal/simnode"
	"github.com/osguard/osguard/internal/testutil"
)

// TestPageInChromium loads the fleet page in Debian's headless Chromium:
// it logs in with the token, shows a trusted and an untrusted node with its
// reason (the untrusted row in red), and shows a node that attests while
// the page is open. The screenshot is kept: testdata/fleet.png with
// OSGUARD_WRITE_TESTDATA=1, otherwise in the system's temp directory.
func TestPageInChromium(t *testing.T) {
	chromium := testutil.NeedTool(t, "chromium")[0]
	f := newFixture(t, sqliteDSN(t))
	good := f.node(t, "node-good", true)
	if code, v, _ := f.attest(t, good, f.nonce(t, "node-good")); code != 200 || v.State != api.Trusted {
		t.Fatalf("good node: %d %+v", code, v)
	}
	// A node whose PCR 7 says Secure Boot keys other than the build's: its
	// log no longer replays to what it quotes.
	pcrs := make([][]byte, len(f.ev.PCRs))
	copy(pcrs, f.ev.PCRs)
	pcrs[7] = make([]byte, 32)
	bad, _ := simnode.New("node-bad", pcrs, f.ev.EventLog, false)
	f.st.PutNode(context.Background(), "node-bad", "", base64.StdEncoding.EncodeToString(bad.AKPublic))
	if code, v, _ := f.attest(t, bad, f.nonce(t, "node-bad")); code != 200 || v.State != api.Untrusted {
		t.Fatalf("bad node: %d %+v", code, v)
	}
	ts := httptest.NewServer(f.h) // 127.0.0.1
	defer ts.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 600))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first action starts the browser and must not carry a timeout
	// (it would stop the browser); later ones are bounded.
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer tcancel()
	if err := chromedp.Do(tctx,
		chromedp.WaitVisible(`input[name=token]`),
		chromedp.SendKeys(`input[name=token]`, token),
		chromedp.Submit(`input[name=token]`),
		chromedp.WaitVisible(`tr[data-node="node-bad"]`),
	); err != nil {
		t.Fatalf("chromium: log in: %v", err)
	}
	t.Logf("page loaded in %v", time.Since(start).Round(time.Millisecond))
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(tctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("chromium: %s: %v", sel, err)
		}
		return s
	}
	badReason, goodState := text(`tr[data-node="node-bad"] td.reason`), text(`tr[data-node="node-good"] td.state`)
	if !strings.Contains(badReason, "does not replay") || goodState != "trusted" {
		t.Fatalf("page: untrusted reason %q, trusted state %q", badReason, goodState)
	}
	badColor, err := chromedp.Run(tctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector('tr[data-node="node-bad"]')).backgroundColor`))
	if err != nil {
		t.Fatal(err)
	}
	if badColor != "rgb(253, 226, 225)" {
		t.Errorf("the untrusted row does not stand out: background %s", badColor)
	}

	// A new attestation while the page is open: it reloads itself.
	late := f.node(t, "node-late", false)
	if code, _, _ := f.attest(t, late, f.nonce(t, "node-late")); code != 200 {
		t.Fatal(code)
	}
	if err := chromedp.Do(tctx, chromedp.WaitVisible(`tr[data-node="node-late"]`)); err != nil {
		t.Fatalf("the page did not show the new attestation: %v", err)
	}
	if s := text(`tr[data-node="node-late"] td.state`); s != "trusted" {
		t.Fatalf("new node: %q", s)
	}
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(os.TempDir(), "osguard-fleet.png")
	if os.Getenv("OSGUARD_WRITE_TESTDATA") == "1" {
		out = filepath.Join("testdata", "fleet.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
}
