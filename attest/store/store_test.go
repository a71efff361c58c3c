package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/internal/pgtest"
)

func TestNonceOnceSQLite(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "v.db")
	testNonceOnce(t, dsn)
}

func TestNonceOncePostgres(t *testing.T) { testNonceOnce(t, pgtest.Start(t)) }

// testNonceOnce races two stores on one database (two replicas) over the
// same nonces: each nonce is consumed, and its result stored, exactly once.
func testNonceOnce(t *testing.T, dsn string) {
	ctx := context.Background()
	var stores []*store.Store
	for i := 0; i < 2; i++ {
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	if err := stores[0].PutNode(ctx, "n", "ek", "ak"); err != nil {
		t.Fatal(err)
	}
	const nonces, racers = 50, 8
	for i := 0; i < nonces; i++ {
		if err := stores[i%2].PutNonce(ctx, fmt.Sprintf("nonce-%d", i), "n"); err != nil {
			t.Fatal(err)
		}
	}
	var won, lost atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < racers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; i < nonces; i++ {
				err := stores[r%2].Record(ctx, store.Result{Node: "n", Nonce: fmt.Sprintf("nonce-%d", i), State: "trusted"})
				switch {
				case err == nil:
					won.Add(1)
				case errors.Is(err, store.ErrNonce):
					lost.Add(1)
				default:
					t.Error(err)
				}
			}
		}(r)
	}
	wg.Wait()
	if won.Load() != nonces || lost.Load() != nonces*(racers-1) {
		t.Fatalf("%d nonces used, %d refused; want %d and %d", won.Load(), lost.Load(), nonces, nonces*(racers-1))
	}
	if n, err := stores[1].CountResults(ctx, "n"); err != nil || n != nonces {
		t.Fatalf("%d results: %v", n, err)
	}
	// Another node cannot use a node's nonce, and a used one stays used.
	stores[0].PutNonce(ctx, "x", "n")
	if err := stores[1].Record(ctx, store.Result{Node: "m", Nonce: "x"}); !errors.Is(err, store.ErrNonce) {
		t.Fatalf("foreign nonce: %v", err)
	}
}

func TestOpenRejects(t *testing.T) {
	for _, dsn := range []string{"", "sqlite:", "mysql://x", "postgres"} {
		if s, err := store.Open(context.Background(), dsn); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", dsn)
		}
	}
}

// TestFailingRecordAmongOthers stores many results at once, where they
// share transactions, one of which cannot be stored (its nonce is live but
// a result already holds it): that one fails, every other is stored.
func TestFailingRecordAmongOthersSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.db")
	testFailingRecordAmongOthers(t, "sqlite:"+path, "sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
}

func TestFailingRecordAmongOthersPostgres(t *testing.T) {
	dsn := pgtest.Start(t)
	testFailingRecordAmongOthers(t, dsn, "pgx", dsn)
}

func testFailingRecordAmongOthers(t *testing.T, dsn, driver, driverDSN string) {
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutNode(ctx, "n", "ek", "ak"); err != nil {
		t.Fatal(err)
	}
	const records = 40
	for i := 0; i < records; i++ {
		if err := s.PutNonce(ctx, fmt.Sprint("nonce-", i), "n"); err != nil {
			t.Fatal(err)
		}
	}
	// A result under nonce-7 that did not consume it: only another
	// process writing to the file can make this state.
	db, err := sql.Open(driver, driverDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO results (nonce, node, image, version, state, reason, at) VALUES ('nonce-7', 'n', '', '', 'trusted', '', 0)`); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, records)
	var wg sync.WaitGroup
	for i := 0; i < records; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = s.Record(ctx, store.Result{Node: "n", Nonce: fmt.Sprint("nonce-", i), State: "trusted"})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			if err == nil || errors.Is(err, store.ErrNonce) {
				t.Errorf("nonce-7: %v, want a database error", err)
			}
		} else if err != nil {
			t.Errorf("nonce-%d: %v", i, err)
		}
	}
	if n, err := s.CountResults(ctx, "n"); err != nil || n != records {
		t.Fatalf("%d results stored, want %d: %v", n, records, err)
	}
}
