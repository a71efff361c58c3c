// Package agent is the node side of osguard attestation: it proves to the
// verifier which TPM it runs on (the EK certificate), binds a fresh
// attestation key to that EK (TPM2_MakeCredential on the verifier,
// TPM2_ActivateCredential here), and sends quotes over PCRs 0–15 with the
// firmware's event log, each over a nonce the verifier just issued.
//
// TPM commands go through go-attestation (which speaks to /dev/tpmrm0 with
// go-tpm); nothing here encodes TPM structures by hand.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/google/go-attestation/attest"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/client"
)

// Agent attests one node to one verifier.
type Agent struct {
	// Verifier is the verifier's base URL, e.g. http://10.0.2.100:80.
	Verifier string
	// Client talks to the verifier; nil means one keep-alive connection
	// (QEMU's guestfwd carries one stream at a time).
	Client *http.Client

	tpm  *attest.TPM
	ak   *attest.AK
	node string
}

// Close releases the AK and the TPM.
func (a *Agent) Close() error {
	if a.tpm == nil {
		return nil
	}
	if a.ak != nil {
		a.ak.Close(a.tpm)
		a.ak = nil
	}
	err := a.tpm.Close()
	a.tpm = nil
	return err
}

// Node returns the verifier's name of this node (after the first Attest).
func (a *Agent) Node() string { return a.node }

// Attest runs one attestation: enrollment the first time (or when the
// verifier forgot the node), then nonce, quote and verdict.
func (a *Agent) Attest(ctx context.Context) (*api.Verdict, error) {
	if a.tpm == nil {
		t, err := attest.OpenTPM(&attest.OpenConfig{})
		if err != nil {
			return nil, fmt.Errorf("agent: open TPM: %w", err)
		}
		a.tpm = t
	}
	var nonce []byte
	if a.node == "" {
		n, err := a.enroll(ctx)
		if err != nil {
			return nil, err
		}
		nonce = n
	} else {
		var resp api.NonceResponse
		err := a.call(ctx, "/v1/nonce", api.NonceRequest{Node: a.node}, &resp)
		var he *client.HTTPError
		if errors.As(err, &he) && he.Status == http.StatusNotFound {
			a.node = ""
			return a.Attest(ctx)
		}
		if err != nil {
			return nil, err
		}
		nonce = resp.Nonce
	}
	req, err := a.Evidence(nonce)
	if err != nil {
		return nil, err
	}
	var v api.Verdict
	if err := a.call(ctx, "/v1/attest", req, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// pcrSelection is PCR 0..15.
var pcrSelection = func() []int {
	s := make([]int, api.NumPCRs)
	for i := range s {
		s[i] = i
	}
	return s
}()

// Evidence quotes PCRs 0–15 over nonce with the enrolled AK and adds the
// PCR values and the event log.
func (a *Agent) Evidence(nonce []byte) (*api.AttestRequest, error) {
	q, err := a.ak.QuotePCRs(a.tpm, nonce, attest.HashSHA256, pcrSelection)
	if err != nil {
		return nil, fmt.Errorf("agent: quote: %w", err)
	}
	all, err := a.tpm.PCRs(attest.HashSHA256)
	if err != nil {
		return nil, fmt.Errorf("agent: read PCRs: %w", err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Index < all[j].Index })
	var pcrs [][]byte
	for _, p := range all {
		if p.Index < api.NumPCRs {
			pcrs = append(pcrs, p.Digest)
		}
	}
	log, err := a.tpm.MeasurementLog()
	if err != nil {
		return nil, fmt.Errorf("agent: event log: %w", err)
	}
	return &api.AttestRequest{Node: a.node, Nonce: nonce, Quote: q.Quote, Signature: q.Signature, PCRs: pcrs, EventLog: log}, nil
}

// enroll binds a new AK to the EK and returns the first nonce.
func (a *Agent) enroll(ctx context.Context) ([]byte, error) {
	eks, err := a.tpm.EKs()
	if err != nil {
		return nil, fmt.Errorf("agent: read EKs: %w", err)
	}
	var ek *attest.EK
	for i := range eks {
		if eks[i].Certificate != nil {
			ek = &eks[i]
			break
		}
	}
	if ek == nil {
		return nil, errors.New("agent: the TPM has no EK certificate (swtpm_setup --create-ek-cert; 'osguard run' makes one)")
	}
	if a.ak != nil {
		a.ak.Close(a.tpm)
	}
	ak, err := a.tpm.NewAK(nil)
	if err != nil {
		return nil, fmt.Errorf("agent: create AK: %w", err)
	}
	a.ak = ak
	p := ak.AttestationParameters()
	var ch api.EnrollResponse
	if err := a.call(ctx, "/v1/enroll", api.EnrollRequest{
		EKCertificate: ek.Certificate.Raw,
		AK:            api.AKParameters{Public: p.Public, CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature},
	}, &ch); err != nil {
		return nil, err
	}
	secret, err := ak.ActivateCredentialWithEK(a.tpm, attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret}, *ek)
	if err != nil {
		return nil, fmt.Errorf("agent: activate credential: %w", err)
	}
	var act api.ActivateResponse
	if err := a.call(ctx, "/v1/activate", api.ActivateRequest{Challenge: ch.Challenge, Secret: secret}, &act); err != nil {
		return nil, err
	}
	a.node = act.Node
	return act.Nonce, nil
}

// call POSTs req as JSON to path and decodes the answer into resp.
func (a *Agent) call(ctx context.Context, path string, req, resp any) error {
	c := a.Client
	if c == nil {
		var err error
		if c, err = client.New(nil); err != nil {
			return err
		}
		a.Client = c
	}
	return client.Do(ctx, c, http.MethodPost, strings.TrimSuffix(a.Verifier, "/")+path, "", req, resp)
}

// ConfigPath is where an image built with attestation keeps the agent's
// settings (from spec.attestation; /etc comes from the verity volume).
const ConfigPath = "/etc/osguard/attestation.json"

// Config is the agent's settings file.
type Config struct {
	Verifier string `json:"verifier"`
	Interval string `json:"interval"`
}

// LoadConfig reads a settings file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var c Config
	if err := api.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("agent: %s: %w", path, err)
	}
	return &c, nil
}
