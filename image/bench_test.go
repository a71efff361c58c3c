package image_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// BenchmarkBuildDefault measures a warm build of the default image (keys
// and fetched artifacts present). Goal: at most 5 s.
func BenchmarkBuildDefault(b *testing.B) {
	f := getFixture(b)
	for i := 0; i < b.N; i++ {
		if _, err := f.build("", filepath.Join(b.TempDir(), "out"), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBootToShell measures QEMU start to the userland's shell prompt
// under TCG with OVMF Secure Boot and a swtpm TPM. Goal: at most 10 s.
func BenchmarkBootToShell(b *testing.B) {
	f := getFixture(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		m := vmtest.Start(b, vm.Config{
			UEFI: true, Vars: filepath.Join(f.out, image.VarsFile), TPM: true,
			Drives: []vm.Drive{{Path: filepath.Join(f.out, image.DiskFile), Snapshot: true}},
		})
		if _, err := m.WaitForText(vm.ShellPrompt, 0, bootTimeout); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		m.Close()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/boot")
}

// BenchmarkBuildContainerHost measures a warm build of the containerhost
// profile: apt's answer and the unpacked packages are in the cache, so the
// build reads the root tar in place and writes EROFS, verity, initramfs, UKI
// and disk. Goal: at most 10 s on the 2-core machine. The peak RSS of the
// process is reported too (maxrss, in MB).
func BenchmarkBuildContainerHost(b *testing.B) {
	f := getFixture(b)
	cfg, err := image.LoadProfile("containerhost")
	if err != nil {
		b.Fatal(err)
	}
	build := func() {
		if _, err := image.Build(image.BuildOptions{
			Config: cfg, OutDir: filepath.Join(b.TempDir(), "out"), KeysDir: f.keys, Epoch: testEpoch,
			InitBinary: filepath.Join(f.bins, "osguard-init"), OsguardBinary: filepath.Join(f.bins, "osguard"),
		}); err != nil {
			b.Fatal(err)
		}
	}
	build() // warm the caches
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		build()
	}
	b.StopTimer()
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss-MB")
}
