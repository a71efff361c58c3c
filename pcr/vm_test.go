package pcr_test

import (
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/imagetest"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/pcr"
)

func TestMain(m *testing.M) { imagetest.Main(m) }

// TestFirmwarePCRsInVM boots a built image under OVMF Secure Boot with
// swtpm and checks that PCR 4 and PCR 7 as the TPM reports them equal the
// build's prediction in measurements.json, and that the firmware's event
// log replays to the TPM's PCRs.
func TestFirmwarePCRsInVM(t *testing.T) {
	b := imagetest.Get(t)
	out := b.Image(t, "default", nil)
	var m image.Measurements
	raw, err := os.ReadFile(filepath.Join(out, image.MeasurementsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mach := vmtest.Start(t, vm.Config{
		UEFI: true, Vars: filepath.Join(out, image.VarsFile), TPM: true,
		Drives: []vm.Drive{{Path: filepath.Join(out, image.DiskFile), Snapshot: true}},
	})
	if _, err := mach.WaitForText(vm.ShellPrompt, 0, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("booted to the shell in %v", time.Since(start).Round(time.Millisecond))
	if _, err := mach.Run("dmesg -n 1", time.Minute); err != nil {
		t.Fatal(err)
	}
	pcrs := make([]attest.PCR, 0, 24)
	values := map[int]string{}
	for i := 0; i < 24; i++ {
		o, err := mach.Run("cat /sys/class/tpm/tpm0/pcr-sha256/"+strconv.Itoa(i), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		v := strings.ToLower(strings.TrimSpace(o))
		d, err := hex.DecodeString(v)
		if err != nil || len(d) != 32 {
			t.Fatalf("PCR %d: %q", i, o)
		}
		values[i] = v
		pcrs = append(pcrs, attest.PCR{Index: i, Digest: d, DigestAlg: crypto.SHA256})
	}
	if got, want := values[4], m.PCR4.SHA256; got != want {
		t.Errorf("PCR 4: TPM %s, predicted %s", got, want)
	}
	if got, want := values[7], m.PCR7.SHA256; got != want {
		t.Errorf("PCR 7: TPM %s, predicted %s", got, want)
	}
	o, err := mach.Run("base64 /sys/kernel/security/tpm0/binary_bios_measurements | tr -d '\\n'; echo", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	logBytes, err := base64.StdEncoding.DecodeString(strings.TrimSpace(o))
	if err != nil {
		t.Fatalf("event log: %v", err)
	}
	el, err := attest.ParseEventLog(logBytes)
	if err != nil {
		t.Fatalf("parse event log: %v", err)
	}
	// PCR 11 is extended by osguard-init after the firmware's log ends
	// (enter-initrd, leave-initrd), as systemd-pcrphase does: it is judged
	// against the phase values instead.
	var logged []attest.PCR
	for _, p := range pcrs {
		if p.Index != 11 {
			logged = append(logged, p)
		}
	}
	events, err := el.Verify(logged)
	if err != nil {
		t.Fatalf("event log does not replay to the TPM's PCRs: %v", err)
	}
	for _, e := range events {
		if e.Index == 4 || e.Index == 7 {
			t.Logf("PCR %d %s %x", e.Index, e.Type, e.Digest)
		}
	}
	for _, tc := range []struct {
		pcr  int
		pred pcr.FirmwarePrediction
	}{{4, m.PCR4.FirmwarePrediction}, {7, m.PCR7}} {
		var got []string
		for _, e := range events {
			if e.Index == tc.pcr {
				got = append(got, hex.EncodeToString(e.Digest))
			}
		}
		var want []string
		for _, e := range tc.pred.Events {
			want = append(want, e.Digest)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("PCR %d events: log %v, predicted %v", tc.pcr, got, want)
		}
	}
	want := m.PCR11.Phases[1].Hex // enter-initrd:leave-initrd
	if values[11] != want {
		t.Errorf("PCR 11: TPM %s, predicted leave-initrd %s", values[11], want)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
