// Package store keeps the verifier's state in SQL: registered image
// versions, enrollment challenges, nonces, nodes and every attestation
// result. One database/sql code path serves SQLite (modernc.org/sqlite, pure
// Go, the embedded default) and PostgreSQL (pgx's stdlib driver), so that
// verifier processes on one PostgreSQL database are stateless replicas.
//
// Concurrency rests on the database: a nonce is consumed by one
// conditional UPDATE whose row count says who won, a challenge by one
// DELETE, and a result is stored in the same transaction as the nonce it
// consumed, under a unique key on that nonce. Two replicas can therefore
// neither accept one nonce twice nor lose or duplicate a result. Results
// that arrive together are stored in one transaction by a writer goroutine
// (group commit; on PostgreSQL one pipelined round trip); each is still
// judged on its own nonce.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // driver "pgx"
	_ "modernc.org/sqlite"           // driver "sqlite"

	"github.com/osguard/osguard/attest/api"
)

// Lifetimes of single-use values.
const (
	NonceTTL     = 5 * time.Minute
	ChallengeTTL = 5 * time.Minute
)

// Errors callers map to HTTP answers.
var (
	ErrNotFound = errors.New("store: not found")
	// ErrNonce means the nonce is unknown, expired, already used, or not the node's.
	ErrNonce = errors.New("store: nonce unknown, expired or already used")
)

// Store is an open verifier database.
type Store struct {
	db       *sql.DB
	postgres bool
	// Statements of every attestation, prepared once: parsing SQL costs
	// SQLite as much as running it.
	stNodeAK, stCheckNonce, stPutNonce, stUseNonce, stInsertResult, stUpdateNode *sql.Stmt
	// Records go to the writer goroutine (group commit).
	records    chan *recordOp
	quit       chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
}

// prepare prepares the hot statements.
func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&s.stNodeAK, `SELECT ak FROM nodes WHERE node = ?`},
		{&s.stCheckNonce, `SELECT n.ak, (SELECT COUNT(*) FROM nonces x WHERE x.nonce = ? AND x.node = n.node AND x.used = 0 AND x.expires > ?)
			FROM nodes n WHERE n.node = ?`},
		{&s.stPutNonce, `INSERT INTO nonces (nonce, node, expires) VALUES (?, ?, ?)`},
		{&s.stUseNonce, `UPDATE nonces SET used = 1 WHERE nonce = ? AND node = ? AND used = 0 AND expires > ?`},
		{&s.stInsertResult, `INSERT INTO results (nonce, node, image, version, state, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)`},
		{&s.stUpdateNode, `UPDATE nodes SET image = ?, version = ?, state = ?, reason = ?, last_seen = ? WHERE node = ?`},
	} {
		st, err := s.db.PrepareContext(ctx, s.q(p.q))
		if err != nil {
			return fmt.Errorf("store: prepare: %w", err)
		}
		*p.st = st
	}
	return nil
}

// recordSQL is Record as one PostgreSQL statement (data-modifying CTEs):
// use the nonce, insert the result, update the node. It affects one row
// when the nonce was live. SQLite has no such CTEs and no round trips; it
// runs the three statements in a transaction.
const recordSQL = `WITH used AS (
				UPDATE nonces SET used = 1 WHERE nonce = $1 AND node = $2 AND used = 0 AND expires > $3 RETURNING nonce),
			stored AS (
				INSERT INTO results (nonce, node, image, version, state, reason, at)
				SELECT nonce, $2, $4, $5, $6, $7, $3 FROM used RETURNING node)
			UPDATE nodes SET image = $4, version = $5, state = $6, reason = $7, last_seen = $3
			FROM stored WHERE nodes.node = stored.node`

// Open opens the database named by dsn: "sqlite:PATH" or
// "postgres://…" (also "postgresql://…"), and creates the tables.
func Open(ctx context.Context, dsn string) (*Store, error) {
	s := &Store{}
	var err error
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" {
			return nil, errors.New("store: sqlite: empty path (sqlite:PATH)")
		}
		s.db, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
		if err == nil {
			// One writer at a time is all SQLite does; one connection
			// avoids SQLITE_BUSY between our own goroutines.
			s.db.SetMaxOpenConns(1)
		}
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.postgres = true
		s.db, err = sql.Open("pgx", dsn)
		if err == nil {
			s.db.SetMaxOpenConns(16)
			s.db.SetMaxIdleConns(16)
		}
	default:
		return nil, fmt.Errorf("store: DSN %q: want sqlite:PATH or postgres://…", redact(dsn))
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	s.records = make(chan *recordOp, maxBatch)
	s.quit, s.writerDone = make(chan struct{}), make(chan struct{})
	go s.writer()
	return s, nil
}

