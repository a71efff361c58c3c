package tpm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// fakeTPM records the command and answers with a canned response.
type fakeTPM struct {
	cmd, resp []byte
}

func (f *fakeTPM) Write(p []byte) (int, error) { f.cmd = append([]byte(nil), p...); return len(p), nil }
func (f *fakeTPM) Read(p []byte) (int, error)  { return copy(p, f.resp), nil }

// response makes a TPM response header with the given code.
func response(tag uint16, rc uint32) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint16(b, tag)
	binary.BigEndian.PutUint32(b[2:], 10)
	binary.BigEndian.PutUint32(b[6:], rc)
	return b
}

func TestExtendCommandLayout(t *testing.T) {
	// TPM2_PCR_Extend of PCR 11 (TPM 2.0 Library, Part 3, 22.2): header,
	// handle, one password session, one sha256 digest.
	digest := sha256.Sum256([]byte("enter-initrd"))
	want := "8002" + "00000041" + "00000182" + "0000000b" +
		"00000009" + "40000009" + "0000" + "00" + "0000" +
		"00000001" + "000b" + hex.EncodeToString(digest[:])
	if got := hex.EncodeToString(ExtendCommand(11, []byte("enter-initrd"))); got != want {
		t.Errorf("command\n got %s\nwant %s", got, want)
	}
}

func TestExtendResponses(t *testing.T) {
	short := []byte{0x80, 0x01}
	lying := response(0x8001, 0)
	binary.BigEndian.PutUint32(lying[2:], 0xffff)
	for _, tc := range []struct {
		name string
		resp []byte
		want string // "" for success
	}{
		{"success", response(0x8002, 0), ""},
		{"locality error", response(0x8001, 0x90b), "0x90b"},
		{"short", short, "short"},
		{"size lies", lying, "says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTPM{resp: tc.resp}
			err := Extend(f, 11, []byte("x"))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if len(f.cmd) != 0x41 {
				t.Errorf("sent %d bytes, want 0x41", len(f.cmd))
			}
		})
	}
	var re ResponseError
	if err := Extend(&fakeTPM{resp: response(0x8001, 0x90b)}, 11, nil); !errors.As(err, &re) {
		t.Errorf("a response code is not a ResponseError: %v", err)
	}
	if err := ExtendDevice("/nonexistent/tpmrm0", 11, nil); !errors.Is(err, ErrNoTPM) {
		t.Errorf("missing device: %v, want ErrNoTPM", err)
	}
}
