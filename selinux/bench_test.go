package selinux_test

import (
	"testing"

	"github.com/osguard/osguard/selinux"
)

func BenchmarkLookup(b *testing.B) {
	c, err := selinux.LoadFileContexts(debianFC)
	if err != nil {
		b.Skip(err)
	}
	paths := []string{"/usr/lib/go/src/net/http/server.go", "/usr/bin/ls", "/etc/ssh/sshd_config", "/var/lib/dpkg/status", "/usr/share/doc/bash/README"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Lookup(paths[i%len(paths)], 0)
	}
}