// redact hides a password in a DSN for error messages.
func redact(dsn string) string {
	if i := strings.Index(dsn, "@"); i >= 0 {
		if j := strings.Index(dsn, "://"); j >= 0 && j < i {
			return dsn[:j+3] + "…" + dsn[i:]
		}
	}
	return dsn
}

// Close stops the SQLite writer, after the batch it is storing, and
// closes the database. Records that were waiting get an error.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.writerDone
		s.failWaiting()
	})
	return s.db.Close()
}

// failWaiting answers the Records left in the queue when the writer ended.
func (s *Store) failWaiting() {
	for {
		select {
		case op := <-s.records:
			op.done <- errClosed
		default:
			return
		}
	}
}

// schema is portable SQL: TEXT and BIGINT only, binary values in base64 or
// hex, times as Unix nanoseconds.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS policies (
		image TEXT NOT NULL, version TEXT NOT NULL, measurements TEXT NOT NULL, added BIGINT NOT NULL,
		PRIMARY KEY (image, version))`,
	`CREATE TABLE IF NOT EXISTS challenges (
		id TEXT PRIMARY KEY, node TEXT NOT NULL, ek TEXT NOT NULL, ak TEXT NOT NULL,
		secret TEXT NOT NULL, expires BIGINT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS nodes (
		node TEXT PRIMARY KEY, ek TEXT NOT NULL, ak TEXT NOT NULL,
		image TEXT NOT NULL DEFAULT '', version TEXT NOT NULL DEFAULT '',
		state TEXT NOT NULL DEFAULT 'untrusted', reason TEXT NOT NULL DEFAULT 'not attested yet',
		last_seen BIGINT NOT NULL DEFAULT 0)`,
	`CREATE TABLE IF NOT EXISTS nonces (
		nonce TEXT PRIMARY KEY, node TEXT NOT NULL, expires BIGINT NOT NULL, used INTEGER NOT NULL DEFAULT 0)`,
	`CREATE TABLE IF NOT EXISTS results (
		nonce TEXT PRIMARY KEY, node TEXT NOT NULL, image TEXT NOT NULL, version TEXT NOT NULL,
		state TEXT NOT NULL, reason TEXT NOT NULL, at BIGINT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS results_node ON results (node)`,
}

func (s *Store) migrate(ctx context.Context) error {
	for _, q := range schema {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			// Replicas starting together may race on CREATE in PostgreSQL.
			if s.postgres && strings.Contains(err.Error(), "already exists") {
				continue
			}
			return fmt.Errorf("store: create tables: %w", err)
		}
	}
	return nil
}

// q rewrites ? placeholders to $n for PostgreSQL.
func (s *Store) q(query string) string {
	if !s.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func now() int64 { return time.Now().UnixNano() }

// Random returns n random bytes (nonces, challenge ids, tokens).
func Random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return b
}

// PutPolicy registers (or replaces) an image version's measurements.json.
func (s *Store) PutPolicy(ctx context.Context, image, version string, measurements []byte) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO policies (image, version, measurements, added) VALUES (?, ?, ?, ?)
		ON CONFLICT (image, version) DO UPDATE SET measurements = excluded.measurements, added = excluded.added`),
		image, version, string(measurements), now())
	if err != nil {
		return fmt.Errorf("store: put policy: %w", err)
	}
	return nil
}

