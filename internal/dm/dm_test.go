package dm

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// statusBuffer lays out a DM_TABLE_STATUS reply the way dm-ioctl.c's
// retrieve_status does: records from data_start, each spec's next being
// the offset of the following record from the start of the data area.
func statusBuffer(targets []Target) ([]byte, dmIoctl) {
	var data bytes.Buffer
	for _, t := range targets {
		params := append([]byte(t.Params), 0)
		for (dmTargetSpecSize+len(params))%8 != 0 {
			params = append(params, 0)
		}
		spec := dmTargetSpec{SectorStart: t.Start, Length: t.Length,
			Next: uint32(data.Len() + dmTargetSpecSize + len(params))}
		copy(spec.TargetType[:], t.Type)
		binary.Write(&data, binary.NativeEndian, &spec)
		data.Write(params)
	}
	h := dmIoctl{DataStart: dmIoctlSize, TargetCount: uint32(len(targets))}
	h.DataSize = uint32(dmIoctlSize + data.Len())
	buf := make([]byte, dmIoctlSize, int(h.DataSize))
	return append(buf, data.Bytes()...), h
}

func TestParseTargets(t *testing.T) {
	want := []Target{
		{0, 2048, "linear", "254:1 0"},
		{2048, 10592, "verity", "1 253:1 253:2 4096 4096 1324 1 sha256 aa 5a 2 root_hash_sig_key_desc k"},
		{12640, 8, "zero", ""},
	}
	buf, h := statusBuffer(want)
	got, err := parseTargets(buf, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d targets", len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d: got %+v want %+v", i, got[i], want[i])
		}
	}
	if got[1].String() != "2048 10592 verity "+want[1].Params {
		t.Errorf("String: %q", got[1])
	}
}

func FuzzParseTargets(f *testing.F) {
	buf, h := statusBuffer([]Target{{0, 8, "verity", "x"}, {8, 8, "zero", ""}})
	f.Add(buf[dmIoctlSize:], uint32(2))
	f.Fuzz(func(t *testing.T, data []byte, n uint32) {
		h.TargetCount = n % 64
		b := append(make([]byte, dmIoctlSize), data...)
		h.DataSize = uint32(len(b))
		parseTargets(b, h) // must not panic
	})
}

func TestIoctlNumbers(t *testing.T) {
	// DM_TABLE_LOAD from <linux/dm-ioctl.h> on x86-64 is 0xc138fd09.
	if got := ioctlNum(DM_TABLE_LOAD_CMD); got != 0xc138fd09 {
		t.Fatalf("DM_TABLE_LOAD = %#x", got)
	}
	if got := ioctlNum(DM_DEV_CREATE_CMD); got != 0xc138fd03 {
		t.Fatalf("DM_DEV_CREATE = %#x", got)
	}
}
