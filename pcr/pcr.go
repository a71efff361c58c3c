package pcr

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/osguard/osguard/pe"
)

// UKISections is systemd-stub 257's canonical measurement order (enum
// UnifiedSection). ".pcrsig" is listed for completeness; it is skipped.
var UKISections = []string{
	".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb",
	".uname", ".sbat", ".pcrsig", ".pcrpkey", ".profile", ".dtbauto", ".hwids",
}

// Phases are the boot phases systemd-pcrphase extends into PCR 11, in order.
var Phases = []string{"enter-initrd", "leave-initrd", "sysinit", "ready"}

// Measurement is one PE section measured by the stub.
type Measurement struct {
	Section    string `json:"section"`
	Size       int    `json:"size"`
	NameDigest string `json:"nameDigest"` // sha256 of the name with its NUL
	DataDigest string `json:"dataDigest"` // sha256 of the content
}

// PhaseValue is PCR 11 after a phase path such as "enter-initrd:leave-initrd".
type PhaseValue struct {
	Phase string `json:"phase"`
	PCR11 []byte `json:"-"`
	Hex   string `json:"pcr11"`
}

// Prediction is the predicted PCR 11 of a UKI boot.
type Prediction struct {
	PCR11        []byte        // when systemd-stub hands over to the kernel
	Measurements []Measurement // in measurement order
	Phases       []PhaseValue  // after each of systemd-measure's default phase paths
}

// Bank is a PCR value in the sha256 bank.
type Bank [sha256.Size]byte

// Extend returns sha256(b || digest).
func (b Bank) Extend(digest []byte) Bank {
	h := sha256.New()
	h.Write(b[:])
	h.Write(digest)
	var out Bank
	h.Sum(out[:0])
	return out
}

// ExtendData extends b with sha256(data), as a TPM event over data does.
func (b Bank) ExtendData(data []byte) Bank {
	d := sha256.Sum256(data)
	return b.Extend(d[:])
}

// ErrProfiles is returned for UKIs with .profile sections.
var ErrProfiles = errors.New("pcr: UKIs with .profile sections are not supported")

// PredictUKI returns PCR 11 as systemd-stub 257 leaves it after measuring
// the UKI, and after each boot phase.
func PredictUKI(uki []byte) (*Prediction, error) {
	im, err := pe.Parse(uki)
	if err != nil {
		return nil, fmt.Errorf("pcr: %w", err)
	}
	if _, ok := im.Section(".profile"); ok {
		return nil, ErrProfiles
	}
	if _, ok := im.Section(".dtbauto"); ok {
		// Which .dtbauto the stub measures depends on the machine's hardware IDs.
		return nil, errors.New("pcr: UKIs with .dtbauto sections are not supported")
	}
	if _, ok := im.Section(".linux"); !ok {
		return nil, errors.New("pcr: not a UKI: no .linux section")
	}
	var pcr Bank
	p := &Prediction{}
	for _, name := range UKISections {
		if name == ".pcrsig" {
			continue
		}
		s, ok := im.Section(name)
		if !ok || s.VirtualSize == 0 {
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, im.SectionReader(s)); err != nil {
			return nil, fmt.Errorf("pcr: hash %s: %w", name, err)
		}
		dd := h.Sum(nil)
		nd := sha256.Sum256(append([]byte(name), 0))
		pcr = pcr.Extend(nd[:]).Extend(dd)
		p.Measurements = append(p.Measurements, Measurement{
			Section: name, Size: int(s.VirtualSize),
			NameDigest: hex.EncodeToString(nd[:]), DataDigest: hex.EncodeToString(dd[:]),
		})
	}
	p.PCR11 = pcr[:]
	for i := range Phases {
		path := Phases[:i+1]
		v := pcr
		for _, w := range path {
			v = v.ExtendData([]byte(w))
		}
		p.Phases = append(p.Phases, PhaseValue{Phase: strings.Join(path, ":"), PCR11: v[:], Hex: hex.EncodeToString(v[:])})
	}
	return p, nil
}
