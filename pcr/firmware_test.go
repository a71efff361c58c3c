package pcr_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/osguard/osguard/pcr"
	"github.com/osguard/osguard/secureboot"
)

// Known answers: the digest of SecureBoot=1 and of an absent dbx as
// UEFI_VARIABLE_DATA, as they appear in event logs of edk2 firmware (e.g.
// tpm2_eventlog output of any Secure Boot machine), and the separator and
// "Calling EFI Application from Boot Option" digests.
func TestFirmwareKnownAnswers(t *testing.T) {
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	for _, tc := range []struct{ name, got, want string }{
		{"SecureBoot=1", sum(pcr.VariableData(secureboot.EFIGlobalVariable, "SecureBoot", []byte{1})), "ccfc4bb32888a345bc8aeadaba552b627d99348c767681ab3141f5b01e40a40e"},
		{"dbx absent", sum(pcr.VariableData(secureboot.EFIImageSecurityDatabase, "dbx", nil)), "9f75b6823bff6af1024a4e2036719cdd548d3cbc2bf1de8e7ef4d0ed01f94bf9"},
		{"separator", sum([]byte{0, 0, 0, 0}), "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"},
		{"calling", sum([]byte(pcr.CallingEFIApplication)), "3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}

func TestPredictPCR7(t *testing.T) {
	on, err := pcr.PredictPCR7(pcr.SecureBootConfig{SecureBoot: true, PK: []byte("pk"), KEK: []byte("kek"), DB: []byte("db")}, []byte("authority"))
	if err != nil {
		t.Fatal(err)
	}
	off, err := pcr.PredictPCR7(pcr.SecureBootConfig{}, []byte("authority"))
	if err != nil {
		t.Fatal(err)
	}
	if len(on.Events) != 7 || len(off.Events) != 6 {
		t.Fatalf("events: on %d, off %d; want 7 and 6", len(on.Events), len(off.Events))
	}
	if on.SHA256 == off.SHA256 {
		t.Fatal("Secure Boot on and off predict the same PCR 7")
	}
	// Replay by hand.
	var b pcr.Bank
	for _, e := range on.Events {
		d, _ := hex.DecodeString(e.Digest)
		b = b.Extend(d)
	}
	if hex.EncodeToString(b[:]) != on.SHA256 {
		t.Fatal("PCR 7 is not the replay of its events")
	}
}

func TestPredictPCR4Rejects(t *testing.T) {
	if _, err := pcr.PredictPCR4([]byte("not a PE")); err == nil {
		t.Fatal("PredictPCR4 accepted garbage")
	}
}
