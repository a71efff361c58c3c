package secureboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf16"
)

// The edk2 variable store in an OVMF VARS file (edk2
// MdePkg/Include/Pi/PiFirmwareVolume.h and
// MdeModulePkg/Include/Guid/VariableFormat.h):
//
//	EFI_FIRMWARE_VOLUME_HEADER: ZeroVector[16] ‖ FileSystemGuid (gEfiSystemNvDataFvGuid)
//	  ‖ u64 FvLength ‖ "_FVH" ‖ u32 Attributes ‖ u16 HeaderLength ‖ u16 Checksum ‖ …
//	VARIABLE_STORE_HEADER at HeaderLength: Signature (gEfiAuthenticatedVariableGuid)
//	  ‖ u32 Size ‖ u8 Format (0x5A) ‖ u8 State (0xFE) ‖ 6 reserved bytes
//	AUTHENTICATED_VARIABLE_HEADER, 4-byte aligned, one per variable: u16 StartId
//	  (0x55AA) ‖ u8 State ‖ u8 reserved ‖ u32 Attributes ‖ u64 MonotonicCount ‖
//	  EFI_TIME TimeStamp ‖ u32 PubKeyIndex ‖ u32 NameSize ‖ u32 DataSize ‖ VendorGuid,
//	  then the UCS-2 name with its NUL and the data. Free space is 0xFF.
//
// Offline, an authenticated variable is stored as its plain data (the
// signature list) with the timestamp of the update; no PKCS#7 is involved.
var (
	guidSystemNvDataFv        = mustGUID("fff12b8d-7696-4c8b-a985-2747075b4f50")
	guidAuthenticatedVariable = mustGUID("aaf32c78-947b-439a-a180-2e144ec37792")
	errVarstore               = errors.New("secureboot: not an edk2 authenticated variable store")
)

// Store and variable header values (VariableFormat.h).
const (
	varStoreFormatted   byte   = 0x5a
	varStoreHealthy     byte   = 0xfe
	varStartID          uint16 = 0x55aa
	varAdded            byte   = 0x3f
	varDeletedMask      byte   = 0xfd // State &= VAR_DELETED
	varInDeletedTransit byte   = 0xfe
)

const (
	fvHeaderMin      = 0x38 // fixed part of EFI_FIRMWARE_VOLUME_HEADER before the block map
	varStoreHdrSize  = 28
	authVarHdrSize   = 60
	secureBootEnable = "SecureBootEnable"
)

// StoredVariable is one variable of an edk2 variable store.
type StoredVariable struct {
	Name       string
	GUID       GUID
	Attributes uint32
	Time       time.Time
	Data       []byte
	offset     int // of its header in the file
}

type varstore struct {
	b         []byte
	start     int // first variable header
	end       int // end of the variable area
	free      int // first free byte
	variables []StoredVariable
}

func parseVarstore(b []byte) (*varstore, error) {
	if len(b) < fvHeaderMin+varStoreHdrSize || !bytes.Equal(b[16:32], guidSystemNvDataFv[:]) || string(b[40:44]) != "_FVH" {
		return nil, fmt.Errorf("%w: no NV data firmware volume header", errVarstore)
	}
	hl := int(binary.LittleEndian.Uint16(b[48:]))
	if hl < fvHeaderMin || hl+varStoreHdrSize > len(b) {
		return nil, fmt.Errorf("%w: firmware volume header length %d", errVarstore, hl)
	}
	vs := b[hl:]
	if !bytes.Equal(vs[:16], guidAuthenticatedVariable[:]) {
		return nil, fmt.Errorf("%w: variable store is not the authenticated format", errVarstore)
	}
	size := int64(binary.LittleEndian.Uint32(vs[16:]))
	if size < varStoreHdrSize || int64(hl)+size > int64(len(b)) || vs[20] != varStoreFormatted || vs[21] != varStoreHealthy {
		return nil, fmt.Errorf("%w: variable store size %d, format %#x, state %#x", errVarstore, size, vs[20], vs[21])
	}
	s := &varstore{b: b, start: alignUp4(hl + varStoreHdrSize), end: hl + int(size)}
	off := s.start
	for off+authVarHdrSize <= s.end && binary.LittleEndian.Uint16(b[off:]) == varStartID {
		h := b[off : off+authVarHdrSize]
		nameSize := int64(binary.LittleEndian.Uint32(h[36:]))
		dataSize := int64(binary.LittleEndian.Uint32(h[40:]))
		next := int64(off) + authVarHdrSize + nameSize + dataSize
		if nameSize%2 != 0 || next > int64(s.end) {
			return nil, fmt.Errorf("%w: variable at %#x: name size %d, data size %d", errVarstore, off, nameSize, dataSize)
		}
		state := h[2]
		if state == varAdded || state == varAdded&varInDeletedTransit {
			name := b[off+authVarHdrSize : off+authVarHdrSize+int(nameSize)]
			v := StoredVariable{
				Name:       decodeUCS2(name),
				Attributes: binary.LittleEndian.Uint32(h[4:]),
				Time:       parseEFITime(h[16:32]),
				Data:       b[off+authVarHdrSize+int(nameSize) : next],
				offset:     off,
			}
			copy(v.GUID[:], h[44:60])
			s.variables = append(s.variables, v)
		}
		off = alignUp4(int(next))
	}
	s.free = min(off, s.end)
	return s, nil
}

