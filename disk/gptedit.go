package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ReadWriterAt is a disk that can be edited in place.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// SetPartitionUUIDs changes the unique GUIDs of partitions (by 1-based
// index) in both the primary and the backup GPT of a disk with 512-byte
// sectors, and fixes their CRC32s. The backup is written first, so that a
// crash leaves at least one table whole; the firmware and the kernel repair
// the other from it. A UUID that another partition already carries is
// refused.
func SetPartitionUUIDs(d ReadWriterAt, uuids map[int]GUID) error {
	primary, err := readGPTHeader(d, 1)
	if err != nil {
		return fmt.Errorf("disk: primary GPT: %w", err)
	}
	backupLBA := binary.LittleEndian.Uint64(primary[32:])
	backup, err := readGPTHeader(d, backupLBA)
	if err != nil {
		return fmt.Errorf("disk: backup GPT at LBA %d: %w", backupLBA, err)
	}
	for _, h := range []struct {
		hdr []byte
		lba uint64
	}{{backup, backupLBA}, {primary, 1}} {
		if err := setUUIDs(d, h.hdr, h.lba, uuids); err != nil {
			return err
		}
	}
	return nil
}

func readGPTHeader(d io.ReaderAt, lba uint64) ([]byte, error) {
	h := make([]byte, sectorSize)
	if _, err := d.ReadAt(h, int64(lba)*sectorSize); err != nil {
		return nil, err
	}
	if string(h[:8]) != "EFI PART" {
		return nil, errors.New("no EFI PART signature")
	}
	size := binary.LittleEndian.Uint32(h[12:])
	if size < gptHeaderSize || size > sectorSize {
		return nil, fmt.Errorf("header size %d", size)
	}
	c := make([]byte, size)
	copy(c, h[:size])
	binary.LittleEndian.PutUint32(c[16:], 0)
	if crc32.ChecksumIEEE(c) != binary.LittleEndian.Uint32(h[16:]) {
		return nil, errors.New("bad header CRC32")
	}
	return h, nil
}

func setUUIDs(d ReadWriterAt, h []byte, lba uint64, uuids map[int]GUID) error {
	n := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if n == 0 || n > 1024 || esize < 128 || esize > 1024 || esize%8 != 0 {
		return fmt.Errorf("disk: GPT at LBA %d: %d entries of %d bytes", lba, n, esize)
	}
	entLBA := binary.LittleEndian.Uint64(h[72:])
	arr := make([]byte, int(n)*int(esize))
	if _, err := d.ReadAt(arr, int64(entLBA)*sectorSize); err != nil {
		return fmt.Errorf("disk: GPT entries at LBA %d: %w", entLBA, err)
	}
	if crc32.ChecksumIEEE(arr) != binary.LittleEndian.Uint32(h[88:]) {
		return fmt.Errorf("disk: GPT entries at LBA %d: bad CRC32", entLBA)
	}
	for idx, u := range uuids {
		if idx < 1 || idx > int(n) {
			return fmt.Errorf("disk: no partition %d", idx)
		}
		e := arr[(idx-1)*int(esize):]
		if isZero(e[:16]) {
			return fmt.Errorf("disk: partition %d is unused", idx)
		}
		me := u.mixedEndian()
		for j := 0; j < int(n); j++ {
			o := arr[j*int(esize):]
			if j != idx-1 && !isZero(o[:16]) && string(o[16:32]) == string(me[:]) {
				if _, again := uuids[j+1]; !again {
					return fmt.Errorf("disk: UUID %s is already partition %d's", u, j+1)
				}
			}
		}
		copy(e[16:32], me[:])
	}
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
	size := binary.LittleEndian.Uint32(h[12:])
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:size]))
	if _, err := d.WriteAt(arr, int64(entLBA)*sectorSize); err != nil {
		return fmt.Errorf("disk: write GPT entries: %w", err)
	}
	if _, err := d.WriteAt(h, int64(lba)*sectorSize); err != nil {
		return fmt.Errorf("disk: write GPT header: %w", err)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
