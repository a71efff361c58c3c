// Package server is the osguard verifier's HTTP service: the JSON API that
// agents and admins call (documented in package attest) and the HTML fleet
// page at "/". It keeps no state of its own; everything is in the store, so
// that any number of processes can serve one PostgreSQL database.
//
// Nodes authenticate with their TPM: enrollment needs an EK certificate
// that chains to a CA given with --ek-ca, and binds an AK to that EK with
// TPM2_MakeCredential; an attestation is accepted only when the bound AK
// signed it over a nonce the verifier issued and nobody used before. Admin
// calls (policies, the node list, the page) need the bearer token.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-attestation/attest"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/attest/verdict"
)

// Server serves one verifier.
type Server struct {
	Store *store.Store
	// EKRoots are the CAs an EK certificate must chain to.
	EKRoots *x509.CertPool
	// EKCAFiles, when set, are PEM files read at each enrollment instead
	// of EKRoots, so that a CA made after the verifier started (the first
	// 'osguard run' makes DIR/tpm-ca) counts without a restart.
	EKCAFiles []string
	// Token is the admin bearer token.
	Token string
	// Log receives one line per rejected request or verdict (nil: none).
	Log *log.Logger

	replays verdict.Cache

	policiesMu sync.Mutex
	policies   []*verdict.Policy
	policiesAt time.Time
}

// policyCacheTTL bounds how long a replica may judge with a policy set
// another replica has changed.
const policyCacheTTL = time.Second

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", s.enroll)
	mux.HandleFunc("POST /v1/activate", s.activate)
	mux.HandleFunc("POST /v1/nonce", s.nonce)
	mux.HandleFunc("POST /v1/attest", s.attest)
	mux.HandleFunc("GET /v1/nodes", s.admin(s.nodes))
	mux.HandleFunc("GET /v1/policies", s.admin(s.listPolicies))
	mux.HandleFunc("POST /v1/policies", s.admin(s.addPolicy))
	mux.HandleFunc("DELETE /v1/policies/{image}/{version}", s.admin(s.removePolicy))
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("POST /login", s.login)
	return recoverer(s, mux)
}

// recoverer turns a panic into a 500 instead of a dropped connection; a
// panic is a bug, and it is logged as one.
func recoverer(s *Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				s.logf("BUG: panic serving %s %s: %v", r.Method, r.URL.Path, v)
				writeError(w, http.StatusInternalServerError, errors.New("internal error"))
			}
		}()
		r.Body = http.MaxBytesReader(w, r.Body, api.MaxBody)
		h.ServeHTTP(w, r)
	})
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log.Printf(format, args...)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, api.Error{Error: err.Error()})
}

// decode reads a request body into v; it answers 413 or 400 itself.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := api.Decode(r.Body, api.MaxBody, v)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.Is(err, api.ErrTooLarge), errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", api.MaxBody))
	default:
		writeError(w, http.StatusBadRequest, err)
	}
	return false
}

// authorized checks the bearer token (or the page's cookie) in constant time.
func (s *Server) authorized(r *http.Request) bool {
	got := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && h[:7] == "Bearer " {
		got = h[7:]
	} else if c, err := r.Cookie(cookieName); err == nil {
		got = c.Value
	}
	return s.Token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1
}

