package secureboot_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"math/big"
	"testing"

	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/secureboot"
)

// The fuzz targets feed hostile bytes to every parser; they must return
// errors, never panic. Seeds are our own writers' output (and committed
// corpora under testdata/fuzz).

func FuzzParseSignatureLists(f *testing.F) {
	h := loadTestKeysF(f)
	f.Add(secureboot.CertificateESL(h.Owner, h.DB.Cert))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		sigs, err := secureboot.ParseSignatureLists(b)
		if err == nil {
			_, _ = secureboot.Certificates(sigs)
		}
	})
}

func FuzzParseAuthVar(f *testing.F) {
	h := loadTestKeysF(f)
	_, _, db, err := h.AuthFiles()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(db)
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = secureboot.VerifyAuthVar(secureboot.VarDB, b, h.KEK.Cert)
	})
}

func FuzzPE(f *testing.F) {
	h := loadTestKeysF(f)
	// Seeds: testdata/fuzz/FuzzPE (a minimal PE32+) and its signed form.
	seed := minimalPE()
	f.Add(seed)
	if s, err := secureboot.SignPE(seed, h.DB.Key, h.DB.Cert); err == nil {
		f.Add(s)
	} else {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		_, _ = secureboot.PEDigest(b)
		_, _ = secureboot.Signers(b)
		_ = secureboot.VerifyPE(b, h.DB.Cert)
		if s, err := secureboot.SignPE(b, h.DB.Key, h.DB.Cert); err == nil {
			if err := secureboot.VerifyPE(s, h.DB.Cert); err != nil {
				t.Fatalf("our own signature does not verify: %v", err)
			}
		}
	})
}

func FuzzVarstore(f *testing.F) {
	h := loadTestKeysF(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := secureboot.ReadVarstore(b); err == nil {
			var sink nopWriter
			_ = secureboot.WriteVarstore(b, h, sink)
		}
	})
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// loadTestKeysF builds a hierarchy whose three key pairs share the committed
// testdata/fuzz-rsa2048.key: everything the fuzz targets sign is then
// deterministic, so the coordinator and its workers see the same seeds.
func loadTestKeysF(f *testing.F) *secureboot.Hierarchy {
	key, err := keyfile.LoadKey("testdata/fuzz-rsa2048.key")
	if err != nil {
		f.Fatal(err)
	}
	h := &secureboot.Hierarchy{Time: testTime}
	for i, kp := range []*secureboot.KeyPair{&h.PK, &h.KEK, &h.DB} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: fmt.Sprint("fuzz ", i)}, NotBefore: testTime, NotAfter: testTime.AddDate(1, 0, 0)}
		raw, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
		if err != nil {
			f.Fatal(err)
		}
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			f.Fatal(err)
		}
		*kp = secureboot.KeyPair{Key: key, Cert: c}
	}
	return h
}

// minimalPE builds a PE32+ image with one 512-byte section.
func minimalPE() []byte {
	b := make([]byte, 0x400)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	coff := b[0x44:]
	binary.LittleEndian.PutUint16(coff[0:], 0x8664)
	binary.LittleEndian.PutUint16(coff[2:], 1)    // NumberOfSections
	binary.LittleEndian.PutUint16(coff[16:], 240) // SizeOfOptionalHeader
	opt := b[0x58:]
	binary.LittleEndian.PutUint16(opt[0:], 0x20b)
	binary.LittleEndian.PutUint32(opt[56:], 0x2000) // SizeOfImage
	binary.LittleEndian.PutUint32(opt[60:], 0x200)  // SizeOfHeaders
	binary.LittleEndian.PutUint32(opt[108:], 16)    // NumberOfRvaAndSizes
	sec := b[0x58+240:]
	copy(sec, ".text")
	binary.LittleEndian.PutUint32(sec[8:], 0x200)   // VirtualSize
	binary.LittleEndian.PutUint32(sec[12:], 0x1000) // VirtualAddress
	binary.LittleEndian.PutUint32(sec[16:], 0x200)  // SizeOfRawData
	binary.LittleEndian.PutUint32(sec[20:], 0x200)  // PointerToRawData
	for i := 0x200; i < 0x400; i++ {
		b[i] = byte(i)
	}
	return b
}
