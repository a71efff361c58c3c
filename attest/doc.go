// Package attest is osguard's remote attestation: a verifier (osguard
// attest serve) that knows the predicted PCRs of every registered image
// version, and a node agent (osguard attest agent) that proves with its TPM
// which image the node booted. The work is split by concept:
//
//   - api: the JSON messages and their bounded decoder;
//   - verdict: quote check, event-log replay and the judgement (pure);
//   - store: SQLite or PostgreSQL through one database/sql code path;
//   - server: the HTTP API and the HTML fleet page;
//   - client: the admin calls and the HTTP plumbing;
//   - agent: the node side, over go-attestation and /dev/tpmrm0.
//
// # Protocol
//
// All bodies are JSON; binary fields are base64 strings. Requests are at
// most 1 MiB (413 beyond), unknown fields are refused (400), and every error
// answer is {"error": "..."}.
//
//	POST /v1/enroll    {"ekCertificate", "ak": {"public", "createData",
//	                    "createAttestation", "createSignature"}}
//	                   → 200 {"challenge", "credential", "secret"}
//	                   403 when the EK certificate does not chain to an --ek-ca;
//	                   400 when the AK is not a restricted signing key made by
//	                   the TPM. The challenge is TPM2_MakeCredential to the EK
//	                   for the AK's name.
//	POST /v1/activate  {"challenge", "secret"} → 200 {"node", "nonce"}
//	                   403 for a wrong secret or an unknown, used or expired
//	                   challenge (single use, 5 minutes). The AK is now the node's.
//	POST /v1/nonce     {"node"} → 200 {"nonce"}  (32 bytes, single use, 5 minutes)
//	POST /v1/attest    {"node", "nonce", "quote", "signature", "pcrs": [16 × sha256],
//	                    "eventLog"}
//	                   → 200 {"node", "image", "version", "state", "reason"}
//	                   409 for a nonce that is unknown, used, expired or not
//	                   the node's; 403 when the quote does not verify with
//	                   the node's AK (nothing is recorded); 404 for an unknown
//	                   node. An event log that does not replay to an
//	                   authentic quote is recorded as untrusted.
//
// Admin calls need "Authorization: Bearer TOKEN" (401 otherwise):
//
//	GET    /v1/nodes                     → 200 [{"node", "image", "version", "state",
//	                                        "reason", "lastSeen"}], untrusted first
//	GET    /v1/policies                  → 200 [{"image", "version"}]
//	POST   /v1/policies                  body: a measurements.json → 201 {"image", "version"}
//	DELETE /v1/policies/{image}/{version} → 204, or 404
//	GET    /                             the HTML fleet page (the token as bearer, or
//	                                      the cookie POST /login sets from a form)
//
// State is "trusted" or "untrusted"; reason names every PCR that failed
// ("PCR 7: Secure Boot is off") or why the evidence was rejected ("event log
// does not replay to the quoted PCR 4").
//
// # Trust
//
// A node is named by its EK (the first 16 hex digits of the sha256 of the
// EK public key). The EK certificate must chain to a CA the verifier was
// given; the AK is bound to the EK by credential activation; quotes must be
// signed by that AK over a nonce the verifier issued and never saw used. The
// database enforces single use, so replicas cannot both accept one nonce.
package attest