// DeletePolicy removes an image version; ErrNotFound when it is absent.
func (s *Store) DeletePolicy(ctx context.Context, image, version string) error {
	r, err := s.db.ExecContext(ctx, s.q(`DELETE FROM policies WHERE image = ? AND version = ?`), image, version)
	if err != nil {
		return fmt.Errorf("store: delete policy: %w", err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// Policies returns every registered measurements.json, oldest first.
func (s *Store) Policies(ctx context.Context) ([][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT measurements FROM policies ORDER BY added, image, version`)
	if err != nil {
		return nil, fmt.Errorf("store: policies: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, fmt.Errorf("store: policies: %w", err)
		}
		out = append(out, []byte(m))
	}
	return out, rows.Err()
}

// PutChallenge stores an enrollment challenge.
func (s *Store) PutChallenge(ctx context.Context, id, node, ek, ak, secret string) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO challenges (id, node, ek, ak, secret, expires) VALUES (?, ?, ?, ?, ?, ?)`),
		id, node, ek, ak, secret, time.Now().Add(ChallengeTTL).UnixNano())
	if err != nil {
		return fmt.Errorf("store: put challenge: %w", err)
	}
	return nil
}

// Challenge is a pending enrollment.
type Challenge struct {
	Node, EK, AK, Secret string
}

// TakeChallenge removes and returns an unexpired challenge: it can be
// answered once.
func (s *Store) TakeChallenge(ctx context.Context, id string) (*Challenge, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	var c Challenge
	var expires int64
	err = tx.QueryRowContext(ctx, s.q(`SELECT node, ek, ak, secret, expires FROM challenges WHERE id = ?`), id).Scan(&c.Node, &c.EK, &c.AK, &c.Secret, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: challenge: %w", err)
	}
	r, err := tx.ExecContext(ctx, s.q(`DELETE FROM challenges WHERE id = ?`), id)
	if err != nil {
		return nil, fmt.Errorf("store: challenge: %w", err)
	}
	if n, _ := r.RowsAffected(); n != 1 {
		return nil, ErrNotFound // another replica took it
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: challenge: %w", err)
	}
	if expires < now() {
		return nil, ErrNotFound
	}
	return &c, nil
}

// PutNode records a node whose AK was bound to its EK. A node that
// enrolls again (a new AK after a reboot) keeps its last verdict.
func (s *Store) PutNode(ctx context.Context, node, ek, ak string) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO nodes (node, ek, ak, last_seen) VALUES (?, ?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET ek = excluded.ek, ak = excluded.ak`), node, ek, ak, now())
	if err != nil {
		return fmt.Errorf("store: put node: %w", err)
	}
	return nil
}

// NodeAK returns the bound AK of a node.
func (s *Store) NodeAK(ctx context.Context, node string) (string, error) {
	var ak string
	err := s.stNodeAK.QueryRowContext(ctx, node).Scan(&ak)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("store: node: %w", err)
	}
	return ak, nil
}

// PutNonce stores a fresh nonce for a node.
func (s *Store) PutNonce(ctx context.Context, nonce, node string) error {
	_, err := s.stPutNonce.ExecContext(ctx, nonce, node, time.Now().Add(NonceTTL).UnixNano())
	if err != nil {
		return fmt.Errorf("store: put nonce: %w", err)
	}
	return nil
}

// Attesting returns the AK of a node about to attest with nonce, after
// checking, without using it, that the nonce is live and the node's:
// ErrNotFound for an unknown node, ErrNonce for a nonce that is not.
func (s *Store) Attesting(ctx context.Context, node, nonce string) (string, error) {
	var ak string
	var live int
	err := s.stCheckNonce.QueryRowContext(ctx, nonce, now(), node).Scan(&ak, &live)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("store: nonce: %w", err)
	}
	if live != 1 {
		return "", ErrNonce
	}
	return ak, nil
}

// Result is one verdict to store.
type Result struct {
	Node, Nonce, Image, Version, State, Reason string
}

// Record consumes the nonce and stores the result and the node's new
// state in one transaction. ErrNonce when the nonce was not live: then
// nothing is stored.
//
// Records that arrive together share one transaction (group commit, see
// writer). On SQLite a commit, its WAL frames and their writes cost more
// than the three statements of a result, and one writer is all SQLite has
// anyway; on PostgreSQL the batch is one pipeline, a round trip for all.
// Each Record still learns its own outcome, and it returns only after the
// transaction holding its result committed.
func (s *Store) Record(ctx context.Context, r Result) error {
	op := &recordOp{ctx: ctx, r: r, done: make(chan error, 1)}
	select {
	case s.records <- op:
	case <-s.quit:
		return errClosed
	}
	select {
	case err := <-op.done:
		return err
	case <-s.writerDone:
		// The writer answers before it ends: take its answer if any.
		select {
		case err := <-op.done:
			return err
		default:
			return errClosed
		}
	}
}

var errClosed = errors.New("store: closed")

// recordOp is a Record waiting for the writer.
type recordOp struct {
	ctx  context.Context
	r    Result
	done chan error // buffered: the writer never waits for the caller
}

// maxBatch bounds the Records that share one transaction, and so
// how long the first of them waits for the last.
const maxBatch = 64

// writer stores the Records, each batch of those that are waiting in one
// transaction.
func (s *Store) writer() {
	defer close(s.writerDone)
	batch := make([]*recordOp, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-s.records:
			batch = append(batch, op)
		case <-s.quit:
			return
		}
		// Requests being verified on this processor reach Record now,
		// before the transaction, instead of waiting for the next one.
		// With nothing else to run this returns at once.
		runtime.Gosched()
	fill:
		for len(batch) < maxBatch {
			select {
			case op := <-s.records:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit stores a batch and answers each of its Records.
func (s *Store) commit(batch []*recordOp) {
	live := batch[:0:0]
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.done <- err // the caller has gone: its nonce stays unused
			continue
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	errs, err := s.recordBatch(live)
	if err != nil && len(live) > 1 {
		// Nothing of the batch was committed. One failing Record must
		// not fail the others: each alone, in its own transaction.
		for _, op := range live {
			op.done <- s.recordAlone(op)
		}
		return
	}
	for i, op := range live {
		if err != nil {
			op.done <- err
		} else {
			op.done <- errs[i]
		}
	}
}

// recordAlone stores one Record in its own transaction.
func (s *Store) recordAlone(op *recordOp) error {
	errs, err := s.recordBatch([]*recordOp{op})
	if err != nil {
		return err
	}
	return errs[0]
}

// recordBatch runs the Records in one transaction. errs[i] is ErrNonce
// when the nonce of ops[i] was not live (nothing of it is stored); err is
// a failure of the transaction, which then committed nothing.
func (s *Store) recordBatch(ops []*recordOp) (errs []error, err error) {
	ctx := context.Background() // the callers' contexts were checked: a started batch finishes
	if s.postgres {
		return s.recordPipeline(ctx, ops)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	useNonce, insertResult, updateNode := tx.StmtContext(ctx, s.stUseNonce), tx.StmtContext(ctx, s.stInsertResult), tx.StmtContext(ctx, s.stUpdateNode)
	errs = make([]error, len(ops))
	for i, op := range ops {
		r, t := op.r, now()
		res, err := useNonce.ExecContext(ctx, r.Nonce, r.Node, t)
		if err != nil {
			return nil, fmt.Errorf("store: use nonce: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			errs[i] = ErrNonce
			continue
		}
		if _, err := insertResult.ExecContext(ctx, r.Nonce, r.Node, r.Image, r.Version, r.State, r.Reason, t); err != nil {
			return nil, fmt.Errorf("store: insert result: %w", err)
		}
		if _, err := updateNode.ExecContext(ctx, r.Image, r.Version, r.State, r.Reason, t, r.Node); err != nil {
			return nil, fmt.Errorf("store: update node: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: commit result: %w", err)
	}
	return errs, nil
}

// Nodes lists the fleet: untrusted nodes first, then by name.
func (s *Store) Nodes(ctx context.Context) ([]api.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT node, image, version, state, reason, last_seen FROM nodes
		ORDER BY CASE WHEN state = 'trusted' THEN 1 ELSE 0 END, node`)
	if err != nil {
		return nil, fmt.Errorf("store: nodes: %w", err)
	}
	defer rows.Close()
	out := []api.Node{}
	for rows.Next() {
		var n api.Node
		var seen int64
		if err := rows.Scan(&n.Node, &n.Image, &n.Version, &n.State, &n.Reason, &seen); err != nil {
			return nil, fmt.Errorf("store: nodes: %w", err)
		}
		n.LastSeen = time.Unix(0, seen).UTC()
		out = append(out, n)
	}
	return out, rows.Err()
}

// CountResults returns how many results are stored (for the node, or all
// with node "").
func (s *Store) CountResults(ctx context.Context, node string) (int, error) {
	var n int
	var err error
	if node == "" {
		err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM results`).Scan(&n)
	} else {
		err = s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM results WHERE node = ?`), node).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("store: count results: %w", err)
	}
	return n, nil
}

