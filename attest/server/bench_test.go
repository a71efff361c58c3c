package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/internal/simnode"
	"github.com/osguard/osguard/attest/server"
	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/internal/pgtest"
)

// The verification benchmarks measure what one attestation costs the
// verifier: the nonce lookup, the quote signature (RSA-2048, as swtpm's
// AK), the event-log parse and replay, the verdict, and the transaction
// that consumes the nonce and stores the result. The quotes are signed
// before the clock starts. With PostgreSQL, verifications/cpu-s-with-db
// counts the server's processes too (read from /proc). Run per core with
//
//	go test -run XXX -bench Verify -benchtime 4000x -cpu 1 ./attest/server
func BenchmarkVerifySQLite(b *testing.B)   { benchVerify(b, sqliteDSN(b)) }
func BenchmarkVerifyPostgres(b *testing.B) { benchVerify(b, pgtest.Start(b)) }

func benchVerify(b *testing.B, dsn string) {
	f := newFixture(b, dsn)
	const nodes = 16
	sims := make([]*simnode.Node, nodes)
	for i := range sims {
		sims[i] = f.node(b, fmt.Sprintf("bench-%d", i), true)
	}
	bodies := make([][]byte, b.N)
	ctx := context.Background()
	for i := range bodies {
		n := sims[i%nodes]
		nonce := store.Random(32)
		if err := f.st.PutNonce(ctx, hex.EncodeToString(nonce), n.Name); err != nil {
			b.Fatal(err)
		}
		req, err := n.Request(nonce)
		if err != nil {
			b.Fatal(err)
		}
		bodies[i], _ = json.Marshal(req)
	}
	var next atomic.Int64
	b.SetParallelism(8) // goroutines per GOMAXPROCS: PostgreSQL round trips overlap
	db := postgresPID(b, dsn)
	db0 := processTreeCPU(b, db) // read /proc before the verifier's clock starts
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			r := httptest.NewRequest("POST", "/v1/attest", bytes.NewReader(bodies[i]))
			w := httptest.NewRecorder()
			f.h.ServeHTTP(w, r)
			if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"trusted"`)) {
				b.Errorf("attest: %d %s", w.Code, w.Body.Bytes())
				return
			}
		}
	})
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
	// The machine is shared: CPU time says what a core does, wall time
	// what this run got.
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "verifications/cpu-s")
	if db != 0 {
		// PostgreSQL's server processes work for each verification too:
		// counted with the verifier's, this is what a core does for both.
		b.ReportMetric(float64(b.N)/(cpu+processTreeCPU(b, db)-db0).Seconds(), "verifications/cpu-s-with-db")
	}
	if n, _ := f.st.CountResults(ctx, ""); n != b.N {
		b.Fatalf("%d results stored for %d verifications", n, b.N)
	}
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresPID returns the PID of the PostgreSQL server that dsn connects to
// (the postmaster whose command line has -p PORT), 0 for SQLite.
func postgresPID(tb testing.TB, dsn string) int {
	u, err := url.Parse(dsn)
	if err != nil || !strings.HasPrefix(u.Scheme, "postgres") {
		return 0
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		args := strings.Split(string(b), "\x00")
		if filepath.Base(args[0]) != "postgres" {
			continue
		}
		for i := range args[:len(args)-1] {
			if args[i] == "-p" && args[i+1] == u.Port() {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
	}
	tb.Fatalf("no postgres process with -p %s", u.Port())
	return 0
}

// processTreeCPU is the user plus system CPU time of pid, of its living
// children and of those it has waited for (/proc/PID/stat, in clock ticks
// of 1/100 s, what Linux reports on every architecture Go runs on).
func processTreeCPU(tb testing.TB, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	fields := func(p string) []string {
		b, err := os.ReadFile(filepath.Join("/proc", p, "stat"))
		if err != nil {
			return nil // a backend that ended: its parent counts it once waited for
		}
		s := string(b)
		return strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 (state) on
	}
	ticks := func(f []string, idx ...int) (n int64) {
		for _, i := range idx {
			v, _ := strconv.ParseInt(f[i-3], 10, 64)
			n += v
		}
		return n
	}
	root := fields(strconv.Itoa(pid))
	if root == nil {
		tb.Fatalf("postgres %d has ended", pid)
	}
	total := ticks(root, 14, 15, 16, 17) // utime, stime, cutime, cstime
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if f := fields(filepath.Base(d)); f != nil && f[1] == strconv.Itoa(pid) { // field 4: ppid
			total += ticks(f, 14, 15)
		}
	}
	return time.Duration(total) * 10 * time.Millisecond
}

// TestLoadTwoReplicas is the load test: 1,000 simulated nodes attest 10
// times each against two verifier replicas on one PostgreSQL database, each
// nonce asked from one replica and the quote sent to the other. It reports
// p50 and p99 of an attestation's latency (nonce plus attest, signing
// excluded) and checks that every result was stored once and every node
// is trusted. Skipped with -short.
func TestLoadTwoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	dsn := pgtest.Start(t)
	f := newFixture(t, dsn) // registers the policy
	const nodes, rounds, workers = 1000, 10, 32
	var urls []string
	for i := 0; i < 2; i++ {
		st, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		srv := &server.Server{Store: st, Token: token}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: srv.Handler()}
		go hs.Serve(ln)
		defer hs.Close()
		urls = append(urls, "http://"+ln.Addr().String())
	}
	sims := make([]*simnode.Node, nodes)
	for i := range sims {
		n, err := simnode.New(fmt.Sprintf("load-%04d", i), f.ev.PCRs, f.ev.EventLog, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.st.PutNode(context.Background(), n.Name, "", base64.StdEncoding.EncodeToString(n.AKPublic)); err != nil {
			t.Fatal(err)
		}
		sims[i] = n
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: time.Minute}
	post := func(url string, body []byte, out any) error {
		res, err := hc.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("%s: %s", url, res.Status)
		}
		return json.NewDecoder(res.Body).Decode(out)
	}
	jobs := make(chan int)
	var mu sync.Mutex
	var lat []time.Duration
	var failures atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				n := sims[j%nodes]
				a, b := urls[j%2], urls[(j+1)%2]
				t0 := time.Now()
				var nr api.NonceResponse
				if err := post(a+"/v1/nonce", []byte(`{"node":"`+n.Name+`"}`), &nr); err != nil {
					failures.Add(1)
					t.Error(err)
					continue
				}
				signStart := time.Now()
				req, err := n.Request(nr.Nonce)
				if err != nil {
					t.Error(err)
					continue
				}
				body, _ := json.Marshal(req)
				signed := time.Since(signStart)
				var v api.Verdict
				if err := post(b+"/v1/attest", body, &v); err != nil || v.State != api.Trusted {
					failures.Add(1)
					t.Errorf("attest %s: %v %+v", n.Name, err, v)
					continue
				}
				d := time.Since(t0) - signed
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	for j := 0; j < nodes*rounds; j++ {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	total := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		t.Fatal("no attestation succeeded")
	}
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("load: %d attestations (%d nodes × %d) through 2 replicas, %d clients: %v total, %.0f attestations/s; latency p50 %v, p99 %v, max %v; %d failures",
		len(lat), nodes, rounds, workers, total.Round(time.Millisecond), float64(len(lat))/total.Seconds(),
		p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond), failures.Load())
	ctx := context.Background()
	if n, err := f.st.CountResults(ctx, ""); err != nil || n != nodes*rounds {
		t.Fatalf("%d results stored, want %d (lost or duplicated): %v", n, nodes*rounds, err)
	}
	for _, i := range []int{0, nodes / 2, nodes - 1} {
		if n, _ := f.st.CountResults(ctx, sims[i].Name); n != rounds {
			t.Errorf("node %s: %d results, want %d", sims[i].Name, n, rounds)
		}
	}
	ns, err := f.st.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	trusted := 0
	for _, n := range ns {
		if n.State == api.Trusted {
			trusted++
		}
	}
	if trusted != nodes {
		t.Fatalf("%d of %d nodes trusted", trusted, nodes)
	}
}
