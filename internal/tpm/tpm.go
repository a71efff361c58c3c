// Package tpm extends a PCR of a TPM 2.0 through the kernel's resource
// manager device (/dev/tpmrm0), which is all osguard-init needs to mark the
// boot phases in PCR 11 the way systemd-pcrphase does. The one command,
// TPM2_PCR_Extend (TPM 2.0 Library, Part 3, section 22.2), is encoded by
// hand: a TPM library would add more code to the initramfs than the command
// itself.
package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Device is the kernel's TPM resource manager.
const Device = "/dev/tpmrm0"

const (
	stSessions   = 0x8002     // TPM_ST_SESSIONS
	ccPCRExtend  = 0x00000182 // TPM_CC_PCR_Extend
	rsPW         = 0x40000009 // TPM_RS_PW: the empty password session
	algSHA256    = 0x000B     // TPM_ALG_SHA256
	maxResponse  = 4096
	responseHead = 10
)

// ErrNoTPM is returned when the machine has no TPM device.
var ErrNoTPM = errors.New("tpm: no TPM device")

// ExtendCommand encodes TPM2_PCR_Extend of the sha256 bank of pcr with the
// sha256 of data.
func ExtendCommand(pcr uint32, data []byte) []byte {
	digest := sha256.Sum256(data)
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.BigEndian, v) }
	w(uint16(stSessions))
	w(uint32(0)) // size, set below
	w(uint32(ccPCRExtend))
	w(pcr) // pcrHandle
	// Authorization area: one TPMS_AUTH_COMMAND with the password session.
	w(uint32(4 + 2 + 1 + 2))
	w(uint32(rsPW))
	w(uint16(0)) // nonce
	w(uint8(0))  // session attributes
	w(uint16(0)) // hmac (empty password)
	// TPML_DIGEST_VALUES with one sha256 digest.
	w(uint32(1))
	w(uint16(algSHA256))
	b.Write(digest[:])
	cmd := b.Bytes()
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	return cmd
}

// ResponseError is a TPM response code other than success.
type ResponseError uint32

func (e ResponseError) Error() string { return fmt.Sprintf("tpm: response code 0x%x", uint32(e)) }

// CheckResponse reads a TPM response header and returns its response code
// as an error.
func CheckResponse(resp []byte) error {
	if len(resp) < responseHead {
		return fmt.Errorf("tpm: short response (%d bytes)", len(resp))
	}
	if size := binary.BigEndian.Uint32(resp[2:]); int(size) != len(resp) {
		return fmt.Errorf("tpm: response says %d bytes, got %d", size, len(resp))
	}
	if rc := binary.BigEndian.Uint32(resp[6:]); rc != 0 {
		return ResponseError(rc)
	}
	return nil
}

// Extend extends pcr (sha256 bank) with the sha256 of data through the TPM
// device rw: one write of the command, one read of the response.
func Extend(rw io.ReadWriter, pcr uint32, data []byte) error {
	if _, err := rw.Write(ExtendCommand(pcr, data)); err != nil {
		return fmt.Errorf("tpm: send PCR_Extend: %w", err)
	}
	resp := make([]byte, maxResponse)
	n, err := rw.Read(resp)
	if err != nil {
		return fmt.Errorf("tpm: read PCR_Extend response: %w", err)
	}
	return CheckResponse(resp[:n])
}

// ExtendDevice opens the TPM device and extends pcr with data.
func ExtendDevice(dev string, pcr uint32, data []byte) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return ErrNoTPM
	}
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	defer f.Close()
	return Extend(f, pcr, data)
}
