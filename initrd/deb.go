package initrd

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/osguard/osguard/deb"
)

// maxTreeFile bounds one file kept in memory from a kernel package.
const maxTreeFile = 256 << 20

// maxTreeTotal bounds all the files kept in memory from a kernel package: a
// compressed data.tar of a few MB could otherwise expand to any size.
const maxTreeTotal = 2 << 30

// ErrNotDeb is returned for a file that is not an ar archive.
var ErrNotDeb = deb.ErrNotDeb

// ReadDeb reads a Debian kernel package (linux-image-*.deb): it keeps the
// kernel image, its config and the modules tree in memory and returns them as
// a Kernel.
func ReadDeb(debPath string) (*Kernel, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return nil, fmt.Errorf("initrd: read deb: %w", err)
	}
	defer f.Close()
	k, err := readDeb(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("initrd: read deb %s: %w", debPath, err)
	}
	return k, nil
}

func readDeb(r io.Reader) (*Kernel, error) {
	d, err := deb.NewReader(r)
	if err != nil {
		return nil, err
	}
	tr, closer, err := d.Member("data.tar")
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return kernelFromTar(tr)
}

// kernelFromTar keeps what an initramfs build needs: /boot/vmlinuz-*,
// /boot/config-* and everything under (usr/)lib/modules/.
func kernelFromTar(tr *tar.Reader) (*Kernel, error) {
	files := memFS{}
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data.tar: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if !keepInTree(name) {
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if h.Size > maxTreeFile {
				return nil, fmt.Errorf("data.tar: %s: too large (%d bytes)", name, h.Size)
			}
			if total += h.Size; total > maxTreeTotal {
				return nil, fmt.Errorf("data.tar: %s: the kernel files exceed %d bytes", name, int64(maxTreeTotal))
			}
			// The declared size is not trusted for the first allocation:
			// a header of a truncated archive may claim maxTreeFile.
			var b bytes.Buffer
			b.Grow(int(min(h.Size, 1<<20)))
			if _, err := io.Copy(&b, tr); err != nil {
				return nil, fmt.Errorf("data.tar: %s: %w", name, err)
			}
			files[name] = b.Bytes()
		case tar.TypeSymlink:
			files[name] = nil // listed, unreadable: links are not needed for the closure
		}
	}
	return newKernel(files)
}

func keepInTree(name string) bool {
	return strings.HasPrefix(name, "boot/vmlinuz-") || strings.HasPrefix(name, "boot/config-") ||
		strings.HasPrefix(name, "usr/lib/modules/") || strings.HasPrefix(name, "lib/modules/")
}