func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="osguard verifier"`)
			writeError(w, http.StatusUnauthorized, errors.New("admin call: missing or wrong bearer token"))
			return
		}
		h(w, r)
	}
}

// NodeID derives a node's name from its EK: the first 16 hex digits of the
// sha256 of the EK's PKIX public key.
func NodeID(ek *x509.Certificate) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(ek.PublicKey)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:8]), nil
}

// VerifyEK checks that an EK certificate chains to one of roots. EK
// certificates carry TPM-specific critical extensions (a subject
// alternative name of directory names, the TPM specification) that Go's
// verifier does not interpret; those two are accepted (any other critical
// extension is not), as are the EK's own key usages.
func VerifyEK(der []byte, roots *x509.CertPool) (*x509.Certificate, error) {
	cert, err := attest.ParseEKCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("EK certificate: %w", err)
	}
	if roots == nil {
		return nil, errors.New("EK certificate: the verifier trusts no EK CA (--ek-ca)")
	}
	var unknown []asn1.ObjectIdentifier
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) && !oid.Equal(oidSubjectDirectoryAttributes) {
			unknown = append(unknown, oid)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("EK certificate: unknown critical extensions %v", unknown)
	}
	cert.UnhandledCriticalExtensions = nil
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("EK certificate does not chain to a trusted EK CA: %w", err)
	}
	return cert, nil
}

// The critical extensions of EK certificates that Go's verifier does not
// interpret (TCG EK Credential Profile 2.5, section 3.2): the TPM's
// manufacturer, model and version as directory names in the subject
// alternative name, and the TPM specification in subject directory
// attributes.
var (
	oidSubjectAltName             = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDirectoryAttributes = asn1.ObjectIdentifier{2, 5, 29, 9}
)

var b64 = base64.StdEncoding

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if !decode(w, r, &req) {
		return
	}
	roots := s.EKRoots
	if len(s.EKCAFiles) > 0 {
		var err error
		if roots, err = LoadEKRoots(s.EKCAFiles); err != nil {
			s.logf("enroll: %v", err)
			roots = nil
		}
	}
	ek, err := VerifyEK(req.EKCertificate, roots)
	if err != nil {
		s.logf("enroll rejected: %v", err)
		writeError(w, http.StatusForbidden, err)
		return
	}
	node, err := NodeID(ek)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("EK public key: %w", err))
		return
	}
	ap := attest.ActivationParameters{EK: ek.PublicKey, AK: attest.AttestationParameters{
		Public: req.AK.Public, CreateData: req.AK.CreateData,
		CreateAttestation: req.AK.CreateAttestation, CreateSignature: req.AK.CreateSignature,
	}}
	secret, cred, err := generate(&ap)
	if err != nil {
		s.logf("enroll %s rejected: AK: %v", node, err)
		writeError(w, http.StatusBadRequest, fmt.Errorf("attestation key: %w", err))
		return
	}
	id := hex.EncodeToString(store.Random(16))
	sum := sha256.Sum256(secret)
	if err := s.Store.PutChallenge(r.Context(), id, node, b64.EncodeToString(req.EKCertificate), b64.EncodeToString(req.AK.Public), hex.EncodeToString(sum[:])); err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.EnrollResponse{Challenge: id, Credential: cred.Credential, Secret: cred.Secret})
}

// generate runs go-attestation's MakeCredential, which panics on some
// malformed inputs in old versions: a panic is a rejected AK here.
func generate(ap *attest.ActivationParameters) (secret []byte, cred *attest.EncryptedCredential, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("malformed: %v", v)
		}
	}()
	return ap.Generate()
}

func (s *Server) activate(w http.ResponseWriter, r *http.Request) {
	var req api.ActivateRequest
	if !decode(w, r, &req) {
		return
	}
	c, err := s.Store.TakeChallenge(r.Context(), req.Challenge)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusForbidden, errors.New("challenge unknown, expired or already answered"))
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	sum := sha256.Sum256(req.Secret)
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(c.Secret)) != 1 {
		s.logf("activate %s rejected: wrong secret", c.Node)
		writeError(w, http.StatusForbidden, errors.New("wrong credential secret: the AK and EK are not on one TPM"))
		return
	}
	if err := s.Store.PutNode(r.Context(), c.Node, c.EK, c.AK); err != nil {
		s.internal(w, err)
		return
	}
	nonce, err := s.newNonce(r.Context(), c.Node)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.ActivateResponse{Node: c.Node, Nonce: nonce})
}

// nonceSize is the TPM's limit for qualifying data that every TPM accepts
// (a sha256 digest).
const nonceSize = 32

func (s *Server) newNonce(ctx context.Context, node string) ([]byte, error) {
	n := store.Random(nonceSize)
	return n, s.Store.PutNonce(ctx, hex.EncodeToString(n), node)
}

func (s *Server) nonce(w http.ResponseWriter, r *http.Request) {
	var req api.NonceRequest
	if !decode(w, r, &req) {
		return
	}
	if _, err := s.Store.NodeAK(r.Context(), req.Node); errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Errorf("node %q is not enrolled", req.Node))
		return
	} else if err != nil {
		s.internal(w, err)
		return
	}
	n, err := s.newNonce(r.Context(), req.Node)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.NonceResponse{Nonce: n})
}

func (s *Server) internal(w http.ResponseWriter, err error) {
	s.logf("error: %v", err)
	writeError(w, http.StatusInternalServerError, errors.New("verifier database error"))
}

// currentPolicies returns the registered policies, cached briefly.
func (s *Server) currentPolicies(ctx context.Context) ([]*verdict.Policy, error) {
	s.policiesMu.Lock()
	defer s.policiesMu.Unlock()
	if s.policies != nil && time.Since(s.policiesAt) < policyCacheTTL {
		return s.policies, nil
	}
	raw, err := s.Store.Policies(ctx)
	if err != nil {
		return nil, err
	}
	ps := make([]*verdict.Policy, 0, len(raw))
	for _, b := range raw {
		p, err := verdict.ParsePolicy(b)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	s.policies, s.policiesAt = ps, time.Now()
	return ps, nil
}

func (s *Server) invalidatePolicies() {
	s.policiesMu.Lock()
	s.policies = nil
	s.policiesMu.Unlock()
}

func (s *Server) attest(w http.ResponseWriter, r *http.Request) {
	var req api.AttestRequest
	if !decode(w, r, &req) {
		return
	}
	ctx := r.Context()
	nonceHex := hex.EncodeToString(req.Nonce)
	// The nonce is checked first so that a replay costs no signature
	// check; Record below consumes it atomically.
	akB64, err := s.Store.Attesting(ctx, req.Node, nonceHex)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Errorf("node %q is not enrolled", req.Node))
		return
	case errors.Is(err, store.ErrNonce):
		s.logf("attest %s rejected: %v", req.Node, err)
		writeError(w, http.StatusConflict, errors.New("nonce unknown, expired or already used: ask for a new one"))
		return
	case err != nil:
		s.internal(w, err)
		return
	}
	ak, err := b64.DecodeString(akB64)
	if err != nil {
		s.internal(w, err)
		return
	}
	policies, err := s.currentPolicies(ctx)
	if err != nil {
		s.internal(w, err)
		return
	}
	res, err := s.replays.Check(verdict.Evidence{
		AKPublic: ak, Nonce: req.Nonce, Quote: req.Quote, Signature: req.Signature,
		PCRs: req.PCRs, EventLog: req.EventLog,
	}, policies)
	if err != nil {
		s.logf("attest %s rejected: %v", req.Node, err)
		switch {
		case errors.Is(err, verdict.ErrQuote):
			// It may not come from the node at all: it changes nothing.
			writeError(w, http.StatusForbidden, err)
			return
		case errors.Is(err, verdict.ErrEventLog):
			// Signed by the node's AK, but it does not hold together.
			res = verdict.Result{Reason: err.Error()}
		default:
			s.internal(w, err)
			return
		}
	}
	v := api.Verdict{Node: req.Node, Image: res.Image, Version: res.Version, State: res.State(), Reason: res.Reason}
	if err := s.Store.Record(ctx, store.Result{Node: req.Node, Nonce: nonceHex, Image: v.Image, Version: v.Version, State: v.State, Reason: v.Reason}); errors.Is(err, store.ErrNonce) {
		writeError(w, http.StatusConflict, errors.New("nonce unknown, expired or already used: ask for a new one"))
		return
	} else if err != nil {
		s.internal(w, err)
		return
	}
	s.logf("attest %s: %s %s %s %s", v.Node, v.State, v.Image, v.Version, v.Reason)
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) nodes(w http.ResponseWriter, r *http.Request) {
	ns, err := s.Store.Nodes(r.Context())
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ns)
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) {
	ps, err := s.currentPolicies(r.Context())
	if err != nil {
		s.internal(w, err)
		return
	}
	out := []api.PolicyID{}
	for _, p := range ps {
		out = append(out, api.PolicyID{Image: p.Image, Version: p.Version})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) addPolicy(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body) // bounded by the MaxBytesReader of recoverer
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, err)
		return
	}
	p, err := verdict.ParsePolicy(b)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.Store.PutPolicy(r.Context(), p.Image, p.Version, b); err != nil {
		s.internal(w, err)
		return
	}
	s.invalidatePolicies()
	s.logf("policy added: %s %s", p.Image, p.Version)
	writeJSON(w, http.StatusCreated, api.PolicyID{Image: p.Image, Version: p.Version})
}

func (s *Server) removePolicy(w http.ResponseWriter, r *http.Request) {
	img, ver := r.PathValue("image"), r.PathValue("version")
	err := s.Store.DeletePolicy(r.Context(), img, ver)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Errorf("image %s version %s is not registered", img, ver))
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	s.invalidatePolicies()
	s.logf("policy removed: %s %s", img, ver)
	w.WriteHeader(http.StatusNoContent)
}