// Prune deletes expired nonces and challenges.
func (s *Store) Prune(ctx context.Context) error {
	t := now()
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM nonces WHERE expires < ?`), t); err != nil {
		return fmt.Errorf("store: prune: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM challenges WHERE expires < ?`), t); err != nil {
		return fmt.Errorf("store: prune: %w", err)
	}
	return nil
}

// recordPipeline is recordBatch on PostgreSQL: recordSQL for each Record,
// sent as one pipeline that ends in one Sync, so that the statements form
// one implicit transaction and cost one round trip. They run in the order
// of node and nonce: the rows a Record locks (its nonce, its result's key,
// its node) belong to its node, so replicas that store overlapping batches
// at once lock in one order and cannot deadlock.
func (s *Store) recordPipeline(ctx context.Context, ops []*recordOp) ([]error, error) {
	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		x, y := ops[order[a]].r, ops[order[b]].r
		return x.Node < y.Node || x.Node == y.Node && x.Nonce < y.Nonce
	})
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer conn.Close()
	errs := make([]error, len(ops))
	err = conn.Raw(func(dc any) error {
		var b pgx.Batch
		for _, i := range order {
			r := ops[i].r
			b.Queue(recordSQL, r.Nonce, r.Node, now(), r.Image, r.Version, r.State, r.Reason)
		}
		br := dc.(*stdlib.Conn).Conn().SendBatch(ctx, &b)
		for _, i := range order {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			if tag.RowsAffected() != 1 {
				errs[i] = ErrNonce
			}
		}
		return br.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("store: record: %w", err)
	}
	return errs, nil
}
