package pcr

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"unicode/utf16"

	"github.com/osguard/osguard/secureboot"
)

// TCG PC Client Platform Firmware Profile (PFP) 1.05, section 10.4.1, event types.
const (
	EV_SEPARATOR                     uint32 = 0x00000004
	EV_EFI_VARIABLE_DRIVER_CONFIG    uint32 = 0x80000001
	EV_EFI_BOOT_SERVICES_APPLICATION uint32 = 0x80000003
	EV_EFI_ACTION                    uint32 = 0x80000007
	EV_EFI_VARIABLE_AUTHORITY        uint32 = 0x800000e0
)

// CallingEFIApplication is the EV_EFI_ACTION string edk2's Tcg2Dxe
// measures into PCR 4 at ReadyToBoot, before it boots the first boot option
// (PFP 1.05, section 10.4.4; edk2 MdePkg/Include/IndustryStandard/UefiTcgPlatform.h
// EFI_CALLING_EFI_APPLICATION).
const CallingEFIApplication = "Calling EFI Application from Boot Option"

// Event is one predicted event of a TCG event log: what the firmware
// extends into a PCR of the sha256 bank.
type Event struct {
	PCR    int    `json:"pcr"`
	Type   uint32 `json:"type"`
	Name   string `json:"name"`   // e.g. EV_SEPARATOR, or the variable name
	Digest string `json:"digest"` // sha256, hex
}

// FirmwarePrediction is a predicted PCR value and the events that make it.
type FirmwarePrediction struct {
	SHA256 string  `json:"sha256"`
	Events []Event `json:"events"`
}

// replay extends a zero PCR with each event's digest.
func replay(events []Event) (string, error) {
	var b Bank
	for _, e := range events {
		d, err := hex.DecodeString(e.Digest)
		if err != nil || len(d) != sha256.Size {
			return "", fmt.Errorf("pcr: event %s: bad digest %q", e.Name, e.Digest)
		}
		b = b.Extend(d)
	}
	return hex.EncodeToString(b[:]), nil
}

func event(pcr int, typ uint32, name string, data []byte) Event {
	d := sha256.Sum256(data)
	return Event{PCR: pcr, Type: typ, Name: name, Digest: hex.EncodeToString(d[:])}
}

// separator is the EV_SEPARATOR event data of a successful boot: a UINT32 0.
var separator = []byte{0, 0, 0, 0}

