// Command osguard-testregistry runs Debian's docker-registry on 127.0.0.1
// for the demo and for VM tests that need the registry's port before the
// VM starts (internal/registrytest.Launch). It prints "127.0.0.1:PORT" on
// stdout once /v2/ answers, and stops the registry on SIGINT or SIGTERM.
// It is a test fixture: plain HTTP, no authentication, loopback only.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/osguard/osguard/internal/registrytest"
)

func main() {
	dir := flag.String("dir", "", "keep config, storage and log in `DIR` (default: a temporary directory, removed on exit)")
	addr := flag.String("addr", "", "listen on `127.0.0.1:PORT` (default: a free port)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: osguard-testregistry [-dir DIR] [-addr 127.0.0.1:PORT]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg, err := registrytest.Launch(ctx, registrytest.Options{Dir: *dir, Addr: *addr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "osguard-testregistry:", err)
		os.Exit(1)
	}
	fmt.Println(reg.Addr)
	<-ctx.Done()
	if err := reg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "osguard-testregistry:", err)
		os.Exit(1)
	}
}
