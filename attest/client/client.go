// Package client talks to the osguard verifier over its JSON API (see
// package attest): the admin calls behind 'osguard attest policy' and
// 'osguard attest nodes', and the HTTP plumbing the node agent shares.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/osguard/osguard/attest/api"
)

// Timeout bounds one call to the verifier.
const Timeout = 10 * time.Second

// New returns an HTTP client for the verifier, trusting the PEM
// certificates in caPEM for https URLs (nil: the system's roots). It keeps
// one connection per host: QEMU's guestfwd carries one stream at a time.
func New(caPEM []byte) (*http.Client, error) {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("client: --ca: no PEM certificate")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: Timeout}, nil
}

// HTTPError is a verifier answer other than 2xx.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("verifier: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Do sends one JSON request (req nil: no body; a []byte req is sent as
// is) with an optional bearer token and decodes a 2xx answer into resp
// (nil: ignored). Other answers become *HTTPError.
func Do(ctx context.Context, c *http.Client, method, url, token string, req, resp any) error {
	var body io.Reader
	switch r := req.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(r)
	default:
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(hr)
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, api.MaxBody))
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	if res.StatusCode/100 != 2 {
		var e api.Error
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &HTTPError{Status: res.StatusCode, Message: msg}
	}
	if resp == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("verifier: answer: %w", err)
	}
	return nil
}

// Admin makes the admin calls.
type Admin struct {
	URL   string // the verifier's base URL
	Token string // the bearer token
	HTTP  *http.Client
}

func (a *Admin) url(path string) string { return strings.TrimSuffix(a.URL, "/") + path }

// AddPolicy registers the image version whose measurements.json is given.
func (a *Admin) AddPolicy(ctx context.Context, measurements []byte) (*api.PolicyID, error) {
	var id api.PolicyID
	if err := Do(ctx, a.HTTP, http.MethodPost, a.url("/v1/policies"), a.Token, measurements, &id); err != nil {
		return nil, err
	}
	return &id, nil
}

// RemovePolicy unregisters an image version.
func (a *Admin) RemovePolicy(ctx context.Context, image, version string) error {
	return Do(ctx, a.HTTP, http.MethodDelete, a.url("/v1/policies/"+url.PathEscape(image)+"/"+url.PathEscape(version)), a.Token, nil, nil)
}

// Policies lists the registered image versions.
func (a *Admin) Policies(ctx context.Context) ([]api.PolicyID, error) {
	var out []api.PolicyID
	return out, Do(ctx, a.HTTP, http.MethodGet, a.url("/v1/policies"), a.Token, nil, &out)
}

// Nodes lists the fleet.
func (a *Admin) Nodes(ctx context.Context) ([]api.Node, error) {
	var out []api.Node
	return out, Do(ctx, a.HTTP, http.MethodGet, a.url("/v1/nodes"), a.Token, nil, &out)
}