// VariableData encodes a UEFI_VARIABLE_DATA structure (PFP 1.05, section
// 10.2.6): VariableName GUID ‖ u64 UnicodeNameLength (in characters) ‖
// u64 VariableDataLength ‖ UnicodeName (UTF-16LE, no NUL) ‖ VariableData.
// The firmware measures it for EV_EFI_VARIABLE_DRIVER_CONFIG and
// EV_EFI_VARIABLE_AUTHORITY events; its sha256 is the event's digest.
func VariableData(guid secureboot.GUID, name string, data []byte) []byte {
	u := utf16.Encode([]rune(name))
	b := make([]byte, 0, 32+2*len(u)+len(data))
	b = append(b, guid[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(u)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, data...)
}

// SecureBootConfig is what edk2 measures into PCR 7 before the boot: the
// SecureBoot variable and the contents of PK, KEK, db and dbx (nil for an
// absent variable, which edk2 measures with a data length of 0).
type SecureBootConfig struct {
	SecureBoot       bool
	PK, KEK, DB, DBX []byte
}

// EnrolledConfig returns the configuration that osguard's enrollment
// leaves in the firmware for the hierarchy h (secureboot.WriteVarstore and
// secureboot.Enroll): one certificate in PK and in KEK, db's and (when
// h has one) the containers certificate in db (h.DBList), all owned by
// h.Owner, an empty dbx, and Secure Boot on.
func EnrolledConfig(h *secureboot.Hierarchy) SecureBootConfig {
	return SecureBootConfig{
		SecureBoot: true,
		PK:         secureboot.CertificateESL(h.Owner, h.PK.Cert),
		KEK:        secureboot.CertificateESL(h.Owner, h.KEK.Cert),
		DB:         h.DBList(),
	}
}

// Authority returns the EFI_SIGNATURE_DATA (SignatureOwner ‖ DER
// certificate) of the db entry that verifies images signed by h's db key:
// the data of the EV_EFI_VARIABLE_AUTHORITY event.
func Authority(h *secureboot.Hierarchy) []byte {
	return append(append([]byte{}, h.Owner[:]...), h.DB.Cert.Raw...)
}

// PredictPCR7 returns PCR 7 as edk2 (OVMF) leaves it when it boots one
// image verified by the db entry authority (an EFI_SIGNATURE_DATA; nil
// when Secure Boot is off and nothing is verified):
//
//   - EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db and dbx, in
//     that order (edk2 SecurityPkg/Tcg/Tcg2Dxe, MeasureAllSecureVariables);
//   - EV_SEPARATOR at ReadyToBoot;
//   - EV_EFI_VARIABLE_AUTHORITY with UEFI_VARIABLE_DATA of "db" and the
//     matching signature entry, once per distinct authority
//     (DxeImageVerificationLib), when the boot application is verified.
func PredictPCR7(c SecureBootConfig, authority []byte) (*FirmwarePrediction, error) {
	sb := []byte{0}
	if c.SecureBoot {
		sb[0] = 1
	}
	g, d := secureboot.EFIGlobalVariable, secureboot.EFIImageSecurityDatabase
	ev := []Event{
		event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot", VariableData(g, "SecureBoot", sb)),
		event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "PK", VariableData(g, "PK", c.PK)),
		event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "KEK", VariableData(g, "KEK", c.KEK)),
		event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "db", VariableData(d, "db", c.DB)),
		event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "dbx", VariableData(d, "dbx", c.DBX)),
		event(7, EV_SEPARATOR, "EV_SEPARATOR", separator),
	}
	if c.SecureBoot && authority != nil {
		ev = append(ev, event(7, EV_EFI_VARIABLE_AUTHORITY, "db", VariableData(d, "db", authority)))
	}
	v, err := replay(ev)
	if err != nil {
		return nil, err
	}
	return &FirmwarePrediction{SHA256: v, Events: ev}, nil
}

// PredictPCR4 returns PCR 4 as edk2 (OVMF) leaves it when it boots the
// first boot option, an EFI application, which starts no other image
// through the firmware's measured LoadImage:
//
//   - EV_EFI_ACTION "Calling EFI Application from Boot Option" at ReadyToBoot;
//   - EV_SEPARATOR at ReadyToBoot;
//   - EV_EFI_BOOT_SERVICES_APPLICATION with the Authenticode sha256 of each
//     application in loading order (edk2 DxeTpm2MeasureBootLib).
//
// apps are the PE images (signed or not) in the order they are loaded.
func PredictPCR4(apps ...[]byte) (*FirmwarePrediction, error) {
	ev := []Event{
		event(4, EV_EFI_ACTION, "EV_EFI_ACTION", []byte(CallingEFIApplication)),
		event(4, EV_SEPARATOR, "EV_SEPARATOR", separator),
	}
	for i, app := range apps {
		d, err := secureboot.PEDigest(app)
		if err != nil {
			return nil, fmt.Errorf("pcr: boot application %d: %w", i, err)
		}
		ev = append(ev, Event{PCR: 4, Type: EV_EFI_BOOT_SERVICES_APPLICATION, Name: "EV_EFI_BOOT_SERVICES_APPLICATION", Digest: hex.EncodeToString(d)})
	}
	v, err := replay(ev)
	if err != nil {
		return nil, err
	}
	return &FirmwarePrediction{SHA256: v, Events: ev}, nil
}

// PredictFirmware returns PCR 4 and PCR 7 for a boot of the signed UKI from
// the first boot option of edk2 firmware into which the hierarchy h was
// enrolled (Secure Boot on, dbx empty).
func PredictFirmware(signedUKI []byte, h *secureboot.Hierarchy) (pcr4, pcr7 *FirmwarePrediction, err error) {
	if pcr4, err = PredictPCR4(signedUKI); err != nil {
		return nil, nil, err
	}
	if pcr7, err = PredictPCR7(EnrolledConfig(h), Authority(h)); err != nil {
		return nil, nil, err
	}
	return pcr4, pcr7, nil
}
