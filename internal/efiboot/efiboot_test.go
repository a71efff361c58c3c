package efiboot

import (
	"slices"
	"testing"

	"github.com/osguard/osguard/secureboot"
)

func TestLoadOptionRoundTrip(t *testing.T) {
	g, _ := secureboot.ParseGUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	o := LoadOption{Attributes: LoadOptionActive, Description: "osguard slot B",
		Disk: HardDrive{Number: 1, StartLBA: 2048, SizeLBA: 131072, PartUUID: g}, Path: ESPPath("/EFI/osguard/slot-B.efi")}
	b := o.Marshal()
	// Attributes, FilePathListLength, "osguard slot B\0" in UCS-2, HD (42),
	// File (4 + 2*len+2), End (4).
	if want := 6 + 30 + 42 + 4 + 2*len(`\EFI\osguard\slot-B.efi`) + 2 + 4; len(b) != want {
		t.Errorf("%d bytes, want %d", len(b), want)
	}
	got, err := ParseLoadOption(b)
	if err != nil {
		t.Fatal(err)
	}
	if *got != o {
		t.Errorf("round trip: %+v, want %+v", got, o)
	}
	for i := range b {
		ParseLoadOption(b[:i]) // must not panic
	}
}

func TestEntriesAndOrder(t *testing.T) {
	v := MemVars{}
	writeU16s(v, varBootOrder, []uint16{0, 1})
	v.Set(bootVar(0), VarAttrs, LoadOption{Description: "UiApp"}.Marshal())
	v.Set(bootVar(1), VarAttrs, LoadOption{Description: "UEFI disk"}.Marshal())
	a, err := SetEntry(v, LoadOption{Description: "osguard slot B", Path: `\b`})
	if err != nil || a != 2 {
		t.Fatalf("SetEntry = %d, %v; want 2", a, err)
	}
	again, _ := SetEntry(v, LoadOption{Description: "osguard slot B", Path: `\b2`})
	if again != a {
		t.Errorf("the same description got a new entry %d", again)
	}
	if e, _ := Entry(v, a); e.Path != `\b2` {
		t.Errorf("entry not replaced: %+v", e)
	}
	if err := SetBootNext(v, a); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := BootNext(v); !ok || n != a || err != nil {
		t.Errorf("BootNext = %d %v %v", n, ok, err)
	}
	ClearBootNext(v)
	ClearBootNext(v)
	if _, ok, _ := BootNext(v); ok {
		t.Error("BootNext still set")
	}
	SetFirst(v, a)
	if o, _ := BootOrder(v); !slices.Equal(o, []uint16{2, 0, 1}) {
		t.Errorf("BootOrder %v", o)
	}
	SetFirst(v, 1)
	if o, _ := BootOrder(v); !slices.Equal(o, []uint16{1, 2, 0}) {
		t.Errorf("BootOrder %v", o)
	}
}