func alignUp4(n int) int { return (n + 3) &^ 3 }

func decodeUCS2(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// set deletes any live variable name/guid and appends the new value.
func (s *varstore) set(name string, guid GUID, attrs uint32, ts time.Time, data []byte) error {
	for _, v := range s.variables {
		if v.Name == name && v.GUID == guid {
			s.b[v.offset+2] &= varDeletedMask
		}
	}
	nameBytes := append(ucs2(name), 0, 0)
	n := authVarHdrSize + len(nameBytes) + len(data)
	if s.free+n > s.end {
		return fmt.Errorf("secureboot: variable store full: %s needs %d bytes, %d free", name, n, s.end-s.free)
	}
	h := s.b[s.free : s.free+authVarHdrSize]
	binary.LittleEndian.PutUint16(h[0:], varStartID)
	h[2], h[3] = varAdded, 0
	binary.LittleEndian.PutUint32(h[4:], attrs)
	binary.LittleEndian.PutUint64(h[8:], 0)
	t := EFITime(ts)
	if attrs&EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS == 0 {
		t = [16]byte{}
	}
	copy(h[16:], t[:])
	binary.LittleEndian.PutUint32(h[32:], 0)
	binary.LittleEndian.PutUint32(h[36:], uint32(len(nameBytes)))
	binary.LittleEndian.PutUint32(h[40:], uint32(len(data)))
	copy(h[44:], guid[:])
	copy(s.b[s.free+authVarHdrSize:], nameBytes)
	copy(s.b[s.free+authVarHdrSize+len(nameBytes):], data)
	s.free = alignUp4(s.free + n)
	return nil
}

// ReadVarstore lists the live variables of an edk2 VARS file.
func ReadVarstore(vars []byte) ([]StoredVariable, error) {
	s, err := parseVarstore(vars)
	if err != nil {
		return nil, err
	}
	return s.variables, nil
}

// WriteVarstore writes a copy of the edk2 VARS file template with PK, KEK
// and db set to h's certificates (db: h.DBList, the db certificate and the
// containers certificate when h has one) and SecureBootEnable set, so that OVMF
// starts in user mode with Secure Boot on, as `virt-fw-vars --set-pk
// --add-kek --add-db --sb` does. Earlier values of these variables in the
// template are marked deleted.
func WriteVarstore(template []byte, h *Hierarchy, w io.Writer) error {
	s, err := parseVarstore(bytes.Clone(template))
	if err != nil {
		return err
	}
	for _, v := range []struct {
		v   Variable
		esl []byte
	}{{VarPK, CertificateESL(h.Owner, h.PK.Cert)}, {VarKEK, CertificateESL(h.Owner, h.KEK.Cert)}, {VarDB, h.DBList()}} {
		if err := s.set(v.v.Name, v.v.GUID, AuthVarAttributes, h.Time, v.esl); err != nil {
			return err
		}
	}
	// edk2's AuthVariableLib creates SecureBootEnable=1 itself when it finds
	// a PK; writing it makes the result independent of that default.
	if err := s.set(secureBootEnable, EFISecureBootEnableDisable, EFI_VARIABLE_NON_VOLATILE|EFI_VARIABLE_BOOTSERVICE_ACCESS, time.Time{}, []byte{1}); err != nil {
		return err
	}
	if _, err := w.Write(s.b); err != nil {
		return fmt.Errorf("secureboot: write varstore: %w", err)
	}
	return nil
}

// DeleteVariable returns a copy of the edk2 VARS file vars with the
// variable v marked deleted, e.g. PK to put the firmware back in setup mode
// (Secure Boot off) with KEK and db still enrolled.
func DeleteVariable(vars []byte, v Variable) ([]byte, error) {
	s, err := parseVarstore(bytes.Clone(vars))
	if err != nil {
		return nil, err
	}
	found := false
	for _, sv := range s.variables {
		if sv.Name == v.Name && sv.GUID == v.GUID {
			s.b[sv.offset+2] &= varDeletedMask
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("secureboot: varstore has no %s", v.Name)
	}
	return s.b, nil
}
